//! Training checkpoints: one safetensors file per save holding everything a
//! run needs to continue exactly — the model's parameters (`model.*`, the
//! dense weights SR-STE keeps training), the EMA weights (`ema.*`), the
//! optimizer state (`optim.*`), and in the metadata the step, the noise
//! generator's state, the run config and the sparsity spec. Files are
//! written atomically (temporary file, fsync, rename) and the oldest are
//! removed beyond `keep_last`, so a crash at any moment leaves the
//! previous checkpoints intact.

use crate::error::{Result, TrainError};
use sparsedm_tensor::{Tensor, load_safetensors, load_safetensors_metadata, save_safetensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Metadata keys.
pub const META_STEP: &str = "sparsedm.step";
pub const META_RNG: &str = "sparsedm.rng";
pub const META_CONFIG: &str = "sparsedm.config";
pub const META_KIND: &str = "sparsedm.kind";
pub const META_BEST_FID: &str = "sparsedm.best_fid";
/// The sparsity spec (written by sparsedm-layers' sparse checkpoints).
pub const META_SPARSITY: &str = "sparsedm.sparsity";

/// The metadata of a model file (`kind = model`, what `sample`, `forward`,
/// `export`, `macs` and `train.init` read without `--arch/--config`): the
/// run config that builds its model and, for a trained model, its step.
pub fn model_metadata(cfg: &crate::RunConfig, step: Option<u64>) -> Result<HashMap<String, String>> {
    let mut meta = HashMap::from([(META_CONFIG.to_string(), cfg.to_toml()?), (META_KIND.to_string(), "model".to_string())]);
    if let Some(step) = step {
        meta.insert(META_STEP.to_string(), step.to_string());
    }
    Ok(meta)
}

/// The folder of a run's checkpoints.
pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// `checkpoints/step_00001234.safetensors`.
pub fn checkpoint_path(run_dir: &Path, step: u64) -> PathBuf {
    checkpoint_dir(run_dir).join(format!("step_{step:08}.safetensors"))
}

/// The checkpoints of a run, oldest first.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = checkpoint_dir(run_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(step) = name.strip_prefix("step_").and_then(|s| s.strip_suffix(".safetensors")).and_then(|s| s.parse().ok()) {
            out.push((step, p));
        }
    }
    out.sort();
    Ok(out)
}

/// What a training checkpoint holds, split by prefix.
#[derive(Debug, Default)]
pub struct TrainState {
    pub step: u64,
    pub rng: (u64, u64),
    pub config_toml: String,
    pub best_fid: Option<f64>,
    pub sparsity_json: Option<String>,
    pub model: Vec<(String, Tensor)>,
    pub ema: Vec<(String, Tensor)>,
    pub optim: HashMap<String, Tensor>,
}

/// Writes a training checkpoint atomically and prunes old ones.
pub fn save_train_state(run_dir: &Path, st: &TrainState, keep_last: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(checkpoint_dir(run_dir)).map_err(|e| TrainError::Data { path: checkpoint_dir(run_dir), msg: e.to_string() })?;
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(st.model.len() * 4);
    tensors.extend(st.model.iter().map(|(n, t)| (format!("model.{n}"), t.clone())));
    tensors.extend(st.ema.iter().map(|(n, t)| (format!("ema.{n}"), t.clone())));
    let mut optim: Vec<_> = st.optim.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
    optim.sort_by(|a, b| a.0.cmp(&b.0));
    tensors.extend(optim);
    let mut meta = HashMap::new();
    meta.insert(META_KIND.to_string(), "train-state".to_string());
    meta.insert(META_STEP.to_string(), st.step.to_string());
    meta.insert(META_RNG.to_string(), format!("{},{}", st.rng.0, st.rng.1));
    meta.insert(META_CONFIG.to_string(), st.config_toml.clone());
    if let Some(f) = st.best_fid {
        meta.insert(META_BEST_FID.to_string(), f.to_string());
    }
    if let Some(s) = &st.sparsity_json {
        meta.insert(META_SPARSITY.to_string(), s.clone());
    }
    let path = checkpoint_path(run_dir, st.step);
    save_safetensors(&path, &tensors, Some(meta))?;
    let all = list_checkpoints(run_dir)?;
    if all.len() > keep_last.max(1) {
        for (_, old) in &all[..all.len() - keep_last.max(1)] {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(path)
}

/// Reads a training checkpoint written by [`save_train_state`].
pub fn load_train_state(path: &Path) -> Result<TrainState> {
    let meta = load_safetensors_metadata(path)?;
    let bad = |msg: String| TrainError::Data { path: path.into(), msg };
    if meta.get(META_KIND).map(String::as_str) != Some("train-state") {
        return Err(bad("not a sparsedm training checkpoint (no sparsedm.kind = train-state in its metadata)".into()));
    }
    let step = meta.get(META_STEP).and_then(|s| s.parse().ok()).ok_or_else(|| bad("missing or bad sparsedm.step".into()))?;
    let rng = meta
        .get(META_RNG)
        .and_then(|s| s.split_once(','))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| bad("missing or bad sparsedm.rng".into()))?;
    let mut st = TrainState {
        step,
        rng,
        config_toml: meta.get(META_CONFIG).cloned().unwrap_or_default(),
        best_fid: meta.get(META_BEST_FID).and_then(|s| s.parse().ok()),
        sparsity_json: meta.get(META_SPARSITY).cloned(),
        ..Default::default()
    };
    for (name, t) in load_safetensors(path)? {
        if let Some(n) = name.strip_prefix("model.") {
            st.model.push((n.to_string(), t));
        } else if let Some(n) = name.strip_prefix("ema.") {
            st.ema.push((n.to_string(), t));
        } else {
            st.optim.insert(name, t);
        }
    }
    Ok(st)
}
