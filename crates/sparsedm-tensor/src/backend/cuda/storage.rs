//! CUDA buffers: [`CudaStorage`], device lookup and error mapping, host
//! transfers, strided copies (`contiguous()`, downloads of views, cat/pad
//! boxes), dtype casts and fills.

use std::sync::Arc;

use half::{bf16, f16};
use sparsedm_kernels::{DeviceBuffer, Gpu, GpuDType, KernelsError, ops};

use crate::backend::cpu::CpuStorage;
use crate::backend::cuda::kl;
use crate::{DType, Device, Error, Layout, Result};

/// A tensor buffer on one GPU: `len` elements of `dtype` (f32, f16, bf16 or
/// i64), flat like a CPU buffer; strides live in the tensor's [`Layout`].
#[derive(Debug)]
pub struct CudaStorage {
    gpu: Arc<Gpu>,
    buf: DeviceBuffer,
    dtype: DType,
    len: usize,
}

/// Whether the CUDA driver loads and reports at least one device. Never panics.
pub fn is_available() -> bool {
    sparsedm_kernels::is_available()
}

/// Opens device `ordinal` (once per process), or says in one line why it
/// cannot be used (missing driver library, no such device, too old a GPU).
pub fn ensure_available(ordinal: usize) -> Result<()> {
    gpu_of(ordinal).map(|_| ())
}

/// The shared handle of device `ordinal`.
pub(crate) fn gpu_of(ordinal: usize) -> Result<Arc<Gpu>> {
    Gpu::get(ordinal).map_err(|e| match e {
        KernelsError::Unavailable { ordinal, reason } => Error::CudaUnavailable { ordinal, reason: one_line(&reason) },
        other => Error::CudaUnavailable { ordinal, reason: one_line(&other.to_string()) },
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `.map_err(kerr("softmax"))`: a kernel-layer failure as an [`Error`] naming the op.
pub(crate) fn kerr(op: &'static str) -> impl FnOnce(KernelsError) -> Error {
    move |e| match e {
        KernelsError::Unavailable { ordinal, reason } => Error::CudaUnavailable { ordinal, reason: one_line(&reason) },
        other => Error::Cuda { op, msg: one_line(&other.to_string()) },
    }
}

/// The GPU all `bufs` live on, or a device mismatch naming `op`.
pub(crate) fn same_gpu(op: &'static str, bufs: &[&CudaStorage]) -> Result<Arc<Gpu>> {
    let first = bufs.first().ok_or_else(|| Error::invalid(op, "no operands"))?;
    for b in &bufs[1..] {
        if b.device() != first.device() {
            return Err(Error::DeviceMismatch { op, lhs: first.device(), rhs: b.device() });
        }
    }
    Ok(first.gpu.clone())
}

/// The kernels' element type of `dtype` (i64 has none: only copies move it).
pub(crate) fn gpu_dtype(op: &'static str, dtype: DType) -> Result<GpuDType> {
    match dtype {
        DType::F32 => Ok(GpuDType::F32),
        DType::F16 => Ok(GpuDType::F16),
        DType::BF16 => Ok(GpuDType::BF16),
        DType::I64 => Err(Error::UnsupportedDType { op, dtype, expected: "f32, f16 or bf16" }),
    }
}

impl CudaStorage {
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// `Device::Cuda(ordinal)`.
    pub fn device(&self) -> Device {
        Device::Cuda(self.gpu.ordinal())
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device this buffer lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }
    /// The device memory (for kernel launches).
    pub fn buffer(&self) -> &DeviceBuffer {
        &self.buf
    }
    pub(crate) fn buffer_mut(&mut self) -> &mut DeviceBuffer {
        &mut self.buf
    }

    /// A device copy of a host buffer on GPU `ordinal`.
    pub(crate) fn upload_to(ordinal: usize, data: &CpuStorage, op: &'static str) -> Result<Self> {
        Self::upload(&gpu_of(ordinal)?, data, op)
    }

    /// `len` f32 elements equal to `v` on GPU `ordinal` (a fill kernel).
    pub(crate) fn full_on(ordinal: usize, len: usize, v: f32, op: &'static str) -> Result<Self> {
        Self::full(&gpu_of(ordinal)?, DType::F32, len, v, op)
    }

    /// Uninitialised storage for `len` elements.
    pub(crate) fn alloc(gpu: &Arc<Gpu>, dtype: DType, len: usize, op: &'static str) -> Result<Self> {
        let buf = gpu.alloc(len * dtype.size_in_bytes()).map_err(kerr(op))?;
        Ok(CudaStorage { gpu: gpu.clone(), buf, dtype, len })
    }

    /// `len` elements equal to `v` (i64: `v` is converted with `as`).
    pub(crate) fn full(gpu: &Arc<Gpu>, dtype: DType, len: usize, v: f32, op: &'static str) -> Result<Self> {
        if dtype == DType::I64 {
            let host = CpuStorage::I64(vec![v as i64; len]);
            return Self::upload(gpu, &host, op);
        }
        let mut s = Self::alloc(gpu, dtype, len, op)?;
        ops::copy::fill(gpu, gpu_dtype(op, dtype)?, len, v, &mut s.buf).map_err(kerr(op))?;
        Ok(s)
    }

    /// A device copy of a host buffer (same dtype).
    pub(crate) fn upload(gpu: &Arc<Gpu>, data: &CpuStorage, op: &'static str) -> Result<Self> {
        let buf = match data {
            CpuStorage::F32(v) => gpu.upload(v),
            CpuStorage::F16(v) => gpu.upload(&v.iter().map(|x| x.to_bits()).collect::<Vec<u16>>()),
            CpuStorage::BF16(v) => gpu.upload(&v.iter().map(|x| x.to_bits()).collect::<Vec<u16>>()),
            CpuStorage::I64(v) => gpu.upload(v),
        }
        .map_err(kerr(op))?;
        Ok(CudaStorage { gpu: gpu.clone(), buf, dtype: data.dtype(), len: data.len() })
    }

    /// Elements `start..start + n` as a host buffer (waits for queued work).
    pub(crate) fn download(&self, start: usize, n: usize, op: &'static str) -> Result<CpuStorage> {
        let at = start * self.dtype.size_in_bytes();
        let e = kerr(op);
        Ok(match self.dtype {
            DType::F32 => CpuStorage::F32(self.gpu.download::<f32>(&self.buf, at, n).map_err(e)?),
            DType::F16 => CpuStorage::F16(self.gpu.download::<u16>(&self.buf, at, n).map_err(e)?.into_iter().map(f16::from_bits).collect()),
            DType::BF16 => {
                CpuStorage::BF16(self.gpu.download::<u16>(&self.buf, at, n).map_err(e)?.into_iter().map(bf16::from_bits).collect())
            }
            DType::I64 => CpuStorage::I64(self.gpu.download::<i64>(&self.buf, at, n).map_err(e)?),
        })
    }

    /// The view `src_l` of this buffer written into the view `dst_l` of `dst`
    /// (same shape and dtype). i64 elements move as pairs of 32-bit words.
    pub(crate) fn copy_into(&self, src_l: &Layout, dst: &mut CudaStorage, dst_l: &Layout, op: &'static str) -> Result<()> {
        if self.dtype != dst.dtype {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype, expected: "the destination's dtype" });
        }
        if src_l.shape() != dst_l.shape() {
            return Err(Error::ShapeMismatch { op, lhs: src_l.shape().to_vec(), rhs: dst_l.shape().to_vec() });
        }
        let (dt, [sl, dl]) = if self.dtype == DType::I64 {
            // An i64 is two f32-sized words: append a dim of 2 with stride 1.
            let ext = |l: &Layout| -> (Vec<usize>, usize) {
                let mut st: Vec<usize> = l.strides().iter().map(|s| 2 * s).collect();
                st.push(1);
                (st, 2 * l.offset())
            };
            let mut shape = src_l.shape().to_vec();
            shape.push(2);
            let ((ss, so), (ds, dof)) = (ext(src_l), ext(dst_l));
            (GpuDType::F32, kl::layouts(op, &shape, [&ss, &ds], [so, dof])?)
        } else {
            (
                gpu_dtype(op, self.dtype)?,
                kl::layouts(op, src_l.shape(), [src_l.strides(), dst_l.strides()], [src_l.offset(), dst_l.offset()])?,
            )
        };
        ops::copy::copy_strided(&self.gpu, dt, &self.buf, &sl, &mut dst.buf, &dl).map_err(kerr(op))
    }

    /// A contiguous copy (offset 0) of the view `l` of this buffer.
    pub(crate) fn copy_view(&self, l: &Layout, op: &'static str) -> Result<CudaStorage> {
        let n = l.elem_count();
        let mut out = Self::alloc(&self.gpu, self.dtype, n, op)?;
        if let Some(r) = l.contiguous_range() {
            let sz = self.dtype.size_in_bytes();
            self.gpu.copy(&self.buf, r.start * sz, &mut out.buf, 0, n * sz).map_err(kerr(op))?;
        } else {
            self.copy_into(l, &mut out, &Layout::contiguous(l.shape()), op)?;
        }
        Ok(out)
    }

    /// The view `l` as a contiguous host buffer.
    pub(crate) fn download_view(&self, l: &Layout, op: &'static str) -> Result<CpuStorage> {
        match l.contiguous_range() {
            Some(r) => self.download(r.start, r.len(), op),
            None => self.copy_view(l, op)?.download(0, l.elem_count(), op),
        }
    }

    /// The first `n` elements converted to `to` (f32 ↔ f16/bf16 directly,
    /// f16 ↔ bf16 through f32, round to nearest even). i64 has no kernels.
    pub(crate) fn cast(&self, n: usize, to: DType, op: &'static str) -> Result<CudaStorage> {
        let (from_g, to_g) = (gpu_dtype(op, self.dtype)?, gpu_dtype(op, to)?);
        if from_g == to_g {
            let mut out = Self::alloc(&self.gpu, to, n, op)?;
            self.gpu.copy(&self.buf, 0, &mut out.buf, 0, n * to.size_in_bytes()).map_err(kerr(op))?;
            return Ok(out);
        }
        if from_g != GpuDType::F32 && to_g != GpuDType::F32 {
            return self.cast(n, DType::F32, op)?.cast(n, to, op);
        }
        let mut out = Self::alloc(&self.gpu, to, n, op)?;
        ops::copy::cast(&self.gpu, n, from_g, &self.buf, to_g, &mut out.buf).map_err(kerr(op))?;
        Ok(out)
    }
}

/// A buffer an op reads: borrowed when the view already is the buffer
/// (contiguous from element 0), else an owned contiguous copy.
pub(crate) enum Held<'a> {
    Borrowed(&'a CudaStorage),
    Owned(CudaStorage),
}

impl std::ops::Deref for Held<'_> {
    type Target = CudaStorage;
    fn deref(&self) -> &CudaStorage {
        match self {
            Held::Borrowed(s) => s,
            Held::Owned(s) => s,
        }
    }
}

/// The view `l` of `s` as a buffer contiguous from element 0 (a copy only
/// when needed): what the row-wise kernels, which take a bare buffer, read.
pub(crate) fn dense<'a>(s: &'a CudaStorage, l: &Layout, op: &'static str) -> Result<Held<'a>> {
    if l.contiguous_range().is_some_and(|r| r.start == 0) {
        return Ok(Held::Borrowed(s));
    }
    Ok(Held::Owned(s.copy_view(l, op)?))
}

/// Like [`dense`], checking that the elements are f32.
pub(crate) fn dense_f32<'a>(s: &'a CudaStorage, l: &Layout, op: &'static str) -> Result<Held<'a>> {
    if s.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: s.dtype(), expected: "f32" });
    }
    dense(s, l, op)
}
