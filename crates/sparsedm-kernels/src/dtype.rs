//! Storage types the kernels are instantiated for.

use cudarc::cublas::sys::cudaDataType;

/// Element type of a device buffer as the kernels see it. Compute is always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuDType {
    F32,
    F16,
    BF16,
}

impl GpuDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            GpuDType::F32 => 4,
            GpuDType::F16 | GpuDType::BF16 => 2,
        }
    }
    /// The kernel-name suffix of kernels/ABI.md (`unary_bf16`).
    pub fn suffix(self) -> &'static str {
        match self {
            GpuDType::F32 => "f32",
            GpuDType::F16 => "f16",
            GpuDType::BF16 => "bf16",
        }
    }
    /// cuBLAS' name of the type.
    pub(crate) fn cuda_data_type(self) -> cudaDataType {
        match self {
            GpuDType::F32 => cudaDataType::CUDA_R_32F,
            GpuDType::F16 => cudaDataType::CUDA_R_16F,
            GpuDType::BF16 => cudaDataType::CUDA_R_16BF,
        }
    }
}

impl std::fmt::Display for GpuDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.suffix())
    }
}
