//! Turning a checkpoint back into a model ready to sample from: a training
//! checkpoint (EMA weights by default, with the run's sparsity so masks
//! apply at inference), a model checkpoint exported by a run (its config is
//! in the metadata), or an official checkpoint (the `.pth`/`.ckpt` itself or
//! its safetensors conversion; the caller gives the architecture and the
//! constructor's keyword arguments, unless the file records its model, as
//! `sparsedm prune` and `export` write official checkpoints).

use crate::build::{self, Bundle};
use crate::checkpoint::{META_CONFIG, META_KIND, load_train_state};
use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use sparsedm_diffusion::{Arch, MODEL_METADATA_KEY, ModelConfig, NoiseSchedule, ScheduleKind};
use sparsedm_layers::ParamStore;
use sparsedm_tensor::{Device, Tensor, load_weights_metadata};
use std::path::Path;

/// A model ready for inference and the schedule it was trained with.
pub struct Restored {
    pub bundle: Bundle,
    pub schedule: Box<dyn NoiseSchedule>,
    /// The run config, when the checkpoint carries one.
    pub run: Option<RunConfig>,
}

impl std::fmt::Debug for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Restored({:?}, {})", self.bundle, self.schedule.name())
    }
}

/// Where the architecture comes from for checkpoints without a run config.
#[derive(Debug, Clone)]
pub struct ExternalModel {
    pub arch: Arch,
    /// The reference constructor's keyword arguments (top level or under "config").
    pub config: serde_json::Value,
    /// Defaults to vp-linear for U-ViT and ddpm-linear for the UNet.
    pub schedule: Option<ScheduleKind>,
}

impl ExternalModel {
    /// The model a file records under [`MODEL_METADATA_KEY`] (`text`, the
    /// metadata value), with `schedule` (`None`: the family's default).
    pub fn recorded(text: &str, path: &Path, schedule: Option<ScheduleKind>) -> Result<Self> {
        let config = ModelConfig::from_metadata(text, &path.display().to_string())?;
        Ok(ExternalModel { arch: config.arch(), config: config.to_json(), schedule })
    }
}

/// Loads `path` for sampling on the CPU; `use_ema` picks the EMA weights
/// of a training checkpoint.
pub fn restore(path: &Path, use_ema: bool, external: Option<&ExternalModel>) -> Result<Restored> {
    restore_on(path, use_ema, external, Device::Cpu)
}

/// [`restore`] with the model's parameters on `device`. Checkpoints hold
/// host tensors whatever device wrote them, so any checkpoint goes to any
/// device; the sparse masks are computed where the weights live.
pub fn restore_on(path: &Path, use_ema: bool, external: Option<&ExternalModel>, device: Device) -> Result<Restored> {
    let meta = load_weights_metadata(path)?;
    match meta.get(META_KIND).map(String::as_str) {
        Some("train-state") => {
            let st = load_train_state(path)?;
            let run = RunConfig::parse(&st.config_toml, &format!("{} (config)", path.display()), &[])?;
            let b = build::new_model_on(&run, run.seed, device)?;
            let (weights, source) = if use_ema {
                (ema_weights(path, st.ema, st.model, &b.store)?, format!("{} (ema.*)", path.display()))
            } else {
                (st.model, format!("{} (model.*)", path.display()))
            };
            // Strict: every parameter must come from the file (a missing
            // EMA tensor is an error, never a randomly initialised layer).
            b.store.load_tensors(&source, weights, |_| false)?;
            if let Some(s) = &run.sparse {
                build::sparsify(&b.store, s)?;
            }
            b.store.set_training(false);
            Ok(Restored { schedule: build::schedule(&run)?, bundle: b, run: Some(run) })
        }
        _ => {
            if let Some(text) = meta.get(META_CONFIG) {
                let run = RunConfig::parse(text, &format!("{} (config)", path.display()), &[])?;
                let b = build::new_model_on(&run, run.seed, device)?;
                sparsedm_diffusion::load_checkpoint_for_eval(&b.store, path, None)?;
                b.store.set_training(false);
                return Ok(Restored { schedule: build::schedule(&run)?, bundle: b, run: Some(run) });
            }
            // A model file without a run config may record its model (a
            // pruned or exported official checkpoint); given arguments win.
            let recorded = match (external, meta.get(MODEL_METADATA_KEY)) {
                (None, Some(text)) => Some(ExternalModel::recorded(text, path, None)?),
                _ => None,
            };
            let ext = external.or(recorded.as_ref()).ok_or_else(|| {
                TrainError::Config(format!(
                    "{} has no sparsedm run config in its metadata: give --arch and --config (the model's constructor arguments as JSON)",
                    path.display()
                ))
            })?;
            let config = ModelConfig::from_json(ext.arch, &ext.config)?;
            device.ensure_available()?;
            let store = ParamStore::new(device, 0);
            let model = config.build(&store)?;
            sparsedm_diffusion::load_checkpoint_for_eval(&store, path, None)?;
            store.set_training(false);
            let kind = ext.schedule.unwrap_or(match ext.arch {
                Arch::UViT => ScheduleKind::VpLinear,
                Arch::DdpmUNet => ScheduleKind::DdpmLinear,
            });
            Ok(Restored { bundle: Bundle { store, model, config }, schedule: kind.build(), run: None })
        }
    }
}

/// The weights to sample from with EMA: the EMA of every parameter plus the
/// buffers (not averaged) from `model.*`. A checkpoint without any `ema.*`
/// tensor is refused with a pointer to `--raw`; one missing some is caught
/// by the strict load that follows.
fn ema_weights(path: &Path, ema: Vec<(String, Tensor)>, model: Vec<(String, Tensor)>, store: &ParamStore) -> Result<Vec<(String, Tensor)>> {
    if ema.is_empty() {
        return Err(TrainError::Data {
            path: path.into(),
            msg: "the training checkpoint has no ema.* tensors (EMA weights): sample its raw weights with --raw".into(),
        });
    }
    let params: std::collections::HashSet<String> = store.params().into_iter().map(|(n, _)| n).collect();
    let mut weights = ema;
    weights.extend(model.into_iter().filter(|(n, _)| !params.contains(n)));
    Ok(weights)
}
