//! Matrix products on CUDA through cuBLAS (`sparsedm_kernels::gemm`):
//! batched, with broadcast batch dims as zero batch strides and transposed
//! operands read through their strides (no copy) whenever the view allows.
//! The [`MatmulPrecision`](crate::cuda::MatmulPrecision) setting picks exact
//! f32, TF32, or bf16 operands (cast here) with f32 accumulation and output.

use sparsedm_kernels::GpuDType;
use sparsedm_kernels::gemm::{F32Math, GemmShape, Operand, gemm};

use crate::cpu::strided::Walk;
use crate::cuda::storage::{CudaStorage, cuda_ref};
use crate::cuda::{MatmulPrecision, kerr, matmul_precision, same_gpu};
use crate::storage::Storage;
use crate::{DType, Error, Layout, Result, Tensor};

/// How cuBLAS reads one operand: element offset, leading dimension, batch
/// stride, transposed.
#[derive(Debug, Clone, Copy)]
struct Desc {
    offset: usize,
    ld: usize,
    batch_stride: usize,
    trans: bool,
}

/// The cuBLAS description of the broadcast view `l` (`[batch…, rows, cols]`),
/// or `None` when its strides need a copy first.
fn describe(l: &Layout) -> Option<Desc> {
    let r = l.rank();
    let (rows, cols) = (l.shape()[r - 2], l.shape()[r - 1]);
    let (rs, cs) = (l.strides()[r - 2], l.strides()[r - 1]);
    let w = Walk::new(&l.shape()[..r - 2], [&l.strides()[..r - 2]]);
    if w.dims.len() != 1 {
        return None;
    }
    let batch_stride = w.strides[0][0];
    // Row-major: columns adjacent, rows `ld ≥ cols` apart.
    if cs == 1 || cols == 1 {
        let ld = if rows == 1 { cols.max(1) } else { rs };
        if ld >= cols.max(1) {
            return Some(Desc { offset: l.offset(), ld, batch_stride, trans: false });
        }
    }
    // Column-major (a transposed row-major matrix): rows adjacent.
    if rs == 1 || rows == 1 {
        let ld = if cols == 1 { rows.max(1) } else { cs };
        if ld >= rows.max(1) {
            return Some(Desc { offset: l.offset(), ld, batch_stride, trans: true });
        }
    }
    None
}

/// `t` ready for a GEMM of element type `dt`: itself for f32 operands; for
/// bf16, a cast copy keeping the layout when the view covers its buffer
/// exactly (a permutation of contiguous data, e.g. a transposed weight), else
/// a contiguous cast copy.
fn in_dtype(t: &Tensor, dt: DType, op: &'static str) -> Result<Tensor> {
    if t.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: t.dtype(), expected: "f32" });
    }
    if dt == DType::F32 {
        return Ok(t.clone());
    }
    let l = t.layout();
    let n = l.elem_count();
    let extent = 1 + l.shape().iter().zip(l.strides()).map(|(&s, &st)| s.saturating_sub(1) * st).sum::<usize>();
    let dense_perm = l.offset() == 0 && extent == n && l.shape().iter().zip(l.strides()).all(|(&s, &st)| s == 1 || st > 0);
    let s = t.storage();
    let c = cuda_ref(&s, op)?;
    if dense_perm {
        Ok(Tensor::from_storage_layout(Storage::Cuda(c.cast(n, dt, op)?), l.clone()))
    } else {
        let copy = c.copy_view(l, op)?;
        Ok(Tensor::from_storage(Storage::Cuda(copy.cast(n, dt, op)?), l.shape()))
    }
}

/// `t` broadcast to `shape` and described for cuBLAS, copying (the view,
/// then if needed the broadcast itself) when its strides do not allow it.
fn operand(t: &Tensor, shape: &[usize], op: &'static str) -> Result<(Tensor, Desc)> {
    let l = t.layout().broadcast_as(shape)?;
    if let Some(d) = describe(&l) {
        return Ok((t.clone(), d));
    }
    let s = t.storage();
    let c = cuda_ref(&s, op)?;
    let dense = Tensor::from_storage(Storage::Cuda(c.copy_view(t.layout(), op)?), t.shape());
    let l = dense.layout().broadcast_as(shape)?;
    if let Some(d) = describe(&l) {
        return Ok((dense, d));
    }
    // The batch broadcast itself has no single batch stride: materialise it.
    let full = {
        let ds = dense.storage();
        Tensor::from_storage(Storage::Cuda(cuda_ref(&ds, op)?.copy_view(&l, op)?), shape)
    };
    let d = describe(full.layout()).ok_or_else(|| Error::invalid(op, "internal: a contiguous operand is not describable"))?;
    Ok((full, d))
}

/// `out[b] = a[b] · bm[b] (+ out[b] when `accumulate`)` with `a` broadcast to
/// `[batch…, m, k]`, `bm` to `[batch…, k, n]` and `out` an f32 buffer holding
/// `[batch, m, n]` contiguously.
pub(crate) fn gemm_into(
    op: &'static str,
    a: &Tensor,
    bm: &Tensor,
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
    out: &mut CudaStorage,
    accumulate: bool,
) -> Result<()> {
    let gpu = same_gpu(op, &[a, bm])?;
    let nb: usize = batch.iter().product();
    if m == 0 || n == 0 || nb == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            *out = CudaStorage::full(&gpu, DType::F32, nb * m * n, 0.0, op)?;
        }
        return Ok(());
    }
    let precision = matmul_precision();
    let (dt, gdt, f32_math) = match precision {
        MatmulPrecision::F32 => (DType::F32, GpuDType::F32, F32Math::Exact),
        MatmulPrecision::Tf32 => (DType::F32, GpuDType::F32, F32Math::Tf32),
        MatmulPrecision::Bf16 => (DType::BF16, GpuDType::BF16, F32Math::Exact),
    };
    let (a, bm) = (in_dtype(a, dt, op)?, in_dtype(bm, dt, op)?);
    let mut sa = batch.to_vec();
    sa.extend([m, k]);
    let mut sb = batch.to_vec();
    sb.extend([k, n]);
    let (at, ad) = operand(&a, &sa, op)?;
    let (bt, bd) = operand(&bm, &sb, op)?;
    let shape = GemmShape { m, n, k, batch: nb, input: gdt, output: GpuDType::F32, f32_math };
    let (ga, gb) = (at.storage(), bt.storage());
    let (ba, bb) = (cuda_ref(&ga, op)?.buffer(), cuda_ref(&gb, op)?.buffer());
    let oa = Operand { buf: ba, offset: ad.offset, ld: ad.ld, batch_stride: ad.batch_stride, trans: ad.trans };
    let ob = Operand { buf: bb, offset: bd.offset, ld: bd.ld, batch_stride: bd.batch_stride, trans: bd.trans };
    let beta = if accumulate { 1.0 } else { 0.0 };
    gemm(&gpu, &shape, 1.0, oa, ob, beta, out.buffer_mut(), 0, n, m * n).map_err(kerr(op))
}

/// `[batch…, m, k] @ [batch…, k, n]` (inputs broadcast to the batch shape).
pub(crate) fn matmul(a: &Tensor, b: &Tensor, batch: &[usize], m: usize, k: usize, n: usize) -> Result<Storage> {
    let op = "matmul";
    let gpu = same_gpu(op, &[a, b])?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, batch.iter().product::<usize>() * m * n, op)?;
    gemm_into(op, a, b, batch, m, k, n, &mut out, false)?;
    Ok(Storage::Cuda(out))
}

/// `x2 [m, k] · wᵀ + bias` (bias `[n]` broadcast into the output first, then
/// accumulated onto by the GEMM: no separate pass).
pub(crate) fn linear(x2: &Tensor, w: &Tensor, bias: Option<&Tensor>, m: usize, k: usize, n: usize) -> Result<Storage> {
    let op = "linear";
    let mut inputs = vec![x2, w];
    inputs.extend(bias);
    let gpu = same_gpu(op, &inputs)?;
    let mut out = match bias {
        Some(b) => broadcast_rows(b, m, n, op)?,
        None => CudaStorage::alloc(&gpu, DType::F32, m * n, op)?,
    };
    gemm_into(op, x2, &w.t()?, &[], m, k, n, &mut out, bias.is_some())?;
    Ok(Storage::Cuda(out))
}

/// A new `[m, n]` f32 buffer whose every row is the `[n]` vector `b`.
pub(crate) fn broadcast_rows(b: &Tensor, m: usize, n: usize, op: &'static str) -> Result<CudaStorage> {
    broadcast_to(b, &[m, n], op)
}

/// A new contiguous f32 buffer holding `b` broadcast to `shape`.
pub(crate) fn broadcast_to(b: &Tensor, shape: &[usize], op: &'static str) -> Result<CudaStorage> {
    if b.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: b.dtype(), expected: "f32" });
    }
    let l = b.layout().broadcast_as(shape)?;
    let s = b.storage();
    cuda_ref(&s, op)?.copy_view(&l, op)
}
