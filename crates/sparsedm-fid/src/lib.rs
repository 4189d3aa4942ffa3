//! FID and KID for the sparsedm project, compatible with pytorch-fid / torch-fidelity.
//!
//! The Fréchet Inception Distance compares two image sets through the mean and covariance of
//! their InceptionV3 pool3 features (2048-d). This crate holds the whole pipeline:
//!
//! | module | what |
//! |---|---|
//! | [`stats`] | [`FeatureStats`] (μ, Σ, n) and the streaming f64 [`StatsAccumulator`] (`np.cov` semantics) |
//! | [`frechet`] | [`frechet_distance`]: ‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂) via symmetric eigendecompositions |
//! | [`kid`] | [`kernel_inception_distance`]: torch-fidelity's subset-averaged unbiased polynomial MMD² |
//! | [`npz`] | pytorch-fid statistics `.npz` (`mu`, `sigma`) and NHWC uint8 `arr_0` image `.npz` files |
//! | [`images`] | [`ImageSource`]s: PNG/JPEG folders, `arr_0` `.npz`, CIFAR-10 binaries → f32 NCHW batches in \[0, 1\] |
//! | [`inception`] | [`InceptionV3`]: pytorch-fid's `fid_inception_v3` on the tensor engine, loading the converted `pt_inception-2015-12-05-6726825d.pth` |
//! | [`pixel`] | "FD-px": pooled-pixel features for a Fréchet distance that needs no download (not FID) |
//! | [`preprocess`](mod@preprocess) | [`preprocess()`]: bilinear resize to 299×299 (`align_corners=False`), then `2x − 1`, as pytorch-fid |
//! | [`extract`] | [`extract_features`]: batched extraction from an [`ImageSource`] into a [`StatsAccumulator`] (optionally keeping the features for KID), with a progress bar |
//! | [`formula`] | InceptionV3 stand-in weights from the shared fixture's formula, for device checks without the real weights |
//! | [`error`] | [`FidError`], the one error type; bad input is an error naming the file/key/shape, never a panic |
//!
//! All statistics and distances are computed in f64 with `faer` (dense kernels parallelised
//! over rayon's global thread pool).

pub mod covariance;
pub mod error;
pub mod extract;
pub mod formula;
pub mod frechet;
pub mod images;
pub mod inception;
pub mod kid;
pub mod npz;
pub mod pixel;
pub mod preprocess;
pub mod stats;

pub use error::{FidError, Result};
pub use extract::{DEFAULT_BATCH_SIZE, ExtractOptions, Extraction, Progress, extract_features, extract_into};
pub use frechet::{FrechetTerms, frechet_distance, frechet_terms};
pub use images::{BatchIter, Cifar10, CifarSplit, ImageBatch, ImageFolder, ImageSource, NpzImages, open_image_source};
pub use inception::{INPUT_SIZE, InceptionV3, POOL3_DIM, is_ignored_checkpoint_tensor};
pub use kid::{Kid, KidOptions, kernel_inception_distance, polynomial_mmd2_unbiased};
pub use npz::{
    NpzImageWriter, U8Images, npz_keys, read_images_npz, read_labels_npz, read_stats_npz, remove_stale_temporaries, write_images_npz,
    write_stats_npz,
};
pub use preprocess::{preprocess, preprocess_batch};
pub use stats::{FeatureStats, StatsAccumulator};
