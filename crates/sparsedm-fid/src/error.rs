//! The single error type of the crate.
//!
//! Every fallible function of `sparsedm-fid` returns [`Result<T>`] = `Result<T, FidError>`.
//! Bad input (a wrong shape, a missing key, a corrupt file, a non-finite feature) is always
//! reported through this enum, never by a panic, and each variant names what it is about: the
//! file, the key inside an `.npz`, the expected and actual shapes, or the offending row/column.

use std::path::PathBuf;

/// `Result` with [`FidError`] as the error type.
pub type Result<T, E = FidError> = std::result::Result<T, E>;

/// Everything that can go wrong while computing statistics, distances or reading images/stats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FidError {
    /// An argument is out of its valid range (a zero dimension, a zero batch size, ...).
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// Name of the argument.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },

    /// A flat buffer does not have the length that its declared shape requires.
    #[error("{what}: expected shape {expected}, got {actual}")]
    ShapeMismatch {
        /// What the buffer is (for example `"sigma of the first statistics"`).
        what: String,
        /// The expected shape or length, human readable.
        expected: String,
        /// The actual shape or length, human readable.
        actual: String,
    },

    /// Two statistics or feature sets that must share a dimension do not.
    #[error("dimension mismatch: {what} has dimension {a}, but {other} has dimension {b}")]
    DimensionMismatch {
        /// The first operand.
        what: &'static str,
        /// Its dimension.
        a: usize,
        /// The second operand.
        other: &'static str,
        /// Its dimension.
        b: usize,
    },

    /// A NaN or infinity where finite numbers are required.
    #[error("{what} contains a non-finite value ({value}) at row {row}, column {col}")]
    NonFinite {
        /// What holds the value (for example `"feature batch"` or `"sigma of the second statistics"`).
        what: String,
        /// Row (sample index for features; row of the matrix for a covariance; 0 for vectors).
        row: usize,
        /// Column (feature index).
        col: usize,
        /// The offending value.
        value: f64,
    },

    /// Too few samples for the requested statistic.
    #[error("{what} needs at least {needed} samples, got {got}")]
    TooFewSamples {
        /// The statistic (for example `"an unbiased covariance"`).
        what: &'static str,
        /// The minimum number of samples.
        needed: usize,
        /// The number that was available.
        got: usize,
    },

    /// The symmetric eigensolver did not converge (should only happen on pathological input).
    #[error("symmetric eigendecomposition of {what} ({dim}x{dim}) did not converge")]
    EigenNoConvergence {
        /// Which matrix.
        what: &'static str,
        /// Its dimension.
        dim: usize,
    },

    /// An operating-system level I/O failure on a file or directory.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The file is not a readable zip archive (an `.npz` is a zip of `.npy` files).
    #[error("{path} is not a valid .npz (zip) archive: {source}")]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: zip::result::ZipError,
    },

    /// A required array is absent from an `.npz`.
    #[error("{path}: missing key `{key}` (keys present: {present:?})")]
    MissingKey {
        /// The archive.
        path: PathBuf,
        /// The missing array name.
        key: String,
        /// The array names that are present.
        present: Vec<String>,
    },

    /// An array inside an `.npz` has the wrong dtype, shape or layout, or its payload is corrupt.
    #[error("{path}: key `{key}`: {reason}")]
    BadArray {
        /// The archive.
        path: PathBuf,
        /// The array name.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An image file could not be decoded.
    #[error("cannot decode image {path}: {source}")]
    ImageDecode {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },

    /// An image's size differs from the size of the first image of the source.
    #[error(
        "image {path} is {width}x{height} (WxH) but {first} is {expected_width}x{expected_height}; \
         all images of a source must have one size (resize them first)"
    )]
    ImageSizeMismatch {
        /// The image with the deviating size.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The first image of the source, which fixed the expected size.
        first: PathBuf,
        /// Expected width.
        expected_width: u32,
        /// Expected height.
        expected_height: u32,
    },

    /// A source that must contain images contains none.
    #[error("no images found in {path} ({reason})")]
    NoImages {
        /// The directory or file.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },

    /// A tensor operation of the feature network failed (shape, dtype or device problem).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] sparsedm_tensor::Error),

    /// Building the InceptionV3 network or loading its weights failed; a checkpoint that does
    /// not match lists every missing, unexpected and mis-shaped tensor.
    #[error("InceptionV3: {0}")]
    Network(#[from] sparsedm_layers::LayersError),

    /// A CIFAR-10 binary batch file is malformed.
    #[error("{path} is not a CIFAR-10 binary batch file: {reason}")]
    BadCifarFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl FidError {
    /// Shorthand for [`FidError::InvalidArgument`].
    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        FidError::InvalidArgument { name, reason: reason.into() }
    }

    /// Shorthand for [`FidError::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FidError::Io { path: path.into(), source }
    }

    /// Shorthand for [`FidError::BadArray`].
    pub(crate) fn bad_array(path: impl Into<PathBuf>, key: &str, reason: impl Into<String>) -> Self {
        FidError::BadArray { path: path.into(), key: key.to_owned(), reason: reason.into() }
    }
}
