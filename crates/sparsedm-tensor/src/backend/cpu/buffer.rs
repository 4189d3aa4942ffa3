//! The CPU backend's buffer: one host `Vec` per dtype, flat (strides and
//! offsets live in a [`Layout`]), and the accessors its kernels use.

use crate::backend::cpu::strided::gather;
use crate::{DType, Error, Layout, Result};
use half::{bf16, f16};

/// Host buffers, one variant per dtype.
#[derive(Debug, Clone)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
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

    /// The f32 elements, or an error naming `op` for another dtype.
    pub(crate) fn f32s(&self, op: &'static str) -> Result<&[f32]> {
        match self {
            CpuStorage::F32(v) => Ok(v),
            other => Err(Error::UnsupportedDType { op, dtype: other.dtype(), expected: "f32" }),
        }
    }

    /// The f32 elements, mutably, or an error naming `op`.
    pub(crate) fn f32s_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        match self {
            CpuStorage::F32(v) => Ok(v),
            other => Err(Error::UnsupportedDType { op, dtype: other.dtype(), expected: "f32" }),
        }
    }

    /// The i64 elements, or an error naming `op`.
    pub(crate) fn i64s(&self, op: &'static str) -> Result<&[i64]> {
        match self {
            CpuStorage::I64(v) => Ok(v),
            other => Err(Error::UnsupportedDType { op, dtype: other.dtype(), expected: "i64" }),
        }
    }

    /// A contiguous copy of the view `l` in the same dtype.
    pub(crate) fn gather_view(&self, l: &Layout) -> CpuStorage {
        let (sh, st, o) = (l.shape(), l.strides(), l.offset());
        match self {
            CpuStorage::F32(v) => CpuStorage::F32(gather(v, sh, st, o)),
            CpuStorage::F16(v) => CpuStorage::F16(gather(v, sh, st, o)),
            CpuStorage::BF16(v) => CpuStorage::BF16(gather(v, sh, st, o)),
            CpuStorage::I64(v) => CpuStorage::I64(gather(v, sh, st, o)),
        }
    }
}

/// Runs `f` on the f32 elements of the view `l` in row-major order, copying
/// only when the view is not contiguous.
pub(crate) fn with_contiguous<R>(data: &[f32], l: &Layout, f: impl FnOnce(&[f32]) -> R) -> R {
    match l.contiguous_range() {
        Some(r) => f(&data[r]),
        None => f(&gather(data, l.shape(), l.strides(), l.offset())),
    }
}
