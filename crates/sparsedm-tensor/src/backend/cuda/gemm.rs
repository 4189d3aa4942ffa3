//! Matrix products on CUDA through cuBLAS (`sparsedm_kernels::gemm`):
//! batched, with broadcast batch dims as zero batch strides and transposed
//! operands read through their strides (no copy) whenever the view allows.
//! The [`MatmulPrecision`](crate::cuda::MatmulPrecision) setting picks exact
//! f32, TF32, or bf16 operands (cast here) with f32 accumulation and output.

use sparsedm_kernels::GpuDType;
use sparsedm_kernels::gemm::{F32Math, GemmShape, Operand, gemm};

use crate::backend::cpu::strided::Walk;
use crate::backend::cuda::precision::{MatmulPrecision, matmul_precision};
use crate::backend::cuda::storage::{CudaStorage, Held, kerr, same_gpu};
use crate::{DType, Error, Layout, Result};

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

/// `(t, l)` ready for a GEMM of element type `dt`: itself for f32
/// operands; for bf16, a cast copy keeping the layout when the view covers
/// its buffer exactly (a permutation of contiguous data, e.g. a transposed
/// weight), else a contiguous cast copy.
fn in_dtype<'a>(t: &'a CudaStorage, l: &Layout, dt: DType, op: &'static str) -> Result<(Held<'a>, Layout)> {
    if t.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: t.dtype(), expected: "f32" });
    }
    if dt == DType::F32 {
        return Ok((Held::Borrowed(t), l.clone()));
    }
    let n = l.elem_count();
    let extent = 1 + l.shape().iter().zip(l.strides()).map(|(&s, &st)| s.saturating_sub(1) * st).sum::<usize>();
    let dense_perm = l.offset() == 0 && extent == n && l.shape().iter().zip(l.strides()).all(|(&s, &st)| s == 1 || st > 0);
    if dense_perm {
        Ok((Held::Owned(t.cast(n, dt, op)?), l.clone()))
    } else {
        Ok((Held::Owned(t.copy_view(l, op)?.cast(n, dt, op)?), Layout::contiguous(l.shape())))
    }
}

/// `(t, l)` broadcast to `shape` and described for cuBLAS, copying (the
/// view, then if needed the broadcast itself) when its strides do not allow it.
fn operand<'a>(t: &'a CudaStorage, l: &Layout, shape: &[usize], op: &'static str) -> Result<(Held<'a>, Desc)> {
    let b = l.broadcast_as(shape)?;
    if let Some(d) = describe(&b) {
        return Ok((Held::Borrowed(t), d));
    }
    let dense = t.copy_view(l, op)?;
    let b = Layout::contiguous(l.shape()).broadcast_as(shape)?;
    if let Some(d) = describe(&b) {
        return Ok((Held::Owned(dense), d));
    }
    // The batch broadcast itself has no single batch stride: materialise it.
    let full = dense.copy_view(&b, op)?;
    let d = describe(&Layout::contiguous(shape)).ok_or_else(|| Error::invalid(op, "internal: a contiguous operand is not describable"))?;
    Ok((Held::Owned(full), d))
}

/// `out[b] = a[b] · bm[b] (+ out[b] when `accumulate`)` with `a` broadcast to
/// `[batch…, m, k]`, `bm` to `[batch…, k, n]` and `out` an f32 buffer holding
/// `[batch, m, n]` contiguously.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into(
    op: &'static str,
    (a, la): (&CudaStorage, &Layout),
    (bm, lb): (&CudaStorage, &Layout),
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
    let (dt, gdt, f32_math) = match matmul_precision() {
        MatmulPrecision::F32 => (DType::F32, GpuDType::F32, F32Math::Exact),
        MatmulPrecision::Tf32 => (DType::F32, GpuDType::F32, F32Math::Tf32),
        MatmulPrecision::Bf16 => (DType::BF16, GpuDType::BF16, F32Math::Exact),
    };
    let ((a, la), (bm, lb)) = (in_dtype(a, la, dt, op)?, in_dtype(bm, lb, dt, op)?);
    let mut sa = batch.to_vec();
    sa.extend([m, k]);
    let mut sb = batch.to_vec();
    sb.extend([k, n]);
    let (at, ad) = operand(&a, &la, &sa, op)?;
    let (bt, bd) = operand(&bm, &lb, &sb, op)?;
    let shape = GemmShape { m, n, k, batch: nb, input: gdt, output: GpuDType::F32, f32_math };
    let oa = Operand { buf: at.buffer(), offset: ad.offset, ld: ad.ld, batch_stride: ad.batch_stride, trans: ad.trans };
    let ob = Operand { buf: bt.buffer(), offset: bd.offset, ld: bd.ld, batch_stride: bd.batch_stride, trans: bd.trans };
    let beta = if accumulate { 1.0 } else { 0.0 };
    gemm(&gpu, &shape, 1.0, oa, ob, beta, out.buffer_mut(), 0, n, m * n).map_err(kerr(op))
}

/// `[batch…, m, k] @ [batch…, k, n]` (views broadcast to the batch shape).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> Result<CudaStorage> {
    let op = "matmul";
    let gpu = same_gpu(op, &[a, b])?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, batch.iter().product::<usize>() * m * n, op)?;
    gemm_into(op, (a, la), (b, lb), batch, m, k, n, &mut out, false)?;
    Ok(out)
}

/// `x2 [m, k] · wᵀ + bias` (bias `[n]` broadcast into the output first, then
/// accumulated onto by the GEMM: no separate pass).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear(
    x2: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<CudaStorage> {
    let op = "linear";
    let mut inputs = vec![x2, w];
    inputs.extend(bias.map(|b| b.0));
    let gpu = same_gpu(op, &inputs)?;
    let mut out = match bias {
        Some((b, lb)) => broadcast_to(b, lb, &[m, n], op)?,
        None => CudaStorage::alloc(&gpu, DType::F32, m * n, op)?,
    };
    gemm_into(op, (x2, lx), (w, &lw.transpose(0, 1)?), &[], m, k, n, &mut out, bias.is_some())?;
    Ok(out)
}

/// A new contiguous f32 buffer holding the view `(b, l)` broadcast to `shape`.
pub(crate) fn broadcast_to(b: &CudaStorage, l: &Layout, shape: &[usize], op: &'static str) -> Result<CudaStorage> {
    if b.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: b.dtype(), expected: "f32" });
    }
    b.copy_view(&l.broadcast_as(shape)?, op)
}
