//! Batched feature extraction: images of any [`ImageSource`] → preprocessing → InceptionV3 →
//! pool3 features, streamed into a [`StatsAccumulator`] (and optionally kept, for KID).
//!
//! Only one batch of images and activations is alive at a time, so memory does not grow with
//! the number of images (except the kept features: 8 KiB per image). On the CPU the work is
//! parallel inside each operation (convolutions over the images of a batch, pools over planes,
//! the statistics GEMM over rayon's pool); a batch of at least a few images per core keeps every
//! core busy. Everything runs under [`no_grad`].
//!
//! A progress bar (indicatif) is drawn on stderr when stderr is a terminal and
//! [`Progress::Auto`] is chosen; it is never drawn into pipes or log files.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sparsedm_tensor::no_grad;

use crate::error::{FidError, Result};
use crate::images::ImageSource;
use crate::inception::{InceptionV3, POOL3_DIM};
use crate::preprocess::preprocess_batch;
use crate::stats::{FeatureStats, StatsAccumulator};

/// Default number of images per forward pass (pytorch-fid's default).
pub const DEFAULT_BATCH_SIZE: usize = 50;

/// Whether a progress bar is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// On stderr when stderr is a terminal, hidden otherwise.
    #[default]
    Auto,
    /// Never.
    Hidden,
}

/// Settings of [`extract_features`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Images per forward pass (> 0).
    pub batch_size: usize,
    /// Keep every feature vector (row-major `N × 2048` f32), e.g. for KID.
    pub keep_features: bool,
    /// Progress bar.
    pub progress: Progress,
    /// Text in front of the progress bar (for example the source's name).
    pub label: String,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions { batch_size: DEFAULT_BATCH_SIZE, keep_features: false, progress: Progress::Auto, label: String::new() }
    }
}

/// What [`extract_features`] produced.
#[derive(Debug)]
pub struct Extraction {
    /// Mean and scatter of the pool3 features of every image.
    pub accumulator: StatsAccumulator,
    /// The features, row-major `images × 2048`, when [`ExtractOptions::keep_features`] was set.
    pub features: Option<Vec<f32>>,
    /// Number of images processed.
    pub images: usize,
    /// Wall-clock time of the extraction.
    pub elapsed: Duration,
}

impl Extraction {
    /// μ and Σ of the features (needs at least 2 images).
    pub fn stats(&self) -> Result<FeatureStats> {
        self.accumulator.finish()
    }

    /// Throughput of the extraction.
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Runs every image of `source` through `net` and accumulates the pool3 statistics.
///
/// Errors (naming the file) if an image cannot be read, if the source is empty, or on an
/// invalid batch size; the features of the batches before the error are discarded.
pub fn extract_features(net: &InceptionV3, source: &dyn ImageSource, opts: &ExtractOptions) -> Result<Extraction> {
    let start = Instant::now();
    let mut accumulator = StatsAccumulator::new(POOL3_DIM)?;
    let mut features = if opts.keep_features { Some(Vec::with_capacity(source.len().saturating_mul(POOL3_DIM))) } else { None };
    let images = extract_into(net, source, opts, &mut accumulator, features.as_mut())?;
    Ok(Extraction { accumulator, features, images, elapsed: start.elapsed() })
}

/// Like [`extract_features`], adding to an existing accumulator (of dimension 2048) and,
/// when given, appending the feature rows to `features`. Returns the number of images.
pub fn extract_into(
    net: &InceptionV3,
    source: &dyn ImageSource,
    opts: &ExtractOptions,
    accumulator: &mut StatsAccumulator,
    mut features: Option<&mut Vec<f32>>,
) -> Result<usize> {
    if opts.batch_size == 0 {
        return Err(FidError::InvalidArgument { name: "batch_size", reason: "must be at least 1".into() });
    }
    if accumulator.dim() != POOL3_DIM {
        return Err(FidError::DimensionMismatch {
            what: "the accumulator",
            a: accumulator.dim(),
            other: "the pool3 features",
            b: POOL3_DIM,
        });
    }
    if source.is_empty() {
        return Err(FidError::NoImages { path: source.describe().into(), reason: "the image source is empty".into() });
    }
    let _g = no_grad();
    let bar = progress_bar(opts, source.len());
    let device = net.device();
    let mut done = 0usize;
    for batch in source.batches(opts.batch_size)? {
        let batch = batch?;
        let n = batch.n;
        let x = preprocess_batch(batch, &device)?;
        let feats = net.forward(&x)?;
        drop(x);
        let rows = feats.to_vec_f32()?;
        accumulator.add_batch(&rows)?;
        if let Some(f) = features.as_mut() {
            f.extend_from_slice(&rows);
        }
        done += n;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(done)
}

/// A bar over `len` images, drawn only when asked for and stderr is a terminal.
fn progress_bar(opts: &ExtractOptions, len: usize) -> ProgressBar {
    let visible = opts.progress == Progress::Auto && std::io::stderr().is_terminal();
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} images ({per_sec}, eta {eta})") {
        bar.set_style(style);
    }
    bar.set_prefix(if opts.label.is_empty() { "Inception features".to_string() } else { opts.label.clone() });
    bar
}
