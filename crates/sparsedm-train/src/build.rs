//! Builds what a run trains from its config: the student model (loaded
//! from `train.init`, sparsified by the policy), the frozen teacher, the
//! noise schedule and the dataset.

use crate::config::{RunConfig, SparseConfig};
use crate::data::{Dataset, cifar::Cifar10Dataset, folder::ImageFolderDataset, folder::Preprocess, shapes::ShapesDataset};
use crate::error::{Result, TrainError};
use crate::vocab::{DatasetKind, SparseMethod};
use sparsedm_diffusion::{Arch, EpsModel, ModelConfig, NoiseSchedule, load_checkpoint};
use sparsedm_layers::{
    NamedPolicy, NmPattern, ParamStore, PermutationReport, Policy, ProgressiveSchedule, SearchOptions, Selection, SparseMode,
    SparsityReport, apply_policy,
};
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

/// A model with weights from a checkpoint, in evaluation mode, on the CPU
/// (teachers of host runs, evaluation copies).
pub fn frozen_model(cfg: &RunConfig, path: &str) -> Result<Bundle> {
    frozen_model_on(cfg, path, sparsedm_tensor::Device::Cpu)
}

/// A model with weights from a checkpoint, in evaluation mode, with its
/// parameters on `device`: a run's frozen teacher lives beside its student.
pub fn frozen_model_on(cfg: &RunConfig, path: &str, device: sparsedm_tensor::Device) -> Result<Bundle> {
    let b = new_model_on(cfg, cfg.seed, device)?;
    load_checkpoint(&b.store, path)?;
    b.store.set_training(false);
    Ok(b)
}

/// The mode a sparse layer gets for `pattern` under this run's method.
pub fn mode_builder(s: &SparseConfig) -> impl Fn(NmPattern) -> SparseMode + Clone {
    let kind = s.method.mode_kind(s.lambda, s.transposable);
    move |pattern| kind.with_pattern(pattern)
}

/// Applies the sparse section to a model's store; returns the report and
/// the progressive schedule when the method is progressive (whose first
/// stage gives the starting pattern).
///
/// # Errors
/// Besides those of [`apply_policy`] (a policy that selects no layer), a
/// glob item of the policy that selects none of the model's layers: a
/// misspelt named policy would otherwise prune nothing without a word.
pub fn sparsify(store: &ParamStore, s: &SparseConfig) -> Result<(SparsityReport, Option<ProgressiveSchedule>)> {
    let progressive = match s.method {
        SparseMethod::Progressive => Some(s.progressive.clone().ok_or_else(|| {
            TrainError::Config("sparse.method = \"progressive\" needs sparse.progressive (e.g. \"15:16@0,7:8@1000,2:4@2000\")".into())
        })?),
        SparseMethod::SrSte | SparseMethod::Ste | SparseMethod::Fixed => None,
    };
    let pattern = match &progressive {
        Some(p) => p.pattern_at(0),
        None => s.pattern,
    };
    check_policy_items(store, &s.policy, pattern)?;
    let report = apply_policy(store, &s.policy, pattern, mode_builder(s))?;
    crate::validate::ensure_some_layer_masked(
        &report,
        "sparse.pattern",
        &pattern.to_string(),
        &s.policy.to_string(),
        "this would be a dense run",
    )?;
    Ok((report, progressive))
}

/// Refuses a policy whose glob items (not the named policies, not the `!`
/// exclusions) select none of the store's layers, naming the item and what
/// the policy accepts.
fn check_policy_items(store: &ParamStore, policy: &Policy, pattern: NmPattern) -> Result<()> {
    let slots = store.sparse_slots();
    let named = [NamedPolicy::SparseDmUvit, NamedPolicy::Asp, NamedPolicy::All];
    for item in policy.to_string().split(',').filter(|i| !i.starts_with('!') && !named.iter().any(|n| n.name() == *i)) {
        let single: Policy = item.parse()?;
        if !slots.iter().any(|(name, slot)| matches!(single.select(name, slot.layout(), pattern), Selection::Sparse(_))) {
            return Err(TrainError::Config(format!(
                "sparse.policy item {item:?} selects none of the model's {} Linear/Conv2d layers (names look like {}); expected {}",
                slots.len(),
                slots.iter().take(3).map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
                <Policy as crate::vocab::Spelled>::accepted()
            )));
        }
    }
    Ok(())
}

/// apex ASP's channel permutations on `b` for the sparse section `s` (its
/// policy and pattern): the model's [`sparsedm_diffusion::channel_plan`]
/// searched and applied before the masks are computed. The function of the
/// network is unchanged; the report gives the magnitude the N:M masks keep
/// with and without the permutations.
pub fn permute_channels(b: &Bundle, s: &SparseConfig) -> Result<PermutationReport> {
    let plan = sparsedm_diffusion::channel_plan(&b.config, &b.store);
    Ok(sparsedm_layers::permute_channels(&b.store, &plan, &s.policy, s.pattern, &SearchOptions::default())?)
}

/// Whether a run's prune step permutes channels first: a fresh fixed-mask
/// (ASP) run with `sparse.permute` on and 1-D masks.
pub fn permutes_channels(s: &SparseConfig) -> bool {
    s.method == SparseMethod::Fixed && s.permute && !s.transposable
}

/// The run's noise schedule.
pub fn schedule(cfg: &RunConfig) -> Result<Box<dyn NoiseSchedule>> {
    Ok(cfg.train.schedule.build())
}

/// The run's dataset.
pub fn dataset(cfg: &RunConfig) -> Result<Arc<dyn Dataset>> {
    let d = &cfg.dataset;
    let path = || d.path.clone().unwrap_or_default();
    Ok(match d.name {
        DatasetKind::Shapes => Arc::new(ShapesDataset::new(d.resolution.unwrap_or(16), d.len, cfg.seed ^ 0xDA7A)?),
        DatasetKind::Cifar10 => Arc::new(Cifar10Dataset::open(path(), sparsedm_fid::CifarSplit::Train)?),
        DatasetKind::Celeba64 => Arc::new(ImageFolderDataset::open(path(), Preprocess::CelebA64)?),
        DatasetKind::Folder => {
            let pre = d.resolution.map(|r| Preprocess::Resize(r as u32)).unwrap_or(Preprocess::None);
            Arc::new(if d.class_folders { ImageFolderDataset::open_classes(path(), pre)? } else { ImageFolderDataset::open(path(), pre)? })
        }
    })
}
