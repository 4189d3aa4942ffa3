//! The GPU backend's slot. This build has no CUDA backend compiled in: the
//! storage type is uninhabited, so every `Storage::Cuda` match arm is
//! statically unreachable, and asking for a CUDA device is a clear error.
//! The GPU issue replaces this module with the cudarc-based backend behind a
//! `cuda` feature, keeping the same names.

/// Storage of a tensor on a GPU. Uninhabited in CPU-only builds.
#[derive(Debug)]
pub enum CudaStorage {}

/// Whether a usable CUDA device exists (always false in this build).
pub fn is_available() -> bool {
    false
}

/// Returns the reason the device cannot be used.
pub fn ensure_available(ordinal: usize) -> crate::Result<()> {
    Err(crate::Error::CudaUnavailable {
        ordinal,
        reason: "this build of sparsedm has no CUDA backend compiled in".into(),
    })
}
