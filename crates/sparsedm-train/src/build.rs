//! Builds what a run trains from its config: the student model (loaded
//! from `train.init`, sparsified by the policy), the frozen teacher, the
//! noise schedule and the dataset.

use crate::config::{RunConfig, SparseConfig};
use crate::data::{Dataset, cifar::Cifar10Dataset, folder::ImageFolderDataset, folder::Preprocess, shapes::ShapesDataset};
use crate::error::{Result, TrainError};
use sparsedm_diffusion::{Arch, EpsModel, ModelConfig, NoiseSchedule, ScheduleKind, load_checkpoint};
use sparsedm_layers::{NmPattern, ParamStore, Policy, ProgressiveSchedule, SparseMode, SparsityReport, apply_policy};
use std::str::FromStr;
use std::sync::Arc;

/// A model and the store holding its parameters.
pub struct Bundle {
    pub store: ParamStore,
    pub model: Box<dyn EpsModel>,
    pub config: ModelConfig,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bundle({} params)", self.store.num_params())
    }
}

/// Parses the architecture name.
pub fn arch(cfg: &RunConfig) -> Result<Arch> {
    Arch::from_str(&cfg.arch).map_err(TrainError::from)
}

/// A freshly initialised model of the run's architecture (seeded), on the CPU.
pub fn new_model(cfg: &RunConfig, seed: u64) -> Result<Bundle> {
    new_model_on(cfg, seed, sparsedm_tensor::Device::Cpu)
}

/// A freshly initialised model of the run's architecture with its
/// parameters on `device`. Initial values are drawn on the host from
/// `seed` and uploaded, so every device starts from the same weights.
pub fn new_model_on(cfg: &RunConfig, seed: u64, device: sparsedm_tensor::Device) -> Result<Bundle> {
    device.ensure_available()?;
    let config = ModelConfig::from_json(arch(cfg)?, &cfg.nnet_json()?)?;
    let store = ParamStore::new(device, seed);
    let model = config.build(&store)?;
    Ok(Bundle { store, model, config })
}

/// A model with weights from a checkpoint, in evaluation mode, for teachers.
pub fn frozen_model(cfg: &RunConfig, path: &str) -> Result<Bundle> {
    let b = new_model(cfg, cfg.seed)?;
    load_checkpoint(&b.store, path)?;
    b.store.set_training(false);
    Ok(b)
}

/// The mode a sparse layer gets for `pattern` under this run's method.
pub fn mode_builder(s: &SparseConfig) -> impl Fn(NmPattern) -> SparseMode + Clone {
    let (method, lambda, transposable) = (s.method.clone(), s.lambda, s.transposable);
    move |pattern| match method.as_str() {
        "ste" => SparseMode::Ste { pattern },
        "fixed" => SparseMode::Fixed { pattern, transposable },
        // "srste" and "progressive" (whose stages use SR-STE masks).
        _ => SparseMode::SrSte { pattern, lambda },
    }
}

/// Applies the sparse section to a model's store; returns the report and
/// the progressive schedule when the method is progressive.
pub fn sparsify(store: &ParamStore, s: &SparseConfig) -> Result<(SparsityReport, Option<ProgressiveSchedule>)> {
    let policy = Policy::from_str(&s.policy)?;
    let progressive = match (&s.method[..], &s.progressive) {
        ("progressive", Some(spec)) => Some(ProgressiveSchedule::from_str(spec)?),
        _ => None,
    };
    let pattern = match &progressive {
        Some(p) => p.pattern_at(0),
        None => NmPattern::from_str(&s.pattern)?,
    };
    let report = apply_policy(store, &policy, pattern, mode_builder(s))?;
    crate::validate::ensure_some_layer_masked(&report, &pattern.to_string(), &s.policy)?;
    Ok((report, progressive))
}

/// The run's noise schedule.
pub fn schedule(cfg: &RunConfig) -> Result<Box<dyn NoiseSchedule>> {
    Ok(ScheduleKind::from_str(&cfg.train.schedule)?.build())
}

/// The run's dataset.
pub fn dataset(cfg: &RunConfig) -> Result<Arc<dyn Dataset>> {
    let d = &cfg.dataset;
    let path = || d.path.clone().unwrap_or_default();
    Ok(match d.name.as_str() {
        "shapes" => Arc::new(ShapesDataset::new(d.resolution.unwrap_or(16), d.len, cfg.seed ^ 0xDA7A)?),
        "cifar10" => Arc::new(Cifar10Dataset::open(path(), sparsedm_fid::CifarSplit::Train)?),
        "celeba64" => Arc::new(ImageFolderDataset::open(path(), Preprocess::CelebA64)?),
        _ => Arc::new(ImageFolderDataset::open(path(), d.resolution.map(|r| Preprocess::Resize(r as u32)).unwrap_or(Preprocess::None))?),
    })
}
