//! The crate's one error type.

use std::path::PathBuf;

/// Errors of data loading, optimisation and training runs.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Tensor(#[from] sparsedm_tensor::Error),
    #[error(transparent)]
    Layers(#[from] sparsedm_layers::LayersError),
    #[error(transparent)]
    Diffusion(#[from] sparsedm_diffusion::DiffusionError),
    #[error(transparent)]
    Fid(#[from] sparsedm_fid::FidError),
    /// A data file that cannot be used, named.
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },
    /// An invalid setting.
    #[error("{0}")]
    Config(String),
    /// A picture or plot that could not be drawn (the drawing library's reason).
    #[error("cannot draw {what}: {msg}")]
    Figure { what: String, msg: String },
    /// A caller's sink asked to stop (Ctrl-C during `sparsedm sample`), after `done` items.
    #[error("stopped after {done} of {total}")]
    Stopped { done: usize, total: usize },
    /// The loss became NaN or infinite.
    #[error("step {step}: the loss is {value}; stopping (the last good checkpoint is kept)")]
    NonFinite { step: u64, value: f32 },
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, TrainError>;
