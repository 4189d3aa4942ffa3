//! Where a command's model comes from: a checkpoint that carries its run
//! config (a run's checkpoint or export), a model file that records its
//! model (`sparsedm.model`: what `prune` and `export` write for official
//! weights, which have no run config), or official weights with `--arch`
//! and `--config` (the constructor's JSON). `--arch/--config` given for a
//! file that describes itself must describe the same model; they are then
//! a check, and a different model is refused naming the arguments that
//! differ. The model is checked against the file's tensor shapes before it
//! is built, so a wrong or corrupt config is one clear error, never an
//! allocation abort.

use anyhow::{Result, bail};
use sparsedm_diffusion::{Arch, MODEL_METADATA_KEY, ModelConfig, ScheduleKind};
use sparsedm_train::checkpoint::{META_CONFIG, META_KIND};
use sparsedm_train::restore::ExternalModel;
use std::collections::HashMap;
use std::path::Path;

/// What describes a checkpoint's model.
pub enum Described {
    /// The run config the checkpoint carries (its schedule and sparsity too).
    Run(ModelConfig),
    /// The model the file records (`sparsedm.model`), or `--arch/--config`.
    Model(ModelConfig),
}

impl Described {
    /// The model, whichever way it is described.
    pub fn config(&self) -> &ModelConfig {
        match self {
            Described::Run(c) | Described::Model(c) => c,
        }
    }
}

/// The model of `checkpoint`, from its metadata or `--arch/--config`,
/// checked against the file's weight shapes.
///
/// # Errors
/// `--arch` without `--config` or the reverse; an unreadable or invalid
/// config (given or stored); `--arch/--config` that describe another model
/// than the file's; no description at all (naming `--arch/--config`); a
/// model whose weight shapes are not the file's.
pub fn describe(checkpoint: &Path, arch: Option<Arch>, config: Option<&Path>) -> Result<Described> {
    let shown = checkpoint.display();
    let given = match (arch, config) {
        (Some(arch), Some(path)) => Some((ModelConfig::from_file(arch, path)?, path)),
        (Some(_), None) | (None, Some(_)) => bail!("--arch and --config go together"),
        (None, None) => None,
    };
    let meta = sparsedm_tensor::load_weights_metadata(checkpoint)?;
    let (stored, origin) = stored_model(checkpoint, &meta)?;
    let described = match (given, stored) {
        (Some((given, path)), Some(stored)) => {
            let differences: Vec<String> = given
                .differences(stored.config())
                .into_iter()
                .map(|(k, yours, file)| format!("{k} = {yours} there, {file} in the file"))
                .collect();
            if !differences.is_empty() {
                bail!(
                    "--arch/--config {} describe another model than the one {origin} ({shown}): {}; \
                     leave --arch and --config out to use the file's",
                    path.display(),
                    differences.join(", ")
                );
            }
            stored
        }
        (Some((given, path)), None) => {
            crate::model_size::check_config_against_weights(&given, path, checkpoint)?;
            return Ok(Described::Model(given));
        }
        (None, Some(stored)) => stored,
        (None, None) => bail!(
            "{shown} has no sparsedm run config or recorded model in its metadata: give --arch and --config \
             (the model's constructor arguments as JSON)"
        ),
    };
    // A stored description must fit the file's tensors before a model is
    // built from it (a corrupt one must not allocate).
    let label = match described {
        Described::Run(_) => "stored in the checkpoint",
        Described::Model(_) => "recorded in the checkpoint",
    };
    crate::model_size::check_config_against_weights(described.config(), Path::new(label), checkpoint)?;
    Ok(described)
}

/// The model `meta` (the metadata of `checkpoint`) describes, and how the
/// file holds it, for messages.
///
/// # Errors
/// A run config or recorded model that does not parse.
pub fn stored_model(checkpoint: &Path, meta: &HashMap<String, String>) -> Result<(Option<Described>, &'static str)> {
    if let Some(text) = meta.get(META_CONFIG) {
        let run = sparsedm_train::RunConfig::parse(text, &format!("{} (config)", checkpoint.display()), &[])?;
        let cfg = ModelConfig::from_json(sparsedm_train::build::arch(&run)?, &run.nnet_json()?)?;
        return Ok((Some(Described::Run(cfg)), "in the run config it carries"));
    }
    match meta.get(MODEL_METADATA_KEY) {
        Some(text) => Ok((Some(Described::Model(ModelConfig::from_metadata(text, &checkpoint.display().to_string())?)), "recorded in it")),
        None => Ok((None, "")),
    }
}

/// The model of `checkpoint` as `restore` takes it: `None` when the
/// checkpoint's own run config builds it, else the model (recorded or
/// given) with `schedule` (`None`: the family's default).
///
/// # Errors
/// Those of [`describe`]; `schedule` for a checkpoint with a run config
/// (which carries its schedule).
pub fn model_source(
    checkpoint: &Path,
    arch: Option<Arch>,
    config: Option<&Path>,
    schedule: Option<ScheduleKind>,
) -> Result<Option<ExternalModel>> {
    Ok(match describe(checkpoint, arch, config)? {
        Described::Run(_) => {
            if let Some(s) = schedule {
                bail!(
                    "--schedule {s} does not apply to {}: it carries its run config, whose schedule it samples with",
                    checkpoint.display()
                );
            }
            None
        }
        Described::Model(cfg) => Some(ExternalModel { arch: cfg.arch(), config: cfg.to_json(), schedule }),
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

/// A checkpoint argument that names a folder is refused before anything is read: a training
/// run's folder (what `train --out` wrote) with the checkpoints to choose from — the newest, and
/// the best-FID one when the run kept it — since which one is meant is the user's choice; any
/// other folder plainly. (Reading it gave "Is a directory (os error 21)".) `flag` is the
/// argument's name, empty for a positional one.
///
/// # Errors
/// `path` is a folder.
pub fn checkpoint_file(flag: &str, path: &Path) -> Result<()> {
    let Some((named, newest, best)) = folder(flag, path) else { return Ok(()) };
    let choices: Vec<String> =
        [newest.map(|p| format!("{} (the newest)", p.display())), best.map(|p| format!("{} (the best FID)", p.display()))]
            .into_iter()
            .flatten()
            .collect();
    if choices.is_empty() {
        bail!("{named} is a folder, not a checkpoint file");
    }
    bail!("{named} is a training run's folder, not a checkpoint file: give one of its checkpoints, e.g. {}", choices.join(" or "))
}

/// [`checkpoint_file`] for the commands that take a model's state dict (`forward`, `prune`): a
/// run's checkpoints are training checkpoints, which they refuse, so the run's best-FID model
/// (`best.safetensors`, an EMA model) is named when kept, and the `export` that writes the newest
/// checkpoint's model otherwise.
///
/// # Errors
/// `path` is a folder.
pub fn model_file(flag: &str, path: &Path) -> Result<()> {
    let Some((named, newest, best)) = folder(flag, path) else { return Ok(()) };
    let export = newest.map(|p| {
        format!(
            "`sparsedm export --checkpoint {} --format safetensors --out M.safetensors` writes its newest checkpoint's model",
            p.display()
        )
    });
    match (best, export) {
        (Some(best), Some(export)) => {
            bail!("{named} is a training run's folder, not a model file: give its best-FID model {}, or {export}", best.display())
        }
        (Some(best), None) => bail!("{named} is a training run's folder, not a model file: give its best-FID model {}", best.display()),
        (None, Some(export)) => bail!("{named} is a training run's folder, not a model file: {export}"),
        (None, None) => bail!("{named} is a folder, not a model file"),
    }
}

/// For a folder `path`: how to name the argument, the run's newest checkpoint and its
/// `best.safetensors` (each when present); `None` when `path` is not a folder.
fn folder(flag: &str, path: &Path) -> Option<(String, Option<std::path::PathBuf>, Option<std::path::PathBuf>)> {
    if !path.is_dir() {
        return None;
    }
    let named = if flag.is_empty() { path.display().to_string() } else { format!("{flag} {}", path.display()) };
    let newest = sparsedm_train::checkpoint::list_checkpoints(path).ok().and_then(|c| c.last().map(|(_, p)| p.clone()));
    let best = Some(path.join("best.safetensors")).filter(|b| b.is_file());
    Some((named, newest, best))
}

/// Commands that take a model's state dict (`forward`, `prune`) refuse a
/// training checkpoint, which holds the weights under `model.*`/`ema.*`
/// with the optimizer state, naming the `export` that writes its model.
///
/// # Errors
/// `weights` is a training checkpoint (or its metadata is unreadable).
pub fn refuse_training_checkpoint(weights: &Path, command: &str) -> Result<()> {
    let meta = sparsedm_tensor::load_weights_metadata(weights)?;
    if meta.get(META_KIND).map(String::as_str) == Some("train-state") {
        let shown = weights.display();
        bail!(
            "{shown} is a training checkpoint (model.*, ema.* and optimizer state), not a model's state dict: \
             `sparsedm export --checkpoint {shown} --format safetensors --out M.safetensors` writes its model (EMA weights), \
             which {command} takes"
        );
    }
    Ok(())
}

/// `meta` plus the description of `cfg` for a model file written without
/// a run config, so that its readers need no `--arch/--config`; a file
/// with a run config keeps that, which describes the model already.
pub fn record_model(meta: &mut HashMap<String, String>, cfg: &ModelConfig) {
    if !meta.contains_key(META_CONFIG) {
        meta.insert(MODEL_METADATA_KEY.to_string(), cfg.to_metadata());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_config_is_not_overwritten_by_a_recorded_model() {
        let cfg = ModelConfig::preset("cifar10_ddpm").unwrap();
        let mut meta = HashMap::from([(META_CONFIG.to_string(), "x".to_string())]);
        record_model(&mut meta, &cfg);
        assert!(!meta.contains_key(MODEL_METADATA_KEY));
        let mut meta = HashMap::new();
        record_model(&mut meta, &cfg);
        assert_eq!(ModelConfig::from_metadata(&meta[MODEL_METADATA_KEY], "m").unwrap(), cfg);
    }
}
