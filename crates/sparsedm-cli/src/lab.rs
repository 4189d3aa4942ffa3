//! The experiment bench shared by `sparsedm demo` and `sparsedm repro`:
//! fine-tune a dense checkpoint with one method (SparseDM, STE, ASP,
//! progressive), or prune it without training (untrained masks), or train
//! a model from scratch; then sample it and measure one table row — zeros,
//! MACs, FD-px (and FID with Inception weights) — with every row judged
//! against the same real images and drawn from the same noise.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sparsedm_train::build::{self, Bundle};
use sparsedm_train::experiment::{DrawSpec, Footprint, Judge, Quality, draw, footprint};
use sparsedm_train::figures::compare;
use sparsedm_train::samples::{Images, write_labelled_grid_png};
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
    Progressive(String),
    /// A model trained from random init with the given config overrides (e.g. the half-size U-ViT).
    Scratch { label: &'static str, sets: Vec<String> },
}

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
        }
    }

    /// One line on what the method does.
    pub fn detail(&self) -> String {
        match self {
            Method::Dense => "the dense pre-trained model (no pruning)".into(),
            Method::SparseDm => "SR-STE (λ = 2e-4) + knowledge transfer from the dense model (loss = ε-MSE + 0.1·teacher-MSE)".into(),
            Method::Ste => "straight-through estimator, masks recomputed every step, plain ε-MSE".into(),
            Method::Asp => {
                "apex ASP: one-shot magnitude masks on ASP's layers (out % 8 = 0, in % 16 = 0), kept fixed while fine-tuning".into()
            }
            Method::Untrained => "magnitude masks applied to the dense weights, no training".into(),
            Method::Progressive(stages) => format!("progressive sparsity {stages} (SR-STE masks, plain ε-MSE)"),
            Method::Scratch { sets, .. } => format!("trained from random init ({})", sets.join(", ")),
        }
    }

    /// Config overrides that turn the dense preset into this method's fine-tuning run.
    fn overrides(&self, pattern: &str) -> Vec<String> {
        let p = format!("sparse.pattern={pattern:?}");
        let v = |xs: &[&str]| -> Vec<String> { std::iter::once(p.clone()).chain(xs.iter().map(|s| s.to_string())).collect() };
        match self {
            Method::SparseDm => v(&["sparse.method=\"srste\"", "sparse.lambda=2e-4", "sparse.teacher=\"init\"", "sparse.w_kt=0.1"]),
            Method::Ste => v(&["sparse.method=\"ste\"", "sparse.teacher=\"none\""]),
            Method::Asp => v(&["sparse.method=\"fixed\"", "sparse.policy=\"asp\"", "sparse.teacher=\"none\""]),
            Method::Untrained => v(&["sparse.method=\"fixed\"", "sparse.teacher=\"none\""]),
            Method::Progressive(stages) => {
                v(&["sparse.method=\"progressive\"", "sparse.teacher=\"none\"", &format!("sparse.progressive={stages:?}")])
            }
            Method::Dense | Method::Scratch { .. } => Vec::new(),
        }
    }
}

/// One measured row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
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
    pub seconds: f64,
    /// The first samples (the same noise in every row), for the comparison figure.
    #[serde(skip)]
    pub preview: Images,
}

/// Where and how rows are made.
pub struct Lab {
    pub out: PathBuf,
    /// The preset (or TOML file) of the dense model.
    pub preset: String,
    /// Overrides applied to every run (e.g. the fine-tuning learning rate).
    pub base_sets: Vec<String>,
    /// The dense starting checkpoint (a model safetensors file).
    pub dense: PathBuf,
    pub judge: Judge,
    pub draw: DrawSpec,
}

impl Lab {
    /// Makes one row: trains (unless the method needs no training), samples, scores, exports.
    pub fn row(&self, slug: &str, method: &Method, pattern: &str, steps: u64) -> Result<Row> {
        let started = Instant::now();
        let grid = format!("samples_{slug}.png");
        let checkpoint = format!("{slug}.safetensors");
        // Trained rows are evaluated on the trainer's own model (its slots carry the
        // masks, so MACs and zeros are the deployed ones); the others on a loaded copy.
        let (loaded, trainer, cfg, trained) = match method {
            Method::Dense => (Some(self.load_dense(&[])?), None, RunConfig::load(&self.preset, &self.base_sets)?, 0),
            Method::Untrained => {
                let cfg = RunConfig::load(&self.preset, &self.sets(method.overrides(pattern)))?;
                let b = self.load_dense(&[])?;
                let sparse = cfg.sparse.as_ref().context("the untrained-mask run has a [sparse] section")?;
                build::sparsify(&b.store, sparse)?;
                (Some(b), None, cfg, 0)
            }
            _ => {
                let mut sets = self.sets(method.overrides(pattern));
                sets.push(format!("train.n_steps={steps}"));
                sets.push("train.sample_interval=0".into());
                sets.push(format!("train.save_interval={}", steps.max(1)));
                match method {
                    Method::Scratch { sets: extra, .. } => sets.extend(extra.iter().cloned()),
                    _ => sets.push(format!("train.init={:?}", self.dense.display().to_string())),
                }
                let cfg = RunConfig::load(&self.preset, &sets)?;
                let t = train_with_progress(cfg.clone(), &self.out.join("runs").join(slug), &format!("{slug}: "))?;
                t.export_model(&self.out.join(&checkpoint), false)?;
                (None, Some(t), cfg, steps)
            }
        };
        let bundle = match (&loaded, &trainer) {
            (Some(b), _) => b,
            (None, Some(t)) => t.student(),
            (None, None) => unreachable!("every method loads or trains a model"),
        };
        bundle.store.set_training(false);
        if loaded.is_some() {
            let path = self.out.join(&checkpoint);
            if cfg.sparse.is_some() {
                sparsedm_layers::save_sparse_checkpoint(&bundle.store, &path, None)?;
            } else {
                bundle.store.save_safetensors(&path, None)?;
            }
        }
        let schedule = build::schedule(&cfg)?;
        let imgs = draw(bundle, schedule.as_ref(), &self.draw)?;
        let label = format!("{} {}", method.label(), if pattern == "dense" { "" } else { pattern }).trim().to_string();
        write_labelled_grid_png(&self.out.join(&grid), &imgs, (imgs.n as f64).sqrt().ceil() as usize, &label)?;
        let quality = self.judge.score(&imgs)?;
        let row = Row {
            label,
            method: method.label().into(),
            detail: method.detail(),
            pattern: pattern.into(),
            steps: trained,
            footprint: footprint(bundle)?,
            quality,
            grid,
            checkpoint,
            seconds: started.elapsed().as_secs_f64(),
            preview: imgs.first(compare::ROWS),
        };
        eprintln!(
            "  {:<22} FD-px48 {:>8.4}{}  zeros {:>5.1}%  MACs {:.2} M  ({:.0} s)",
            row.label,
            quality.fd_px,
            quality.fid.map(|f| format!("  FID {f:.2}")).unwrap_or_default(),
            100.0 * row.footprint.sparsity_layers,
            row.footprint.macs / 1e6,
            row.seconds
        );
        Ok(row)
    }

    fn sets(&self, extra: Vec<String>) -> Vec<String> {
        self.base_sets.iter().cloned().chain(extra).collect()
    }

    fn load_dense(&self, extra: &[String]) -> Result<Bundle> {
        let cfg = RunConfig::load(&self.preset, &self.sets(extra.to_vec()))?;
        let b = build::frozen_model(&cfg, &self.dense.display().to_string())?;
        Ok(b)
    }
}

/// Runs one training to its end with a progress bar on a terminal (a line
/// per log interval otherwise). A stale run folder is cleared first.
pub fn train_with_progress(cfg: RunConfig, dir: &Path, prefix: &str) -> Result<Trainer> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let n_steps = cfg.train.n_steps;
    let log_every = cfg.train.log_interval.max(1);
    let mut trainer = Trainer::new(cfg, dir, false)?;
    let (bar, terminal) = step_bar(n_steps, 0, prefix);
    trainer.run(None, |m, rate| {
        let msg = format!("loss {:.4} {:.2} steps/s", m.loss, rate);
        bar.set_position(m.step);
        bar.set_message(msg.clone());
        if !terminal && (m.step % log_every == 0 || m.step == n_steps) {
            eprintln!("  {prefix}step {}/{n_steps} {msg}", m.step);
        }
    })?;
    bar.finish_and_clear();
    Ok(trainer)
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
