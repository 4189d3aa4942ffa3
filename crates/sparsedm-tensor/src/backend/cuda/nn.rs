//! Row-wise CUDA kernels: softmax / log-softmax over the last dim and the
//! standardization behind layer norm and group norm, with their fused
//! backward kernels.

use sparsedm_kernels::{GpuDType, ops};

use crate::cuda::storage::{CudaStorage, cuda_ref, dense_f32};
use crate::cuda::{kerr, same_gpu};
use crate::storage::Storage;
use crate::{DType, Result, Tensor};

fn rows_cols(t: &Tensor) -> (usize, usize) {
    let cols = *t.shape().last().unwrap_or(&1);
    (t.elem_count() / cols.max(1), cols)
}

/// Softmax (`log = false`) or log-softmax of each last-dim row of `x`.
pub(crate) fn softmax(x: &Tensor, log: bool) -> Result<Storage> {
    let op = if log { "log_softmax" } else { "softmax" };
    let gpu = same_gpu(op, &[x])?;
    let xd = dense_f32(x, op)?;
    let (rows, cols) = rows_cols(x);
    let mut out = CudaStorage::alloc(&gpu, DType::F32, rows * cols, op)?;
    {
        let s = xd.storage();
        ops::softmax::softmax(&gpu, GpuDType::F32, log, rows, cols, cuda_ref(&s, op)?.buffer(), out.buffer_mut()).map_err(kerr(op))?;
    }
    Ok(Storage::Cuda(out))
}

/// Gradient of [`softmax`] from its output `y` and the output gradient `gy`.
pub(crate) fn softmax_backward(y: &Tensor, gy: &Tensor, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax_backward" } else { "softmax_backward" };
    let gpu = same_gpu(op, &[y, gy])?;
    let (yd, gd) = (dense_f32(y, op)?, dense_f32(gy, op)?);
    let (rows, cols) = rows_cols(y);
    let mut out = CudaStorage::alloc(&gpu, DType::F32, rows * cols, op)?;
    {
        let (sy, sg) = (yd.storage(), gd.storage());
        ops::softmax::softmax_bwd(
            &gpu,
            GpuDType::F32,
            log,
            rows,
            cols,
            cuda_ref(&sy, op)?.buffer(),
            cuda_ref(&sg, op)?.buffer(),
            out.buffer_mut(),
        )
        .map_err(kerr(op))?;
    }
    Ok(Tensor::from_storage(Storage::Cuda(out), y.shape()))
}

/// `(x − mean)·rstd` per last-dim row; returns the output and `rstd` (f32,
/// one per row, kept for the backward).
pub(crate) fn standardize(x: &Tensor, eps: f32) -> Result<(Storage, Tensor)> {
    let op = "standardize";
    let gpu = same_gpu(op, &[x])?;
    let xd = dense_f32(x, op)?;
    let (rows, cols) = rows_cols(x);
    let mut out = CudaStorage::alloc(&gpu, DType::F32, rows * cols, op)?;
    let mut mean = CudaStorage::alloc(&gpu, DType::F32, rows, op)?;
    let mut rstd = CudaStorage::alloc(&gpu, DType::F32, rows, op)?;
    {
        let s = xd.storage();
        ops::norm::standardize_fwd(
            &gpu,
            GpuDType::F32,
            rows,
            cols,
            eps,
            cuda_ref(&s, op)?.buffer(),
            out.buffer_mut(),
            mean.buffer_mut(),
            rstd.buffer_mut(),
        )
        .map_err(kerr(op))?;
    }
    Ok((Storage::Cuda(out), Tensor::from_storage(Storage::Cuda(rstd), &[rows])))
}

/// Gradient of [`standardize`] from its output `y`, `rstd` and `gy`.
pub(crate) fn standardize_backward(y: &Tensor, rstd: &Tensor, gy: &Tensor) -> Result<Tensor> {
    let op = "standardize_backward";
    let gpu = same_gpu(op, &[y, rstd, gy])?;
    let (yd, gd) = (dense_f32(y, op)?, dense_f32(gy, op)?);
    let (rows, cols) = rows_cols(y);
    let mut out = CudaStorage::alloc(&gpu, DType::F32, rows * cols, op)?;
    {
        let (sy, sr, sg) = (yd.storage(), rstd.storage(), gd.storage());
        ops::norm::standardize_bwd(
            &gpu,
            GpuDType::F32,
            rows,
            cols,
            cuda_ref(&sy, op)?.buffer(),
            cuda_ref(&sr, op)?.buffer(),
            cuda_ref(&sg, op)?.buffer(),
            out.buffer_mut(),
        )
        .map_err(kerr(op))?;
    }
    Ok(Tensor::from_storage(Storage::Cuda(out), y.shape()))
}
