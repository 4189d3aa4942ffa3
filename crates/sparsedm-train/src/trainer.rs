//! The training loop: dense pre-training and sparse fine-tuning (SR-STE,
//! STE, ASP's fixed masks, progressive ratios) with optional knowledge
//! transfer from a frozen teacher, AdamW, EMA of the masked weights,
//! atomic rotating checkpoints and exact resumption.
//!
//! Exactness: batch k is a pure function of (seed, k) (see
//! [`crate::data::loader`]); the diffusion noise comes from one Philox
//! stream whose state is checkpointed; dropout draws from a stream derived
//! from (seed, step). So K steps, a checkpoint, a resume and K more steps
//! give the same weights as 2K uninterrupted steps, bit for bit.

use crate::build::{self, Bundle};
use crate::checkpoint::{TrainState, save_train_state};
use crate::config::RunConfig;
use crate::data::{Dataset, Loader, LoaderConfig};
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::grad::{accumulate, clip_global_norm, global_norm};
use crate::lr::LrSchedule;
use crate::optim::{AdamW, AdamWConfig};
use sparsedm_diffusion::NoiseSchedule;
use sparsedm_layers::{KtLoss, ProgressiveSchedule, SparsityReport, SparsitySpec};
use sparsedm_tensor::{GradStore, Rng, Tensor, no_grad};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What one optimizer step measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f32,
    pub loss_diffusion: f32,
    pub loss_transfer: Option<f32>,
    pub lr: f32,
    pub grad_norm: f32,
}

/// A training run.
pub struct Trainer {
    cfg: RunConfig,
    run_dir: PathBuf,
    student: Bundle,
    teacher: Option<Bundle>,
    schedule: Box<dyn NoiseSchedule>,
    data: Arc<dyn Dataset>,
    loader: Loader,
    opt: AdamW,
    lr: LrSchedule,
    ema: Ema,
    kt: KtLoss,
    progressive: Option<ProgressiveSchedule>,
    params: Vec<(String, Tensor)>,
    rng: Rng,
    step: u64,
    best_fid: Option<f64>,
    report: Option<SparsityReport>,
    /// Inception network and reference statistics, loaded at the first
    /// FID evaluation.
    fid_state: Option<(sparsedm_fid::InceptionV3, sparsedm_fid::FeatureStats)>,
    /// See [`Trainer::resume_notes`].
    resume_notes: Vec<String>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trainer(step {}, {})", self.step, self.run_dir.display())
    }
}

impl Trainer {
    /// Sets up a run in `run_dir`. With `resume`, continues from the newest
    /// checkpoint there (its config wins over `cfg` except `train.n_steps`).
    pub fn new(cfg: RunConfig, run_dir: &Path, resume: bool) -> Result<Self> {
        std::fs::create_dir_all(run_dir).map_err(|e| TrainError::Data { path: run_dir.into(), msg: e.to_string() })?;
        let mut resume_notes = Vec::new();
        let state = if resume {
            // The newest usable checkpoint (skipped ones reported); the folder
            // is tidied once the whole setup has succeeded (below).
            let r = crate::resume::newest_loadable(run_dir)?;
            resume_notes.extend(r.skipped);
            resume_notes.push(format!("resuming from {}", r.path.display()));
            Some(r.state)
        } else {
            None
        };
        let cfg = match &state {
            Some(st) if !st.config_toml.is_empty() => {
                let mut saved = RunConfig::parse(&st.config_toml, "the checkpoint's config", &[])?;
                saved.train.n_steps = cfg.train.n_steps;
                saved
            }
            _ => cfg,
        };

        let student = build::new_model(&cfg, cfg.seed)?;
        match &state {
            Some(st) => student.store.load_tensors("checkpoint model.*", st.model.clone(), |_| false)?,
            None => {
                if let Some(init) = &cfg.train.init {
                    sparsedm_diffusion::load_checkpoint(&student.store, init)?;
                }
            }
        }
        let (report, progressive, kt, teacher) = match &cfg.sparse {
            None => (None, None, KtLoss::new(1.0, 0.0)?, None),
            Some(s) => {
                let (report, progressive) = build::sparsify(&student.store, s)?;
                let teacher = match s.teacher.as_str() {
                    "none" => None,
                    "init" => {
                        let init = cfg.train.init.as_deref().ok_or_else(|| {
                            TrainError::Config("sparse.teacher = \"init\" needs train.init (the dense starting checkpoint)".into())
                        })?;
                        Some(build::frozen_model(&cfg, init)?)
                    }
                    path => Some(build::frozen_model(&cfg, path)?),
                };
                let w_kt = if teacher.is_some() { s.w_kt } else { 0.0 };
                (Some(report), progressive, KtLoss::new(s.w_diff, w_kt)?, teacher)
            }
        };
        let step = state.as_ref().map_or(0, |s| s.step);
        if let (Some(p), Some(s)) = (&progressive, &cfg.sparse) {
            // On resume, put the stage of the current step in place.
            p.apply(step, &student.store, build::mode_builder(s))?;
        }
        let params = student.store.params();
        let o = &cfg.optimizer;
        let mut opt = AdamW::new(params.clone(), AdamWConfig { lr: o.lr, betas: o.betas, eps: o.eps, weight_decay: o.weight_decay });
        let lr = match cfg.lr_scheduler.name.as_str() {
            "customized" => LrSchedule::WarmupConstant { warmup: cfg.lr_scheduler.warmup_steps },
            "cosine" => LrSchedule::WarmupCosine {
                warmup: cfg.lr_scheduler.warmup_steps,
                total: cfg.train.n_steps,
                min_factor: cfg.lr_scheduler.min_factor,
            },
            "constant" => LrSchedule::Constant,
            other => return Err(TrainError::Config(format!("lr_scheduler.name {other:?}: expected customized, cosine or constant"))),
        };
        let mut ema = Ema::new(&ema_values(&student)?, cfg.train.ema_rate)?;
        let mut rng = Rng::new(cfg.seed ^ 0x004E_4F49_5345);
        let mut best_fid = None;
        if let Some(st) = &state {
            opt.load_state(&st.optim)?;
            ema.load(&st.ema.iter().cloned().collect())?;
            rng = Rng::from_state(st.rng.0, st.rng.1);
            best_fid = st.best_fid;
        }
        let data = build::dataset(&cfg)?;
        let (h, w) = data.image_size();
        let [_, mh, mw] = student.config.input_shape();
        if (h, w) != (mh, mw) {
            return Err(TrainError::Config(format!("the dataset's images are {w}x{h}, the model expects {mw}x{mh}")));
        }
        let loader = Loader::new(data.clone(), loader_config(&cfg), step);
        // Written once everything above is known to work, so a refused
        // setup leaves the folder as it was (no half-made run either).
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
            schedule: build::schedule(&cfg)?,
            cfg,
            run_dir: run_dir.to_path_buf(),
            student,
            teacher,
            data,
            loader,
            opt,
            lr,
            ema,
            kt,
            progressive,
            params,
            rng,
            step,
            best_fid,
            report,
            fid_state: None,
            resume_notes,
        })
    }

    /// What resuming did to the run folder (checkpoints skipped, orphans
    /// removed, metrics rows cut), one line each; empty for a new run.
    pub fn resume_notes(&self) -> &[String] {
        &self.resume_notes
    }

    pub fn step(&self) -> u64 {
        self.step
    }
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
    pub fn student(&self) -> &Bundle {
        &self.student
    }
    pub fn schedule(&self) -> &dyn NoiseSchedule {
        self.schedule.as_ref()
    }
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.data
    }
    /// The sparsity report from the start of the run (sparse runs).
    pub fn sparsity_report(&self) -> Option<&SparsityReport> {
        self.report.as_ref()
    }

    /// One optimizer step (over `grad_accum` micro-batches).
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let batch = self.loader.next_batch()?;
        self.student.store.set_training(true);
        let accum = self.cfg.train.grad_accum;
        let micro = self.cfg.train.batch_size / accum;
        let dropout_seed = self.cfg.seed ^ 0xD50F;
        let mut grads = GradStore::default();
        let (mut loss_sum, mut diff_sum, mut kt_sum) = (0f32, 0f32, None::<f32>);
        for m in 0..accum {
            let x0 = batch.images.narrow(0, m * micro, micro)?;
            let y = batch.labels.as_ref().map(|l| l.narrow(0, m * micro, micro)).transpose()?;
            let y = if self.student.config.num_classes().is_some() { y } else { None };
            self.student.model.set_dropout_rng(Some(Rng::from_state(dropout_seed, (self.step << 16) | m as u64)));
            let tr = self.schedule.sample_training(&x0, &mut self.rng)?;
            let eps_hat = self.student.model.predict_eps(&tr.x_t, &tr.model_t, y.as_ref())?;
            let teacher_eps = match &self.teacher {
                Some(t) => {
                    let _g = no_grad();
                    Some(t.model.predict_eps(&tr.x_t, &tr.model_t, y.as_ref())?.detach())
                }
                None => None,
            };
            let loss = self.kt.compute(&tr.eps, &eps_hat, teacher_eps.as_ref())?;
            let value = loss.total.to_scalar()?;
            if !value.is_finite() {
                return Err(TrainError::NonFinite { step: self.step, value });
            }
            loss_sum += value / accum as f32;
            diff_sum += loss.diffusion / accum as f32;
            if let Some(k) = loss.transfer {
                *kt_sum.get_or_insert(0.0) += k / accum as f32;
            }
            let scaled = if accum > 1 { loss.total.mul_scalar(1.0 / accum as f32)? } else { loss.total };
            accumulate(&mut grads, scaled.backward()?, &self.params)?;
        }
        let grad_norm = match self.cfg.train.grad_clip {
            Some(max) => clip_global_norm(&mut grads, &self.params, max)?,
            None => global_norm(&grads, &self.params)?,
        };
        let lr = self.cfg.optimizer.lr * self.lr.factor(self.step);
        self.opt.step(&grads, lr)?;
        drop(grads);
        for (_, slot) in self.student.store.sparse_slots() {
            slot.after_optimizer_step()?;
        }
        self.ema.update(&ema_values(&self.student)?)?;
        self.step += 1;
        if let (Some(p), Some(s)) = (&self.progressive, &self.cfg.sparse) {
            p.apply(self.step, &self.student.store, build::mode_builder(s))?;
        }
        Ok(StepMetrics { step: self.step, loss: loss_sum, loss_diffusion: diff_sum, loss_transfer: kt_sum, lr, grad_norm })
    }

    /// Writes a checkpoint of the current state (atomic; old ones rotated).
    pub fn save(&self) -> Result<PathBuf> {
        let spec = SparsitySpec::from_store(&self.student.store)?;
        let st = TrainState {
            step: self.step,
            rng: self.rng.state(),
            config_toml: self.cfg.to_toml()?,
            best_fid: self.best_fid,
            sparsity_json: Some(spec.to_json()),
            model: self.student.store.state_dict(),
            ema: self.ema.tensors().to_vec(),
            optim: self.opt.state_tensors()?.into_iter().collect(),
        };
        save_train_state(&self.run_dir, &st, self.cfg.train.keep_last)
    }

    /// A model holding the EMA weights, with the student's sparsity, in
    /// evaluation mode: what samples and FID use.
    pub fn ema_model(&self) -> Result<Bundle> {
        let b = build::new_model(&self.cfg, self.cfg.seed)?;
        b.store.load_tensors("EMA weights", self.ema.tensors().to_vec(), |_| false)?;
        if let Some(s) = &self.cfg.sparse {
            match &self.progressive {
                Some(p) => {
                    p.apply(0, &b.store, build::mode_builder(s))?;
                    p.apply(self.step, &b.store, build::mode_builder(s))?;
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
            &self.student
        };
        let mut meta = HashMap::new();
        meta.insert(crate::checkpoint::META_CONFIG.to_string(), self.cfg.to_toml()?);
        meta.insert(crate::checkpoint::META_KIND.to_string(), "model".to_string());
        meta.insert(crate::checkpoint::META_STEP.to_string(), self.step.to_string());
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
    pub fn run(&mut self, stop_at: Option<u64>, mut on_step: impl FnMut(&StepMetrics, f64)) -> Result<Option<StepMetrics>> {
        let end = stop_at.unwrap_or(self.cfg.train.n_steps).min(self.cfg.train.n_steps);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run_dir.join("metrics.jsonl"))
            .map_err(|e| TrainError::Data { path: self.run_dir.join("metrics.jsonl"), msg: e.to_string() })?;
        let mut last = None;
        let started = Instant::now();
        let first = self.step;
        while self.step < end {
            let m = self.train_step()?;
            let rate = (self.step - first) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            on_step(&m, rate);
            if self.step.is_multiple_of(self.cfg.train.log_interval.max(1)) || self.step == end {
                let mut line = serde_json::to_value(m).map_err(|e| TrainError::Config(e.to_string()))?;
                line["steps_per_s"] = serde_json::json!(rate);
                writeln!(log, "{line}").map_err(|e| TrainError::Data { path: self.run_dir.join("metrics.jsonl"), msg: e.to_string() })?;
            }
            if self.cfg.train.sample_interval > 0 && self.step.is_multiple_of(self.cfg.train.sample_interval) {
                self.sample_grid()?;
            }
            if let Some(every) = self.cfg.fid.as_ref().map(|f| f.every.max(1))
                && self.step.is_multiple_of(every)
            {
                let fid = self.evaluate_fid()?;
                let line = serde_json::json!({"step": self.step, "fid": fid, "best_fid": self.best_fid});
                writeln!(log, "{line}").map_err(|e| TrainError::Data { path: self.run_dir.join("metrics.jsonl"), msg: e.to_string() })?;
            }
            if self.step.is_multiple_of(self.cfg.train.save_interval.max(1)) && self.step != end {
                self.save()?;
            }
            last = Some(m);
        }
        if last.is_some() {
            self.save()?;
        }
        Ok(last)
    }

    /// FID of the EMA model against the configured reference statistics
    /// (`fid.n_samples` images with `fid.sampler`/`fid.steps`). A new best
    /// is kept as `best.safetensors` (the EMA model) in the run folder.
    pub fn evaluate_fid(&mut self) -> Result<f64> {
        let f = self.cfg.fid.clone().ok_or_else(|| TrainError::Config("no [fid] section in the run config".into()))?;
        if self.fid_state.is_none() {
            let net = sparsedm_fid::InceptionV3::load(&f.inception, &sparsedm_tensor::Device::Cpu)?;
            let reference = sparsedm_fid::read_stats_npz(&f.reference)?;
            self.fid_state = Some((net, reference));
        }
        let ema = self.ema_model()?;
        let req = crate::samples::SampleRequest {
            n: f.n_samples,
            batch: 64,
            shape: ema.config.input_shape(),
            sampler: f.sampler.parse()?,
            steps: f.steps,
            seed: self.cfg.seed ^ 0xF1D,
            class: None,
            cfg_scale: None,
            num_classes: None,
            clip_denoised: self.cfg.sample.clip_denoised,
        };
        let imgs = crate::samples::generate(ema.model.as_ref(), self.schedule.as_ref(), &req, |_| {})?;
        let (net, reference) = self.fid_state.as_ref().ok_or_else(|| TrainError::Config("FID state".into()))?;
        let opts = sparsedm_fid::ExtractOptions { progress: sparsedm_fid::Progress::Hidden, ..Default::default() };
        let stats = sparsedm_fid::extract_features(net, &imgs, &opts)?.stats()?;
        let fid = sparsedm_fid::frechet_distance(&stats, reference)?;
        if self.best_fid.is_none_or(|b| fid < b) {
            self.best_fid = Some(fid);
            self.export_model(&self.run_dir.join("best.safetensors"), true)?;
        }
        Ok(fid)
    }

    /// Writes `samples/step_XXXXXXXX.png` from the EMA model.
    pub fn sample_grid(&self) -> Result<PathBuf> {
        let ema = self.ema_model()?;
        let s = &self.cfg.sample;
        let req = crate::samples::SampleRequest {
            n: s.grid,
            batch: s.grid,
            shape: ema.config.input_shape(),
            sampler: s.sampler.parse()?,
            steps: s.steps,
            seed: self.cfg.seed,
            class: None,
            cfg_scale: None,
            num_classes: None,
            clip_denoised: s.clip_denoised,
        };
        let imgs = crate::samples::generate(ema.model.as_ref(), self.schedule.as_ref(), &req, |_| {})?;
        let path = self.run_dir.join("samples").join(format!("step_{:08}.png", self.step));
        crate::samples::write_grid_png(&path, &imgs, (s.grid as f64).sqrt().ceil() as usize)?;
        Ok(path)
    }
}

/// What the EMA averages: each parameter, with sparse layers' weights as
/// deployed (masked).
fn ema_values(b: &Bundle) -> Result<Vec<(String, Tensor)>> {
    let deployed: HashMap<String, Tensor> = b
        .store
        .sparse_slots()
        .into_iter()
        .map(|(name, slot)| Ok((format!("{name}.weight"), slot.deployed_weight()?)))
        .collect::<Result<_>>()?;
    Ok(b.store
        .params()
        .into_iter()
        .map(|(n, t)| match deployed.get(&n) {
            Some(d) => (n, d.clone()),
            None => (n, t),
        })
        .collect())
}

fn loader_config(cfg: &RunConfig) -> LoaderConfig {
    LoaderConfig { batch_size: cfg.train.batch_size, seed: cfg.seed, random_flip: cfg.dataset.random_flip, prefetch: 2 }
}
