//! Pooling and resampling of NCHW planes on CUDA: max pool (with the argmax
//! kept for a gather-form backward), average pool, nearest upsampling (each
//! with its backward kernel) and bilinear resize, whose backward is the
//! transposed separable interpolation done as two GEMMs.

use sparsedm_kernels::ops::pool::{self as kp, PoolGeometry};

use crate::cuda::gemm::gemm_into;
use crate::cuda::storage::{CudaStorage, cuda_ref, dense_f32};
use crate::cuda::{kerr, same_gpu};
use crate::storage::Storage;
use crate::{DType, Device, Result, Tensor};

fn geometry(x_shape: &[usize], k: usize, s: usize, p: usize) -> PoolGeometry {
    PoolGeometry { nc: x_shape[0] * x_shape[1], h: x_shape[2], w: x_shape[3], k, s, p }
}

/// Max pool values and the in-plane argmax (i64) of each output.
pub(crate) fn max_pool(x: &Tensor, k: usize, s: usize, p: usize) -> Result<(Storage, Tensor)> {
    let op = "max_pool2d";
    let gpu = same_gpu(op, &[x])?;
    let g = geometry(x.shape(), k, s, p);
    let (oh, ow) = g.output().map_err(kerr(op))?;
    let xd = dense_f32(x, op)?;
    let ny = g.nc * oh * ow;
    let mut y = CudaStorage::alloc(&gpu, DType::F32, ny, op)?;
    let mut arg = CudaStorage::alloc(&gpu, DType::I64, ny, op)?;
    {
        let sx = xd.storage();
        kp::maxpool2d_fwd(&gpu, &g, cuda_ref(&sx, op)?.buffer(), y.buffer_mut(), arg.buffer_mut()).map_err(kerr(op))?;
    }
    Ok((Storage::Cuda(y), Tensor::from_storage(Storage::Cuda(arg), &[ny])))
}

/// Gradient of [`max_pool`].
pub(crate) fn max_pool_backward(gy: &Tensor, arg: &Tensor, x_shape: &[usize], k: usize, s: usize, p: usize) -> Result<Tensor> {
    let op = "max_pool2d_backward";
    let gpu = same_gpu(op, &[gy, arg])?;
    let g = geometry(x_shape, k, s, p);
    let gd = dense_f32(gy, op)?;
    let mut gx = CudaStorage::alloc(&gpu, DType::F32, x_shape.iter().product(), op)?;
    {
        let (sg, sa) = (gd.storage(), arg.storage());
        kp::maxpool2d_bwd(&gpu, &g, cuda_ref(&sa, op)?.buffer(), cuda_ref(&sg, op)?.buffer(), gx.buffer_mut()).map_err(kerr(op))?;
    }
    Ok(Tensor::from_storage(Storage::Cuda(gx), x_shape))
}

/// Average pool (PyTorch semantics, floor mode).
pub(crate) fn avg_pool(x: &Tensor, k: usize, s: usize, p: usize, include_pad: bool) -> Result<Storage> {
    let op = "avg_pool2d";
    let gpu = same_gpu(op, &[x])?;
    let g = geometry(x.shape(), k, s, p);
    let (oh, ow) = g.output().map_err(kerr(op))?;
    let xd = dense_f32(x, op)?;
    let mut y = CudaStorage::alloc(&gpu, DType::F32, g.nc * oh * ow, op)?;
    {
        let sx = xd.storage();
        kp::avgpool2d_fwd(&gpu, &g, include_pad, cuda_ref(&sx, op)?.buffer(), y.buffer_mut()).map_err(kerr(op))?;
    }
    Ok(Storage::Cuda(y))
}

/// Gradient of [`avg_pool`].
pub(crate) fn avg_pool_backward(gy: &Tensor, x_shape: &[usize], k: usize, s: usize, p: usize, include_pad: bool) -> Result<Tensor> {
    let op = "avg_pool2d_backward";
    let gpu = same_gpu(op, &[gy])?;
    let g = geometry(x_shape, k, s, p);
    let gd = dense_f32(gy, op)?;
    let mut gx = CudaStorage::alloc(&gpu, DType::F32, x_shape.iter().product(), op)?;
    {
        let sg = gd.storage();
        kp::avgpool2d_bwd(&gpu, &g, include_pad, cuda_ref(&sg, op)?.buffer(), gx.buffer_mut()).map_err(kerr(op))?;
    }
    Ok(Tensor::from_storage(Storage::Cuda(gx), x_shape))
}

/// Nearest upsampling by `f` (`backward = false`) or its gradient (the sum
/// of each f×f block; then `x_shape` is the input's shape and `t` the output
/// gradient).
pub(crate) fn upsample(t: &Tensor, x_shape: &[usize], f: usize, backward: bool) -> Result<Storage> {
    let op = if backward { "upsample_nearest2d_backward" } else { "upsample_nearest2d" };
    let gpu = same_gpu(op, &[t])?;
    let (nc, h, w) = (x_shape[0] * x_shape[1], x_shape[2], x_shape[3]);
    let td = dense_f32(t, op)?;
    let n_out = if backward { nc * h * w } else { nc * h * w * f * f };
    let mut y = CudaStorage::alloc(&gpu, DType::F32, n_out, op)?;
    {
        let st = td.storage();
        let src = cuda_ref(&st, op)?.buffer();
        if backward {
            kp::upsample_nearest2d_bwd(&gpu, nc, h, w, f, src, y.buffer_mut())
        } else {
            kp::upsample_nearest2d(&gpu, nc, h, w, f, src, y.buffer_mut())
        }
        .map_err(kerr(op))?;
    }
    Ok(Storage::Cuda(y))
}

/// Bilinear resize (`align_corners = False`) to `oh × ow`.
pub(crate) fn resize_bilinear(x: &Tensor, oh: usize, ow: usize) -> Result<Storage> {
    let op = "resize_bilinear";
    let gpu = same_gpu(op, &[x])?;
    let (nc, h, w) = (x.shape()[0] * x.shape()[1], x.shape()[2], x.shape()[3]);
    let xd = dense_f32(x, op)?;
    let mut y = CudaStorage::alloc(&gpu, DType::F32, nc * oh * ow, op)?;
    {
        let sx = xd.storage();
        kp::resize_bilinear(&gpu, nc, h, w, oh, ow, cuda_ref(&sx, op)?.buffer(), y.buffer_mut()).map_err(kerr(op))?;
    }
    Ok(Storage::Cuda(y))
}

/// The `[out, input]` interpolation matrix of one axis (row `o` holds the
/// two source weights of output `o`), from the CPU op's source indices.
fn interp_matrix(idx: &[(usize, usize, f32)], input: usize, dev: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; idx.len() * input];
    for (o, &(i0, i1, l)) in idx.iter().enumerate() {
        m[o * input + i0] += 1.0 - l;
        m[o * input + i1] += l;
    }
    Tensor::from_vec(m, &[idx.len(), input], dev)
}

/// Gradient of [`resize_bilinear`]: `gx = Rhᵀ · gy · Rw` per plane, with the
/// interpolation matrices `Rh [oh, h]`, `Rw [ow, w]` (two batched GEMMs).
pub(crate) fn resize_bilinear_backward(
    gy: &Tensor,
    x_shape: &[usize],
    hi: &[(usize, usize, f32)],
    wi: &[(usize, usize, f32)],
) -> Result<Tensor> {
    let op = "resize_bilinear_backward";
    let gpu = same_gpu(op, &[gy])?;
    let dev = gy.device();
    let (nc, h, w) = (x_shape[0] * x_shape[1], x_shape[2], x_shape[3]);
    let (oh, ow) = (hi.len(), wi.len());
    let (rh, rw) = (interp_matrix(hi, h, &dev)?, interp_matrix(wi, w, &dev)?);
    let g3 = dense_f32(gy, op)?.reshape(&[nc * oh, ow])?;
    // t [nc·oh, w] = gy · Rw
    let mut t = CudaStorage::alloc(&gpu, DType::F32, nc * oh * w, op)?;
    gemm_into(op, &g3, &rw, &[], nc * oh, ow, w, &mut t, false)?;
    let t = Tensor::from_storage(Storage::Cuda(t), &[nc, oh, w]);
    // gx [nc, h, w] = Rhᵀ [h, oh] · t[n] (Rhᵀ broadcast over the planes)
    let mut gx = CudaStorage::alloc(&gpu, DType::F32, nc * h * w, op)?;
    gemm_into(op, &rh.t()?, &t, &[nc], h, oh, w, &mut gx, false)?;
    Ok(Tensor::from_storage(Storage::Cuda(gx), x_shape))
}
