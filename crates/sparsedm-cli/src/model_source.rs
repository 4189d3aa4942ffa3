//! Where a command's model comes from: a checkpoint that carries its run
//! config (a run's checkpoint or export), or official weights with
//! `--arch` and `--config` (the constructor's JSON). Both are checked
//! against the file's tensor shapes before any model is built, so a wrong
//! or corrupt config is one clear error, never an allocation abort.

use anyhow::{Context, Result, bail};
use sparsedm_diffusion::{Arch, ModelConfig, ScheduleKind};
use sparsedm_train::checkpoint::{META_CONFIG, META_KIND};
use sparsedm_train::restore::ExternalModel;
use std::path::Path;

/// The model of `checkpoint`: `Some` external model for `--arch` with
/// `--config`, `None` when the checkpoint's own run config builds it.
///
/// # Errors
/// `--arch` without `--config` or the reverse; an unreadable or invalid
/// config; `--arch/--config` for a checkpoint that carries its own run
/// config; a config (given or stored) whose weight shapes are not the
/// file's.
pub fn model_source(
    checkpoint: &Path,
    arch: Option<Arch>,
    config: Option<&Path>,
    schedule: Option<ScheduleKind>,
) -> Result<Option<ExternalModel>> {
    let external = match (arch, config) {
        (Some(arch), Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
            Some((ExternalModel { arch, config: json, schedule }, path))
        }
        (Some(_), None) | (None, Some(_)) => bail!("--arch and --config go together"),
        (None, None) => None,
    };
    let meta = sparsedm_tensor::load_weights_metadata(checkpoint)?;
    if external.is_some() && meta.contains_key(META_CONFIG) {
        bail!("--arch/--config do not apply: {} carries its own run config", checkpoint.display());
    }
    if let Some(text) = meta.get(META_CONFIG) {
        // The stored config must describe the file's tensors before a model
        // is built from it (a corrupt config must not allocate).
        let run = sparsedm_train::RunConfig::parse(text, &format!("{} (config)", checkpoint.display()), &[])?;
        let cfg = ModelConfig::from_json(sparsedm_train::build::arch(&run)?, &run.nnet_json()?)?;
        crate::model_size::check_config_against_weights(&cfg, Path::new("stored in the checkpoint"), checkpoint)?;
    }
    Ok(match external {
        Some((ext, path)) => {
            let model = ModelConfig::from_json(ext.arch, &ext.config).with_context(|| format!("--config {}", path.display()))?;
            crate::model_size::check_config_against_weights(&model, path, checkpoint)?;
            Some(ext)
        }
        None => None,
    })
}

/// `--raw` (the raw weights instead of the EMA ones) applies to training
/// checkpoints only, which hold both; anywhere else it is an error rather
/// than a flag silently ignored.
///
/// # Errors
/// `raw` for a file that is not a training checkpoint.
pub fn check_raw(checkpoint: &Path, raw: bool) -> Result<()> {
    let meta = sparsedm_tensor::load_weights_metadata(checkpoint)?;
    if raw && meta.get(META_KIND).map(String::as_str) != Some("train-state") {
        bail!("--raw applies to training checkpoints (raw vs EMA weights); {} is not one", checkpoint.display());
    }
    Ok(())
}
