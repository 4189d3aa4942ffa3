//! Row-wise CUDA kernels: softmax / log-softmax over the last dim and the
//! standardization behind layer norm and group norm, with their fused
//! backward kernels.

use sparsedm_kernels::{GpuDType, ops};

use crate::backend::cuda::storage::{CudaStorage, dense_f32, kerr, same_gpu};
use crate::{DType, Error, Layout, Result};

fn rows_cols(l: &Layout) -> (usize, usize) {
    let cols = *l.shape().last().unwrap_or(&1);
    (l.elem_count() / cols.max(1), cols)
}

/// Softmax (`log = false`) or log-softmax of each last-dim row of `x`.
pub(crate) fn softmax(x: &CudaStorage, l: &Layout, log: bool) -> Result<CudaStorage> {
    let op = if log { "log_softmax" } else { "softmax" };
    let gpu = same_gpu(op, &[x])?;
    let xd = dense_f32(x, l, op)?;
    let (rows, cols) = rows_cols(l);
    let mut out = CudaStorage::alloc(&gpu, DType::F32, rows * cols, op)?;
    ops::softmax::softmax(&gpu, GpuDType::F32, log, rows, cols, xd.buffer(), out.buffer_mut()).map_err(kerr(op))?;
    Ok(out)
}

/// Gradient of [`softmax`] from its output `y` and the output gradient `gy`.
pub(crate) fn softmax_backward(y: &CudaStorage, ly: &Layout, gy: &CudaStorage, lg: &Layout, log: bool) -> Result<CudaStorage> {
    let op = if log { "log_softmax_backward" } else { "softmax_backward" };
    let gpu = same_gpu(op, &[y, gy])?;
    let (yd, gd) = (dense_f32(y, ly, op)?, dense_f32(gy, lg, op)?);
    let (rows, cols) = rows_cols(ly);
    let mut out = CudaStorage::alloc(&gpu, DType::F32, rows * cols, op)?;
    ops::softmax::softmax_bwd(&gpu, GpuDType::F32, log, rows, cols, yd.buffer(), gd.buffer(), out.buffer_mut()).map_err(kerr(op))?;
    Ok(out)
}

/// `(x − mean)·rstd` per last-dim row; returns the output and `rstd` (f32,
/// one per row, kept for the backward).
pub(crate) fn standardize(x: &CudaStorage, l: &Layout, eps: f32) -> Result<(CudaStorage, CudaStorage)> {
    let op = "standardize";
    let gpu = same_gpu(op, &[x])?;
    let (rows, cols) = rows_cols(l);
    if cols == 0 {
        return Err(Error::bad_shape(op, l.shape(), "rows of zero elements"));
    }
    let xd = dense_f32(x, l, op)?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, rows * cols, op)?;
    let mut mean = CudaStorage::alloc(&gpu, DType::F32, rows, op)?;
    let mut rstd = CudaStorage::alloc(&gpu, DType::F32, rows, op)?;
    ops::norm::standardize_fwd(&gpu, GpuDType::F32, rows, cols, eps, xd.buffer(), out.buffer_mut(), mean.buffer_mut(), rstd.buffer_mut())
        .map_err(kerr(op))?;
    Ok((out, rstd))
}

/// Gradient of [`standardize`] from its output `y`, `rstd` and `gy`.
pub(crate) fn standardize_backward(y: &CudaStorage, ly: &Layout, rstd: &CudaStorage, gy: &CudaStorage, lg: &Layout) -> Result<CudaStorage> {
    let op = "standardize_backward";
    let gpu = same_gpu(op, &[y, rstd, gy])?;
    let (yd, gd) = (dense_f32(y, ly, op)?, dense_f32(gy, lg, op)?);
    let (rows, cols) = rows_cols(ly);
    let mut out = CudaStorage::alloc(&gpu, DType::F32, rows * cols, op)?;
    ops::norm::standardize_bwd(&gpu, GpuDType::F32, rows, cols, yd.buffer(), rstd.buffer(), gd.buffer(), out.buffer_mut())
        .map_err(kerr(op))?;
    Ok(out)
}
