//! A tensor's buffer on its device, and the one place in the crate that
//! asks which device that is (the candle design). [`Storage`] is an enum of
//! the backends' buffer types; each method below matches once and hands the
//! buffers, their [`Layout`]s and the op kind to the CPU backend
//! (`backend/cpu`) or the CUDA backend (`backend/cuda`,
//! an uninhabited type without the `cuda` feature). Operands on different
//! devices are an [`Error::DeviceMismatch`] here, for every op.
//!
//! Ops (`ops/`) validate shapes, broadcast layouts, call these
//! primitives and record autograd nodes; they never see a device.

use crate::backend::api::{BackendStorage, Operand};
use crate::backend::cuda::{self, CudaStorage};
use crate::op_kinds::{AdamWScalars, AttnDims, BinaryKind, ConvGeom, Draw, PoolGeom, UnaryKind};
use crate::{DType, Device, Error, Layout, Result, Rng};

pub use crate::backend::cpu::CpuStorage;

/// A tensor's buffer on its device (flat; strides live in the [`Layout`]).
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

/// Applies the same backend method to whichever buffer `$s` holds, wrapping
/// the result back into a `Storage`.
macro_rules! each {
    ($s:expr, $c:ident => $e:expr) => {
        match $s {
            Storage::Cpu($c) => Ok(Storage::Cpu($e?)),
            Storage::Cuda($c) => Ok(Storage::Cuda($e?)),
        }
    };
}

/// Both operands' buffers on one backend, or a device mismatch naming `op`.
macro_rules! both {
    ($op:expr, ($a:expr, $b:expr), |$x:ident, $y:ident| $e:expr) => {
        match ($a, $b) {
            (Storage::Cpu($x), Storage::Cpu($y)) => Ok(Storage::Cpu($e?)),
            (Storage::Cuda($x), Storage::Cuda($y)) => Ok(Storage::Cuda($e?)),
            (x, y) => Err(Error::DeviceMismatch { op: $op, lhs: x.device(), rhs: y.device() }),
        }
    };
}

/// The CPU buffer of `s`, or a device mismatch with `dev` naming `op`.
fn cpu_of<'a>(op: &'static str, dev: Device, s: &'a Storage) -> Result<&'a CpuStorage> {
    match s {
        Storage::Cpu(c) => Ok(c),
        other => Err(Error::DeviceMismatch { op, lhs: dev, rhs: other.device() }),
    }
}

/// The CUDA buffer of `s`, or a device mismatch with `dev` naming `op`.
fn cuda_of<'a>(op: &'static str, dev: Device, s: &'a Storage) -> Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        other => Err(Error::DeviceMismatch { op, lhs: dev, rhs: other.device() }),
    }
}

/// Optional operand on the backend of the CPU/CUDA pair.
fn opt_cpu<'a>(op: &'static str, dev: Device, o: Option<(&'a Storage, &'a Layout)>) -> Result<Option<Operand<'a, CpuStorage>>> {
    o.map(|(s, l)| cpu_of(op, dev, s).map(|c| (c, l))).transpose()
}
fn opt_cuda<'a>(op: &'static str, dev: Device, o: Option<(&'a Storage, &'a Layout)>) -> Result<Option<Operand<'a, CudaStorage>>> {
    o.map(|(s, l)| cuda_of(op, dev, s).map(|c| (c, l))).transpose()
}

// ----- devices ---------------------------------------------------------------

/// Checks that `device` can be used, returning a clear error otherwise.
pub(crate) fn ensure_available(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(ordinal) => cuda::ensure_available(ordinal),
    }
}

/// Waits for every queued operation of `device`.
pub(crate) fn synchronize(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(ordinal) => cuda::synchronize(ordinal),
    }
}

/// The device allocator's peak footprint (`None` on the CPU).
pub(crate) fn peak_memory_bytes(device: Device) -> Result<Option<usize>> {
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda(ordinal) => cuda::peak_memory_bytes(ordinal).map(Some),
    }
}

impl Storage {
    // ----- creation and transfers -------------------------------------------

    /// Host data placed on `device` (an upload for a GPU).
    pub(crate) fn from_host(data: CpuStorage, device: Device, op: &'static str) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(data)),
            Device::Cuda(ordinal) => Ok(Storage::Cuda(CudaStorage::upload_to(ordinal, &data, op)?)),
        }
    }

    /// `n` f32 elements equal to `value` on `device` (a fill kernel on a GPU).
    pub(crate) fn full(value: f32, n: usize, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuStorage::F32(vec![value; n]))),
            Device::Cuda(ordinal) => Ok(Storage::Cuda(CudaStorage::full_on(ordinal, n, value, "full")?)),
        }
    }

    /// `n` random values of `what` on `device`, advancing `rng` (the same
    /// stream on every device).
    pub(crate) fn draw(n: usize, rng: &mut Rng, what: Draw, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuStorage::F32(crate::backend::cpu::random::draw(n, rng, what)))),
            Device::Cuda(ordinal) => Ok(Storage::Cuda(CudaStorage::draw_on(ordinal, n, rng, what)?)),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(c) => c.dtype(),
            Storage::Cuda(c) => c.dtype(),
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(c) => c.device(),
        }
    }

    /// The view `l` as a contiguous host buffer (a download from a GPU).
    pub(crate) fn to_cpu(&self, l: &Layout, op: &'static str) -> Result<CpuStorage> {
        match self {
            Storage::Cpu(c) => c.to_cpu(l, op),
            Storage::Cuda(c) => c.to_cpu(l, op),
        }
    }

    /// A contiguous copy of the view `l` on `device` (a device copy, an
    /// upload or a download).
    pub(crate) fn copy_to(&self, l: &Layout, device: Device, op: &'static str) -> Result<Storage> {
        if device == self.device() {
            return self.copy_view(l, op);
        }
        match (self, device) {
            (Storage::Cuda(c), Device::Cuda(ordinal)) => {
                // Between two GPUs: through the host.
                Ok(Storage::Cuda(CudaStorage::upload_to(ordinal, &c.to_cpu(l, op)?, op)?))
            }
            _ => Storage::from_host(self.to_cpu(l, op)?, device, op),
        }
    }

    /// A contiguous copy of the view `l` on the same device.
    pub(crate) fn copy_view(&self, l: &Layout, op: &'static str) -> Result<Storage> {
        each!(self, c => c.copy_view(l, op))
    }

    /// The view `l` converted to `dtype`.
    pub(crate) fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Storage> {
        each!(self, c => c.to_dtype(l, dtype))
    }

    /// Overwrites elements `range` with the contiguous `src` (same device and dtype).
    pub(crate) fn write_range(&mut self, range: std::ops::Range<usize>, src: &Storage, op: &'static str) -> Result<()> {
        let dev = self.device();
        match self {
            Storage::Cpu(d) => d.write_range(range, cpu_of(op, dev, src)?, op),
            Storage::Cuda(d) => d.write_range(range, cuda_of(op, dev, src)?, op),
        }
    }

    /// Runs a host closure on the f32 elements `range`, in place.
    pub(crate) fn update_f32(&mut self, range: std::ops::Range<usize>, f: &mut dyn FnMut(&mut [f32])) -> Result<()> {
        match self {
            Storage::Cpu(c) => c.update_f32(range, f),
            Storage::Cuda(c) => c.update_f32(range, f),
        }
    }

    // ----- element-wise -----------------------------------------------------

    pub(crate) fn unary(&self, l: &Layout, kind: UnaryKind, op: &'static str) -> Result<Storage> {
        each!(self, c => c.unary(l, kind, op))
    }

    /// `kind(self, rhs)`; both layouts already have the output shape.
    pub(crate) fn binary(&self, l: &Layout, rhs: &Storage, rl: &Layout, kind: BinaryKind, op: &'static str) -> Result<Storage> {
        both!(op, (self, rhs), |a, b| a.binary(l, (b, rl), kind, op))
    }

    /// `self != 0 ? a : b`; all layouts already have the output shape.
    pub(crate) fn where_cond(&self, l: &Layout, a: (&Storage, &Layout), b: (&Storage, &Layout)) -> Result<Storage> {
        let op = "where_cond";
        let dev = self.device();
        match self {
            Storage::Cpu(c) => Ok(Storage::Cpu(c.where_cond(l, (cpu_of(op, dev, a.0)?, a.1), (cpu_of(op, dev, b.0)?, b.1))?)),
            Storage::Cuda(c) => Ok(Storage::Cuda(c.where_cond(l, (cuda_of(op, dev, a.0)?, a.1), (cuda_of(op, dev, b.0)?, b.1))?)),
        }
    }

    // ----- reductions -------------------------------------------------------

    pub(crate) fn sum_dims(&self, l: &Layout, dims: &[usize]) -> Result<Storage> {
        each!(self, c => c.sum_dims(l, dims))
    }

    /// Σx² over the whole view (one element).
    pub(crate) fn sum_sq_all(&self, l: &Layout) -> Result<Storage> {
        each!(self, c => c.sum_sq_all(l))
    }

    /// Maximum over `dim` and the index (i64) of its first maximal element.
    pub(crate) fn max_dim(&self, l: &Layout, dim: usize) -> Result<(Storage, Storage)> {
        match self {
            Storage::Cpu(c) => c.max_dim(l, dim).map(|(v, i)| (Storage::Cpu(v), Storage::Cpu(i))),
            Storage::Cuda(c) => c.max_dim(l, dim).map(|(v, i)| (Storage::Cuda(v), Storage::Cuda(i))),
        }
    }

    pub(crate) fn max_dim_backward(&self, l: &Layout, idx: &Storage, in_shape: &[usize], dim: usize) -> Result<Storage> {
        both!("max_backward", (self, idx), |g, i| g.max_dim_backward(l, i, in_shape, dim))
    }

    // ----- products ---------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul(&self, l: &Layout, rhs: &Storage, rl: &Layout, batch: &[usize], m: usize, k: usize, n: usize) -> Result<Storage> {
        both!("matmul", (self, rhs), |a, b| a.matmul(l, (b, rl), batch, m, k, n))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn linear(
        &self,
        l: &Layout,
        w: (&Storage, &Layout),
        bias: Option<(&Storage, &Layout)>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Storage> {
        let (op, dev) = ("linear", self.device());
        match self {
            Storage::Cpu(x) => Ok(Storage::Cpu(x.linear(l, (cpu_of(op, dev, w.0)?, w.1), opt_cpu(op, dev, bias)?, m, k, n)?)),
            Storage::Cuda(x) => Ok(Storage::Cuda(x.linear(l, (cuda_of(op, dev, w.0)?, w.1), opt_cuda(op, dev, bias)?, m, k, n)?)),
        }
    }

    /// `cat(parts, last) · wᵀ + bias` (see `BackendStorage::linear_cat`);
    /// every operand on the first part's device.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn linear_cat(
        parts: &[(&Storage, &Layout)],
        w: (&Storage, &Layout),
        bias: Option<(&Storage, &Layout)>,
        m: usize,
        ks: &[usize],
        n: usize,
    ) -> Result<Storage> {
        let op = "linear_cat";
        let first = parts.first().ok_or_else(|| Error::invalid(op, "no operands"))?.0;
        let dev = first.device();
        match first {
            Storage::Cpu(_) => {
                let ps = parts.iter().map(|&(s, l)| Ok((cpu_of(op, dev, s)?, l))).collect::<Result<Vec<_>>>()?;
                Ok(Storage::Cpu(CpuStorage::linear_cat(&ps, (cpu_of(op, dev, w.0)?, w.1), opt_cpu(op, dev, bias)?, m, ks, n)?))
            }
            Storage::Cuda(_) => {
                let ps = parts.iter().map(|&(s, l)| Ok((cuda_of(op, dev, s)?, l))).collect::<Result<Vec<_>>>()?;
                Ok(Storage::Cuda(CudaStorage::linear_cat(&ps, (cuda_of(op, dev, w.0)?, w.1), opt_cuda(op, dev, bias)?, m, ks, n)?))
            }
        }
    }

    /// A deployed 2:4 weight: the view `l` (`[n, k]` f32, 2:4 along `k`) and
    /// its bias compressed by cuSPARSELt on their GPU. CPU buffers have no
    /// cuSPARSELt (their N:M path is `crate::nm_cpu`).
    pub(crate) fn sparse24_compress(&self, l: &Layout, bias: Option<(&Storage, &Layout)>, n: usize, k: usize) -> Result<cuda::Sparse24> {
        let (op, dev) = ("sparse24_compress", self.device());
        match self {
            Storage::Cpu(_) => Err(Error::NotImplementedOnDevice { op, device: dev }),
            Storage::Cuda(w) => w.sparse24_compress(l, opt_cuda(op, dev, bias)?, n, k),
        }
    }

    /// The im2col columns `[n, c·kh·kw, ho·wo]` (f32) of the NCHW view `l`
    /// under `g`: the right operand of a convolution as a GEMM, which the
    /// deployed 2:4 Conv2d on CUDA reorders for cuSPARSELt. CUDA only (the
    /// CPU's N:M convolution makes its own channel-last columns).
    pub(crate) fn sparse24_im2col(&self, l: &Layout, g: &ConvGeom) -> Result<Storage> {
        match self {
            Storage::Cpu(_) => Err(Error::NotImplementedOnDevice { op: "sparse24_im2col", device: self.device() }),
            Storage::Cuda(x) => Ok(Storage::Cuda(x.sparse24_im2col(l, g)?)),
        }
    }

    /// `x [m, k] · Wᵀ + b` with a compressed 2:4 weight (f32 in and out).
    pub(crate) fn sparse24_matmul(&self, l: &Layout, w: &cuda::Sparse24, m: usize) -> Result<Storage> {
        match self {
            Storage::Cpu(_) => Err(Error::NotImplementedOnDevice { op: "sparse24_matmul", device: self.device() }),
            Storage::Cuda(x) => Ok(Storage::Cuda(x.sparse24_matmul(l, w, m)?)),
        }
    }

    // ----- convolution and pooling ------------------------------------------

    pub(crate) fn conv2d(&self, l: &Layout, w: (&Storage, &Layout), bias: Option<(&Storage, &Layout)>, g: &ConvGeom) -> Result<Storage> {
        let (op, dev) = ("conv2d", self.device());
        match self {
            Storage::Cpu(x) => Ok(Storage::Cpu(x.conv2d(l, (cpu_of(op, dev, w.0)?, w.1), opt_cpu(op, dev, bias)?, g)?)),
            Storage::Cuda(x) => Ok(Storage::Cuda(x.conv2d(l, (cuda_of(op, dev, w.0)?, w.1), opt_cuda(op, dev, bias)?, g)?)),
        }
    }

    pub(crate) fn conv2d_backward_input(&self, l: &Layout, w: &Storage, lw: &Layout, g: &ConvGeom) -> Result<Storage> {
        both!("conv2d_backward", (self, w), |gy, w| gy.conv2d_backward_input(l, (w, lw), g))
    }

    pub(crate) fn conv2d_backward_weight(&self, l: &Layout, x: &Storage, lx: &Layout, g: &ConvGeom) -> Result<Storage> {
        both!("conv2d_backward", (self, x), |gy, x| gy.conv2d_backward_weight(l, (x, lx), g))
    }

    pub(crate) fn max_pool2d(&self, l: &Layout, g: &PoolGeom, with_argmax: bool) -> Result<(Storage, Option<Storage>)> {
        match self {
            Storage::Cpu(c) => c.max_pool2d(l, g, with_argmax).map(|(v, a)| (Storage::Cpu(v), a.map(Storage::Cpu))),
            Storage::Cuda(c) => c.max_pool2d(l, g, with_argmax).map(|(v, a)| (Storage::Cuda(v), a.map(Storage::Cuda))),
        }
    }

    pub(crate) fn max_pool2d_backward(&self, l: &Layout, argmax: &Storage, g: &PoolGeom) -> Result<Storage> {
        both!("max_pool2d_backward", (self, argmax), |gy, a| gy.max_pool2d_backward(l, a, g))
    }

    pub(crate) fn avg_pool2d(&self, l: &Layout, g: &PoolGeom, include_pad: bool) -> Result<Storage> {
        each!(self, c => c.avg_pool2d(l, g, include_pad))
    }

    pub(crate) fn avg_pool2d_backward(&self, l: &Layout, g: &PoolGeom, include_pad: bool) -> Result<Storage> {
        each!(self, c => c.avg_pool2d_backward(l, g, include_pad))
    }

    pub(crate) fn upsample_nearest2d(&self, l: &Layout, nchw: [usize; 4], factor: usize) -> Result<Storage> {
        each!(self, c => c.upsample_nearest2d(l, nchw, factor))
    }

    pub(crate) fn upsample_nearest2d_backward(&self, l: &Layout, nchw: [usize; 4], factor: usize) -> Result<Storage> {
        each!(self, c => c.upsample_nearest2d_backward(l, nchw, factor))
    }

    pub(crate) fn resize_bilinear(&self, l: &Layout, nchw: [usize; 4], out: (usize, usize)) -> Result<Storage> {
        each!(self, c => c.resize_bilinear(l, nchw, out))
    }

    pub(crate) fn resize_bilinear_backward(&self, l: &Layout, nchw: [usize; 4], out: (usize, usize)) -> Result<Storage> {
        each!(self, c => c.resize_bilinear_backward(l, nchw, out))
    }

    // ----- row-wise ---------------------------------------------------------

    pub(crate) fn softmax_last(&self, l: &Layout, log: bool) -> Result<Storage> {
        each!(self, c => c.softmax_last(l, log))
    }

    /// Gradient of `softmax_last` from its output `self` and the output gradient.
    pub(crate) fn softmax_last_backward(&self, l: &Layout, grad: &Storage, lg: &Layout, log: bool) -> Result<Storage> {
        both!("softmax_backward", (self, grad), |y, g| y.softmax_last_backward(l, (g, lg), log))
    }

    /// Fused scaled dot-product attention with `self` as q: the output (laid
    /// out as `lo`) and, when `keep_probs`, the probabilities (see
    /// `BackendStorage::attention`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention(
        &self,
        l: &Layout,
        k: (&Storage, &Layout),
        v: (&Storage, &Layout),
        batch: &[usize],
        dims: AttnDims,
        scale: f32,
        keep_probs: bool,
        lo: &Layout,
    ) -> Result<(Storage, Option<Storage>)> {
        let op = "attention";
        match (self, k.0, v.0) {
            (Storage::Cpu(q), Storage::Cpu(kc), Storage::Cpu(vc)) => q
                .attention(l, (kc, k.1), (vc, v.1), batch, dims, scale, keep_probs, lo)
                .map(|(o, p)| (Storage::Cpu(o), p.map(Storage::Cpu))),
            (Storage::Cuda(q), Storage::Cuda(kc), Storage::Cuda(vc)) => q
                .attention(l, (kc, k.1), (vc, v.1), batch, dims, scale, keep_probs, lo)
                .map(|(o, p)| (Storage::Cuda(o), p.map(Storage::Cuda))),
            (q, kk, vv) => {
                let other = if kk.device() != q.device() { kk.device() } else { vv.device() };
                Err(Error::DeviceMismatch { op, lhs: q.device(), rhs: other })
            }
        }
    }

    /// The gradients of attention's q (`self`), k and v in one buffer of
    /// `shape` at the views `outs` (see `BackendStorage::attention_backward`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_backward(
        &self,
        l: &Layout,
        k: (&Storage, &Layout),
        v: (&Storage, &Layout),
        probs: &Storage,
        g: (&Storage, &Layout),
        batch: &[usize],
        dims: AttnDims,
        scale: f32,
        shape: &[usize],
        outs: [&Layout; 3],
    ) -> Result<Storage> {
        let op = "attention_backward";
        match (self, k.0, v.0, probs, g.0) {
            (Storage::Cpu(q), Storage::Cpu(kc), Storage::Cpu(vc), Storage::Cpu(p), Storage::Cpu(gc)) => {
                q.attention_backward(l, (kc, k.1), (vc, v.1), p, (gc, g.1), batch, dims, scale, shape, outs).map(Storage::Cpu)
            }
            (Storage::Cuda(q), Storage::Cuda(kc), Storage::Cuda(vc), Storage::Cuda(p), Storage::Cuda(gc)) => {
                q.attention_backward(l, (kc, k.1), (vc, v.1), p, (gc, g.1), batch, dims, scale, shape, outs).map(Storage::Cuda)
            }
            (q, ..) => {
                let other = [k.0, v.0, probs, g.0].into_iter().map(Storage::device).find(|d| *d != q.device()).unwrap_or(q.device());
                Err(Error::DeviceMismatch { op, lhs: q.device(), rhs: other })
            }
        }
    }

    /// Standardized rows and `rstd` per row.
    pub(crate) fn standardize_last(&self, l: &Layout, eps: f32) -> Result<(Storage, Storage)> {
        match self {
            Storage::Cpu(c) => c.standardize_last(l, eps).map(|(y, r)| (Storage::Cpu(y), Storage::Cpu(r))),
            Storage::Cuda(c) => c.standardize_last(l, eps).map(|(y, r)| (Storage::Cuda(y), Storage::Cuda(r))),
        }
    }

    /// Layer norm over the last dim with optional `[D]` affine `w`, `b`,
    /// and `rstd` per row.
    pub(crate) fn layer_norm_last(
        &self,
        l: &Layout,
        w: Option<(&Storage, &Layout)>,
        b: Option<(&Storage, &Layout)>,
        eps: f32,
    ) -> Result<(Storage, Storage)> {
        let (op, dev) = ("layer_norm", self.device());
        match self {
            Storage::Cpu(x) => {
                let w = w.map(|(s, l)| cpu_of(op, dev, s).map(|s| (s, l))).transpose()?;
                let b = b.map(|(s, l)| cpu_of(op, dev, s).map(|s| (s, l))).transpose()?;
                x.layer_norm_last(l, w, b, eps).map(|(y, r)| (Storage::Cpu(y), Storage::Cpu(r)))
            }
            Storage::Cuda(x) => {
                let w = w.map(|(s, l)| cuda_of(op, dev, s).map(|s| (s, l))).transpose()?;
                let b = b.map(|(s, l)| cuda_of(op, dev, s).map(|s| (s, l))).transpose()?;
                x.layer_norm_last(l, w, b, eps).map(|(y, r)| (Storage::Cuda(y), Storage::Cuda(r)))
            }
        }
    }

    /// Group norm of `[N, C, ...]` with optional `[C]` affine `w`, `b`, and
    /// `rstd` per (image, group).
    pub(crate) fn group_norm(
        &self,
        l: &Layout,
        groups: usize,
        w: Option<(&Storage, &Layout)>,
        b: Option<(&Storage, &Layout)>,
        eps: f32,
    ) -> Result<(Storage, Storage)> {
        let (op, dev) = ("group_norm", self.device());
        match self {
            Storage::Cpu(x) => {
                let w = w.map(|(s, l)| cpu_of(op, dev, s).map(|s| (s, l))).transpose()?;
                let b = b.map(|(s, l)| cpu_of(op, dev, s).map(|s| (s, l))).transpose()?;
                x.group_norm(l, groups, w, b, eps).map(|(y, r)| (Storage::Cpu(y), Storage::Cpu(r)))
            }
            Storage::Cuda(x) => {
                let w = w.map(|(s, l)| cuda_of(op, dev, s).map(|s| (s, l))).transpose()?;
                let b = b.map(|(s, l)| cuda_of(op, dev, s).map(|s| (s, l))).transpose()?;
                x.group_norm(l, groups, w, b, eps).map(|(y, r)| (Storage::Cuda(y), Storage::Cuda(r)))
            }
        }
    }

    /// Gradients of `group_norm` (`[gx, gw, gb]`, each where `need` says)
    /// from the input `self`, the weight, the saved `rstd` and the output
    /// gradient.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn group_norm_backward(
        &self,
        l: &Layout,
        groups: usize,
        w: Option<(&Storage, &Layout)>,
        rstd: &Storage,
        grad: (&Storage, &Layout),
        eps: f32,
        need: [bool; 3],
    ) -> Result<[Option<Storage>; 3]> {
        let (op, dev) = ("group_norm_backward", self.device());
        match self {
            Storage::Cpu(x) => {
                let w = w.map(|(s, l)| cpu_of(op, dev, s).map(|s| (s, l))).transpose()?;
                let gs = x.group_norm_backward(l, groups, w, cpu_of(op, dev, rstd)?, (cpu_of(op, dev, grad.0)?, grad.1), eps, need)?;
                Ok(gs.map(|g| g.map(Storage::Cpu)))
            }
            Storage::Cuda(x) => {
                let w = w.map(|(s, l)| cuda_of(op, dev, s).map(|s| (s, l))).transpose()?;
                let gs = x.group_norm_backward(l, groups, w, cuda_of(op, dev, rstd)?, (cuda_of(op, dev, grad.0)?, grad.1), eps, need)?;
                Ok(gs.map(|g| g.map(Storage::Cuda)))
            }
        }
    }

    /// Gradients of `layer_norm_last` (`[gx, gw, gb]`, each where `need`
    /// says) from the input `self`, the weight, the saved `rstd` and the
    /// output gradient.
    pub(crate) fn layer_norm_last_backward(
        &self,
        l: &Layout,
        w: Option<(&Storage, &Layout)>,
        rstd: &Storage,
        grad: (&Storage, &Layout),
        eps: f32,
        need: [bool; 3],
    ) -> Result<[Option<Storage>; 3]> {
        let (op, dev) = ("layer_norm_backward", self.device());
        match self {
            Storage::Cpu(x) => {
                let w = w.map(|(s, l)| cpu_of(op, dev, s).map(|s| (s, l))).transpose()?;
                let gs = x.layer_norm_last_backward(l, w, cpu_of(op, dev, rstd)?, (cpu_of(op, dev, grad.0)?, grad.1), eps, need)?;
                Ok(gs.map(|g| g.map(Storage::Cpu)))
            }
            Storage::Cuda(x) => {
                let w = w.map(|(s, l)| cuda_of(op, dev, s).map(|s| (s, l))).transpose()?;
                let gs = x.layer_norm_last_backward(l, w, cuda_of(op, dev, rstd)?, (cuda_of(op, dev, grad.0)?, grad.1), eps, need)?;
                Ok(gs.map(|g| g.map(Storage::Cuda)))
            }
        }
    }

    /// Gradient of `standardize_last` from the input `self`, the output `y`,
    /// the saved `rstd` and the output gradient.
    pub(crate) fn standardize_last_backward(
        &self,
        l: &Layout,
        y: (&Storage, &Layout),
        rstd: &Storage,
        grad: (&Storage, &Layout),
        eps: f32,
    ) -> Result<Storage> {
        let (op, dev) = ("standardize_backward", self.device());
        match self {
            Storage::Cpu(x) => Ok(Storage::Cpu(x.standardize_last_backward(
                l,
                (cpu_of(op, dev, y.0)?, y.1),
                cpu_of(op, dev, rstd)?,
                (cpu_of(op, dev, grad.0)?, grad.1),
                eps,
            )?)),
            Storage::Cuda(x) => Ok(Storage::Cuda(x.standardize_last_backward(
                l,
                (cuda_of(op, dev, y.0)?, y.1),
                cuda_of(op, dev, rstd)?,
                (cuda_of(op, dev, grad.0)?, grad.1),
                eps,
            )?)),
        }
    }

    // ----- data movement ----------------------------------------------------

    pub(crate) fn index_select(&self, l: &Layout, dim: usize, idx: &Storage) -> Result<Storage> {
        both!("index_select", (self, idx), |x, i| x.index_select(l, dim, i))
    }

    pub(crate) fn index_select_backward(&self, l: &Layout, idx: &Storage, in_shape: &[usize], dim: usize) -> Result<Storage> {
        both!("index_select_backward", (self, idx), |g, i| g.index_select_backward(l, i, in_shape, dim))
    }

    /// A new f32 buffer of `shape` (filled with `fill`, or entirely written
    /// when `None`) with each part's view written into its box: `cat`, `pad`.
    pub(crate) fn assemble(parts: &[(&Storage, &Layout, Layout)], shape: &[usize], fill: Option<f32>, op: &'static str) -> Result<Storage> {
        let first = parts.first().ok_or_else(|| Error::invalid(op, "no operands"))?.0;
        let dev = first.device();
        match first {
            Storage::Cpu(_) => {
                let ps = parts.iter().map(|(s, l, b)| Ok((cpu_of(op, dev, s)?, *l, b.clone()))).collect::<Result<Vec<_>>>()?;
                Ok(Storage::Cpu(CpuStorage::assemble(&ps, shape, fill, op)?))
            }
            Storage::Cuda(_) => {
                let ps = parts.iter().map(|(s, l, b)| Ok((cuda_of(op, dev, s)?, *l, b.clone()))).collect::<Result<Vec<_>>>()?;
                Ok(Storage::Cuda(CudaStorage::assemble(&ps, shape, fill, op)?))
            }
        }
    }

    // ----- fused in-place updates and masks ---------------------------------

    /// One AdamW step on the first `len` elements of `self`, `m` and `v`.
    pub(crate) fn adamw_step(
        &mut self,
        grad: (&Storage, &Layout),
        m: &mut Storage,
        v: &mut Storage,
        s: &AdamWScalars,
        len: usize,
    ) -> Result<()> {
        let (op, dev) = ("adamw_step_", self.device());
        let mismatch = |o: &Storage| Error::DeviceMismatch { op, lhs: dev, rhs: o.device() };
        match (self, m, v) {
            (Storage::Cpu(p), Storage::Cpu(m), Storage::Cpu(v)) => p.adamw_step((cpu_of(op, dev, grad.0)?, grad.1), m, v, s, len),
            (Storage::Cuda(p), Storage::Cuda(m), Storage::Cuda(v)) => p.adamw_step((cuda_of(op, dev, grad.0)?, grad.1), m, v, s, len),
            (_, m, v) => Err(mismatch(if m.device() != dev { m } else { v })),
        }
    }

    /// `self ← d·self + (1 − d)·value` over the first `len` elements.
    pub(crate) fn ema_update(&mut self, value: (&Storage, &Layout), d: f32, len: usize) -> Result<()> {
        let (op, dev) = ("ema_update_", self.device());
        match self {
            Storage::Cpu(e) => e.ema_update((cpu_of(op, dev, value.0)?, value.1), d, len),
            Storage::Cuda(e) => e.ema_update((cuda_of(op, dev, value.0)?, value.1), d, len),
        }
    }

    /// The grouped `n:m` magnitude mask of a weight `[rows, inp, k…]`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn nm_mask(&self, l: &Layout, rows: usize, inp: usize, k: usize, n: usize, m: usize) -> Result<Storage> {
        each!(self, c => c.nm_mask(l, rows, inp, k, n, m))
    }
}
