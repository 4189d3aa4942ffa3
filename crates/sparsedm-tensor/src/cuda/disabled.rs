//! The CUDA slot of a build without the `cuda` feature: the storage type is
//! uninhabited, so every `Storage::Cuda` match arm is statically unreachable,
//! and asking for a CUDA device is a clear error.

use crate::{DType, Device};

/// Storage of a tensor on a GPU. Uninhabited in CPU-only builds.
#[derive(Debug)]
pub enum CudaStorage {}

impl CudaStorage {
    /// Element type (never called: the type has no values).
    pub fn dtype(&self) -> DType {
        match *self {}
    }
    /// Device (never called: the type has no values).
    pub fn device(&self) -> Device {
        match *self {}
    }
}

/// Whether a usable CUDA device exists (always false in this build).
pub fn is_available() -> bool {
    false
}

/// Returns the reason the device cannot be used.
pub fn ensure_available(ordinal: usize) -> crate::Result<()> {
    Err(crate::Error::CudaUnavailable { ordinal, reason: "this build of sparsedm has no CUDA backend compiled in".into() })
}

/// Device synchronisation: the same error as [`ensure_available`].
pub(crate) fn synchronize(ordinal: usize) -> crate::Result<()> {
    ensure_available(ordinal)
}

/// The allocator's peak: the same error as [`ensure_available`].
pub(crate) fn peak_memory_bytes(ordinal: usize) -> crate::Result<usize> {
    ensure_available(ordinal).map(|()| 0)
}
