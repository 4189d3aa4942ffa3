//! A training run: dense pre-training and sparse fine-tuning (SR-STE,
//! STE, ASP's fixed masks, progressive ratios) with optional knowledge
//! transfer from a frozen teacher, AdamW, EMA of the dense weights,
//! atomic rotating checkpoints and exact resumption. The step itself is
//! [`TrainStep`], on the device the run is given; this module feeds it
//! batches and writes logs, samples and checkpoints.
//!
//! Exactness: batch k is a pure function of (seed, k) (see
//! [`crate::data::loader`]); the diffusion noise comes from one Philox
//! stream whose state is checkpointed; dropout draws from a stream derived
//! from (seed, step). So K steps, a checkpoint, a resume and K more steps
//! give the same weights as 2K uninterrupted steps, bit for bit.
//!
//! Devices: the run computes on the device it is given — the step, and the
//! sample grids and FID of its EMA model — at `train.precision` (unset: bf16
//! on a GPU, f32 on the CPU), applied around each piece of work by a
//! [`MatmulScope`]. Checkpoints are written from host copies, so a run
//! started on one device resumes on the other.

use crate::build::{self, Bundle};
use crate::checkpoint::save_train_state;
use crate::config::RunConfig;
use crate::data::{Dataset, Loader, LoaderConfig};
use crate::error::{Result, TrainError};
use crate::precision::MatmulScope;
pub use crate::step::StepMetrics;
use crate::step::TrainStep;
use crate::vocab::Precision;
use sparsedm_diffusion::NoiseSchedule;
use sparsedm_layers::SparsityReport;
use sparsedm_tensor::Device;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A training run.
pub struct Trainer {
    cfg: RunConfig,
    run_dir: PathBuf,
    state: TrainStep,
    /// The matrix-product precision of everything the run computes.
    precision: Precision,
    data: Arc<dyn Dataset>,
    loader: Loader,
    best_fid: Option<f64>,
    /// Inception network and reference statistics, loaded at the first
    /// FID evaluation.
    fid_state: Option<(sparsedm_fid::InceptionV3, sparsedm_fid::FeatureStats)>,
    /// See [`Trainer::resume_notes`].
    resume_notes: Vec<String>,
    /// This process's hold on the run folder (see [`crate::run_lock`]).
    _lock: Arc<crate::run_lock::RunLock>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trainer(step {}, {}, {})", self.step(), self.device(), self.run_dir.display())
    }
}

impl Trainer {
    /// Sets up a run in `run_dir` that trains on `device` (model, teacher,
    /// optimizer state, EMA, batches and noise live there). With `resume`,
    /// continues from the newest checkpoint there, which may have been
    /// written on another device (its config wins over `cfg` except
    /// `train.n_steps` and `train.precision`, which may follow the device).
    ///
    /// # Errors
    /// Besides the setup's own, `train.precision` tf32 or bf16 on the CPU
    /// (before anything is written).
    pub fn new(cfg: RunConfig, run_dir: &Path, resume: bool, device: Device) -> Result<Self> {
        // A folder another process writes is refused before anything is
        // read from it (a new folder is locked once it is made, below).
        let early_lock = crate::run_lock::hold_existing(run_dir)?;
        let mut resume_notes = Vec::new();
        let saved = if resume {
            // The newest usable checkpoint (skipped ones reported); the folder
            // is tidied once the whole setup has succeeded (below).
            let r = crate::resume::newest_loadable(run_dir)?;
            resume_notes.extend(r.skipped);
            resume_notes.push(format!("resuming from {}", r.path.display()));
            Some(r.state)
        } else {
            None
        };
        let cfg = match &saved {
            Some(st) if !st.config_toml.is_empty() => {
                let mut restored = RunConfig::parse(&st.config_toml, "the checkpoint's config", &[])?;
                restored.train.n_steps = cfg.train.n_steps;
                restored.train.precision = cfg.train.precision;
                restored
            }
            _ => cfg,
        };
        let precision = crate::precision::resolve(cfg.train.precision, device, Precision::Bf16, "train.precision")?;
        let state = TrainStep::new(&cfg, device, saved.as_ref())?;
        let data = build::dataset(&cfg)?;
        let (h, w) = data.image_size();
        let [_, mh, mw] = state.student().config.input_shape();
        if (h, w) != (mh, mw) {
            return Err(TrainError::Config(format!("the dataset's images are {w}x{h}, the model expects {mw}x{mh}")));
        }
        crate::validate::check_labels(&cfg, state.student().config.num_classes(), data.num_classes())?;
        // The [fid] files are read now, not at the first evaluation `fid.every` steps in.
        let fid_state = cfg.fid.as_ref().map(|f| load_fid_state(f, device)).transpose()?;
        let step = state.step();
        let loader = Loader::new(data.clone(), loader_config(&cfg), step);
        // Written once everything above is known to work, so a refused
        // setup leaves the disk as it was: no half-made run, and no new
        // empty run folder either.
        std::fs::create_dir_all(run_dir).map_err(|e| TrainError::Data { path: run_dir.into(), msg: e.to_string() })?;
        let lock = match early_lock {
            Some(lock) => lock,
            None => crate::run_lock::hold(run_dir)?,
        };
        if resume {
            // Hygiene: orphan temporaries removed, metrics cut back to the step resumed from.
            resume_notes.extend(crate::resume::clean_orphans(run_dir).iter().map(|p| format!("removed the orphan {}", p.display())));
            let cut = crate::resume::truncate_metrics(run_dir, step)?;
            if cut > 0 {
                resume_notes.push(format!("cut {cut} rows past step {step} from metrics.jsonl"));
            }
        }
        sparsedm_tensor::write_atomic(run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        Ok(Trainer {
            cfg,
            run_dir: run_dir.to_path_buf(),
            state,
            precision,
            data,
            loader,
            best_fid: saved.and_then(|s| s.best_fid),
            fid_state,
            resume_notes,
            _lock: lock,
        })
    }

    /// What resuming did to the run folder (checkpoints skipped, orphans
    /// removed, metrics rows cut), one line each; empty for a new run.
    pub fn resume_notes(&self) -> &[String] {
        &self.resume_notes
    }

    pub fn step(&self) -> u64 {
        self.state.step()
    }
    /// Where the run trains.
    pub fn device(&self) -> Device {
        self.state.device()
    }
    /// The precision of the run's matrix products (`train.precision`
    /// resolved for the device).
    pub fn precision(&self) -> Precision {
        self.precision
    }
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
    pub fn student(&self) -> &Bundle {
        self.state.student()
    }
    pub fn schedule(&self) -> &dyn NoiseSchedule {
        self.state.schedule()
    }
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.data
    }
    /// The sparsity report from the start of the run (sparse runs).
    pub fn sparsity_report(&self) -> Option<&SparsityReport> {
        self.state.sparsity_report()
    }

    /// ASP's channel permutations made at the start of this run, if any.
    pub fn permutation_report(&self) -> Option<&sparsedm_layers::PermutationReport> {
        self.state.permutation_report()
    }

    /// One optimizer step on the next batch (see [`TrainStep::run`]).
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let batch = self.loader.next_batch()?;
        let _p = MatmulScope::enter(self.precision);
        self.state.run(&batch)
    }

    /// Writes a checkpoint of the current state (atomic; old ones rotated),
    /// on the host whatever the run's device.
    pub fn save(&self) -> Result<PathBuf> {
        let mut st = self.state.state()?;
        st.config_toml = self.cfg.to_toml()?;
        st.best_fid = self.best_fid;
        save_train_state(&self.run_dir, &st, self.cfg.train.keep_last)
    }

    /// A model holding the EMA weights, with the student's sparsity, in
    /// evaluation mode: what exports, samples and FID use. It lives on the
    /// run's device (sampling noise is drawn on the host and moved there).
    pub fn ema_model(&self) -> Result<Bundle> {
        let b = build::new_model_on(&self.cfg, self.cfg.seed, self.device())?;
        b.store.load_tensors("EMA weights", self.state.ema_tensors().to_vec(), |_| false)?;
        if let Some(s) = &self.cfg.sparse {
            match self.state.progressive() {
                Some((p, kind)) => {
                    p.apply(0, &b.store, |pat| kind.with_pattern(pat))?;
                    p.apply(self.step(), &b.store, |pat| kind.with_pattern(pat))?;
                }
                None => {
                    build::sparsify(&b.store, s)?;
                }
            }
        }
        b.store.set_training(false);
        Ok(b)
    }

    /// Writes a model checkpoint (same tensor names as the reference
    /// `state_dict()`): the EMA weights by default, else the raw student.
    /// Sparse runs write deployed weights (zeros where pruned) plus the
    /// sparsity spec, verified N:M on load.
    pub fn export_model(&self, path: &Path, use_ema: bool) -> Result<()> {
        let owned;
        let b = if use_ema {
            owned = self.ema_model()?;
            &owned
        } else {
            self.state.student()
        };
        let meta = crate::checkpoint::model_metadata(&self.cfg, Some(self.step()))?;
        if self.cfg.sparse.is_some() {
            sparsedm_layers::save_sparse_checkpoint(&b.store, path, Some(meta))?;
        } else {
            b.store.save_safetensors(path, Some(meta))?;
        }
        Ok(())
    }

    /// Runs until `train.n_steps` (or `stop_at`), logging, sampling and
    /// checkpointing at the configured intervals. `on_step` sees every
    /// step's metrics (progress bars, tests).
    pub fn run(&mut self, stop_at: Option<u64>, on_step: impl FnMut(&StepMetrics, f64)) -> Result<Option<StepMetrics>> {
        self.run_until(stop_at, &|| false, on_step)
    }

    /// [`Trainer::run`] that also ends early, after the step in progress, once `stop` says so
    /// (Ctrl-C in `sparsedm train`): a checkpoint of that step is saved, as at the end of a run,
    /// so `--resume` continues from it and no finished step is lost.
    pub fn run_until(
        &mut self,
        stop_at: Option<u64>,
        stop: &dyn Fn() -> bool,
        mut on_step: impl FnMut(&StepMetrics, f64),
    ) -> Result<Option<StepMetrics>> {
        let end = stop_at.unwrap_or(self.cfg.train.n_steps).min(self.cfg.train.n_steps);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run_dir.join("metrics.jsonl"))
            .map_err(|e| TrainError::Data { path: self.run_dir.join("metrics.jsonl"), msg: e.to_string() })?;
        let mut last = None;
        let started = Instant::now();
        let first = self.step();
        while self.step() < end {
            let m = self.train_step()?;
            let step = m.step;
            let rate = (step - first) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            on_step(&m, rate);
            if step.is_multiple_of(self.cfg.train.log_interval.max(1)) || step == end {
                let mut line = serde_json::to_value(m).map_err(|e| TrainError::Config(e.to_string()))?;
                line["steps_per_s"] = serde_json::json!(rate);
                writeln!(log, "{line}").map_err(|e| TrainError::Data { path: self.run_dir.join("metrics.jsonl"), msg: e.to_string() })?;
            }
            if self.cfg.train.sample_interval > 0 && step.is_multiple_of(self.cfg.train.sample_interval) {
                self.sample_grid()?;
            }
            // Every `fid.every` steps and at the run's last step (U-ViT's final evaluation), so a
            // run shorter than `fid.every` still gets its FID and best.safetensors.
            if let Some(every) = self.cfg.fid.as_ref().map(|f| f.every.max(1))
                && (step.is_multiple_of(every) || step == self.cfg.train.n_steps)
            {
                let fid = self.evaluate_fid()?;
                let line = serde_json::json!({"step": step, "fid": fid, "best_fid": self.best_fid});
                writeln!(log, "{line}").map_err(|e| TrainError::Data { path: self.run_dir.join("metrics.jsonl"), msg: e.to_string() })?;
            }
            let stopping = step != end && stop();
            if step.is_multiple_of(self.cfg.train.save_interval.max(1)) && step != end && !stopping {
                self.save()?;
            }
            last = Some(m);
            if stopping {
                break;
            }
        }
        if last.is_some() {
            self.save()?;
        }
        Ok(last)
    }

    /// FID of the EMA model against the configured reference statistics
    /// (`fid.n_samples` images with `fid.sampler`/`fid.steps`), sampled at
    /// the run's precision, the features extracted in f32 (on the run's device). A new best
    /// is kept as `best.safetensors` (the EMA model) in the run folder.
    pub fn evaluate_fid(&mut self) -> Result<f64> {
        let f = self.cfg.fid.clone().ok_or_else(|| TrainError::Config("no [fid] section in the run config".into()))?;
        if self.fid_state.is_none() {
            self.fid_state = Some(load_fid_state(&f, self.device())?);
        }
        let ema = self.ema_model()?;
        let req = crate::samples::SampleRequest {
            n: f.n_samples,
            batch: 64,
            shape: ema.config.input_shape(),
            sampler: f.sampler,
            steps: f.steps,
            seed: self.cfg.seed ^ 0xF1D,
            labels: self.labels(false),
            cfg_scale: self.cfg.sample.cfg_scale,
            num_classes: ema.config.num_classes(),
            clip_denoised: self.cfg.sample.clip_denoised,
            device: self.device(),
        };
        let imgs = {
            let _p = MatmulScope::enter(self.precision);
            crate::samples::generate(ema.model.as_ref(), self.schedule(), &req, |_| {})?
        };
        let (net, reference) = self.fid_state.as_ref().ok_or_else(|| TrainError::Config("FID state".into()))?;
        let opts = sparsedm_fid::ExtractOptions { progress: sparsedm_fid::Progress::Hidden, ..Default::default() };
        // InceptionV3 in f32 whatever the run's precision, as pytorch-fid computes it.
        let stats = {
            let _p = MatmulScope::enter(Precision::F32);
            sparsedm_fid::extract_features(net, &imgs, &opts)?.stats()?
        };
        let fid = sparsedm_fid::frechet_distance(&stats, reference)?;
        if self.best_fid.is_none_or(|b| fid < b) {
            self.best_fid = Some(fid);
            self.export_model(&self.run_dir.join("best.safetensors"), true)?;
        }
        Ok(fid)
    }

    /// The labels the run's samples use: none for an unconditional model; for a
    /// class-conditional one the dataset's labels, in turn for a preview `grid` (every class
    /// shown), else drawn uniformly (U-ViT's FID evaluation).
    fn labels(&self, grid: bool) -> crate::samples::Labels {
        use crate::samples::Labels;
        let classes = self.data.num_classes();
        match self.state.student().config.num_classes() {
            None => Labels::None,
            Some(_) if grid => Labels::Cycle { classes },
            Some(_) => Labels::Uniform { classes },
        }
    }

    /// Writes `samples/step_XXXXXXXX.png` from the EMA model.
    pub fn sample_grid(&self) -> Result<PathBuf> {
        let _p = MatmulScope::enter(self.precision);
        let ema = self.ema_model()?;
        let s = &self.cfg.sample;
        let req = crate::samples::SampleRequest {
            n: s.grid,
            batch: s.grid,
            shape: ema.config.input_shape(),
            sampler: s.sampler,
            steps: s.steps,
            seed: self.cfg.seed,
            labels: self.labels(true),
            cfg_scale: self.cfg.sample.cfg_scale,
            num_classes: ema.config.num_classes(),
            clip_denoised: s.clip_denoised,
            device: self.device(),
        };
        let imgs = crate::samples::generate(ema.model.as_ref(), self.schedule(), &req, |_| {})?;
        let path = self.run_dir.join("samples").join(format!("step_{:08}.png", self.step()));
        let cols = (s.grid as f64).sqrt().ceil() as usize;
        match crate::samples::drawn_labels(&req)? {
            // A class-conditional model's preview shows each sample's class.
            Some(classes) => crate::samples::write_class_grid_png(&path, &imgs, cols, "", &classes)?,
            None => crate::samples::write_grid_png(&path, &imgs, cols)?,
        }
        Ok(path)
    }
}

/// The InceptionV3 weights and reference statistics of a run's `[fid]` section, on `device`;
/// an error names the key whose file is missing or broken.
fn load_fid_state(f: &crate::config::FidConfig, device: Device) -> Result<(sparsedm_fid::InceptionV3, sparsedm_fid::FeatureStats)> {
    let named = |key: &str, path: &str, e: TrainError| TrainError::Config(format!("{key} = {path:?}: {e}"));
    let net = sparsedm_fid::InceptionV3::load(&f.inception, &device).map_err(|e| named("fid.inception", &f.inception, e.into()))?;
    let reference = sparsedm_fid::read_stats_npz(&f.reference).map_err(|e| named("fid.reference", &f.reference, e.into()))?;
    if reference.dim() != sparsedm_fid::POOL3_DIM {
        return Err(TrainError::Config(format!(
            "fid.reference = {:?}: statistics of {}-d features, InceptionV3's pool features are {}-d",
            f.reference,
            reference.dim(),
            sparsedm_fid::POOL3_DIM
        )));
    }
    Ok((net, reference))
}

fn loader_config(cfg: &RunConfig) -> LoaderConfig {
    LoaderConfig { batch_size: cfg.train.batch_size, seed: cfg.seed, random_flip: cfg.dataset.random_flip, prefetch: 2 }
}
