//! Reductions on CUDA. The kernels reduce a contiguous `[outer, red, inner]`
//! buffer over `red`; the input is permuted so that the reduced dims sit in
//! the middle (kept dims before the last reduced dim → outer, kept dims after
//! it → inner, which keeps the output in the kept dims' order), with a
//! contiguous copy only when that permutation or the input's layout needs one.

use sparsedm_kernels::abi::{binary as b, reduce as r};
use sparsedm_kernels::{GpuDType, ops};

use crate::backend::cpu::CpuStorage;
use crate::backend::cuda::kl;
use crate::backend::cuda::storage::{CudaStorage, Held, kerr, same_gpu};
use crate::{DType, Error, Layout, Result};

/// The view `(x, l)` (f32) as a contiguous `[outer, red, inner]` buffer for
/// the sorted, non-empty `dims`.
fn arrange<'a>(x: &'a CudaStorage, l: &Layout, dims: &[usize], op: &'static str) -> Result<(Held<'a>, usize, usize, usize)> {
    if x.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype(), expected: "f32" });
    }
    let last = *dims.last().ok_or_else(|| Error::invalid(op, "internal: no dims to reduce"))?;
    let before: Vec<usize> = (0..last).filter(|d| !dims.contains(d)).collect();
    let after: Vec<usize> = (last + 1..l.rank()).collect();
    let perm: Vec<usize> = before.iter().chain(dims).chain(&after).copied().collect();
    let sh = l.shape();
    let outer = before.iter().map(|&d| sh[d]).product();
    let red = dims.iter().map(|&d| sh[d]).product();
    let inner = after.iter().map(|&d| sh[d]).product();
    let identity = perm.iter().enumerate().all(|(i, &p)| i == p);
    if identity && l.contiguous_range().is_some_and(|r| r.start == 0) {
        return Ok((Held::Borrowed(x), outer, red, inner));
    }
    Ok((Held::Owned(x.copy_view(&l.permute(&perm)?, op)?), outer, red, inner))
}

/// The view reduced by summing over the sorted, deduplicated `dims`.
pub(crate) fn sum(x: &CudaStorage, l: &Layout, dims: &[usize], op: &'static str) -> Result<CudaStorage> {
    let gpu = same_gpu(op, &[x])?;
    if dims.is_empty() {
        return x.copy_view(l, op);
    }
    let (xa, outer, red, inner) = arrange(x, l, dims, op)?;
    if red == 0 {
        return CudaStorage::full(&gpu, DType::F32, outer * inner, 0.0, op);
    }
    let mut out = CudaStorage::alloc(&gpu, DType::F32, outer * inner, op)?;
    ops::reduce::reduce(&gpu, GpuDType::F32, outer, red, inner, r::SUM, xa.buffer(), out.buffer_mut()).map_err(kerr(op))?;
    Ok(out)
}

/// Maximum over `dim` and the first index of it (i64; NaN counts as the
/// maximum, as on the CPU).
pub(crate) fn max_with_index(x: &CudaStorage, l: &Layout, dim: usize) -> Result<(CudaStorage, CudaStorage)> {
    let op = "max";
    let gpu = same_gpu(op, &[x])?;
    let (xa, outer, red, inner) = arrange(x, l, &[dim], op)?;
    let mut vals = CudaStorage::alloc(&gpu, DType::F32, outer * inner, op)?;
    let mut idx = CudaStorage::alloc(&gpu, DType::I64, outer * inner, op)?;
    ops::reduce::argmax(&gpu, outer, red, inner, xa.buffer(), vals.buffer_mut(), idx.buffer_mut()).map_err(kerr(op))?;
    Ok((vals, idx))
}

/// Gradient of [`max_with_index`]: `g` (the reduced shape with `dim` kept
/// as 1) times the one-hot of the saved index along `dim`. There is no
/// i64 → f32 kernel, so the indices (one per output, small) go through the
/// host once as f32; the one-hot is an `==` kernel against an iota.
pub(crate) fn max_backward(g: &CudaStorage, lg: &Layout, idx: &CudaStorage, in_shape: &[usize], dim: usize) -> Result<CudaStorage> {
    let op = "max_backward";
    let gpu = same_gpu(op, &[g, idx])?;
    let kept = lg.shape().to_vec();
    let idx_f: Vec<f32> = match idx.download(0, idx.len(), op)? {
        CpuStorage::I64(v) => v.into_iter().map(|i| i as f32).collect(),
        other => return Err(Error::UnsupportedDType { op, dtype: other.dtype(), expected: "i64" }),
    };
    let idx_f = CudaStorage::upload(&gpu, &CpuStorage::F32(idx_f), op)?;
    let n = in_shape[dim];
    let iota = CudaStorage::upload(&gpu, &CpuStorage::F32((0..n).map(|i| i as f32).collect()), op)?;
    let mut ishape = vec![1; in_shape.len()];
    ishape[dim] = n;
    let li = Layout::contiguous(&ishape).broadcast_as(in_shape)?;
    let lx = Layout::contiguous(&kept).broadcast_as(in_shape)?;
    let full = Layout::contiguous(in_shape);
    let count = full.elem_count();
    let binary = |a: &CudaStorage, la: &Layout, c: &CudaStorage, lc: &Layout, code: i32| -> Result<CudaStorage> {
        let [ka, kc] = kl::layouts(op, in_shape, [la.strides(), lc.strides()], [la.offset(), lc.offset()])?;
        let mut out = CudaStorage::alloc(&gpu, DType::F32, count, op)?;
        ops::elementwise::binary(&gpu, GpuDType::F32, code, a.buffer(), &ka, c.buffer(), &kc, out.buffer_mut()).map_err(kerr(op))?;
        Ok(out)
    };
    let onehot = binary(&iota, &li, &idx_f, &lx, b::EQ)?;
    binary(&onehot, &full, g, &lg.broadcast_as(in_shape)?, b::MUL)
}
