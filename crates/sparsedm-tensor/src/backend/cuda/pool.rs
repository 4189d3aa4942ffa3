//! Pooling and resampling of NCHW planes on CUDA: max pool (with the argmax
//! kept for a gather-form backward), average pool, nearest upsampling (each
//! with its backward kernel) and bilinear resize, whose backward is the
//! transposed separable interpolation done as two GEMMs.

use sparsedm_kernels::ops::pool::{self as kp, PoolGeometry};

use crate::backend::cpu::CpuStorage;
use crate::backend::cuda::gemm::gemm_into;
use crate::backend::cuda::storage::{CudaStorage, dense_f32, kerr, same_gpu};
use crate::op_kinds::{PoolGeom, bilinear_taps};
use crate::{DType, Layout, Result};

fn geometry(g: &PoolGeom) -> PoolGeometry {
    PoolGeometry { nc: g.n * g.c, h: g.h, w: g.w, k: g.k, s: g.s, p: g.p }
}

/// Max pool values and the in-plane argmax (i64) of each output.
pub(crate) fn max_pool(x: &CudaStorage, l: &Layout, g: &PoolGeom) -> Result<(CudaStorage, CudaStorage)> {
    let op = "max_pool2d";
    let gpu = same_gpu(op, &[x])?;
    let kg = geometry(g);
    let (oh, ow) = kg.output().map_err(kerr(op))?;
    let xd = dense_f32(x, l, op)?;
    let ny = kg.nc * oh * ow;
    let mut y = CudaStorage::alloc(&gpu, DType::F32, ny, op)?;
    let mut arg = CudaStorage::alloc(&gpu, DType::I64, ny, op)?;
    kp::maxpool2d_fwd(&gpu, &kg, xd.buffer(), y.buffer_mut(), arg.buffer_mut()).map_err(kerr(op))?;
    Ok((y, arg))
}

/// Gradient of [`max_pool`].
pub(crate) fn max_pool_backward(gy: &CudaStorage, lg: &Layout, arg: &CudaStorage, g: &PoolGeom) -> Result<CudaStorage> {
    let op = "max_pool2d_backward";
    let gpu = same_gpu(op, &[gy, arg])?;
    let gd = dense_f32(gy, lg, op)?;
    let mut gx = CudaStorage::alloc(&gpu, DType::F32, g.n * g.c * g.h * g.w, op)?;
    kp::maxpool2d_bwd(&gpu, &geometry(g), arg.buffer(), gd.buffer(), gx.buffer_mut()).map_err(kerr(op))?;
    Ok(gx)
}

/// Average pool (PyTorch semantics, floor mode).
pub(crate) fn avg_pool(x: &CudaStorage, l: &Layout, g: &PoolGeom, include_pad: bool) -> Result<CudaStorage> {
    let op = "avg_pool2d";
    let gpu = same_gpu(op, &[x])?;
    let kg = geometry(g);
    let (oh, ow) = kg.output().map_err(kerr(op))?;
    let xd = dense_f32(x, l, op)?;
    let mut y = CudaStorage::alloc(&gpu, DType::F32, kg.nc * oh * ow, op)?;
    kp::avgpool2d_fwd(&gpu, &kg, include_pad, xd.buffer(), y.buffer_mut()).map_err(kerr(op))?;
    Ok(y)
}

/// Gradient of [`avg_pool`].
pub(crate) fn avg_pool_backward(gy: &CudaStorage, lg: &Layout, g: &PoolGeom, include_pad: bool) -> Result<CudaStorage> {
    let op = "avg_pool2d_backward";
    let gpu = same_gpu(op, &[gy])?;
    let gd = dense_f32(gy, lg, op)?;
    let mut gx = CudaStorage::alloc(&gpu, DType::F32, g.n * g.c * g.h * g.w, op)?;
    kp::avgpool2d_bwd(&gpu, &geometry(g), include_pad, gd.buffer(), gx.buffer_mut()).map_err(kerr(op))?;
    Ok(gx)
}

/// Nearest upsampling by `f` (`backward = false`) or its gradient (the sum
/// of each f×f block; `t` is then the output gradient). `nchw` is the
/// input's shape either way.
pub(crate) fn upsample(t: &CudaStorage, l: &Layout, [n, c, h, w]: [usize; 4], f: usize, backward: bool) -> Result<CudaStorage> {
    let op = if backward { "upsample_nearest2d_backward" } else { "upsample_nearest2d" };
    let gpu = same_gpu(op, &[t])?;
    let nc = n * c;
    let td = dense_f32(t, l, op)?;
    let n_out = if backward { nc * h * w } else { nc * h * w * f * f };
    let mut y = CudaStorage::alloc(&gpu, DType::F32, n_out, op)?;
    if backward {
        kp::upsample_nearest2d_bwd(&gpu, nc, h, w, f, td.buffer(), y.buffer_mut())
    } else {
        kp::upsample_nearest2d(&gpu, nc, h, w, f, td.buffer(), y.buffer_mut())
    }
    .map_err(kerr(op))?;
    Ok(y)
}

/// Bilinear resize (`align_corners = False`) to `oh × ow`.
pub(crate) fn resize_bilinear(x: &CudaStorage, l: &Layout, [n, c, h, w]: [usize; 4], (oh, ow): (usize, usize)) -> Result<CudaStorage> {
    let op = "resize_bilinear";
    let gpu = same_gpu(op, &[x])?;
    let nc = n * c;
    let xd = dense_f32(x, l, op)?;
    let mut y = CudaStorage::alloc(&gpu, DType::F32, nc * oh * ow, op)?;
    kp::resize_bilinear(&gpu, nc, h, w, oh, ow, xd.buffer(), y.buffer_mut()).map_err(kerr(op))?;
    Ok(y)
}

/// The `[out, input]` interpolation matrix of one axis (row `o` holds the
/// two source weights of output `o`), uploaded to the GPU.
fn interp_matrix(gpu: &std::sync::Arc<sparsedm_kernels::Gpu>, input: usize, output: usize, op: &'static str) -> Result<CudaStorage> {
    let mut m = vec![0f32; output * input];
    for (o, (i0, i1, l)) in bilinear_taps(input, output).into_iter().enumerate() {
        m[o * input + i0] += 1.0 - l;
        m[o * input + i1] += l;
    }
    CudaStorage::upload(gpu, &CpuStorage::F32(m), op)
}

/// Gradient of [`resize_bilinear`]: `gx = Rhᵀ · gy · Rw` per plane, with the
/// interpolation matrices `Rh [oh, h]`, `Rw [ow, w]` (two batched GEMMs).
pub(crate) fn resize_bilinear_backward(
    gy: &CudaStorage,
    lg: &Layout,
    [n, c, h, w]: [usize; 4],
    (oh, ow): (usize, usize),
) -> Result<CudaStorage> {
    let op = "resize_bilinear_backward";
    let gpu = same_gpu(op, &[gy])?;
    let nc = n * c;
    let (rh, rw) = (interp_matrix(&gpu, h, oh, op)?, interp_matrix(&gpu, w, ow, op)?);
    let g3 = dense_f32(gy, lg, op)?;
    // t [nc·oh, w] = gy · Rw
    let mut t = CudaStorage::alloc(&gpu, DType::F32, nc * oh * w, op)?;
    gemm_into(op, (&g3, &Layout::contiguous(&[nc * oh, ow])), (&rw, &Layout::contiguous(&[ow, w])), &[], nc * oh, ow, w, &mut t, false)?;
    // gx [nc, h, w] = Rhᵀ [h, oh] · t[n] (Rhᵀ broadcast over the planes)
    let mut gx = CudaStorage::alloc(&gpu, DType::F32, nc * h * w, op)?;
    let rht = Layout::contiguous(&[oh, h]).transpose(0, 1)?;
    gemm_into(op, (&rh, &rht), (&t, &Layout::contiguous(&[nc, oh, w])), &[nc], h, oh, w, &mut gx, false)?;
    Ok(gx)
}
