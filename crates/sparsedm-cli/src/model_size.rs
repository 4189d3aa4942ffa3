//! Shapes and sizes of a model checked *before* it is built: the weight
//! shapes a configuration implies against the safetensors header of the
//! weights it is to load (read without loading any tensor; a compressed
//! N:M checkpoint's layers by the dense shapes its metadata gives), and the
//! parameters' memory against what the machine has. A config with a huge
//! width is then one clear error naming the tensor or the size, never an
//! allocation abort while the model is being built.

use crate::budget;
use anyhow::{Context, Result, bail};
use sparsedm_diffusion::ModelConfig;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Largest safetensors header read (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// Name → shape of every tensor in the safetensors header of `path`.
pub fn header_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| anyhow::anyhow!("{}: too short to be a safetensors file", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n > file_len.saturating_sub(8) {
        bail!("{}: safetensors header length {n} is larger than the file or the format allows", path.display());
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).with_context(|| format!("reading the header of {}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| anyhow::anyhow!("{}: the safetensors header is not valid JSON ({e})", path.display()))?;
    let obj = doc.as_object().ok_or_else(|| anyhow::anyhow!("{}: the safetensors header is not a JSON object", path.display()))?;
    let mut shapes = HashMap::new();
    for (name, info) in obj.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let shape = info
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|dims| dims.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect::<Option<Vec<usize>>>())
            .ok_or_else(|| anyhow::anyhow!("{}: tensor {name} has no valid shape in the header", path.display()))?;
        shapes.insert(name.clone(), shape);
    }
    // A compressed N:M checkpoint stores a layer `W` as `W.nm_values` and
    // `W.nm_positions`; its metadata entry `nm:W` gives the dense shape the
    // readers expand it to.
    let meta = obj.get("__metadata__").and_then(|m| m.as_object());
    if let Some(meta) = meta.filter(|m| m.contains_key(sparsedm_tensor::nm_cpu::NM_CHECKPOINT_KEY)) {
        for (key, spec) in meta.iter().filter_map(|(k, v)| Some((k.strip_prefix("nm:")?, v.as_str()?))) {
            let shape = spec
                .split(',')
                .find_map(|p| p.strip_prefix("shape="))
                .and_then(|d| d.split('x').map(|x| x.parse::<usize>().ok()).collect::<Option<Vec<usize>>>())
                .ok_or_else(|| anyhow::anyhow!("{}: unreadable N:M metadata for {key}: {spec:?}", path.display()))?;
            shapes.remove(&format!("{key}.nm_values"));
            shapes.remove(&format!("{key}.nm_positions"));
            shapes.insert(key.to_string(), shape);
        }
    }
    Ok(shapes)
}

/// The shape of every Linear/Conv2d weight the configuration implies, by
/// tensor name (`<layer>.weight`).
fn weight_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    cfg.mac_report(1)
        .entries
        .into_iter()
        .filter_map(|e| {
            let shape = match e.layout? {
                sparsedm_layers::WeightLayout::Linear { out, inp } => vec![out, inp],
                sparsedm_layers::WeightLayout::Conv2d { out, inp, kh, kw } => vec![out, inp, kh, kw],
            };
            Some((format!("{}.weight", e.name), shape))
        })
        .collect()
}

/// A lower bound of the configuration's parameter count (its Linear and
/// Conv2d weights), or an error when even that overflows.
pub fn param_lower_bound(cfg: &ModelConfig) -> Result<u64> {
    weight_shapes(cfg).iter().try_fold(0u64, |acc, (name, shape)| {
        let n = budget::product(name, &shape.iter().map(|&d| d as u64).collect::<Vec<_>>())?;
        acc.checked_add(n).ok_or_else(|| anyhow::anyhow!("the parameter count of the model overflows 64 bits"))
    })
}

/// Refuses a configuration whose parameters alone (f32, plus one copy
/// while loading) cannot fit in the memory available; `what` names it.
pub fn check_fits(cfg: &ModelConfig, what: &str) -> Result<()> {
    let params = param_lower_bound(cfg)?;
    budget::ensure_memory(&format!("the model of {what} ({params} parameters at least)"), params.saturating_mul(8))
}

/// Checks the configuration `config` (for messages) against the header of
/// `weights` before anything is built. A config that implies more weight
/// values than the file holds cannot describe it, and building it could
/// exhaust memory: it is refused, naming the first weight whose shape
/// differs. Otherwise the model is small enough to build, and the strict
/// load lists every missing, extra or mis-shaped tensor in one go. In both
/// cases the model must fit in memory.
///
/// A PyTorch checkpoint has no header to read before its pickle: it is
/// checked by its own bounded reader and then by the strict load (the
/// config's size still has to fit in memory, checked when it is built).
pub fn check_config_against_weights(cfg: &ModelConfig, config: &Path, weights: &Path) -> Result<()> {
    if matches!(sparsedm_tensor::weights_format(weights)?, sparsedm_tensor::WeightsFormat::Torch(_)) {
        return Ok(());
    }
    let file = header_shapes(weights)?;
    let file_values =
        file.values().fold(0u64, |acc, shape| acc.saturating_add(shape.iter().fold(1u64, |p, &d| p.saturating_mul(d as u64))));
    let needed = param_lower_bound(cfg)?;
    if needed > file_values {
        let first = weight_shapes(cfg).into_iter().find_map(|(name, expected)| match file.get(&name) {
            Some(actual) if *actual != expected => Some(format!("tensor {name} has shape {actual:?} there, the config gives {expected:?}")),
            None => Some(format!("it has no tensor {name} {expected:?}")),
            _ => None,
        });
        bail!(
            "the config {} describes at least {needed} weight values but {} holds {file_values}{}: the config does not describe these weights",
            config.display(),
            weights.display(),
            first.map(|f| format!(" ({f})")).unwrap_or_default()
        );
    }
    check_fits(cfg, &config.display().to_string())
}
