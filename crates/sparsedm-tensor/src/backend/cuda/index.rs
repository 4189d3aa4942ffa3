//! Data movement on CUDA: in-place writes (`set_data`), dtype casts,
//! `contiguous()`, `index_select` (+ its gradient), `cat` and `pad`.

use sparsedm_kernels::ops;

use crate::cuda::storage::{CudaStorage, cuda_ref, dense, dense_f32};
use crate::cuda::{kerr, same_gpu};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Error, Layout, Result, Tensor};

/// Overwrites `range` of `dst`'s CUDA buffer with `src`'s elements (any
/// device, same dtype). The source is first copied to a fresh device buffer,
/// so `src` may share `dst`'s storage.
pub(crate) fn set_data(dst: &Tensor, src: &Tensor, range: std::ops::Range<usize>) -> Result<()> {
    let op = "set_data";
    if src.dtype() != dst.dtype() {
        return Err(Error::UnsupportedDType { op, dtype: src.dtype(), expected: dtype_name(dst.dtype()) });
    }
    let gpu = same_gpu(op, &[dst])?;
    let staged = match src.device() {
        Device::Cpu => CudaStorage::upload(&gpu, &src.to_cpu_storage()?, op)?,
        d if d == dst.device() => {
            let s = src.storage();
            cuda_ref(&s, op)?.copy_view(src.layout(), op)?
        }
        d => return Err(Error::DeviceMismatch { op, lhs: dst.device(), rhs: d }),
    };
    let size = dst.dtype().size_in_bytes();
    let mut g = dst.storage_mut();
    let Storage::Cuda(c) = &mut *g else {
        return Err(Error::invalid(op, "internal: the destination is not a CUDA buffer"));
    };
    gpu.copy(staged.buffer(), 0, c.buffer_mut(), range.start * size, range.len() * size).map_err(kerr(op))
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I64 => "i64",
    }
}

/// `x` converted to `dtype` (float types only: there are no i64 kernels).
pub(crate) fn to_dtype(x: &Tensor, dtype: DType) -> Result<Storage> {
    let op = "to_dtype";
    if x.dtype() == DType::I64 || dtype == DType::I64 {
        return Err(Error::NotImplementedOnDevice { op: "to_dtype from or to i64", device: x.device() });
    }
    let xd = dense(x, op)?;
    let s = xd.storage();
    Ok(Storage::Cuda(cuda_ref(&s, op)?.cast(x.elem_count(), dtype, op)?))
}

/// A contiguous copy of the view `x` (any dtype).
pub(crate) fn contiguous(x: &Tensor) -> Result<Storage> {
    let s = x.storage();
    Ok(Storage::Cuda(cuda_ref(&s, "contiguous")?.copy_view(x.layout(), "contiguous")?))
}

/// `x` (f32, `[outer, size, inner]` around `dim`) gathered at the validated
/// indices `idx` along `dim`; returns the output and the uploaded indices
/// (kept for the gradient).
pub(crate) fn index_select(x: &Tensor, dim: usize, idx: &[usize], indices: &Tensor) -> Result<(Storage, Tensor)> {
    let op = "index_select";
    let gpu = same_gpu(op, &[x, indices])?;
    let xd = dense_f32(x, op)?;
    let (outer, size, inner) = (x.shape()[..dim].iter().product(), x.shape()[dim], x.shape()[dim + 1..].iter().product::<usize>());
    let host: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    let idx_t = Tensor::from_storage(Storage::Cuda(CudaStorage::upload(&gpu, &CpuStorage::I64(host), op)?), &[idx.len()]);
    let mut out = CudaStorage::alloc(&gpu, DType::F32, outer * idx.len() * inner, op)?;
    {
        let (sx, si) = (xd.storage(), idx_t.storage());
        ops::index::index_select(
            &gpu,
            sparsedm_kernels::GpuDType::F32,
            outer,
            idx.len(),
            inner,
            size,
            cuda_ref(&si, op)?.buffer(),
            cuda_ref(&sx, op)?.buffer(),
            out.buffer_mut(),
        )
        .map_err(kerr(op))?;
    }
    Ok((Storage::Cuda(out), idx_t))
}

/// Gradient of [`index_select`]: `gx[o, r, j] = Σ_{idx[i] = r} gy[o, i, j]`.
pub(crate) fn index_select_backward(gy: &Tensor, idx: &Tensor, in_shape: &[usize], dim: usize) -> Result<Tensor> {
    let op = "index_select_backward";
    let gpu = same_gpu(op, &[gy, idx])?;
    let gd = dense_f32(gy, op)?;
    let (outer, size, inner) = (in_shape[..dim].iter().product(), in_shape[dim], in_shape[dim + 1..].iter().product::<usize>());
    let mut out = CudaStorage::alloc(&gpu, DType::F32, in_shape.iter().product(), op)?;
    {
        let (sg, si) = (gd.storage(), idx.storage());
        ops::index::index_add_bwd(
            &gpu,
            outer,
            idx.elem_count(),
            inner,
            size,
            cuda_ref(&si, op)?.buffer(),
            cuda_ref(&sg, op)?.buffer(),
            out.buffer_mut(),
        )
        .map_err(kerr(op))?;
    }
    Ok(Tensor::from_storage(Storage::Cuda(out), in_shape))
}

/// Writes each tensor's view into the box `boxes[i]` of a new `shape`
/// buffer pre-filled with `fill` (`None`: every element is written).
fn assemble(op: &'static str, parts: &[&Tensor], boxes: &[Layout], shape: &[usize], fill: Option<f32>) -> Result<Storage> {
    let gpu = same_gpu(op, parts)?;
    for t in parts {
        if t.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: t.dtype(), expected: "f32" });
        }
    }
    let n = shape.iter().product();
    let mut out = match fill {
        Some(v) => CudaStorage::full(&gpu, DType::F32, n, v, op)?,
        None => CudaStorage::alloc(&gpu, DType::F32, n, op)?,
    };
    for (t, b) in parts.iter().zip(boxes) {
        let s = t.storage();
        cuda_ref(&s, op)?.copy_into(t.layout(), &mut out, b, op)?;
    }
    Ok(Storage::Cuda(out))
}

/// `cat` along `dim` into `out_shape`.
pub(crate) fn cat(tensors: &[&Tensor], dim: usize, out_shape: &[usize]) -> Result<Storage> {
    let full = Layout::contiguous(out_shape);
    let mut at = 0;
    let mut boxes = Vec::with_capacity(tensors.len());
    for t in tensors {
        boxes.push(full.narrow(dim, at, t.shape()[dim])?);
        at += t.shape()[dim];
    }
    assemble("cat", tensors, &boxes, out_shape, None)
}

/// Constant padding: `x` at `start` inside `out_shape` filled with `value`.
pub(crate) fn pad(x: &Tensor, start: &[usize], out_shape: &[usize], value: f32) -> Result<Storage> {
    let mut b = Layout::contiguous(out_shape);
    for (d, (&s, &n)) in start.iter().zip(x.shape()).enumerate() {
        b = b.narrow(d, s, n)?;
    }
    assemble("pad", &[x], &[b], out_shape, Some(value))
}
