//! The crate's one error type: every fallible call returns [`Result`], never panics.

/// What went wrong on (or on the way to) the GPU.
#[derive(Debug, thiserror::Error)]
pub enum KernelsError {
    /// No usable CUDA driver or device: the message says which library or device is missing.
    #[error("CUDA device {ordinal} is not usable: {reason}")]
    Unavailable { ordinal: usize, reason: String },
    /// A CUDA driver call failed.
    #[error("CUDA driver call {call} failed: {source}")]
    Driver { call: &'static str, source: cudarc::driver::DriverError },
    /// A cuBLAS call failed.
    #[error("cuBLAS {call} failed: {source}")]
    Cublas { call: &'static str, source: cudarc::cublas::result::CublasError },
    /// A PTX module or kernel could not be loaded.
    #[error("cannot load kernel {module}::{kernel}: {reason}")]
    KernelLoad { module: &'static str, kernel: String, reason: String },
    /// A device allocation failed even after the cache was emptied.
    #[error("out of GPU memory: {requested} bytes requested, {in_use} bytes in use, {cached} bytes cached (device {ordinal})")]
    OutOfMemory { ordinal: usize, requested: usize, in_use: usize, cached: usize },
    /// An argument does not fit the kernel's contract (sizes, layouts, buffer lengths).
    #[error("{op}: {reason}")]
    Invalid { op: &'static str, reason: String },
    /// cuSPARSELt failed or does not support a problem.
    #[error("cuSPARSELt {call}: {reason}")]
    Sparse { call: &'static str, reason: String },
    /// The CUDA simulator caught a fault a real GPU would show as a crash, a hang or garbage (an
    /// access outside a live buffer, a use after free, a deadlocked barrier), or was asked for
    /// something only a real GPU has (CUDA objects, device timing).
    #[error("CUDA simulator: {reason}")]
    Simulator { reason: String },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, KernelsError>;

impl KernelsError {
    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        KernelsError::Invalid { op, reason: reason.into() }
    }
}

/// `.map_err(driver("cuMemAlloc"))`: wraps a driver error with the call's name.
pub(crate) fn driver(call: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> KernelsError {
    move |source| KernelsError::Driver { call, source }
}

/// `.map_err(cublas("cublasGemmStridedBatchedEx"))`.
pub(crate) fn cublas(call: &'static str) -> impl FnOnce(cudarc::cublas::result::CublasError) -> KernelsError {
    move |source| KernelsError::Cublas { call, source }
}
