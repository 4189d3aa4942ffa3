//! [`ParamStore`]: a model's parameters, buffers and sparse slots by their
//! dotted PyTorch state-dict names (`in_blocks.0.attn.qkv.weight`).
//!
//! A model is built by handing each layer a sub-store (`store.pp("attn")`);
//! layers create their parameters through it, so the names match the
//! reference `state_dict()` exactly and checkpoints load without renaming.
//! Loading is strict: every missing, unexpected or mis-shaped tensor is
//! collected and reported in one error.

use crate::LayersError;
use crate::nn::init::Init;
use crate::nn::sparse::SparseSlot;
use sparsedm_tensor::{DType, Device, Rng, Tensor, no_grad};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

type Result<T> = std::result::Result<T, LayersError>;

/// Whether an entry is trained (a variable) or state (a buffer such as
/// batch-norm running statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Param,
    Buffer,
}

#[derive(Debug)]
struct Inner {
    entries: BTreeMap<String, (Tensor, Kind)>,
    sparse: BTreeMap<String, SparseSlot>,
    /// Entries a loaded file may lack (they keep their current value).
    optional: HashSet<String>,
    rng: Rng,
}

/// A handle on a shared store with a name prefix. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
    training: Arc<AtomicBool>,
    prefix: String,
    device: Device,
}

impl ParamStore {
    /// An empty store; `seed` drives parameter initialisation.
    pub fn new(device: Device, seed: u64) -> Self {
        ParamStore {
            inner: Arc::new(Mutex::new(Inner {
                entries: BTreeMap::new(),
                sparse: BTreeMap::new(),
                optional: HashSet::new(),
                rng: Rng::new(seed),
            })),
            training: Arc::new(AtomicBool::new(true)),
            prefix: String::new(),
            device,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The full name of `name` under this handle's prefix.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }

    /// A handle whose names are prefixed by `name` (`pp` = push prefix).
    pub fn pp(&self, name: impl std::fmt::Display) -> ParamStore {
        ParamStore { prefix: self.path(&name.to_string()), ..self.clone() }
    }

    /// The parameter `name`, created with `init` on first use. A second
    /// request with another shape is an error.
    pub fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.entry(name, shape, init, Kind::Param)
    }

    /// A non-trained state tensor (running statistics).
    pub fn buffer(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.entry(name, shape, init, Kind::Buffer)
    }

    fn entry(&self, name: &str, shape: &[usize], init: Init, kind: Kind) -> Result<Tensor> {
        let full = self.path(name);
        let mut inner = self.lock();
        if let Some((t, _)) = inner.entries.get(&full) {
            if t.shape() != shape {
                return Err(LayersError::Param { name: full, msg: format!("registered with shape {:?}, requested {shape:?}", t.shape()) });
            }
            return Ok(t.clone());
        }
        let t = init.tensor(shape, &mut inner.rng, &self.device)?;
        let t = if kind == Kind::Param { t.to_var() } else { t };
        inner.entries.insert(full, (t.clone(), kind));
        Ok(t)
    }

    /// Registers the sparse slot of the layer at this prefix.
    pub(crate) fn register_sparse(&self, slot: SparseSlot) {
        self.lock().sparse.insert(self.prefix.clone(), slot);
    }

    /// All trained parameters, sorted by name.
    pub fn params(&self) -> Vec<(String, Tensor)> {
        self.lock().entries.iter().filter(|(_, (_, k))| *k == Kind::Param).map(|(n, (t, _))| (n.clone(), t.clone())).collect()
    }

    /// Every entry (parameters and buffers), sorted by name: the state dict.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.lock().entries.iter().map(|(n, (t, _))| (n.clone(), t.clone())).collect()
    }

    /// The entry `name` (full dotted name).
    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.lock().entries.get(name).map(|(t, _)| t.clone())
    }

    /// Sparse layers by name (the layer prefix, e.g. `in_blocks.0.mlp.fc1`).
    pub fn sparse_slots(&self) -> Vec<(String, SparseSlot)> {
        self.lock().sparse.iter().map(|(n, s)| (n.clone(), s.clone())).collect()
    }

    /// Calls [`SparseSlot::after_optimizer_step`] on every sparse slot: the
    /// second half of ASP's patched `optimizer.step` (`Fixed` layers get
    /// their weights re-masked). Call it after each optimizer step.
    pub fn after_optimizer_step(&self) -> Result<()> {
        for (_, slot) in self.sparse_slots() {
            slot.after_optimizer_step()?;
        }
        Ok(())
    }

    /// Number of trained scalars.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// Training or evaluation mode (dropout, inference-only masks).
    pub fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
    pub(crate) fn training_flag(&self) -> Arc<AtomicBool> {
        self.training.clone()
    }

    /// Lets a loaded file lack the entry `name` (under this handle's
    /// prefix): it then keeps its current value, while a file that has it
    /// loads it as usual. For parameters a model adds on top of the
    /// reference checkpoints (SparseDM's zero-initialised qkv bias); every
    /// other entry stays strictly required.
    pub fn allow_missing(&self, name: &str) {
        let full = self.path(name);
        self.lock().optional.insert(full);
    }

    /// Copies named tensors into the store's entries. Every entry must be
    /// given exactly once with its shape (f16/bf16/i64 values convert to
    /// f32) and finite values (see [`crate::finite`]), except the entries
    /// [`Self::allow_missing`] names, which may be absent; names for which
    /// `ignore` returns true are skipped. All
    /// problems are reported together, and nothing is written unless there
    /// are none.
    pub fn load_tensors(&self, source: &str, tensors: Vec<(String, Tensor)>, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let inner = self.lock();
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        let mut updates = Vec::new();
        let mut non_finite = None;
        for (name, t) in tensors {
            if ignore(&name) {
                continue;
            }
            match inner.entries.get(&name) {
                None => problems.push(format!("  unexpected tensor {name} {:?}", t.shape())),
                Some((dst, _)) if dst.shape() != t.shape() => {
                    // Present, so not also "missing".
                    seen.insert(name.clone());
                    problems.push(format!("  tensor {name} has shape {:?}, the model expects {:?}", t.shape(), dst.shape()))
                }
                Some((dst, _)) => {
                    seen.insert(name.clone());
                    if non_finite.is_none() {
                        non_finite = crate::finite::check_finite(source, &name, &t).err();
                    }
                    updates.push((dst.clone(), t));
                }
            }
        }
        for (name, (t, _)) in &inner.entries {
            if !seen.contains(name) && !ignore(name) && !inner.optional.contains(name) {
                problems.push(format!("  missing tensor {name} {:?}", t.shape()));
            }
        }
        if !problems.is_empty() {
            problems.sort();
            return Err(LayersError::CheckpointMismatch { path: source.to_string(), problems });
        }
        if let Some(e) = non_finite {
            return Err(e);
        }
        let _g = no_grad();
        for (dst, src) in updates {
            dst.set_data(&src.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    /// Loads a weights file strictly (see [`Self::load_tensors`]): safetensors, or a
    /// PyTorch `.pth`/`.pt`/`.ckpt` whose state dict is found automatically
    /// ([`sparsedm_tensor::load_weights`]).
    pub fn load_safetensors(&self, path: impl AsRef<Path>, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let path = path.as_ref();
        let tensors = sparsedm_tensor::load_weights(path, None)?;
        self.load_tensors(&path.display().to_string(), tensors, ignore)
    }

    /// Writes the state dict to a safetensors file atomically.
    pub fn save_safetensors(&self, path: impl AsRef<Path>, metadata: Option<std::collections::HashMap<String, String>>) -> Result<()> {
        sparsedm_tensor::save_safetensors(path, &self.state_dict(), metadata)?;
        Ok(())
    }
}
