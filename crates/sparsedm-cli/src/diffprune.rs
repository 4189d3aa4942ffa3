//! Diff-Pruning of a dense checkpoint, as `sparsedm prune --method
//! diff-pruning` and the lab's Diff-Pruning row run it: the importance
//! batch from the run config's dataset, the informative-timestep Taylor
//! pass and the structural pruning to a MAC target
//! (`sparsedm_diffusion::diffprune`), and the smaller dense model written
//! with a run config that describes it.
//!
//! The written safetensors file holds the pruned model's tensors (state-dict
//! names, f32) and, in its metadata, the run config with the pruned widths
//! in `nnet` (`sparsedm.config`, what `sparsedm sample`/`inspect` read), the
//! MAC counts and the pass's numbers (`sparsedm.prune.*`). Beside it, a run
//! config TOML with `train.init` pointing at it fine-tunes the pruned model
//! with `sparsedm train --config`.

use anyhow::{Context, Result, bail};
use sparsedm_diffusion::ModelConfig;
use sparsedm_diffusion::diffprune::{ImportanceOptions, ImportancePass, Pruned, check_importance_options, importance_pass, prune_to_macs};
use sparsedm_tensor::{Device, Rng, Tensor, load_weights_metadata, save_safetensors};
use sparsedm_train::RunConfig;
use sparsedm_train::build;
use sparsedm_train::checkpoint::{META_CONFIG, META_KIND};
use sparsedm_train::data::loader::{LoaderConfig, make_batch};
use sparsedm_train::restore::restore_on;
use std::collections::HashMap;
use std::path::Path;

/// The importance batch of the reference's CelebA scripts (`--taylor_batch_size 64`).
pub const DEFAULT_BATCH: usize = 64;

/// What to prune to and how to measure importance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Target MACs as a fraction of the dense model's, in (0, 1).
    pub macs: f64,
    /// Images in the importance batch.
    pub batch: usize,
    /// The Taylor pass: at most this many timesteps and the stopping threshold.
    pub pass: ImportanceOptions,
}

/// A pruned model with its run config and what the pass measured.
pub struct DiffPruned {
    pub pruned: Pruned,
    /// The base run config with `nnet` = the pruned model's widths (no
    /// `train.init`, no `[sparse]` section).
    pub run: RunConfig,
    pub pass: ImportancePass,
    /// Parameters before and after.
    pub params_before: usize,
    pub params_after: usize,
}

/// `base` describing the model `cfg` (its constructor arguments as `nnet`),
/// dense, with no starting checkpoint.
pub fn run_config_for(base: &RunConfig, cfg: &ModelConfig) -> Result<RunConfig> {
    let nnet = match cfg {
        ModelConfig::UViT(c) => toml::Table::try_from(c),
        ModelConfig::DdpmUNet(c) => toml::Table::try_from(c),
    }
    .context("the pruned model's config as TOML")?;
    let mut run = base.clone();
    run.arch = cfg.arch().name().to_string();
    run.nnet = nnet;
    run.sparse = None;
    run.train.init = None;
    run.validate()?;
    Ok(run)
}

/// Loads `weights` (a model checkpoint, strictly, into the model of `run`;
/// or a training checkpoint of that model, its EMA weights), measures the
/// importance on one batch of `run`'s dataset and prunes to `opts.macs`.
/// A sparse run config or a checkpoint carrying N:M masks is refused:
/// Diff-Pruning starts from a dense model.
///
/// The model, the batch and the noise live on `device`, so the pass's
/// forwards and backwards run there through the same model code as on the
/// CPU; the batch and the noise are drawn on the host (the same values on
/// every device), and the scores and the slicing are computed on host
/// copies of the weights and gradients. `announce` is called once every
/// input has been checked, right before the pass (where `prune --device
/// auto` says which device computes), so a refused input stays one line.
pub fn diff_prune(run: &RunConfig, weights: &Path, opts: &Options, device: Device, announce: impl FnOnce()) -> Result<DiffPruned> {
    sparsedm_diffusion::diffprune::check_mac_target(opts.macs)?;
    if run.sparse.is_some() {
        bail!("diff-pruning starts from a dense model: the run config has a [sparse] section; remove it");
    }
    if opts.batch == 0 {
        bail!("the importance batch must hold at least one image");
    }
    let bundle = load_dense(run, weights, device)?;
    let data = build::dataset(run)?;
    let [c, h, w] = bundle.config.input_shape();
    let (dh, dw) = data.image_size();
    if (dh, dw) != (h, w) || c != 3 {
        bail!("the dataset gives 3×{dh}×{dw} images, the model takes {c}×{h}×{w}");
    }
    let loader = LoaderConfig { batch_size: opts.batch, seed: run.seed, random_flip: false, prefetch: 1 };
    let batch = make_batch(data.as_ref(), &loader, 0)?;
    let labels = if bundle.config.num_classes().is_some() { batch.labels.clone() } else { None };
    if bundle.config.num_classes().is_some() && labels.is_none() {
        bail!("the model is class-conditional but dataset {:?} has no labels", run.dataset.name);
    }
    let noise = Tensor::randn(batch.images.shape(), &mut Rng::new(run.seed ^ 0x4449_4646), &Device::Cpu)?.to_device(&device)?;
    let images = batch.images.to_device(&device)?;
    let labels = labels.map(|l| l.to_device(&device)).transpose()?;
    let schedule = build::schedule(run)?;
    check_importance_options(schedule.as_ref(), opts.pass)?;
    // The MAC plan is analytic: a model that cannot reach the target fails here, before the pass.
    sparsedm_diffusion::diffprune::plan_for_macs(&bundle.config, opts.macs)?;
    announce();
    let pass = importance_pass(bundle.model.as_ref(), &bundle.store, schedule.as_ref(), &images, labels.as_ref(), &noise, opts.pass)?;
    let pruned = prune_to_macs(&bundle.config, &bundle.store, &pass.grads, opts.macs)?;
    let params_after = pruned.tensors.iter().map(|(_, t)| t.shape().iter().product::<usize>()).sum();
    let out_run = run_config_for(run, &pruned.config)?;
    Ok(DiffPruned { params_before: bundle.store.num_params(), params_after, run: out_run, pruned, pass })
}

/// The dense model to prune: a training checkpoint's EMA weights (the
/// reference prunes the EMA model), whose stored model must be the run
/// config's; or a model checkpoint loaded strictly into the run config's model.
fn load_dense(run: &RunConfig, weights: &Path, device: Device) -> Result<build::Bundle> {
    let meta = load_weights_metadata(weights)?;
    if meta.get(META_KIND).map(String::as_str) == Some("train-state") {
        let stored = match meta.get(META_CONFIG) {
            Some(text) => Some(RunConfig::parse(text, "the checkpoint's run config", &[])?),
            None => None,
        };
        if stored.as_ref().is_some_and(|s| s.sparse.is_some()) {
            bail!("{} is a checkpoint of a sparse run: diff-pruning starts from a dense model", weights.display());
        }
        let restored = restore_on(weights, true, None, device)?;
        let wanted = ModelConfig::from_json(build::arch(run)?, &run.nnet_json()?)?;
        if restored.bundle.config != wanted {
            bail!(
                "{} holds a different {} model than the run config describes: give the run config it was trained with",
                weights.display(),
                restored.bundle.config.arch()
            );
        }
        return Ok(restored.bundle);
    }
    if let Some(json) = meta.get(sparsedm_layers::SPARSITY_METADATA_KEY) {
        let spec = sparsedm_layers::SparsitySpec::from_json(json, &weights.display().to_string())?;
        if !spec.layers.is_empty() {
            bail!(
                "{} is an N:M sparse checkpoint ({} sparse layers): diff-pruning starts from a dense model",
                weights.display(),
                spec.layers.len()
            );
        }
    }
    build::frozen_model_on(run, &weights.display().to_string(), device)
        .with_context(|| format!("loading {} into the {} model of the run config", weights.display(), run.arch))
}

impl DiffPruned {
    /// Writes the pruned model to `path` (atomically) with its run config
    /// and the pruning record in the metadata; `source` names the dense checkpoint.
    pub fn write(&self, path: &Path, source: &Path, opts: &Options) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert(META_CONFIG.to_string(), self.run.to_toml()?);
        meta.insert("sparsedm.prune.method".into(), "diff-pruning".into());
        meta.insert("sparsedm.prune.source".into(), source.display().to_string());
        meta.insert("sparsedm.prune.macs_target".into(), opts.macs.to_string());
        meta.insert("sparsedm.prune.macs_before".into(), self.pruned.plan.macs_before.to_string());
        meta.insert("sparsedm.prune.macs_after".into(), self.pruned.plan.macs_after.to_string());
        meta.insert("sparsedm.prune.timesteps".into(), self.pass.losses.len().to_string());
        meta.insert("sparsedm.prune.threshold".into(), opts.pass.threshold.to_string());
        meta.insert("sparsedm.prune.batch".into(), opts.batch.to_string());
        save_safetensors(path, &self.pruned.tensors, Some(meta)).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Human-readable lines: MACs and parameters before and after, the pass, and each group's width.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let p = &self.pruned.plan;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "MACs {:.4} G -> {:.4} G ({:.1}% of dense; uniform ratio {:.3})",
            p.macs_before / 1e9,
            p.macs_after / 1e9,
            100.0 * p.fraction(),
            p.ratio
        );
        let _ = writeln!(s, "parameters {} -> {}", self.params_before, self.params_after);
        let stop = match self.pass.stopped_at {
            Some((k, loss)) => format!("stopped at timestep {k} (loss {loss:.4} < threshold × max)"),
            None => "reached the timestep limit".into(),
        };
        let max = self.pass.losses.iter().copied().fold(0f64, f64::max);
        let _ = writeln!(s, "importance: gradients of {} timesteps (max loss {max:.4}), {stop}", self.pass.losses.len());
        let _ = writeln!(s, "{:<28} {:>10} {:>10}", "group", "before", "after");
        for g in &self.pruned.groups {
            let unit = if g.unit_width > 1 { format!(" heads of {}", g.unit_width) } else { String::new() };
            let _ = writeln!(s, "{:<28} {:>10} {:>10}{unit}", g.name, g.units, g.kept);
        }
        s
    }
}
