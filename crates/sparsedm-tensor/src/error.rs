//! The crate's one error type. Every variant names the operation that failed
//! and the shapes, dtypes or devices involved, so that a user reading one line
//! knows which call to look at.

use crate::{DType, Device};

/// Result alias used by every fallible function of the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the tensor engine. Shape problems are errors, never panics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two operands whose shapes cannot be combined by `op`.
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}")]
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },

    /// A shape that `op` cannot accept (wrong rank, zero size, ...).
    #[error("{op}: unexpected shape {shape:?}: {msg}")]
    BadShape { op: &'static str, shape: Vec<usize>, msg: String },

    /// The number of elements does not match the requested shape.
    #[error("{op}: {len} elements cannot have shape {shape:?}")]
    ElementCount { op: &'static str, shape: Vec<usize>, len: usize },

    /// A dimension index outside `0..rank`.
    #[error("{op}: dimension {dim} out of range for a tensor of shape {shape:?}")]
    DimOutOfRange { op: &'static str, dim: usize, shape: Vec<usize> },

    /// `op` does not support this dtype (compute is f32; indices are i64).
    #[error("{op}: unsupported dtype {dtype:?} (expected {expected})")]
    UnsupportedDType { op: &'static str, dtype: DType, expected: &'static str },

    /// Operands live on different devices.
    #[error("{op}: operands on different devices ({lhs:?} and {rhs:?})")]
    DeviceMismatch { op: &'static str, lhs: Device, rhs: Device },

    /// The CUDA backend is not compiled in or no usable GPU was found.
    #[error("CUDA device {ordinal} is not available: {reason}")]
    CudaUnavailable { ordinal: usize, reason: String },

    /// `op` has no implementation for tensors on `device` yet (a CUDA
    /// tensor reached a CPU-only path).
    #[error("{op} is not implemented on {device} yet")]
    NotImplementedOnDevice { op: &'static str, device: Device },

    /// A CUDA kernel launch, cuBLAS call, transfer or device allocation failed.
    #[error("{op} on CUDA: {msg}")]
    Cuda { op: &'static str, msg: String },

    /// An argument of `op` outside its domain (an index out of bounds, a
    /// probability outside [0, 1), ...).
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    /// `backward` was called on a tensor that is not a scalar, or that does
    /// not depend on any variable.
    #[error("backward: {0}")]
    Backward(String),

    /// Reading or writing a safetensors file failed.
    #[error("safetensors file {path}: {msg}")]
    SafeTensors { path: String, msg: String },

    /// Reading a PyTorch (`torch.save`) checkpoint failed, or it holds
    /// something a state dict does not (a refused pickle global, say).
    #[error("PyTorch checkpoint {path}: {msg}")]
    TorchCheckpoint { path: String, msg: String },

    /// An I/O error with the file it concerns.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl Error {
    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
    pub(crate) fn bad_shape(op: &'static str, shape: &[usize], msg: impl Into<String>) -> Self {
        Error::BadShape { op, shape: shape.to_vec(), msg: msg.into() }
    }
}

/// Returns early with an [`Error::InvalidArgument`].
macro_rules! bail {
    ($op:expr, $($arg:tt)*) => {
        return Err($crate::Error::InvalidArgument { op: $op, msg: format!($($arg)*) })
    };
}
pub(crate) use bail;
