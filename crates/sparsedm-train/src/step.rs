//! One optimizer step of a run, on whatever device the run was given:
//! the model, the frozen teacher, the optimizer moments, the EMA, each
//! batch and the diffusion noise all live there. [`crate::Trainer`] drives
//! it with data, logging and checkpoints; `sparsedm bench`
//! ([`crate::speed`]) times the very same step on a synthetic batch, so the
//! measured speed is the speed of training.
//!
//! A step: draw (t, ε, x_t) for the whole batch from the noise generator;
//! for each of `train.grad_accum` micro-batches, predict ε with the student
//! (and the teacher, without gradients), take the knowledge-transfer loss
//! scaled by 1/accum and accumulate its gradients; count SR-STE's decay
//! once (see [`TrainStep::run`]); clip the global norm (optional), take the
//! AdamW step at the schedule's rate, let the sparse layers finish the step
//! ([`sparsedm_layers::ParamStore::after_optimizer_step`]), update the EMA
//! of the dense parameters and move a progressive schedule to its next
//! stage. So `accum` micro-batches of B/accum give the update of one batch
//! of B, up to float rounding.
//!
//! Everything the next step depends on — parameters, moments, EMA, the
//! noise generator's state and the step count — is in [`TrainStep::state`],
//! written on the host whatever the device, and [`TrainStep::new`] puts a
//! saved state back on any device.

use crate::build::{self, Bundle};
use crate::checkpoint::TrainState;
use crate::config::RunConfig;
use crate::data::Batch;
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::grad::{accumulate, clip_global_norm, global_norm};
use crate::lr::LrSchedule;
use crate::optim::{AdamW, AdamWConfig};
use crate::vocab::Teacher;
use sparsedm_diffusion::{ModelConfig, NoiseSchedule};
use sparsedm_layers::{KtLoss, ModeKind, PermutationReport, ProgressiveSchedule, SparseMode, SparsityReport, SparsitySpec};
use sparsedm_tensor::{Device, GradStore, Rng, Tensor, no_grad};
use std::collections::HashMap;

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

/// Checks that the config key `key` names a file that is there, so a wrong path is one error
/// naming the key (`train.init = "x.safetensors": No such file …`), not the bare OS message.
fn file_of(key: &str, path: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(TrainError::Config(format!("{key} = {path:?} is a folder; it takes a checkpoint file"))),
        Err(e) => Err(TrainError::Config(format!("{key} = {path:?}: {e}"))),
    }
}

/// The training state of a run and the step that advances it.
pub struct TrainStep {
    device: Device,
    student: Bundle,
    teacher: Option<Bundle>,
    schedule: Box<dyn NoiseSchedule>,
    opt: AdamW,
    lr: LrSchedule,
    base_lr: f32,
    ema: Ema,
    kt: KtLoss,
    /// The progressive schedule and the mode its stages use.
    progressive: Option<(ProgressiveSchedule, ModeKind)>,
    report: Option<SparsityReport>,
    /// ASP's channel permutations at the start of the run, if it made them.
    permutation: Option<PermutationReport>,
    params: Vec<(String, Tensor)>,
    rng: Rng,
    step: u64,
    batch_size: usize,
    accum: usize,
    grad_clip: Option<f32>,
    dropout_seed: u64,
    /// Classifier-free guidance training (`dataset.p_uncond`): the chance of a label becoming
    /// the null label (the model's last), drawn per step from `(label_seed, step)`.
    p_uncond: f32,
    label_seed: u64,
}

impl std::fmt::Debug for TrainStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrainStep(step {}, {}, {:?})", self.step, self.device, self.student)
    }
}

/// `err` (train.init does not load into this run's model) with, when the
/// file describes its model — the run config that wrote it, or the model a
/// `prune`/`export` of official weights records — the `nnet` keys in which
/// that model differs from this run's — e.g. a SparseDM export has
/// `sparsedm_qkv_bias = true`, so its qkv biases are unexpected in a run
/// without it.
fn init_mismatch_hint(cfg: &RunConfig, init: &str, err: TrainError) -> TrainError {
    let Ok(meta) = sparsedm_tensor::load_weights_metadata(init) else { return err };
    let diffs: Vec<String> = if let Some(text) = meta.get(crate::checkpoint::META_CONFIG) {
        let Ok(stored) = RunConfig::parse(text, init, &[]) else { return err };
        let show = |v: Option<&toml::Value>| v.map_or_else(|| "unset".to_string(), toml::Value::to_string);
        let mut keys: Vec<&String> = stored.nnet.keys().chain(cfg.nnet.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| stored.nnet.get(*k) != cfg.nnet.get(*k))
            .map(|k| format!("nnet.{k} = {} there, {} here", show(stored.nnet.get(k)), show(cfg.nnet.get(k))))
            .collect()
    } else if let Some(text) = meta.get(sparsedm_diffusion::MODEL_METADATA_KEY) {
        let here = build::arch(cfg).and_then(|a| Ok(ModelConfig::from_json(a, &cfg.nnet_json()?)?));
        let (Ok(recorded), Ok(here)) = (ModelConfig::from_metadata(text, init), here) else { return err };
        recorded.differences(&here).into_iter().map(|(k, there, here)| format!("nnet.{k} = {there} there, {here} here")).collect()
    } else {
        return err;
    };
    if diffs.is_empty() {
        return err;
    }
    TrainError::Config(format!(
        "{err}\n  {init} holds a model that differs from this run's: {}; give this run the same (--set nnet.KEY=VALUE)",
        diffs.join(", ")
    ))
}

impl TrainStep {
    /// The state of `cfg`'s run on `device`: a fresh one (the model seeded
    /// by `seed`, from `train.init` when set), or `saved` put back. Sparse
    /// runs get their policy, their teacher and, for the progressive
    /// method, the stage of the current step.
    pub fn new(cfg: &RunConfig, device: Device, saved: Option<&TrainState>) -> Result<Self> {
        let student = build::new_model_on(cfg, cfg.seed, device)?;
        match saved {
            Some(st) => student.store.load_tensors("checkpoint model.*", st.model.clone(), |_| false)?,
            None => {
                if let Some(init) = &cfg.train.init {
                    file_of("train.init", init)?;
                    sparsedm_diffusion::load_checkpoint(&student.store, init).map_err(|e| init_mismatch_hint(cfg, init, e.into()))?;
                    if cfg.sparse.is_none() && is_sparse_checkpoint(init) {
                        eprintln!(
                            "sparsedm: train.init {init} is a sparse checkpoint, but this run has no [sparse] section: every layer \
                             trains dense from its masked weights (add [sparse] with the file's pattern to keep them N:M)"
                        );
                    }
                }
            }
        }
        // ASP's prune step: channel permutations first, on a fresh run only
        // (a resumed run holds the permuted weights already).
        let permutation = match &cfg.sparse {
            Some(s) if saved.is_none() && build::permutes_channels(s) => Some(build::permute_channels(&student, s)?),
            _ => None,
        };
        let (report, progressive, kt, teacher) = match &cfg.sparse {
            None => (None, None, KtLoss::new(1.0, 0.0)?, None),
            Some(s) => {
                let (report, progressive) = build::sparsify(&student.store, s)?;
                let teacher = match &s.teacher {
                    Teacher::None => None,
                    Teacher::Init => {
                        let init = cfg.train.init.as_deref().ok_or_else(|| {
                            TrainError::Config("sparse.teacher = \"init\" needs train.init (the dense starting checkpoint)".into())
                        })?;
                        file_of("train.init (the teacher of sparse.teacher = \"init\")", init)?;
                        Some(build::frozen_model_on(cfg, init, device)?)
                    }
                    Teacher::Checkpoint(path) => {
                        file_of("sparse.teacher", path)?;
                        Some(build::frozen_model_on(cfg, path, device)?)
                    }
                };
                let w_kt = if teacher.is_some() { s.w_kt } else { 0.0 };
                let kind = s.method.mode_kind(s.lambda, s.transposable);
                (Some(report), progressive.map(|p| (p, kind)), KtLoss::new(s.w_diff, w_kt)?, teacher)
            }
        };
        let step = saved.map_or(0, |s| s.step);
        if let Some((p, kind)) = &progressive {
            // On resume, put the stage of the current step in place.
            p.apply(step, &student.store, |pat| kind.with_pattern(pat))?;
        }
        let params = student.store.params();
        let o = &cfg.optimizer;
        let mut opt = AdamW::new(params.clone(), AdamWConfig { lr: o.lr, betas: o.betas, eps: o.eps, weight_decay: o.weight_decay });
        let mut ema = Ema::new(&params, cfg.train.ema_rate)?;
        let mut rng = Rng::new(cfg.seed ^ 0x004E_4F49_5345);
        if let Some(st) = saved {
            opt.load_state(&st.optim)?;
            ema.load(&st.ema.iter().cloned().collect())?;
            rng = Rng::from_state(st.rng.0, st.rng.1);
        }
        Ok(TrainStep {
            device,
            student,
            teacher,
            schedule: build::schedule(cfg)?,
            opt,
            lr: cfg.lr_schedule(),
            base_lr: cfg.optimizer.lr,
            ema,
            kt,
            progressive,
            report,
            permutation,
            params,
            rng,
            step,
            batch_size: cfg.train.batch_size,
            accum: cfg.train.grad_accum,
            grad_clip: cfg.train.grad_clip,
            dropout_seed: cfg.seed ^ 0xD50F,
            p_uncond: cfg.dataset.p_uncond,
            label_seed: cfg.seed ^ 0x1ABE_1D40,
        })
    }

    /// One optimizer step on `batch` (`train.batch_size` images, split
    /// into `train.grad_accum` micro-batches), moved to the run's device.
    ///
    /// The noise of the whole batch is drawn at once, so the split does
    /// not change it. SR-STE adds its decay λ(1 − m) ⊙ w to the weight's
    /// gradient in every backward pass, whatever the loss scale, so
    /// `accum` micro-batches would add it `accum` times; the extra
    /// `accum − 1` are taken back out before clipping and the optimizer,
    /// so λ means per optimizer step what it means without accumulation.
    pub fn run(&mut self, batch: &Batch) -> Result<StepMetrics> {
        let images = batch.images.to_device(&self.device)?;
        if images.dims().first() != Some(&self.batch_size) {
            return Err(TrainError::Config(format!(
                "a training batch has {:?} images, train.batch_size is {}",
                images.dims().first(),
                self.batch_size
            )));
        }
        let labels = match (&batch.labels, self.student.config.num_classes()) {
            (Some(l), Some(nc)) if self.p_uncond > 0.0 => {
                // U-ViT's CFG datasets: a label becomes the null one with probability p_uncond.
                let mut rng = Rng::from_state(self.label_seed, self.step);
                Some(sparsedm_diffusion::cfg::drop_labels(l, self.p_uncond, nc as i64 - 1, &mut rng)?.to_device(&self.device)?)
            }
            (Some(l), Some(_)) => Some(l.to_device(&self.device)?),
            _ => None,
        };
        self.student.store.set_training(true);
        let accum = self.accum;
        let micro = self.batch_size / accum;
        let mut grads = GradStore::default();
        let (mut loss_sum, mut diff_sum, mut kt_sum) = (0f32, 0f32, None::<f32>);
        let whole = self.schedule.sample_training(&images, &mut self.rng)?;
        for m in 0..accum {
            let part = |t: &Tensor| t.narrow(0, m * micro, micro);
            let (x_t, model_t, eps) = (part(&whole.x_t)?, part(&whole.model_t)?, part(&whole.eps)?);
            let y = labels.as_ref().map(part).transpose()?;
            self.student.model.set_dropout_rng(Some(Rng::from_state(self.dropout_seed, (self.step << 16) | m as u64)));
            let eps_hat = self.student.model.predict_eps(&x_t, &model_t, y.as_ref())?;
            let teacher_eps = match &self.teacher {
                Some(t) => {
                    let _g = no_grad();
                    Some(t.model.predict_eps(&x_t, &model_t, y.as_ref())?.detach())
                }
                None => None,
            };
            let loss = self.kt.compute(&eps, &eps_hat, teacher_eps.as_ref())?;
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
        drop(whole);
        self.srste_decay_once(&mut grads)?;
        let grad_norm = match self.grad_clip {
            Some(max) => clip_global_norm(&mut grads, &self.params, max)?,
            None => global_norm(&grads, &self.params)?,
        };
        let lr = self.base_lr * self.lr.factor(self.step);
        self.opt.step(&grads, lr)?;
        drop(grads);
        self.student.store.after_optimizer_step()?;
        self.ema.update(&self.params)?;
        self.step += 1;
        if let Some((p, kind)) = &self.progressive {
            p.apply(self.step, &self.student.store, |pat| kind.with_pattern(pat))?;
        }
        Ok(StepMetrics { step: self.step, loss: loss_sum, loss_diffusion: diff_sum, loss_transfer: kt_sum, lr, grad_norm })
    }

    /// Removes the `accum − 1` extra SR-STE decay terms λ(1 − m) ⊙ w that
    /// the micro-batches' backward passes added to each SR-STE weight's
    /// gradient ((1 − m) ⊙ w is the weight minus its deployed value; the
    /// weights and so the masks do not change within a step).
    fn srste_decay_once(&self, grads: &mut GradStore) -> Result<()> {
        if self.accum == 1 {
            return Ok(());
        }
        let _g = no_grad();
        let extra = (self.accum - 1) as f32;
        for (name, slot) in self.student.store.sparse_slots() {
            let SparseMode::SrSte { lambda, .. } = slot.mode() else { continue };
            if lambda == 0.0 {
                continue;
            }
            let weight = format!("{name}.weight");
            let (_, w) = self
                .params
                .iter()
                .find(|(n, _)| *n == weight)
                .ok_or_else(|| TrainError::Config(format!("sparse layer {name} has no trained parameter {weight}")))?;
            let Some(g) = grads.remove(w) else { continue };
            let pruned = w.detach().sub(&slot.deployed_weight()?)?;
            grads.insert(w, g.sub(&pruned.mul_scalar(lambda * extra)?)?);
        }
        Ok(())
    }

    /// Everything the next step depends on, on the host (so a checkpoint
    /// resumes on either device); `config_toml` and `best_fid` are the
    /// caller's.
    pub fn state(&self) -> Result<TrainState> {
        let host = |ts: &[(String, Tensor)]| -> Result<Vec<(String, Tensor)>> {
            ts.iter().map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?))).collect()
        };
        Ok(TrainState {
            step: self.step,
            rng: self.rng.state(),
            config_toml: String::new(),
            best_fid: None,
            sparsity_json: Some(SparsitySpec::from_store(&self.student.store)?.to_json()),
            model: host(&self.student.store.state_dict())?,
            ema: host(self.ema.tensors())?,
            optim: self.opt.state_tensors()?.into_iter().collect::<HashMap<_, _>>(),
        })
    }

    /// Optimizer steps taken.
    pub fn step(&self) -> u64 {
        self.step
    }
    /// Where the run computes.
    pub fn device(&self) -> Device {
        self.device
    }
    /// The model being trained.
    pub fn student(&self) -> &Bundle {
        &self.student
    }
    pub fn schedule(&self) -> &dyn NoiseSchedule {
        self.schedule.as_ref()
    }
    /// The EMA weights by name (on the run's device).
    pub fn ema_tensors(&self) -> &[(String, Tensor)] {
        self.ema.tensors()
    }
    /// The progressive schedule and the mode of its stages (progressive runs).
    pub fn progressive(&self) -> Option<&(ProgressiveSchedule, ModeKind)> {
        self.progressive.as_ref()
    }
    /// The sparsity report from the start of the run (sparse runs).
    pub fn sparsity_report(&self) -> Option<&SparsityReport> {
        self.report.as_ref()
    }
    /// ASP's channel permutations, when this run made them (a fresh
    /// fixed-mask run with `sparse.permute`): kept magnitude with and without.
    pub fn permutation_report(&self) -> Option<&PermutationReport> {
        self.permutation.as_ref()
    }
}

/// Whether the weights file at `path` carries a sparsity spec (a sparse or
/// compressed N:M checkpoint); `false` for anything unreadable (the load
/// before it has already reported real errors).
fn is_sparse_checkpoint(path: &str) -> bool {
    sparsedm_tensor::load_weights_metadata(path).is_ok_and(|m| m.contains_key(sparsedm_layers::SPARSITY_METADATA_KEY))
}
