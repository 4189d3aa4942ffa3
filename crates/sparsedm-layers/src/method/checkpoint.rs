//! Sparse checkpoints: a safetensors file whose masked weights hold zeros
//! where pruned, plus the sparsity spec in its `__metadata__`, so that a
//! reader knows which layers are N:M sparse, with which pattern, and can
//! check it.
//!
//! Format: the ordinary state dict (same tensor names as a dense
//! checkpoint, so dense tools load it unchanged), and under the metadata key
//! [`SPARSITY_METADATA_KEY`] (`"sparsedm.sparsity"`) one JSON string:
//!
//! ```json
//! {"format": 1,
//!  "layers": {"in_blocks.0.attn.qkv": {"pattern": "2:4", "mode": "srste",
//!             "non_divisible": "leave-dense", "masking": "grouped"}, ...}}
//! ```
//!
//! `mode` is a [`ModeKind`] string (`srste`, `srste:<λ>`, `ste`, `fixed`,
//! `fixed-transposable`, `untrained`), `non_divisible` is `leave-dense` or
//! `flat-index`, `masking` how the mask was built (`grouped`,
//! `transposable`, `flat-index`, `left-dense`; informative — readers
//! recompute it from shape, pattern and mode). Only layers with a sparse
//! mode are listed.
//!
//! Reading always **verifies**: every listed layer's stored weight must
//! satisfy its N:M pattern (and a transposable one the 2:4 rule along both
//! dimensions); otherwise the error ([`LayersError::LayerNotSparse`]) names
//! the file, the layer and the first offending group. Writing verifies too,
//! so this module never produces a file it would reject.
//!
//! A sparse checkpoint stores *deployed* weights: the values SR-STE keeps
//! in the pruned positions of its dense weights are not in it. To resume
//! SR-STE training exactly, also keep a dense checkpoint
//! ([`ParamStore::save_safetensors`]).

use crate::nm::mask::{MaskOutcome, NonDivisible};
use crate::nm::transposable::check_transposable;
use crate::nm::validate::check_nm;
use crate::nn::sparse::{ModeKind, SparseMode, plan_mode};
use crate::{LayersError, NmPattern, ParamStore, WeightLayout};
use serde::{Deserialize, Serialize};
use sparsedm_tensor::nm_cpu::{NmValueDtype, nm_checkpoint_bytes, nm_checkpoint_bytes_with_metadata};
use sparsedm_tensor::{Tensor, load_safetensors, load_safetensors_metadata, safetensors_len, save_safetensors, write_atomic};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

type Result<T> = std::result::Result<T, LayersError>;

/// The `__metadata__` key holding the [`SparsitySpec`] JSON.
pub const SPARSITY_METADATA_KEY: &str = "sparsedm.sparsity";

/// The version of the spec format written by this crate.
pub const SPARSITY_FORMAT: u32 = 1;

/// The sparsity of one layer, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSparsity {
    /// `N:M`.
    pub pattern: String,
    /// A [`ModeKind`] string.
    pub mode: String,
    /// `leave-dense` or `flat-index`.
    pub non_divisible: String,
    /// How the mask was built when written (informative).
    pub masking: String,
}

/// Every sparse layer of a checkpoint, by layer name (state-dict prefix;
/// the weight is `<layer>.weight`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparsitySpec {
    pub format: u32,
    pub layers: BTreeMap<String, LayerSparsity>,
}

fn nd_name(nd: NonDivisible) -> &'static str {
    match nd {
        NonDivisible::LeaveDense => "leave-dense",
        NonDivisible::FlatIndex => "flat-index",
    }
}

impl LayerSparsity {
    /// The spec of a mode and non-divisible handling on a weight of `layout`.
    ///
    /// # Errors
    /// A mode that cannot be built on the layout; [`LayersError::InvalidArgument`] for a dense mode.
    pub fn new(layout: WeightLayout, mode: SparseMode, nd: NonDivisible) -> Result<Self> {
        let pattern = mode.pattern().ok_or_else(|| LayersError::InvalidArgument {
            what: "sparsity spec".into(),
            msg: "a dense layer has no sparsity spec".into(),
        })?;
        let plan = plan_mode(layout, mode, nd)?.map_or("dense", |p| p.name());
        Ok(LayerSparsity {
            pattern: pattern.to_string(),
            mode: mode.kind().to_string(),
            non_divisible: nd_name(nd).into(),
            masking: plan.into(),
        })
    }

    /// The mode and non-divisible handling this entry describes.
    ///
    /// # Errors
    /// [`LayersError::InvalidArgument`] for an unknown pattern, mode or handling.
    pub fn mode(&self) -> Result<(SparseMode, NonDivisible)> {
        let pattern: NmPattern = self.pattern.parse()?;
        let kind: ModeKind = self.mode.parse()?;
        if kind == ModeKind::Dense {
            return Err(LayersError::InvalidArgument {
                what: "sparsity spec".into(),
                msg: "mode \"dense\" cannot be listed as a sparse layer".into(),
            });
        }
        let nd = match self.non_divisible.as_str() {
            "leave-dense" => NonDivisible::LeaveDense,
            "flat-index" => NonDivisible::FlatIndex,
            other => {
                return Err(LayersError::InvalidArgument {
                    what: "sparsity spec".into(),
                    msg: format!("non_divisible {other:?}: expected leave-dense or flat-index"),
                });
            }
        };
        Ok((kind.with_pattern(pattern), nd))
    }
}

impl SparsitySpec {
    /// The spec of every sparse slot of `store` (dense slots are not listed).
    ///
    /// # Errors
    /// A slot whose mode cannot be built (cannot happen for modes set through
    /// [`crate::SparseSlot::configure`]).
    pub fn from_store(store: &ParamStore) -> Result<Self> {
        let mut layers = BTreeMap::new();
        for (name, slot) in store.sparse_slots() {
            let mode = slot.mode();
            if mode.pattern().is_some() {
                layers.insert(name, LayerSparsity::new(slot.layout(), mode, slot.non_divisible())?);
            }
        }
        Ok(SparsitySpec { format: SPARSITY_FORMAT, layers })
    }

    /// The JSON string stored under [`SPARSITY_METADATA_KEY`].
    pub fn to_json(&self) -> String {
        // Plain strings and maps: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the metadata JSON of file `path` (for error messages).
    ///
    /// # Errors
    /// [`LayersError::SparseCheckpoint`] for invalid JSON or an unknown format version.
    pub fn from_json(json: &str, path: &str) -> Result<Self> {
        let spec: SparsitySpec = serde_json::from_str(json).map_err(|e| LayersError::SparseCheckpoint {
            path: path.into(),
            msg: format!("the {SPARSITY_METADATA_KEY} metadata is not a valid sparsity spec ({e})"),
        })?;
        if spec.format != SPARSITY_FORMAT {
            return Err(LayersError::SparseCheckpoint {
                path: path.into(),
                msg: format!("sparsity spec format {} is not supported (this build reads {SPARSITY_FORMAT})", spec.format),
            });
        }
        Ok(spec)
    }

    /// Checks that every listed layer's weight in `tensors` satisfies its
    /// pattern. `path` names the file in errors.
    ///
    /// # Errors
    /// [`LayersError::SparseCheckpoint`] for a listed layer without a weight
    /// or with an invalid entry; [`LayersError::LayerNotSparse`] naming the
    /// layer and the first offending group.
    pub fn verify(&self, tensors: &[(String, Tensor)], path: &str) -> Result<()> {
        let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (layer, entry) in &self.layers {
            let bad = |msg: String| LayersError::SparseCheckpoint { path: path.into(), msg: format!("layer {layer}: {msg}") };
            let (mode, nd) = entry.mode().map_err(|e| bad(e.to_string()))?;
            let weight_name = format!("{layer}.weight");
            let t = by_name.get(weight_name.as_str()).ok_or_else(|| bad(format!("the file has no tensor {weight_name}")))?;
            let layout = WeightLayout::from_shape(t.shape()).map_err(|e| bad(e.to_string()))?;
            let not_sparse = |e: LayersError| LayersError::LayerNotSparse { path: path.into(), layer: layer.clone(), source: Box::new(e) };
            let Some(plan) = plan_mode(layout, mode, nd).map_err(not_sparse)? else { continue };
            if plan.outcome == MaskOutcome::LeftDense {
                continue;
            }
            let values = t.to_vec_f32()?;
            if plan.transposable {
                check_transposable(&values, layout).map_err(not_sparse)?;
            }
            let pattern = mode.pattern().ok_or_else(|| bad("no pattern".into()))?;
            check_nm(&values, layout, pattern, nd).map_err(not_sparse)?;
        }
        Ok(())
    }
}

/// The state dict of `store` with every sparse layer's weight replaced by
/// its deployed (masked) value, and the spec.
///
/// # Errors
/// Tensor errors, a slot whose mask cannot be built.
pub fn sparse_state_dict(store: &ParamStore) -> Result<(Vec<(String, Tensor)>, SparsitySpec)> {
    let spec = SparsitySpec::from_store(store)?;
    let mut deployed = HashMap::new();
    for (name, slot) in store.sparse_slots() {
        if spec.layers.contains_key(&name) {
            deployed.insert(format!("{name}.weight"), slot.deployed_weight()?);
        }
    }
    let tensors = store.state_dict().into_iter().map(|(n, t)| match deployed.remove(&n) {
        Some(d) => (n, d),
        None => (n, t),
    });
    Ok((tensors.collect(), spec))
}

/// Writes `tensors` with `spec` (and any other string `metadata`) to `path`
/// atomically, after verifying them against the spec.
///
/// # Errors
/// Verification errors (nothing is written), I/O errors.
pub fn write_sparse_checkpoint(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    spec: &SparsitySpec,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    spec.verify(tensors, &path.display().to_string())?;
    let mut meta = metadata.unwrap_or_default();
    meta.insert(SPARSITY_METADATA_KEY.into(), spec.to_json());
    save_safetensors(path, tensors, Some(meta))?;
    Ok(())
}

/// What [`write_compressed_sparse_checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedReport {
    /// Layers the sparsity spec lists with a mask (those it lists as left
    /// dense, whose input dimension M does not divide, are not counted).
    pub listed: usize,
    /// Of those, layers stored compressed (N:M along their inputs; a
    /// flat-index mask is stored dense).
    pub compressed: usize,
    /// Bytes of the file written.
    pub bytes: usize,
    /// Bytes of the same state dict written as an ordinary sparse
    /// checkpoint (dense tensors, f32 where they are f32).
    pub dense_bytes: usize,
}

/// [`write_sparse_checkpoint`] with every listed layer that is N:M along
/// its inputs stored compressed: its kept values and packed in-group
/// positions instead of the dense weight (`sparsedm_tensor::nm_cpu`'s
/// compressed checkpoint; a 2:4 layer in f32 takes ~53 % of its dense
/// bytes). Every reader of checkpoints expands it back to the same dense
/// tensors (`sparsedm_tensor::load_safetensors`), and the spec is verified
/// on them as for any sparse checkpoint. With [`NmValueDtype::F16`] every
/// value of the file (not only the sparse layers') is stored as f16:
/// smaller, and lossy. Written atomically.
///
/// # Errors
/// As [`write_sparse_checkpoint`]; a write failure.
pub fn write_compressed_sparse_checkpoint(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    spec: &SparsitySpec,
    metadata: Option<HashMap<String, String>>,
    dtype: NmValueDtype,
) -> Result<CompressedReport> {
    let path = path.as_ref();
    spec.verify(tensors, &path.display().to_string())?;
    let mut meta = metadata.unwrap_or_default();
    meta.insert(SPARSITY_METADATA_KEY.into(), spec.to_json());
    let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut patterns = HashMap::new();
    for (layer, entry) in &spec.layers {
        let weight = format!("{layer}.weight");
        let (Some(t), Ok(p)) = (by_name.get(weight.as_str()), entry.pattern.parse::<NmPattern>()) else { continue };
        let nm = HashMap::from([(weight.clone(), (p.n(), p.m()))]);
        // Stored compressed only where the format takes it (N:M along the
        // inputs, convs with whole channel groups): tried on the layer alone.
        if nm_checkpoint_bytes(&[(weight.clone(), (*t).clone())], &nm, dtype).is_ok() {
            patterns.insert(weight, (p.n(), p.m()));
        }
    }
    let bytes = nm_checkpoint_bytes_with_metadata(tensors, &patterns, dtype, meta.clone())?;
    let dense_bytes = safetensors_len(tensors, Some(meta))?;
    write_atomic(path, &bytes)?;
    let listed = spec.layers.values().filter(|l| !matches!(l.masking.as_str(), "left-dense" | "dense")).count();
    Ok(CompressedReport { listed, compressed: patterns.len(), bytes: bytes.len(), dense_bytes })
}

/// Saves `store` as a sparse checkpoint (masked weights plus spec; see the
/// module doc) and returns the spec.
///
/// # Errors
/// As [`write_sparse_checkpoint`].
pub fn save_sparse_checkpoint(
    store: &ParamStore,
    path: impl AsRef<Path>,
    metadata: Option<HashMap<String, String>>,
) -> Result<SparsitySpec> {
    let (tensors, spec) = sparse_state_dict(store)?;
    write_sparse_checkpoint(path, &tensors, &spec, metadata)?;
    Ok(spec)
}

/// Reads a sparse checkpoint and verifies it; returns its tensors (in their
/// stored dtypes) and spec.
///
/// # Errors
/// I/O and format errors; [`LayersError::SparseCheckpoint`] when the file has
/// no sparsity metadata; the errors of [`SparsitySpec::verify`].
pub fn read_sparse_checkpoint(path: impl AsRef<Path>) -> Result<(Vec<(String, Tensor)>, SparsitySpec)> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let meta = load_safetensors_metadata(path)?;
    let json = meta.get(SPARSITY_METADATA_KEY).ok_or_else(|| LayersError::SparseCheckpoint {
        path: shown.clone(),
        msg: format!("no {SPARSITY_METADATA_KEY:?} metadata: not a sparse checkpoint (load it as a dense one)"),
    })?;
    let spec = SparsitySpec::from_json(json, &shown)?;
    let tensors = load_safetensors(path)?;
    spec.verify(&tensors, &shown)?;
    Ok((tensors, spec))
}

/// Loads a sparse checkpoint into `store`: verifies it, loads every tensor
/// strictly ([`ParamStore::load_tensors`]), then gives each layer the mode
/// and non-divisible handling of the spec (layers not listed become dense;
/// `Fixed` masks are recomputed from the stored weights, which reproduces
/// the stored support). The file and the model are checked before the
/// store changes; afterwards each listed layer's deployed weight is checked
/// to equal the stored one (a recomputed mask that dropped a stored
/// non-zero would be an error, never a silently different model).
///
/// With the modes set, evaluation (`no_grad`) runs the listed layers on the
/// deployed N:M kernels (`crate::deployed`): this is how `sample`,
/// `forward` and the evaluations load a sparse checkpoint.
///
/// # Errors
/// Those of [`read_sparse_checkpoint`]; a listed layer the model does not
/// have; the strict-load errors; a listed layer whose deployed weight is not
/// the stored one.
pub fn load_sparse_checkpoint(store: &ParamStore, path: impl AsRef<Path>) -> Result<SparsitySpec> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let (tensors, spec) = read_sparse_checkpoint(path)?;
    let slots: BTreeMap<String, _> = store.sparse_slots().into_iter().collect();
    let mut modes = Vec::with_capacity(slots.len());
    for layer in spec.layers.keys() {
        if !slots.contains_key(layer) {
            return Err(LayersError::SparseCheckpoint {
                path: shown.clone(),
                msg: format!("layer {layer} is listed as sparse but the model has no such Linear/Conv2d layer"),
            });
        }
    }
    for (name, slot) in &slots {
        let (mode, nd) = match spec.layers.get(name) {
            Some(entry) => entry.mode()?,
            None => (SparseMode::Dense, slot.non_divisible()),
        };
        modes.push((slot, mode, nd));
    }
    let stored: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(n, _)| n.strip_suffix(".weight").is_some_and(|l| spec.layers.contains_key(l)))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    store.load_tensors(&shown, tensors, |_| false)?;
    for (slot, mode, nd) in modes {
        slot.configure(mode, nd)?;
    }
    for (name, slot) in &slots {
        let Some(want) = stored.get(&format!("{name}.weight")) else { continue };
        let (got, want) = (slot.deployed_weight()?.to_vec_f32()?, want.to_vec_f32()?);
        if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
            return Err(LayersError::SparseCheckpoint {
                path: shown.clone(),
                msg: format!(
                    "layer {name}: the mask of its {} mode, recomputed from the stored weight, changes element {i} ({} stored, {} deployed)",
                    slot.mode().kind(),
                    want[i],
                    got[i]
                ),
            });
        }
    }
    Ok(spec)
}
