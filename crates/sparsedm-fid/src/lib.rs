//! FID and KID for the sparsedm project, compatible with pytorch-fid / torch-fidelity.
//!
//! The Fréchet Inception Distance compares two image sets through the mean and covariance of
//! their InceptionV3 pool3 features (2048-d). This crate holds everything of that pipeline
//! *except the network*:
//!
//! | module | what |
//! |---|---|
//! | [`stats`] | [`FeatureStats`] (μ, Σ, n) and the streaming f64 [`StatsAccumulator`] (`np.cov` semantics) |
//! | [`frechet`] | [`frechet_distance`]: ‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂) via symmetric eigendecompositions |
//! | [`kid`] | [`kernel_inception_distance`]: torch-fidelity's subset-averaged unbiased polynomial MMD² |
//! | [`npz`] | pytorch-fid statistics `.npz` (`mu`, `sigma`) and NHWC uint8 `arr_0` image `.npz` files |
//! | [`images`] | [`ImageSource`]s: PNG/JPEG folders, `arr_0` `.npz`, CIFAR-10 binaries → f32 NCHW batches in \[0, 1\] |
//! | [`error`] | [`FidError`], the one error type; bad input is an error naming the file/key/shape, never a panic |
//!
//! The FID variant of InceptionV3 (pytorch-fid weights, bilinear resize to 299, `2x − 1`) is
//! added later on top of the project's tensor engine; it will turn [`ImageBatch`]es into
//! feature rows for [`StatsAccumulator::add_batch`].
//!
//! All statistics and distances are computed in f64 with `faer` (dense kernels parallelised
//! over rayon's global thread pool).

pub mod error;
pub mod frechet;
pub mod images;
pub mod kid;
pub mod npz;
pub mod stats;

pub use error::{FidError, Result};
pub use frechet::{FrechetTerms, frechet_distance, frechet_terms};
pub use images::{
    BatchIter, Cifar10, CifarSplit, ImageBatch, ImageFolder, ImageSource, NpzImages,
    open_image_source,
};
pub use kid::{Kid, KidOptions, kernel_inception_distance, polynomial_mmd2_unbiased};
pub use npz::{
    NpzImageWriter, U8Images, read_images_npz, read_stats_npz, write_images_npz, write_stats_npz,
};
pub use stats::{FeatureStats, StatsAccumulator};
