//! The fused training kernels of `sparsedm-kernels` behind the tensor API of
//! [`crate::fused`]: the AdamW step and the EMA update, each one kernel that
//! rewrites its f32 buffers in place, and the grouped N:M magnitude mask.
//! They exist so that a training loop on a GPU never moves parameters,
//! moments or weights through host memory (what `Tensor::update_f32` does).

use sparsedm_kernels::ops;

use crate::cuda::storage::{CudaStorage, cuda_ref, dense_f32};
use crate::cuda::{kerr, same_gpu};
use crate::fused::AdamWScalars;
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};

/// Checks that `t` is f32 and that its elements are its whole buffer from
/// element 0 in row-major order: an in-place kernel writes the buffer, not a view.
fn in_place_target(t: &Tensor, op: &'static str, what: &str) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: t.dtype(), expected: "f32" });
    }
    if t.layout().contiguous_range().is_none_or(|r| r.start != 0) {
        return Err(Error::bad_shape(op, t.shape(), format!("the {what} must be contiguous from the start of its buffer")));
    }
    Ok(())
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch { op, lhs: a.shape().to_vec(), rhs: b.shape().to_vec() });
    }
    Ok(())
}

/// Refuses operands that share a buffer: the kernels take one mutable and
/// several shared borrows, and the storage locks would deadlock.
fn distinct(op: &'static str, ts: &[(&str, &Tensor)]) -> Result<()> {
    for (i, (na, a)) in ts.iter().enumerate() {
        for (nb, b) in &ts[i + 1..] {
            if a.shares_storage(b) {
                return Err(Error::invalid(op, format!("the {na} and the {nb} share one buffer")));
            }
        }
    }
    Ok(())
}

/// `p`, `m`, `v` updated in place by one AdamW step from gradient `g`.
pub(crate) fn adamw_step(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &AdamWScalars) -> Result<()> {
    let op = "adamw_step_";
    let gpu = same_gpu(op, &[p, g, m, v])?;
    for t in [g, m, v] {
        same_shape(op, p, t)?;
    }
    in_place_target(p, op, "parameter")?;
    in_place_target(m, op, "first moment")?;
    in_place_target(v, op, "second moment")?;
    let g = dense_f32(g, op)?;
    distinct(op, &[("parameter", p), ("gradient", &g), ("first moment", m), ("second moment", v)])?;
    let k = ops::optim::AdamWScalars {
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        decay: s.decay,
        step_size: s.step_size,
        bc2_sqrt: s.bc2_sqrt,
    };
    let gs = g.storage();
    let (mut ps, mut ms, mut vs) = (p.storage_mut(), m.storage_mut(), v.storage_mut());
    let (Storage::Cuda(pc), Storage::Cuda(mc), Storage::Cuda(vc)) = (&mut *ps, &mut *ms, &mut *vs) else {
        return Err(Error::invalid(op, "internal: expected CUDA buffers"));
    };
    ops::optim::adamw_step(&gpu, p.elem_count(), &k, pc.buffer_mut(), cuda_ref(&gs, op)?.buffer(), mc.buffer_mut(), vc.buffer_mut())
        .map_err(kerr(op))
}

/// `ema ← d·ema + (1 − d)·value`, in place.
pub(crate) fn ema_update(ema: &Tensor, value: &Tensor, d: f32) -> Result<()> {
    let op = "ema_update_";
    let gpu = same_gpu(op, &[ema, value])?;
    same_shape(op, ema, value)?;
    in_place_target(ema, op, "average")?;
    let value = dense_f32(value, op)?;
    distinct(op, &[("average", ema), ("value", &value)])?;
    let vs = value.storage();
    let mut es = ema.storage_mut();
    let Storage::Cuda(ec) = &mut *es else {
        return Err(Error::invalid(op, "internal: expected a CUDA buffer"));
    };
    ops::optim::ema_update(&gpu, ema.elem_count(), d, ec.buffer_mut(), cuda_ref(&vs, op)?.buffer()).map_err(kerr(op))
}

/// The grouped `n:m` magnitude mask of `w` `[rows, inp, …]` (groups of `m`
/// consecutive input channels at each row and trailing position).
pub(crate) fn nm_mask(w: &Tensor, n: usize, m: usize) -> Result<Tensor> {
    let op = "nm_mask";
    let gpu = same_gpu(op, &[w])?;
    let (rows, inp, k) = match w.shape() {
        [rows, inp, rest @ ..] => (*rows, *inp, rest.iter().product::<usize>()),
        _ => return Err(Error::bad_shape(op, w.shape(), "expected a weight [out, in, …]")),
    };
    if m == 0 || n == 0 || n > m || m > 32 || !inp.is_multiple_of(m) {
        return Err(Error::invalid(op, format!("pattern {n}:{m} on {inp} input channels (need 1 ≤ n ≤ m ≤ 32 and m | inputs)")));
    }
    let w = dense_f32(w, op)?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, w.elem_count(), op)?;
    {
        let ws = w.storage();
        ops::sparse::nm_mask(&gpu, rows, inp, k, n, m, cuda_ref(&ws, op)?.buffer(), out.buffer_mut()).map_err(kerr(op))?;
    }
    Ok(Tensor::from_storage(Storage::Cuda(out), w.shape()))
}

/// Waits for every queued operation of device `ordinal`.
pub(crate) fn synchronize(ordinal: usize) -> Result<()> {
    crate::cuda::gpu_of(ordinal)?.synchronize().map_err(kerr("synchronize"))
}

/// The caching allocator's peak footprint (bytes in use plus cached) on
/// device `ordinal` since it was opened.
pub(crate) fn peak_memory_bytes(ordinal: usize) -> Result<usize> {
    Ok(crate::cuda::gpu_of(ordinal)?.memory_stats().peak)
}
