//! The fused training kernels of `sparsedm-kernels`: the AdamW step and the
//! EMA update, each one kernel that rewrites its f32 buffers in place, the
//! grouped N:M magnitude mask (`kernels/sparse.cu`), device
//! synchronisation and the allocator's peak.

use sparsedm_kernels::ops;

use crate::backend::cuda::storage::{CudaStorage, dense_f32, gpu_of, kerr, same_gpu};
use crate::op_kinds::AdamWScalars;
use crate::{DType, Layout, Result};

/// `p`, `m`, `v` (first `len` elements) updated in place by one AdamW step
/// from the gradient view `(g, lg)`.
pub(crate) fn adamw_step(
    p: &mut CudaStorage,
    (g, lg): (&CudaStorage, &Layout),
    m: &mut CudaStorage,
    v: &mut CudaStorage,
    s: &AdamWScalars,
    len: usize,
) -> Result<()> {
    let op = "adamw_step_";
    let gpu = same_gpu(op, &[p, g, m, v])?;
    let g = dense_f32(g, lg, op)?;
    let k = ops::optim::AdamWScalars {
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        decay: s.decay,
        step_size: s.step_size,
        bc2_sqrt: s.bc2_sqrt,
    };
    ops::optim::adamw_step(&gpu, len, &k, p.buffer_mut(), g.buffer(), m.buffer_mut(), v.buffer_mut()).map_err(kerr(op))
}

/// `ema ← d·ema + (1 − d)·value` over the first `len` elements, in place.
pub(crate) fn ema_update(ema: &mut CudaStorage, (x, lx): (&CudaStorage, &Layout), d: f32, len: usize) -> Result<()> {
    let op = "ema_update_";
    let gpu = same_gpu(op, &[ema, x])?;
    let x = dense_f32(x, lx, op)?;
    ops::optim::ema_update(&gpu, len, d, ema.buffer_mut(), x.buffer()).map_err(kerr(op))
}

/// The grouped `n:m` magnitude mask of the weight view `[rows, inp, k…]`.
pub(crate) fn nm_mask(w: &CudaStorage, l: &Layout, rows: usize, inp: usize, k: usize, n: usize, m: usize) -> Result<CudaStorage> {
    let op = "nm_mask";
    let gpu = same_gpu(op, &[w])?;
    let wd = dense_f32(w, l, op)?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, l.elem_count(), op)?;
    ops::sparse::nm_mask(&gpu, rows, inp, k, n, m, wd.buffer(), out.buffer_mut()).map_err(kerr(op))?;
    Ok(out)
}

/// Waits for every queued operation of device `ordinal`.
pub(crate) fn synchronize(ordinal: usize) -> Result<()> {
    gpu_of(ordinal)?.synchronize().map_err(kerr("synchronize"))
}

/// The caching allocator's peak footprint (bytes in use plus cached) on
/// device `ordinal` since it was opened.
pub(crate) fn peak_memory_bytes(ordinal: usize) -> Result<usize> {
    Ok(gpu_of(ordinal)?.memory_stats().peak)
}
