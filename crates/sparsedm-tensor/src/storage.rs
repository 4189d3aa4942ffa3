//! Flat, layout-free buffers, enum-dispatched by device and dtype (the candle
//! design): `Storage::Cpu(CpuStorage::F32(vec))`, and `Storage::Cuda` for the
//! GPU backend. Strides and offsets live in [`crate::Layout`], never here.

use crate::cuda::CudaStorage;
use crate::{DType, Device, Error, Result};
use half::{bf16, f16};

/// Host buffers, one variant per dtype.
#[derive(Debug, Clone)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
}

/// A tensor's buffer on its device.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(c) => c.dtype(),
            Storage::Cuda(c) => c.dtype(),
        }
    }
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(c) => c.device(),
        }
    }

    /// The f32 host buffer, or an error naming `op` for other dtypes/devices
    /// (a CUDA buffer here means `op` has no CUDA path).
    pub(crate) fn cpu_f32(&self, op: &'static str) -> Result<&[f32]> {
        match self {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v),
            Storage::Cpu(c) => Err(Error::UnsupportedDType { op, dtype: c.dtype(), expected: "f32" }),
            Storage::Cuda(c) => Err(Error::NotImplementedOnDevice { op, device: c.device() }),
        }
    }

    /// The i64 host buffer, or an error naming `op`.
    pub(crate) fn cpu_i64(&self, op: &'static str) -> Result<&[i64]> {
        match self {
            Storage::Cpu(CpuStorage::I64(v)) => Ok(v),
            Storage::Cpu(c) => Err(Error::UnsupportedDType { op, dtype: c.dtype(), expected: "i64" }),
            Storage::Cuda(c) => Err(Error::NotImplementedOnDevice { op, device: c.device() }),
        }
    }

    pub(crate) fn cpu_f32_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        match self {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v),
            Storage::Cpu(c) => Err(Error::UnsupportedDType { op, dtype: c.dtype(), expected: "f32" }),
            Storage::Cuda(c) => Err(Error::NotImplementedOnDevice { op, device: c.device() }),
        }
    }
}
