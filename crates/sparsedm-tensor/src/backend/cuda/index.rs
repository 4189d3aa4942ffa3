//! Data movement on CUDA: in-place writes of a range, dtype casts,
//! `index_select` (+ its gradient), and views written into boxes of a new
//! buffer (`cat`, `pad`).

use sparsedm_kernels::ops;

use crate::backend::cuda::storage::{CudaStorage, dense, dense_f32, kerr, same_gpu};
use crate::{DType, Error, Layout, Result};

/// Overwrites `range` of `dst` with the contiguous `src` (same dtype).
pub(crate) fn write_range(dst: &mut CudaStorage, range: std::ops::Range<usize>, src: &CudaStorage, op: &'static str) -> Result<()> {
    if src.dtype() != dst.dtype() {
        return Err(Error::UnsupportedDType { op, dtype: src.dtype(), expected: dst.dtype().name() });
    }
    let gpu = same_gpu(op, &[dst, src])?;
    let size = dst.dtype().size_in_bytes();
    gpu.copy(src.buffer(), 0, dst.buffer_mut(), range.start * size, range.len() * size).map_err(kerr(op))
}

/// The view `l` of `x` converted to `dtype` (float types only: there are no i64 kernels).
pub(crate) fn to_dtype(x: &CudaStorage, l: &Layout, dtype: DType) -> Result<CudaStorage> {
    let op = "to_dtype";
    if x.dtype() == DType::I64 || dtype == DType::I64 {
        return Err(Error::NotImplementedOnDevice { op: "to_dtype from or to i64", device: x.device() });
    }
    dense(x, l, op)?.cast(l.elem_count(), dtype, op)
}

/// `[outer, size, inner]` around `dim` of `shape`.
fn around(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product())
}

/// The view (f32) gathered at the validated device indices `idx` along `dim`.
pub(crate) fn index_select(x: &CudaStorage, l: &Layout, dim: usize, idx: &CudaStorage) -> Result<CudaStorage> {
    let op = "index_select";
    let gpu = same_gpu(op, &[x, idx])?;
    let xd = dense_f32(x, l, op)?;
    let (outer, size, inner) = around(l.shape(), dim);
    let k = idx.len();
    let mut out = CudaStorage::alloc(&gpu, DType::F32, outer * k * inner, op)?;
    ops::index::index_select(&gpu, sparsedm_kernels::GpuDType::F32, outer, k, inner, size, idx.buffer(), xd.buffer(), out.buffer_mut())
        .map_err(kerr(op))?;
    Ok(out)
}

/// Gradient of [`index_select`]: `gx[o, r, j] = Σ_{idx[i] = r} gy[o, i, j]`.
pub(crate) fn index_select_backward(
    gy: &CudaStorage,
    lg: &Layout,
    idx: &CudaStorage,
    in_shape: &[usize],
    dim: usize,
) -> Result<CudaStorage> {
    let op = "index_select_backward";
    let gpu = same_gpu(op, &[gy, idx])?;
    let gd = dense_f32(gy, lg, op)?;
    let (outer, size, inner) = around(in_shape, dim);
    let mut out = CudaStorage::alloc(&gpu, DType::F32, in_shape.iter().product(), op)?;
    ops::index::index_add_bwd(&gpu, outer, idx.len(), inner, size, idx.buffer(), gd.buffer(), out.buffer_mut()).map_err(kerr(op))?;
    Ok(out)
}

/// Writes each part's view into its box of a new `shape` buffer pre-filled
/// with `fill` (`None`: every element is written).
pub(crate) fn assemble(
    parts: &[(&CudaStorage, &Layout, Layout)],
    shape: &[usize],
    fill: Option<f32>,
    op: &'static str,
) -> Result<CudaStorage> {
    let bufs: Vec<&CudaStorage> = parts.iter().map(|p| p.0).collect();
    let gpu = same_gpu(op, &bufs)?;
    for b in &bufs {
        if b.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: b.dtype(), expected: "f32" });
        }
    }
    let n = shape.iter().product();
    let mut out = match fill {
        Some(v) => CudaStorage::full(&gpu, DType::F32, n, v, op)?,
        None => CudaStorage::alloc(&gpu, DType::F32, n, op)?,
    };
    for (s, l, b) in parts {
        s.copy_into(l, &mut out, b, op)?;
    }
    Ok(out)
}
