//! The experiment bench shared by `sparsedm demo` and `sparsedm repro`:
//! fine-tune a dense checkpoint with one method (SparseDM, STE, ASP,
//! progressive), or prune it without training (untrained masks), or train
//! a model from scratch; then sample it (a trained row: its EMA weights,
//! as the paper scores its models) and measure one table row — zeros,
//! MACs, FD-px (and FID with Inception weights) — with every row judged
//! against the same real images and drawn from the same noise.

use crate::kept_rows;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sparsedm_layers::{NamedPolicy, NmPattern, NonDivisible, PermutationReport, Policy, ProgressiveSchedule, Selection, WeightLayout};
use sparsedm_tensor::Device;
use sparsedm_train::build::{self, Bundle};
use sparsedm_train::config::SparseConfig;
use sparsedm_train::experiment::{DrawSpec, Footprint, Judge, Quality, draw, footprint};
use sparsedm_train::figures::compare;
use sparsedm_train::samples::{Images, write_labelled_grid_png};
use sparsedm_train::vocab::{SparseMethod, Teacher};
use sparsedm_train::{RunConfig, Trainer};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How a row's model is obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// The dense starting checkpoint itself.
    Dense,
    /// SR-STE (λ = 2e-4) with knowledge transfer from the dense model (w_kt = 0.1): the paper's method.
    SparseDm,
    /// Plain straight-through estimator, masks recomputed every step, no teacher.
    Ste,
    /// apex ASP: one-shot magnitude masks on ASP's layer set, kept fixed while fine-tuning.
    Asp,
    /// Magnitude masks on the dense weights, no training (the "untrained mask" ablation).
    Untrained,
    /// Traditional progressive sparsity: the given stages, SR-STE masks, no teacher.
    Progressive(ProgressiveSchedule),
    /// A model trained from random init with this run config (e.g. the
    /// half-size U-ViT); `what` says how it differs from the dense one.
    Scratch { label: &'static str, what: String, config: Box<RunConfig> },
    /// Diff-Pruning (Fang et al., NeurIPS 2023): the dense checkpoint's
    /// channels pruned to `macs` × its MACs by Taylor importance over the
    /// informative timesteps, then the smaller dense model fine-tuned with
    /// plain ε-MSE (the reference's `finetune_simple.py`; no teacher).
    DiffPruning { macs: f64 },
    /// SparseDM (SR-STE + knowledge transfer) on ASP's layer set instead of
    /// the paper's code's: the ablation that tells the method's effect from
    /// the layer set's when ASP beats SparseDM.
    SparseDmAspLayers,
}

/// The importance pass of the lab's Diff-Pruning rows visits timesteps
/// with the reference's rule (stop below 0.05 × the largest loss) up to the
/// reference's 1000; visiting each, on the shipped demo U-ViT it stops at
/// timestep 293 with a batch of 8 (337 with 16).
pub const DIFF_PRUNING_MAX_TIMESTEPS: usize = sparsedm_diffusion::diffprune::TIMESTEPS;
/// The lab's Diff-Pruning rows visit every 10th timestep of the importance
/// pass (the reference visits each): about 30 forward and backward passes
/// instead of 300 on the demo U-ViT, which keeps both families' Diff-Pruning
/// rows inside the tiny table's time budget. `sparsedm prune` defaults to 1.
pub const DIFF_PRUNING_STRIDE: usize = 10;
/// Images in the importance batch of the lab's Diff-Pruning rows. The
/// reference uses 64–128; with the stride above, 16 images keep the pass
/// a small part of a tiny-scale row (every timestep at batch 16 took 180 s
/// of CPU on the demo U-ViT).
pub const DIFF_PRUNING_BATCH: usize = 16;

impl Method {
    /// Short name for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Method::Dense => "dense",
            Method::SparseDm => "SparseDM",
            Method::Ste => "STE",
            Method::Asp => "ASP",
            Method::Untrained => "untrained mask",
            Method::Progressive(_) => "progressive",
            Method::Scratch { label, .. } => label,
            Method::DiffPruning { .. } => "Diff-Pruning",
            Method::SparseDmAspLayers => "SparseDM on ASP's layers",
        }
    }

    /// One line on what the method does.
    pub fn detail(&self) -> String {
        match self {
            Method::Dense => "the dense pre-trained model (no pruning)".into(),
            Method::SparseDm => "SR-STE (λ = 2e-4) + knowledge transfer from the dense model (loss = ε-MSE + 0.1·teacher-MSE)".into(),
            Method::Ste => "straight-through estimator, masks recomputed every step, plain ε-MSE".into(),
            Method::Asp => {
                "apex ASP: channel permutations (as apex's permutation_lib), then one-shot magnitude masks on ASP's layers (out % 8 = 0, in % 16 = 0), kept fixed while fine-tuning".into()
            }
            Method::Untrained => "magnitude masks applied to the dense weights, no training".into(),
            Method::Progressive(stages) => format!("progressive sparsity {stages} (SR-STE masks, plain ε-MSE)"),
            Method::Scratch { what, .. } => format!("trained from random init ({what})"),
            Method::DiffPruning { macs } => format!(
                "Diff-Pruning: channels (U-ViT heads and MLP width, UNet ResNet inner channels) pruned to {:.0}% of the MACs by \
                 Taylor importance over the informative timesteps, then fine-tuned with plain ε-MSE",
                100.0 * macs
            ),
            Method::SparseDmAspLayers => {
                "SparseDM's training (SR-STE, λ = 2e-4, + knowledge transfer) on ASP's layers (out % 8 = 0, in % 16 = 0) instead of the paper's code's layer set".into()
            }
        }
    }

    /// The `[sparse]` section that turns the dense run of architecture
    /// `arch` into this method's run at `pattern`; `None` for the dense
    /// methods. SparseDM's layer set is `sparsedm-uvit` on a U-ViT and every
    /// Conv2d and Linear on the UNet (as the paper's code masks them); ASP
    /// keeps apex's size rule on both.
    fn sparse(&self, pattern: Option<NmPattern>, arch: &str) -> Result<Option<SparseConfig>> {
        let sparse_method = match self {
            Method::Dense | Method::Scratch { .. } | Method::DiffPruning { .. } => return Ok(None),
            Method::SparseDm | Method::SparseDmAspLayers => SparseMethod::SrSte,
            Method::Ste => SparseMethod::Ste,
            Method::Asp | Method::Untrained => SparseMethod::Fixed,
            Method::Progressive(_) => SparseMethod::Progressive,
        };
        let Some(pattern) = pattern else { bail!("{} needs an N:M pattern, got dense", self.label()) };
        let base = SparseConfig {
            teacher: Teacher::None,
            policy: sparsedm_train::config::paper_policy(arch),
            ..SparseConfig::new(pattern, sparse_method)
        };
        Ok(Some(match self {
            Method::SparseDm => SparseConfig { teacher: Teacher::Init, ..base },
            Method::Asp => SparseConfig { policy: Policy::named(NamedPolicy::Asp), ..base },
            Method::SparseDmAspLayers => SparseConfig { teacher: Teacher::Init, policy: Policy::named(NamedPolicy::Asp), ..base },
            Method::Progressive(stages) => SparseConfig { progressive: Some(stages.clone()), ..base },
            _ => base,
        }))
    }
}

/// One measured row.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Row {
    /// The model family: "U-ViT" or "DDPM UNet".
    pub model: String,
    pub label: String,
    pub method: String,
    pub detail: String,
    /// N:M pattern, or "dense".
    pub pattern: String,
    /// Training steps this row's model got on top of the dense checkpoint (or from scratch).
    pub steps: u64,
    pub footprint: Footprint,
    pub quality: Quality,
    /// Sample grid (PNG), relative to the output folder.
    pub grid: String,
    /// Exported model (safetensors), relative to the output folder.
    pub checkpoint: String,
    /// Which weights were sampled, scored and exported: `"ema"` (a trained
    /// row's EMA, as the paper scores its models) or `"checkpoint"` (the
    /// dense checkpoint's weights as given, for the dense and
    /// untrained-mask rows; the shipped tiny checkpoint holds EMA weights).
    pub weights: String,
    /// ASP's channel permutations (the fixed-mask rows): the magnitude the
    /// 2:4 masks keep with and without them, per group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permutation: Option<PermutationReport>,
    pub seconds: f64,
    /// Wall-clock seconds of drawing this row's samples (this machine, this
    /// run): with its N:M layers on the N:M kernels where those are faster,
    /// what the sparsity buys at sampling time.
    pub sampling_seconds: f64,
    /// Of that sampling, the N:M layer calls run by the CPU's N:M kernels
    /// and by the dense GEMM (zero for a dense model, or on a GPU).
    pub nm_kernel_calls: u64,
    pub nm_dense_calls: u64,
    /// The first samples (the same noise in every row), for the comparison figure.
    #[serde(skip)]
    pub preview: Images,
}

/// Where and how rows are made.
pub struct Lab {
    pub out: PathBuf,
    /// The dense model's run config with what every row shares (the
    /// fine-tuning rate and warm-up, the data path).
    pub base: RunConfig,
    /// The dense starting checkpoint (a model safetensors file).
    pub dense: PathBuf,
    /// Where the rows train.
    pub device: Device,
    pub judge: Judge,
    pub draw: DrawSpec,
    /// Continue each row's training from the newest checkpoint in its run folder, where an
    /// earlier, interrupted invocation left one (`repro --resume`), instead of starting it anew.
    pub resume: bool,
}

impl Lab {
    /// Makes one row: trains (unless the method needs no training), samples, scores, exports.
    /// `pattern` is the N:M pattern of the sparse methods (`None`: dense).
    pub fn row(&self, slug: &str, method: &Method, pattern: Option<NmPattern>, steps: u64) -> Result<Row> {
        let key = kept_rows::RowKey {
            slug: slug.into(),
            method: format!("{method:?}"),
            pattern: pattern.map(|p| p.to_string()),
            steps,
            base: self.base.to_toml()?,
            dense: kept_rows::file_fingerprint(&self.dense)?,
            draw: format!("{:?}", self.draw),
            judge: self.judge.fingerprint(),
        };
        if self.resume
            && let Some(row) = kept_rows::kept(&self.out, &key)
        {
            eprintln!("  {:<22} kept from the earlier run (trained, sampled and scored then)", row.label);
            return Ok(row);
        }
        let row = self.make_row(&key, method, pattern, steps)?;
        kept_rows::keep(&self.out, &key, &row)?;
        Ok(row)
    }

    /// [`Self::row`] made here: trained (or resumed), sampled and scored.
    fn make_row(&self, key: &kept_rows::RowKey, method: &Method, pattern: Option<NmPattern>, steps: u64) -> Result<Row> {
        let slug = key.slug.as_str();
        let started = Instant::now();
        let grid = format!("samples_{slug}.png");
        let checkpoint = format!("{slug}.safetensors");
        // Trained rows are evaluated on their EMA model (its slots carry the masks derived
        // from the EMA weights, so MACs and zeros are the deployed ones); the others on a
        // loaded copy of the dense checkpoint.
        let mut cfg = match method {
            Method::Scratch { config, .. } => (**config).clone(),
            Method::DiffPruning { macs } => self.diff_prune(slug, *macs)?,
            _ => self.base.clone(),
        };
        cfg.sparse = method.sparse(pattern, &cfg.arch)?;
        if *method == Method::SparseDm && cfg.arch == "uvit" {
            // The paper's code: SparseLinear gives qkv a zero-initialised, trainable bias.
            cfg.nnet.insert("sparsedm_qkv_bias".into(), true.into());
        }
        let mut permutation = None;
        let (bundle, weights, trained) = match method {
            Method::Dense => (self.load_dense()?, "checkpoint", 0),
            Method::Untrained => {
                let b = self.load_dense()?;
                let sparse = cfg.sparse.as_ref().context("the untrained-mask run has a [sparse] section")?;
                build::sparsify(&b.store, sparse)?;
                (b, "checkpoint", 0)
            }
            _ => {
                cfg.train.n_steps = steps;
                cfg.train.sample_interval = 0;
                // The preset's interval (50k steps at paper scale, so days of training survive a
                // crash), and always the last step.
                cfg.train.save_interval = cfg.train.save_interval.clamp(1, steps.max(1));
                let run_dir = self.out.join("runs").join(slug);
                if !matches!(method, Method::Scratch { .. } | Method::DiffPruning { .. }) {
                    cfg.train.init = Some(self.dense.display().to_string());
                    // A fine-tuning resumes only from the dense checkpoint it started from.
                    kept_rows::stamp_dense(&self.out, slug, &key.dense, self.resume && has_checkpoint(&run_dir))?;
                }
                cfg.validate()?;
                let t = train_with_progress(cfg.clone(), &run_dir, &format!("{slug}: "), self.device, self.resume)?;
                if let Some(r) = t.permutation_report() {
                    eprint!("  {slug}: {r}");
                    permutation = Some(r.clone());
                }
                t.export_model(&self.out.join(&checkpoint), true)?;
                (t.ema_model()?, "ema", steps)
            }
        };
        bundle.store.set_training(false);
        if weights != "ema" {
            // With the run config, as the trained rows' exports: `sample`,
            // `forward`, `export` and `macs` read it without --arch/--config.
            let path = self.out.join(&checkpoint);
            let meta = sparsedm_train::checkpoint::model_metadata(&cfg, None)?;
            if cfg.sparse.is_some() {
                sparsedm_layers::save_sparse_checkpoint(&bundle.store, &path, Some(meta))?;
            } else {
                bundle.store.save_safetensors(&path, Some(meta))?;
            }
        }
        let schedule = build::schedule(&cfg)?;
        // One short warm-up draw first (a batch, one step), so that the timed
        // sampling does not include the N:M layers' one-off path choice per
        // shape (which the first sparse row would pay for all of them).
        draw(&bundle, schedule.as_ref(), &DrawSpec { n: self.draw.n.min(64), steps: 1, ..self.draw })?;
        let drawn = kept_rows::draw_kept(&self.out, key, self.resume, &bundle, schedule.as_ref(), &self.draw, &crate::interrupt::requested)
            .map_err(|e| match e.downcast::<sparsedm_train::TrainError>() {
                Ok(sparsedm_train::TrainError::Stopped { done, total }) => crate::interrupt::Interrupted(format!(
                    "{slug}: sampling stopped after {done} of {total} images; the same command with --resume continues it (finished trainings and rows are kept)"
                ))
                .into(),
                Ok(e) => anyhow::Error::from(e),
                Err(e) => e,
            })?;
        let (imgs, sampling_seconds) = (drawn.images, drawn.seconds);
        let pattern = pattern.map_or_else(|| "dense".to_string(), |p| p.to_string());
        let label = format!("{} {}", method.label(), if pattern == "dense" { "" } else { &pattern }).trim().to_string();
        write_labelled_grid_png(&self.out.join(&grid), &imgs, (imgs.n as f64).sqrt().ceil() as usize, &label)?;
        let quality = self.judge.score(&imgs)?;
        let row = Row {
            model: family(&cfg.arch).into(),
            label,
            method: method.label().into(),
            detail: method.detail(),
            pattern,
            steps: trained,
            footprint: footprint(&bundle)?,
            quality,
            grid,
            checkpoint,
            weights: weights.into(),
            permutation,
            seconds: started.elapsed().as_secs_f64(),
            sampling_seconds,
            nm_kernel_calls: drawn.calls.0,
            nm_dense_calls: drawn.calls.1,
            preview: imgs.first(compare::ROWS),
        };
        eprintln!(
            "  {:<22} FD-px48 {:>8.4}{}  zeros {:>5.1}%  MACs {:.2} M  sampling {:.1} s{}  ({:.0} s)",
            row.label,
            quality.fd_px,
            quality.fid.map(|f| format!("  FID {f:.2}")).unwrap_or_default(),
            100.0 * row.footprint.sparsity_layers,
            row.footprint.macs / 1e6,
            row.sampling_seconds,
            match (row.nm_kernel_calls, row.nm_dense_calls) {
                (0, 0) => String::new(),
                (k, d) => format!(" ({k} N:M layer calls on the N:M kernels, {d} on the dense GEMM)"),
            },
            row.seconds
        );
        Ok(row)
    }

    /// Prunes the dense checkpoint with Diff-Pruning to `macs` × its MACs,
    /// writes the smaller model to `<slug>_pruned.safetensors` and returns
    /// the run config that fine-tunes it (`train.init` = that file).
    fn diff_prune(&self, slug: &str, macs: f64) -> Result<RunConfig> {
        let opts = crate::diffprune::Options {
            macs,
            batch: DIFF_PRUNING_BATCH,
            pass: sparsedm_diffusion::diffprune::ImportanceOptions {
                max_steps: DIFF_PRUNING_MAX_TIMESTEPS,
                threshold: sparsedm_layers::InformativeSteps::DEFAULT_THRESHOLD,
                stride: DIFF_PRUNING_STRIDE,
            },
        };
        let pruned = crate::diffprune::diff_prune(&self.base, &self.dense, &opts, self.device, || ())?;
        let path = self.out.join(format!("{slug}_pruned.safetensors"));
        pruned.write(&path, &self.dense, &opts)?;
        eprintln!(
            "  {slug}: pruned to {:.1}% of the MACs ({} -> {} parameters, {} importance timesteps)",
            100.0 * pruned.pruned.plan.fraction(),
            pruned.params_before,
            pruned.params_after,
            pruned.pass.losses.len()
        );
        let mut cfg = pruned.run;
        cfg.train.init = Some(path.display().to_string());
        Ok(cfg)
    }

    /// The layers (name and weight layout) that method `a` masks at
    /// `pattern` and method `b` leaves dense, on the dense model: where two
    /// methods' layer sets differ (a layer a policy selects but whose input
    /// width is not a multiple of M, and that has no flat-index grouping,
    /// stays dense).
    pub fn layers_only_in(&self, a: &Method, b: &Method, pattern: NmPattern) -> Result<Vec<String>> {
        let policy = |m: &Method| -> Result<Policy> {
            Ok(m.sparse(Some(pattern), &self.base.arch)?.with_context(|| format!("{} has no layer set", m.label()))?.policy)
        };
        let (pa, pb) = (policy(a)?, policy(b)?);
        let masks = |p: &Policy, name: &str, layout: WeightLayout| match p.select(name, layout, pattern) {
            Selection::Sparse(NonDivisible::LeaveDense) => layout.inp().is_multiple_of(pattern.m()),
            Selection::Sparse(_) => true,
            Selection::Dense(_) => false,
        };
        let bundle = self.load_dense()?;
        let mut only = Vec::new();
        for (name, slot) in bundle.store.sparse_slots() {
            let layout = slot.layout();
            if masks(&pa, &name, layout) && !masks(&pb, &name, layout) {
                only.push(format!("{name} ({layout})"));
            }
        }
        Ok(only)
    }

    /// The dense checkpoint in a model of the base config, on the lab's
    /// device (where every row is sampled).
    fn load_dense(&self) -> Result<Bundle> {
        Ok(build::frozen_model_on(&self.base, &self.dense.display().to_string(), self.device)?)
    }
}

/// The model family of an architecture name, for tables.
pub fn family(arch: &str) -> &'static str {
    if arch == "uvit" { "U-ViT" } else { "DDPM UNet" }
}

/// Runs one training to its end with a progress bar on a terminal (a line
/// per log interval otherwise). A stale run folder is cleared first — unless
/// `resume` and it holds a checkpoint of a run of this same config: then the
/// run continues from its newest one (a finished run is not trained again).
///
/// Where the command installed [`crate::interrupt`] (`repro`), Ctrl-C stops
/// after the step in progress, saves it as a checkpoint and returns
/// [`crate::interrupt::Interrupted`] saying how to continue.
pub fn train_with_progress(cfg: RunConfig, dir: &Path, prefix: &str, device: Device, resume: bool) -> Result<Trainer> {
    let resuming = resume && has_checkpoint(dir);
    if resuming {
        check_same_run(&cfg, dir)?;
    }
    if !resuming && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let n_steps = cfg.train.n_steps;
    let log_every = cfg.train.log_interval.max(1);
    let mut trainer = Trainer::new(cfg, dir, resuming, device)?;
    if resuming {
        eprintln!("  {prefix}resuming {} at step {} of {n_steps}", dir.display(), trainer.step());
    }
    let (bar, terminal) = step_bar(n_steps, trainer.step(), prefix);
    let last = trainer.run_until(None, &crate::interrupt::requested, |m, rate| {
        let msg = format!("loss {:.4} {:.2} steps/s", m.loss, rate);
        bar.set_position(m.step);
        bar.set_message(msg.clone());
        if !terminal && (m.step % log_every == 0 || m.step == n_steps) {
            eprintln!("  {prefix}step {}/{n_steps} {msg}", m.step);
        }
    })?;
    bar.finish_and_clear();
    if crate::interrupt::requested()
        && let Some(m) = last
        && m.step < n_steps
    {
        return Err(crate::interrupt::Interrupted(format!(
            "{} stopped at step {} of {n_steps}, saved as {}; the same command with --resume continues it",
            prefix.trim_end_matches([':', ' ']),
            m.step,
            sparsedm_train::checkpoint::checkpoint_path(dir, m.step).display()
        ))
        .into());
    }
    Ok(trainer)
}

/// Whether `dir` holds a training checkpoint.
fn has_checkpoint(dir: &Path) -> bool {
    sparsedm_train::checkpoint::list_checkpoints(dir).is_ok_and(|c| !c.is_empty())
}

/// Checks that the run in `dir` was made with `cfg` (its `train.n_steps`, `train.save_interval`
/// and `train.precision` may differ: `--steps` sets the first two); another config is an error naming its sections that differ,
/// never a row silently continued from another experiment's run.
fn check_same_run(cfg: &RunConfig, dir: &Path) -> Result<()> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("--resume: cannot read {}", path.display()))?;
    let mut stored = RunConfig::parse(&text, &path.display().to_string(), &[])?;
    // What the command's --steps sets (the budget and the last checkpoint with it) may change.
    stored.train.n_steps = cfg.train.n_steps;
    stored.train.save_interval = cfg.train.save_interval;
    stored.train.precision = cfg.train.precision;
    if stored == *cfg {
        return Ok(());
    }
    let (a, b) = (toml::Value::try_from(&stored)?, toml::Value::try_from(cfg)?);
    let differ: Vec<&String> = match (a.as_table(), b.as_table()) {
        (Some(a), Some(b)) => a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).filter(|k| a.get(*k) != b.get(*k)).collect(),
        _ => Vec::new(),
    };
    let differ: Vec<String> = differ
        .iter()
        .map(|k| if b.get(k.as_str()).is_some_and(toml::Value::is_table) { format!("[{k}]") } else { k.to_string() })
        .collect();
    bail!(
        "--resume: {} is a run of another configuration (its {} differ from this row's): resume in the --out folder of the same command, or start anew with --force",
        dir.display(),
        if differ.is_empty() { "settings".to_string() } else { differ.join(", ") }
    )
}

/// A training progress bar drawn on a terminal (hidden otherwise; callers
/// then print a line per log interval). Returns the bar and whether stderr
/// is a terminal.
pub fn step_bar(n_steps: u64, position: u64, prefix: &str) -> (ProgressBar, bool) {
    let bar = ProgressBar::new(n_steps).with_position(position);
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        let template = format!("{prefix}{{bar:30}} {{pos}}/{{len}} {{msg}} [{{elapsed_precise}}<{{eta_precise}}]");
        bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    (bar, terminal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsedm_diffusion::ModelConfig;

    /// Where SparseDM's and ASP's layer sets differ on the shipped tiny
    /// UNet: SparseDM's (every Conv2d and Linear) also masks the first conv
    /// (3 input channels, flat-index groups) and the last (3 outputs), which
    /// apex's size rule leaves dense; nothing ASP masks is missing from
    /// SparseDM's.
    #[test]
    fn layer_sets_of_sparsedm_and_asp_differ_on_the_thin_unet_layers() {
        let out = sparsedm_testkit::Scratch::new("lab-layersets");
        let base = RunConfig::load(crate::presets::DEMO_UNET_PRESET, &[]).unwrap();
        let dense = out.join("dense_unet.safetensors");
        std::fs::write(&dense, crate::presets::DEMO_UNET_DENSE_CHECKPOINT).unwrap();
        let data = build::dataset(&base).unwrap();
        let lab = Lab {
            out: out.to_path_buf(),
            base: base.clone(),
            dense,
            device: Device::Cpu,
            judge: Judge::new(data.as_ref(), 16, None).unwrap(),
            draw: DrawSpec { n: 1, sampler: base.sample.sampler, steps: 1, seed: 0, clip_denoised: Some(true) },
            resume: false,
        };
        let p = NmPattern::TWO_FOUR;
        let only = lab.layers_only_in(&Method::SparseDm, &Method::Asp, p).unwrap();
        assert_eq!(only, ["conv_in (Conv2d weight [32, 3, 3, 3])", "conv_out (Conv2d weight [3, 32, 3, 3])"]);
        assert!(lab.layers_only_in(&Method::Asp, &Method::SparseDm, p).unwrap().is_empty());
        assert!(lab.layers_only_in(&Method::SparseDmAspLayers, &Method::Asp, p).unwrap().is_empty());
        assert!(lab.layers_only_in(&Method::Dense, &Method::Asp, p).is_err());
        let _ = std::fs::remove_dir_all(&out);
    }

    /// A lab in a fresh temporary folder on a small U-ViT (the demo preset
    /// at width 32, depth 2) from random dense weights: 4 samples of 3
    /// steps a row. Returns the lab, its base run config and its output directory (the lab's
    /// `out`; hold it for the test, whose files it removes when the test passes).
    fn small_uvit_lab(name: &str) -> (Lab, RunConfig, sparsedm_testkit::Scratch) {
        let dir = sparsedm_testkit::Scratch::new(&format!("lab-{name}"));
        let out = dir.to_path_buf();
        let overrides: Vec<String> =
            ["nnet.embed_dim=32", "nnet.depth=2", "nnet.num_heads=2", "train.batch_size=8", "dataset.len=128"].map(String::from).into();
        let base = RunConfig::load(crate::presets::DEMO_PRESET, &overrides).unwrap();
        let dense = out.join("dense.safetensors");
        build::new_model(&base, 1).unwrap().store.save_safetensors(&dense, None).unwrap();
        let data = build::dataset(&base).unwrap();
        let lab = Lab {
            out,
            base: base.clone(),
            dense,
            device: Device::Cpu,
            judge: Judge::new(data.as_ref(), 64, None).unwrap(),
            draw: DrawSpec { n: 4, sampler: base.sample.sampler, steps: 3, seed: 0, clip_denoised: Some(true) },
            resume: false,
        };
        (lab, base, dir)
    }

    /// A Diff-Pruning row on a small U-ViT (the demo preset at width 32,
    /// depth 2, so the 1000-timestep importance pass of a random-init model
    /// is quick): pruned to half the MACs, fine-tuned, sampled and judged.
    #[test]
    fn diff_pruning_row_prunes_fine_tunes_and_samples() {
        let (lab, base, _dir) = small_uvit_lab("diffprune");
        let out = lab.out.clone();
        let row = lab.row("diffpruning", &Method::DiffPruning { macs: 0.5 }, None, 2).unwrap();
        assert_eq!((row.label.as_str(), row.steps, row.weights.as_str()), ("Diff-Pruning", 2, "ema"));
        let dense_macs =
            ModelConfig::from_json(build::arch(&base).unwrap(), &base.nnet_json().unwrap()).unwrap().mac_report(1).paper_total();
        let frac = row.footprint.macs / dense_macs;
        assert!((frac - 0.5).abs() <= sparsedm_diffusion::diffprune::MAC_TOLERANCE, "{frac}");
        assert_eq!(row.footprint.sparsity_layers, 0.0, "a smaller dense model, no masks");
        assert!(row.quality.fd_px.is_finite());
        assert!(out.join("diffpruning_pruned.safetensors").exists() && out.join(&row.checkpoint).exists());
        // The exported model is the pruned one: it loads strictly into the pruned config only.
        let run = sparsedm_train::restore::restore(&out.join(&row.checkpoint), true, None).unwrap();
        assert_eq!(
            run.bundle.store.num_params(),
            build::frozen_model(run.run.as_ref().unwrap(), &out.join("diffpruning_pruned.safetensors").display().to_string())
                .unwrap()
                .store
                .num_params()
        );
        let _ = std::fs::remove_dir_all(&out);
    }

    /// A fine-tuned row resumes only from the dense checkpoint it started from: with another file
    /// at the dense path, `--resume` refuses to continue its training run (its weights descend
    /// from the old one) and says how to go on; without `--resume` the row is made anew.
    #[test]
    fn a_row_does_not_resume_from_another_dense_checkpoint() {
        let (mut lab, base, _dir) = small_uvit_lab("dense-stamp");
        let p = Some(NmPattern::TWO_FOUR);
        lab.row("ste", &Method::Ste, p, 2).unwrap();
        let stamp = std::fs::read_to_string(lab.out.join("runs/ste.dense")).unwrap();
        assert!(stamp.contains("dense.safetensors (") && stamp.contains("FNV-1a"), "{stamp}");
        // Another dense model at the same path.
        build::new_model(&base, 2).unwrap().store.save_safetensors(&lab.dense, None).unwrap();
        lab.resume = true;
        let e = format!("{:#}", lab.row("ste", &Method::Ste, p, 2).unwrap_err());
        assert!(e.contains("ste: its training run") && e.contains("started from another dense checkpoint"), "{e}");
        lab.resume = false;
        lab.row("ste", &Method::Ste, p, 2).unwrap();
        assert_ne!(std::fs::read_to_string(lab.out.join("runs/ste.dense")).unwrap(), stamp, "made anew from the new one");
        // And it resumes (here: is kept) from that one.
        lab.resume = true;
        lab.row("ste", &Method::Ste, p, 2).unwrap();
    }

    /// The untrained-mask row (the ablation's, written without training):
    /// its checkpoint carries the run config with its sparse section, so
    /// it restores without --arch/--config to the masked model it was
    /// judged as (the same N:M layers, masked), and its sampling is timed
    /// with every N:M layer call counted.
    #[test]
    fn untrained_mask_row_writes_a_self_describing_sparse_checkpoint() {
        let (lab, _, _dir) = small_uvit_lab("untrained");
        let out = lab.out.clone();
        let row = lab.row("untrained", &Method::Untrained, Some(NmPattern::TWO_FOUR), 0).unwrap();
        assert_eq!((row.label.as_str(), row.steps, row.weights.as_str()), ("untrained mask 2:4", 0, "checkpoint"));
        // SparseDM's U-ViT layers: qkv, proj, fc1, fc2 of the 2 + 1 blocks (depth 2: one in, the mid, one out).
        let layers = 4 * 3;
        assert_eq!(row.nm_kernel_calls + row.nm_dense_calls, layers * 3, "3 forwards of {layers} N:M layers");
        assert!(row.sampling_seconds > 0.0);
        let restored = sparsedm_train::restore::restore(&out.join(&row.checkpoint), true, None).unwrap();
        let run = restored.run.expect("the run config is in the checkpoint");
        assert!(run.sparse.is_some(), "with its sparse section");
        let (_, spec) = sparsedm_layers::read_sparse_checkpoint(out.join(&row.checkpoint)).unwrap();
        assert_eq!(spec.layers.len(), layers as usize);
        assert!(spec.layers.values().all(|l| l.pattern == "2:4"));
        let _ = std::fs::remove_dir_all(&out);
    }
}
