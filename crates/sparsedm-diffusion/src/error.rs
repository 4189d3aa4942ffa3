//! The crate's one error type.

/// Errors of models, schedules and samplers.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error(transparent)]
    Tensor(#[from] sparsedm_tensor::Error),
    #[error(transparent)]
    Layers(#[from] sparsedm_layers::LayersError),
    /// A model configuration that cannot be built (unknown key, bad value).
    #[error("model config: {0}")]
    Config(String),
    /// An input of the wrong shape or dtype for a model or sampler.
    #[error("{what}: {msg}")]
    Input { what: String, msg: String },
    /// A file that cannot be read or parsed (config, checkpoint).
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, DiffusionError>;
