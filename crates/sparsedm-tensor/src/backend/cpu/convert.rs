//! CPU dtype conversions (f32 ↔ f16/bf16/i64, the other pairs through f32;
//! f32 → i64 truncates toward zero as `as` does).

use crate::DType;
use crate::backend::cpu::buffer::CpuStorage;
use half::{bf16, f16};

/// The contiguous `src` converted to `dtype`.
pub(crate) fn to_dtype(src: CpuStorage, dtype: DType) -> CpuStorage {
    match (src, dtype) {
        (CpuStorage::F32(v), DType::F16) => CpuStorage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        (CpuStorage::F32(v), DType::I64) => CpuStorage::I64(v.iter().map(|&x| x as i64).collect()),
        (other, DType::F32) => CpuStorage::F32(match other {
            CpuStorage::F16(v) => v.iter().map(|&x| x.to_f32()).collect(),
            CpuStorage::BF16(v) => v.iter().map(|&x| x.to_f32()).collect(),
            CpuStorage::I64(v) => v.iter().map(|&x| x as f32).collect(),
            CpuStorage::F32(v) => v,
        }),
        (other, _) => to_dtype(to_dtype(other, DType::F32), dtype),
    }
}
