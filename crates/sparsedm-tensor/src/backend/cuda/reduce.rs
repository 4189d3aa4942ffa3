//! Reductions on CUDA. The kernels reduce a contiguous `[outer, red, inner]`
//! buffer over `red`; the input is permuted so that the reduced dims sit in
//! the middle (kept dims before the last reduced dim → outer, kept dims after
//! it → inner, which keeps the output in the kept dims' order), with a
//! contiguous copy only when that permutation or the input's layout needs one.

use sparsedm_kernels::abi::reduce as r;
use sparsedm_kernels::{GpuDType, ops};

use crate::cuda::storage::{CudaStorage, cuda_ref};
use crate::cuda::{kerr, same_gpu};
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};

/// The reduction ops used by the tensor crate.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reduce {
    Sum,
}

/// `x` (f32) as a contiguous `[outer, red, inner]` tensor for the sorted,
/// non-empty `dims`.
fn arrange(x: &Tensor, dims: &[usize], op: &'static str) -> Result<(Tensor, usize, usize, usize)> {
    if x.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype(), expected: "f32" });
    }
    let last = *dims.last().ok_or_else(|| Error::invalid(op, "internal: no dims to reduce"))?;
    let before: Vec<usize> = (0..last).filter(|d| !dims.contains(d)).collect();
    let after: Vec<usize> = (last + 1..x.rank()).collect();
    let perm: Vec<usize> = before.iter().chain(dims).chain(&after).copied().collect();
    let sh = x.shape();
    let outer = before.iter().map(|&d| sh[d]).product();
    let red = dims.iter().map(|&d| sh[d]).product();
    let inner = after.iter().map(|&d| sh[d]).product();
    let identity = perm.iter().enumerate().all(|(i, &p)| i == p);
    if identity && x.layout().contiguous_range().is_some_and(|r| r.start == 0) {
        return Ok((x.clone(), outer, red, inner));
    }
    let l = x.layout().permute(&perm)?;
    let copy = {
        let s = x.storage();
        cuda_ref(&s, op)?.copy_view(&l, op)?
    };
    Ok((Tensor::from_storage(Storage::Cuda(copy), l.shape()), outer, red, inner))
}

/// `x` reduced over the sorted, deduplicated `dims` (f32, kept dims in order).
pub(crate) fn reduce(x: &Tensor, dims: &[usize], how: Reduce, op: &'static str) -> Result<Storage> {
    let gpu = same_gpu(op, &[x])?;
    if dims.is_empty() {
        return crate::cuda::index::contiguous(x);
    }
    let (xa, outer, red, inner) = arrange(x, dims, op)?;
    if red == 0 {
        return Ok(Storage::Cuda(CudaStorage::full(&gpu, DType::F32, outer * inner, 0.0, op)?));
    }
    let code = match how {
        Reduce::Sum => r::SUM,
    };
    let mut out = CudaStorage::alloc(&gpu, DType::F32, outer * inner, op)?;
    {
        let s = xa.storage();
        ops::reduce::reduce(&gpu, GpuDType::F32, outer, red, inner, code, cuda_ref(&s, op)?.buffer(), out.buffer_mut())
            .map_err(kerr(op))?;
    }
    Ok(Storage::Cuda(out))
}

/// Maximum over `dim` and the first index of it (i64; NaN counts as the
/// maximum, as on the CPU).
pub(crate) fn max_with_index(x: &Tensor, dim: usize) -> Result<(Storage, Storage)> {
    let op = "max";
    let gpu = same_gpu(op, &[x])?;
    let (xa, outer, red, inner) = arrange(x, &[dim], op)?;
    let mut vals = CudaStorage::alloc(&gpu, DType::F32, outer * inner, op)?;
    let mut idx = CudaStorage::alloc(&gpu, DType::I64, outer * inner, op)?;
    {
        let s = xa.storage();
        ops::reduce::argmax(&gpu, outer, red, inner, cuda_ref(&s, op)?.buffer(), vals.buffer_mut(), idx.buffer_mut()).map_err(kerr(op))?;
    }
    Ok((Storage::Cuda(vals), Storage::Cuda(idx)))
}

/// The one-hot mask (f32) of the first maximum of `x` along `dim`, shaped
/// like `x`: the gradient route of `max_dim`. Built from device ops: the
/// positions equal to the maximum (or NaN where the maximum is NaN), the
/// smallest such position index (a MIN reduction over an iota), and its
/// indicator.
pub(crate) fn first_max_mask(x: &Tensor, dim: usize) -> Result<Tensor> {
    let _g = crate::no_grad();
    let dev = x.device();
    let n = x.shape()[dim];
    let m = x.max_dim(dim, true)?;
    let is_nan =
        |t: &Tensor| -> Result<Tensor> { t.binary_raw(t, "max_backward", crate::ops::elementwise::BinaryKind::Eq)?.affine(-1.0, 1.0) };
    let eq = x.binary_raw(&m, "max_backward", crate::ops::elementwise::BinaryKind::Eq)?;
    let hit = eq.maximum(&is_nan(x)?.mul(&is_nan(&m)?)?)?;
    let mut ishape = vec![1; x.rank()];
    ishape[dim] = n;
    let iota = Tensor::arange(n, &dev)?.reshape(&ishape)?;
    // Index where hit, n (past every index) elsewhere; the first hit is the min.
    let cand = Tensor::where_cond(&hit, &iota, &Tensor::full(n as f32, &[], &dev)?)?;
    let first = cand.neg()?.max_dim(dim, true)?.neg()?;
    iota.binary_raw(&first, "max_backward", crate::ops::elementwise::BinaryKind::Eq)
}
