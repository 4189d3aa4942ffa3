//! conv2d on CUDA: im2col into `[N, C·kh·kw, Ho·Wo]` columns and one
//! strided-batched GEMM with the weight broadcast over the batch (1×1
//! stride-1 unpadded convolutions read the image itself). Backward: the input
//! gradient is col2im of Wᵀ·g (one batched GEMM), the weight gradient the
//! batch sum of g·colsᵀ (one batched GEMM and a deterministic reduction).

use sparsedm_kernels::GpuDType;
use sparsedm_kernels::ops::conv::{ConvGeometry, col2im, im2col};

use crate::backend::cuda::gemm::{broadcast_to, gemm_into};
use crate::backend::cuda::reduce;
use crate::backend::cuda::storage::{CudaStorage, Held, dense_f32, kerr, same_gpu};
use crate::op_kinds::ConvGeom;
use crate::{DType, Layout, Result};

/// The kernels' geometry of `g`.
fn geometry(g: &ConvGeom) -> ConvGeometry {
    ConvGeometry { n: g.n, c: g.c, h: g.h, w: g.w, kh: g.kh, kw: g.kw, stride: (g.sh, g.sw), padding: (g.ph, g.pw) }
}

/// The im2col columns of `x` (`[N, CK, P]` contiguous), or `x` itself for a
/// pointwise convolution.
fn columns<'a>(x: &'a CudaStorage, l: &Layout, g: &ConvGeom) -> Result<Held<'a>> {
    let op = "conv2d";
    let xd = dense_f32(x, l, op)?;
    if g.is_pointwise() {
        return Ok(xd);
    }
    let gpu = same_gpu(op, &[x])?;
    let mut cols = CudaStorage::alloc(&gpu, DType::F32, g.n * g.ck() * g.p(), op)?;
    im2col(&gpu, GpuDType::F32, &geometry(g), xd.buffer(), cols.buffer_mut()).map_err(kerr(op))?;
    Ok(Held::Owned(cols))
}

/// The im2col columns of `x` as an owned `[N, C·kh·kw, Ho·Wo]` f32 buffer
/// (also for a pointwise convolution), for the deployed 2:4 Conv2d.
pub(crate) fn im2col_owned(x: &CudaStorage, l: &Layout, g: &ConvGeom) -> Result<CudaStorage> {
    let op = "sparse24_im2col";
    let xd = dense_f32(x, l, op)?;
    let gpu = same_gpu(op, &[x])?;
    let mut cols = CudaStorage::alloc(&gpu, DType::F32, g.n * g.ck() * g.p(), op)?;
    im2col(&gpu, GpuDType::F32, &geometry(g), xd.buffer(), cols.buffer_mut()).map_err(kerr(op))?;
    Ok(cols)
}

/// `[N, O, Ho, Wo]` output of `x` with weight `w` (`[O, C, kh, kw]`).
pub(crate) fn forward(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    g: &ConvGeom,
) -> Result<CudaStorage> {
    let op = "conv2d";
    let mut inputs = vec![x, w];
    inputs.extend(bias.map(|b| b.0));
    let gpu = same_gpu(op, &inputs)?;
    let (n, ck, p, o) = (g.n, g.ck(), g.p(), g.o);
    let cols = columns(x, lx, g)?;
    let w2 = dense_f32(w, lw, op)?;
    let mut out = match bias {
        Some((b, lb)) => broadcast_to(&*dense_f32(b, lb, op)?, &Layout::contiguous(&[1, o, 1]), &[n, o, p], op)?,
        None => CudaStorage::alloc(&gpu, DType::F32, n * o * p, op)?,
    };
    gemm_into(
        op,
        (&w2, &Layout::contiguous(&[o, ck])),
        (&cols, &Layout::contiguous(&[n, ck, p])),
        &[n],
        o,
        ck,
        p,
        &mut out,
        bias.is_some(),
    )?;
    Ok(out)
}

/// Input gradient `[N, C, H, W]` from the output gradient `gy`.
pub(crate) fn backward_input(gy: &CudaStorage, lg: &Layout, w: &CudaStorage, lw: &Layout, g: &ConvGeom) -> Result<CudaStorage> {
    let op = "conv2d_backward";
    let gpu = same_gpu(op, &[gy, w])?;
    let (n, ck, p, o) = (g.n, g.ck(), g.p(), g.o);
    let gy3 = dense_f32(gy, lg, op)?;
    let wd = dense_f32(w, lw, op)?;
    let wt = Layout::contiguous(&[o, ck]).transpose(0, 1)?;
    let mut colg = CudaStorage::alloc(&gpu, DType::F32, n * ck * p, op)?;
    gemm_into(op, (&wd, &wt), (&gy3, &Layout::contiguous(&[n, o, p])), &[n], ck, o, p, &mut colg, false)?;
    if g.is_pointwise() {
        return Ok(colg);
    }
    let mut gx = CudaStorage::alloc(&gpu, DType::F32, g.n * g.c * g.h * g.w, op)?;
    col2im(&gpu, GpuDType::F32, &geometry(g), colg.buffer(), gx.buffer_mut()).map_err(kerr(op))?;
    Ok(gx)
}

/// Weight gradient `[O, C, kh, kw]`: Σₙ gₙ · colsₙᵀ.
pub(crate) fn backward_weight(gy: &CudaStorage, lg: &Layout, x: &CudaStorage, lx: &Layout, g: &ConvGeom) -> Result<CudaStorage> {
    let op = "conv2d_backward";
    let gpu = same_gpu(op, &[gy, x])?;
    let (n, ck, p, o) = (g.n, g.ck(), g.p(), g.o);
    let gy3 = dense_f32(gy, lg, op)?;
    let cols = columns(x, lx, g)?;
    let cols_t = Layout::contiguous(&[n, ck, p]).transpose(1, 2)?;
    let mut per = CudaStorage::alloc(&gpu, DType::F32, n * o * ck, op)?;
    gemm_into(op, (&gy3, &Layout::contiguous(&[n, o, p])), (&cols, &cols_t), &[n], o, p, ck, &mut per, false)?;
    reduce::sum(&per, &Layout::contiguous(&[n, o, ck]), &[0], op)
}
