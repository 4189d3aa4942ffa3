//! The [`Tensor`] type: a shared storage buffer, a [`Layout`] over it, and,
//! when it is part of a differentiable computation, the [`Node`] that made it.
//! Cloning a tensor is cheap (an `Arc`). Views share storage.

use crate::autograd::{BackwardCtx, Node, is_grad_enabled};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Error, Layout, Result};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Stamps for [`Tensor::version`]: every new buffer and every in-place write
/// takes the next value, so a stamp names one state of one buffer.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// A buffer shared by a tensor and its views, with the stamp of its last
/// write (see [`Tensor::version`]).
struct Shared {
    data: RwLock<Storage>,
    version: AtomicU64,
}

impl Shared {
    fn new(storage: Storage) -> Arc<Shared> {
        Arc::new(Shared { data: RwLock::new(storage), version: AtomicU64::new(NEXT_VERSION.fetch_add(1, Ordering::Relaxed)) })
    }
}

/// An n-dimensional array with reverse-mode autograd.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

struct Inner {
    id: usize,
    // The buffer is behind a lock so that optimizers and EMA can update a
    // variable in place (see `set_data`) while views keep sharing it.
    storage: Arc<Shared>,
    layout: Layout,
    node: Option<Node>,
    is_var: bool,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {:?}, {}", self.shape(), self.dtype(), self.device())?;
        if let Ok(v) = self.to_vec_f32() {
            let shown: Vec<_> = v.iter().take(8).collect();
            write!(f, ", {shown:?}{}", if v.len() > 8 { "…" } else { "" })?;
        }
        write!(f, "]")
    }
}

/// Boxes a backward rule; see [`crate::autograd`].
pub(crate) fn bw<F>(f: F) -> crate::autograd::BackwardFn
where
    F: Fn(&BackwardCtx<'_>) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    Box::new(f)
}

impl Tensor {
    /// The inputs of this tensor's node, taken out, when this is the last
    /// handle to it (so the node goes away with it); none otherwise. For
    /// [`Node`]'s iterative drop.
    pub(crate) fn into_graph_inputs(self) -> Vec<Tensor> {
        match Arc::try_unwrap(self.0) {
            Ok(inner) => inner.node.map(|mut n| std::mem::take(&mut n.inputs)).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    // ----- construction -----------------------------------------------------

    fn make(storage: Arc<Shared>, layout: Layout, node: Option<Node>, is_var: bool) -> Tensor {
        Tensor(Arc::new(Inner { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), storage, layout, node, is_var }))
    }

    /// An untracked tensor over fresh contiguous storage.
    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        Tensor::make(Shared::new(storage), Layout::contiguous(shape), None, false)
    }

    /// The result of an op: tracked when grad mode is on and an input is.
    pub(crate) fn from_op(
        storage: Storage,
        shape: &[usize],
        op: &'static str,
        inputs: &[&Tensor],
        backward: crate::autograd::BackwardFn,
    ) -> Tensor {
        let node = Self::node_for(op, inputs, backward);
        Tensor::make(Shared::new(storage), Layout::contiguous(shape), node, false)
    }

    /// A view of `self` with another layout over the same storage.
    pub(crate) fn view_op(&self, layout: Layout, op: &'static str, backward: crate::autograd::BackwardFn) -> Tensor {
        let node = Self::node_for(op, &[self], backward);
        Tensor::make(self.0.storage.clone(), layout, node, false)
    }

    fn node_for(op: &'static str, inputs: &[&Tensor], backward: crate::autograd::BackwardFn) -> Option<Node> {
        (is_grad_enabled() && inputs.iter().any(|t| t.is_tracked())).then(|| Node {
            op,
            inputs: inputs.iter().map(|&t| t.clone()).collect(),
            backward,
        })
    }

    /// A tensor from f32 values in row-major order (uploaded when `device`
    /// is a GPU).
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::check_len("from_vec", data.len(), shape)?;
        device.ensure_available()?;
        Self::from_host(CpuStorage::F32(data), shape, device, "from_vec")
    }

    /// A tensor over host data placed on `device` (an upload for a GPU).
    fn from_host(data: CpuStorage, shape: &[usize], device: &Device, op: &'static str) -> Result<Tensor> {
        Ok(Self::from_storage(Storage::from_host(data, *device, op)?, shape))
    }

    /// Whether the tensor lives on a GPU.
    pub fn is_cuda(&self) -> bool {
        matches!(self.device(), Device::Cuda(_))
    }

    /// A tensor from an f32 slice (copied).
    pub fn from_slice(data: &[f32], shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::from_vec(data.to_vec(), shape, device)
    }

    /// An i64 tensor (labels, indices).
    pub fn from_vec_i64(data: Vec<i64>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::check_len("from_vec_i64", data.len(), shape)?;
        device.ensure_available()?;
        Self::from_host(CpuStorage::I64(data), shape, device, "from_vec_i64")
    }

    /// A tensor over a host buffer of any dtype.
    pub fn from_cpu_storage(data: CpuStorage, shape: &[usize]) -> Result<Tensor> {
        Self::check_len("from_cpu_storage", data.len(), shape)?;
        Ok(Self::from_storage(Storage::Cpu(data), shape))
    }

    fn check_len(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
        if len != shape.iter().product::<usize>() {
            return Err(Error::ElementCount { op, shape: shape.to_vec(), len });
        }
        Ok(())
    }

    /// A tensor filled with `value` (on a GPU by a fill kernel, no upload).
    pub fn full(value: f32, shape: &[usize], device: &Device) -> Result<Tensor> {
        device.ensure_available()?;
        Ok(Self::from_storage(Storage::full(value, shape.iter().product(), *device)?, shape))
    }
    pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::full(0.0, shape, device)
    }
    pub fn ones(shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::full(1.0, shape, device)
    }
    /// A 0-dimensional tensor.
    pub fn scalar(value: f32, device: &Device) -> Result<Tensor> {
        Self::from_vec(vec![value], &[], device)
    }
    /// `0, 1, …, n-1` as f32.
    pub fn arange(n: usize, device: &Device) -> Result<Tensor> {
        Self::from_vec((0..n).map(|i| i as f32).collect(), &[n], device)
    }
    pub fn zeros_like(&self) -> Result<Tensor> {
        Self::zeros(self.shape(), &self.device())
    }
    pub fn ones_like(&self) -> Result<Tensor> {
        Self::ones(self.shape(), &self.device())
    }

    // ----- accessors --------------------------------------------------------

    /// A process-unique id (the key of gradients in a [`crate::GradStore`]).
    pub fn id(&self) -> usize {
        self.0.id
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }
    pub fn elem_count(&self) -> usize {
        self.0.layout.elem_count()
    }
    /// Size of dimension `d`, or an error naming `op`.
    pub fn dim(&self, d: usize) -> Result<usize> {
        self.0.layout.check_dim("dim", d)?;
        Ok(self.shape()[d])
    }
    pub fn dtype(&self) -> DType {
        self.storage().dtype()
    }
    pub fn device(&self) -> Device {
        self.storage().device()
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// A leaf that gradients are computed for.
    pub fn is_var(&self) -> bool {
        self.0.is_var
    }
    /// Part of a differentiable computation (a variable or computed from one).
    pub fn is_tracked(&self) -> bool {
        self.0.is_var || self.0.node.is_some()
    }
    pub(crate) fn node(&self) -> Option<&Node> {
        self.0.node.as_ref()
    }
    /// The op that produced this tensor, if it is tracked.
    pub fn op_name(&self) -> Option<&'static str> {
        self.0.node.as_ref().map(|n| n.op)
    }

    /// Whether `self` and `other` are views of one buffer.
    pub(crate) fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.data.read().unwrap_or_else(|e| e.into_inner())
    }
    /// The buffer for an in-place write: takes the write lock, then a new
    /// [`Tensor::version`] stamp (so a reader that sees the new stamp waits
    /// for the write to finish before it reads the data).
    pub(crate) fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        let guard = self.0.storage.data.write().unwrap_or_else(|e| e.into_inner());
        self.0.storage.version.store(NEXT_VERSION.fetch_add(1, Ordering::Relaxed), Ordering::Release);
        guard
    }

    /// A stamp of the current contents of this tensor's buffer: it changes
    /// at every in-place write (`set_data`, `update_f32`, the fused AdamW
    /// and EMA updates) through any tensor sharing the buffer, and no two
    /// buffers ever share a stamp. Caches derived from a tensor's values
    /// (a compressed sparse weight) keep the stamp they were built at and
    /// rebuild when it differs. Read it before reading the values: a write
    /// racing with the read then at worst costs one needless rebuild.
    pub fn version(&self) -> u64 {
        self.0.storage.version.load(Ordering::Acquire)
    }

    /// The elements as f32 in row-major order (f16/bf16/i64 are converted;
    /// a CUDA tensor is downloaded).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        Ok(match self.to_cpu_storage()? {
            CpuStorage::F32(v) => v,
            CpuStorage::F16(v) => v.into_iter().map(f32::from).collect(),
            CpuStorage::BF16(v) => v.into_iter().map(f32::from).collect(),
            CpuStorage::I64(v) => v.into_iter().map(|x| x as f32).collect(),
        })
    }

    /// The elements of an i64 tensor in row-major order.
    pub fn to_vec_i64(&self) -> Result<Vec<i64>> {
        if self.dtype() != DType::I64 {
            return Err(Error::UnsupportedDType { op: "to_vec_i64", dtype: self.dtype(), expected: "i64" });
        }
        match self.to_cpu_storage()? {
            CpuStorage::I64(v) => Ok(v),
            other => Err(Error::UnsupportedDType { op: "to_vec_i64", dtype: other.dtype(), expected: "i64" }),
        }
    }

    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.elem_count() != 1 {
            return Err(Error::bad_shape("to_scalar", self.shape(), "expected exactly one element"));
        }
        Ok(self.to_vec_f32()?[0])
    }

    /// Runs `f` on the elements as f32 in row-major order, borrowed in place
    /// when this is a contiguous f32 CPU tensor, else on a converted copy
    /// (as [`Tensor::to_vec_f32`]). Inference kernels outside the backend
    /// (the N:M layers) read their input this way without a copy.
    pub(crate) fn with_host_f32<R>(&self, op: &'static str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        {
            let storage = self.storage();
            if let Storage::Cpu(c) = &*storage
                && let Ok(data) = c.f32s(op)
            {
                return Ok(crate::backend::cpu::buffer::with_contiguous(data, self.layout(), f));
            }
        }
        Ok(f(&self.to_vec_f32()?))
    }

    /// A contiguous host copy in the tensor's own dtype (downloaded from a GPU).
    pub fn to_cpu_storage(&self) -> Result<CpuStorage> {
        self.storage().to_cpu(self.layout(), "to_cpu_storage")
    }

    // ----- graph control ----------------------------------------------------

    /// The same values, cut from the graph (shares storage).
    pub fn detach(&self) -> Tensor {
        Tensor::make(self.0.storage.clone(), self.0.layout.clone(), None, false)
    }

    /// A variable (a leaf gradients are computed for) sharing this storage.
    pub fn to_var(&self) -> Tensor {
        Tensor::make(self.0.storage.clone(), self.0.layout.clone(), None, true)
    }

    /// Overwrites this tensor's elements with those of `src` (same shape),
    /// in place, for optimizer and EMA updates. Every tensor sharing the
    /// storage sees the new values. Not recorded in the graph.
    ///
    /// Devices may differ: into a CUDA tensor, a CUDA source on the same GPU
    /// is copied device to device and a CPU source is uploaded; into a CPU
    /// tensor, a CUDA source is downloaded. The dtypes must match.
    pub fn set_data(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op: "set_data", lhs: self.shape().to_vec(), rhs: src.shape().to_vec() });
        }
        let Some(range) = self.layout().contiguous_range() else {
            return Err(Error::bad_shape("set_data", self.shape(), "the destination must be contiguous"));
        };
        // A contiguous copy on this tensor's device first: `src` may share this storage.
        if src.dtype() != self.dtype() {
            return Err(Error::UnsupportedDType { op: "set_data", dtype: src.dtype(), expected: self.dtype().name() });
        }
        let staged = src.storage().copy_to(src.layout(), self.device(), "set_data")?;
        self.storage_mut().write_range(range, &staged, "set_data")
    }

    /// Applies `f` to the f32 elements in place (contiguous tensors only).
    /// Not recorded in the graph; meant for optimizers on the CPU.
    ///
    /// `f` is a host closure, so on a CUDA tensor the elements are
    /// downloaded, `f` runs on the host and the result is uploaded back: a
    /// round trip through host memory, fine for tests and one-off edits but
    /// not for a training loop's optimizer.
    pub fn update_f32(&self, f: impl FnOnce(&mut [f32])) -> Result<()> {
        let Some(range) = self.layout().contiguous_range() else {
            return Err(Error::bad_shape("update_f32", self.shape(), "the tensor must be contiguous"));
        };
        if self.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op: "update_f32", dtype: self.dtype(), expected: "f32" });
        }
        let mut f = Some(f);
        self.storage_mut().update_f32(range, &mut |v| {
            if let Some(f) = f.take() {
                f(v)
            }
        })
    }

    // ----- dtype and device -------------------------------------------------

    /// Converts to another dtype (f32 ↔ f16/bf16/i64). Float-to-float
    /// conversions pass gradients through (converted back).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let src_dtype = self.dtype();
        let out = self.storage().to_dtype(self.layout(), dtype)?;
        let differentiable = src_dtype.is_float() && dtype.is_float();
        let inputs: &[&Tensor] = if differentiable { &[self] } else { &[] };
        Ok(Tensor::from_op(out, self.shape(), "to_dtype", inputs, bw(move |c| Ok(vec![Some(c.grad.to_dtype(src_dtype)?)]))))
    }

    /// Moves the tensor to `device` (same dtype; a contiguous copy). The
    /// move is differentiable: the gradient moves back to the source device.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        device.ensure_available()?;
        let from = self.device();
        if *device == from {
            return Ok(self.clone());
        }
        let moved = self.storage().copy_to(self.layout(), *device, "to_device")?;
        let inputs: &[&Tensor] = if self.dtype().is_float() { &[self] } else { &[] };
        Ok(Tensor::from_op(moved, self.shape(), "to_device", inputs, bw(move |c| Ok(vec![Some(c.grad.to_device(&from)?)]))))
    }
}

impl Tensor {
    /// Attaches a hand-written backward rule to a value computed without
    /// recording (the hook for ops whose gradient is not the derivative of
    /// their forward, such as SR-STE's straight-through estimator).
    ///
    /// `value` must be untracked; the result has its values and, when grad
    /// mode is on and an input is tracked, a node over `inputs` whose
    /// gradients `backward` returns (one `Option` per input, each with that
    /// input's shape).
    pub fn custom_op<F>(value: &Tensor, op: &'static str, inputs: &[&Tensor], backward: F) -> Result<Tensor>
    where
        F: Fn(&BackwardCtx<'_>) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    {
        if value.is_tracked() {
            return Err(Error::invalid(op, "custom_op: the value must be computed under no_grad (or detached)"));
        }
        let node = Self::node_for(op, inputs, bw(backward));
        Ok(Tensor::make(value.0.storage.clone(), value.0.layout.clone(), node, false))
    }
}
