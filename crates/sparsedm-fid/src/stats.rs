//! Mean and covariance of feature vectors (the "μ, Σ" of FID), accumulated in f64.
//!
//! pytorch-fid computes `mu = np.mean(act, axis=0)` and `sigma = np.cov(act, rowvar=False)`
//! (unbiased, divisor N−1) over a float64 array holding *all* activations. Keeping 50 000 × 2048
//! activations in memory is unnecessary: [`StatsAccumulator`] consumes them batch by batch and
//! produces the same numbers.
//!
//! # Numerics
//! The naive streaming formula `Σ = (Σ xxᵀ − n μμᵀ)/(n−1)` cancels catastrophically when the
//! mean is large compared to the spread (Inception pool3 features are non-negative with means of
//! the order of their standard deviations, and other feature extractors are worse). Instead each
//! batch is centred on its *own* mean (a two-pass computation inside the batch), its scatter
//! matrix `Xcᵀ Xc` is formed with a GEMM, and batches are merged with the pairwise update of
//! Chan, Golub & LeVeque:
//!
//! ```text
//! δ = μ_b − μ_a,   n = n_a + n_b
//! μ  = μ_a + δ · n_b / n
//! M2 = M2_a + M2_b + δ δᵀ · n_a n_b / n        (Σ = M2 / (n − 1))
//! ```
//!
//! which is as accurate as a global two-pass computation for any realistic batch size. All sums
//! are in f64 even when the features arrive as f32. Only the lower triangle of `M2` is updated
//! (a symmetric rank-B update), halving the GEMM cost; it is mirrored in [`StatsAccumulator::finish`].
//!
//! The GEMM runs on `faer` with rayon parallelism (all threads of the global rayon pool).

use std::fmt;

use faer::linalg::matmul::triangular::{BlockStructure, matmul as tri_matmul};
use faer::{Accum, Mat, Par};

use crate::error::{FidError, Result};

/// Parallelism used for the crate's dense linear algebra: every thread of rayon's global pool.
pub(crate) fn par() -> Par {
    Par::rayon(0)
}

/// Mean vector and covariance matrix of a set of feature vectors, in f64.
///
/// This is what a pytorch-fid `.npz` statistics file holds (`mu`, `sigma`); see
/// [`crate::npz::read_stats_npz`] / [`crate::npz::write_stats_npz`].
#[derive(Clone, PartialEq)]
pub struct FeatureStats {
    /// Mean, length `d`.
    pub mu: Vec<f64>,
    /// Unbiased covariance (divisor `n − 1`, like `np.cov(rowvar=False)`), row-major `d × d`.
    pub sigma: Vec<f64>,
    /// Number of samples the statistics were computed from; `0` when unknown (a pytorch-fid
    /// statistics file does not record it).
    pub n: usize,
}

impl fmt::Debug for FeatureStats {
    // A derived Debug would print all d² covariance entries (4 M numbers for d = 2048).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.mu.len();
        let trace: f64 = if self.sigma.len() == d * d { (0..d).map(|i| self.sigma[i * d + i]).sum() } else { f64::NAN };
        f.debug_struct("FeatureStats")
            .field("dim", &d)
            .field("n", &self.n)
            .field("sigma_len", &self.sigma.len())
            .field("trace_sigma", &trace)
            .finish_non_exhaustive()
    }
}

impl FeatureStats {
    /// Builds statistics from a mean (length `d`) and a row-major `d × d` covariance.
    ///
    /// Checks the shapes (and `d > 0`); finiteness is checked where the statistics are used.
    pub fn new(mu: Vec<f64>, sigma: Vec<f64>, n: usize) -> Result<Self> {
        let stats = FeatureStats { mu, sigma, n };
        stats.check_shape("statistics")?;
        Ok(stats)
    }

    /// Feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// Statistics of `features`, row-major `n × dim` f32 (one feature vector per row).
    pub fn from_features(features: &[f32], dim: usize) -> Result<Self> {
        let mut acc = StatsAccumulator::new(dim)?;
        acc.add_batch(features)?;
        acc.finish()
    }

    /// Statistics of `features`, row-major `n × dim` f64 (one feature vector per row).
    pub fn from_features_f64(features: &[f64], dim: usize) -> Result<Self> {
        let mut acc = StatsAccumulator::new(dim)?;
        acc.add_batch_f64(features)?;
        acc.finish()
    }

    /// Checks that `d > 0` and `sigma` has `d²` entries. `what` names the statistics in errors.
    pub(crate) fn check_shape(&self, what: &str) -> Result<()> {
        let d = self.mu.len();
        if d == 0 {
            return Err(FidError::ShapeMismatch { what: format!("mu of {what}"), expected: "[d] with d > 0".into(), actual: "[0]".into() });
        }
        if self.sigma.len() != d * d {
            return Err(FidError::ShapeMismatch {
                what: format!("sigma of {what}"),
                expected: format!("[{d}, {d}] ({} values, d taken from mu)", d * d),
                actual: format!("{} values", self.sigma.len()),
            });
        }
        Ok(())
    }

    /// [`Self::check_shape`] plus: every entry of `mu` and `sigma` is finite.
    pub(crate) fn check(&self, what: &str) -> Result<()> {
        self.check_shape(what)?;
        let d = self.mu.len();
        if let Some((j, &v)) = self.mu.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FidError::NonFinite { what: format!("mu of {what}"), row: 0, col: j, value: v });
        }
        if let Some((k, &v)) = self.sigma.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FidError::NonFinite { what: format!("sigma of {what}"), row: k / d, col: k % d, value: v });
        }
        Ok(())
    }
}

/// Streaming mean/covariance accumulator (f64, batch-centred, Chan et al. merge).
///
/// ```
/// # use sparsedm_fid::StatsAccumulator;
/// let mut acc = StatsAccumulator::new(2)?;
/// acc.add_batch(&[1.0, 2.0, 3.0, 4.0])?; // two rows of dimension 2
/// acc.add_batch(&[5.0, 9.0])?;           // one more row
/// let stats = acc.finish()?;
/// assert_eq!(stats.n, 3);
/// assert!((stats.mu[1] - 5.0).abs() < 1e-12);
/// # Ok::<(), sparsedm_fid::FidError>(())
/// ```
pub struct StatsAccumulator {
    dim: usize,
    n: usize,
    mean: Vec<f64>,
    /// Sum of centred outer products; only the lower triangle (including the diagonal) is kept
    /// up to date.
    m2: Mat<f64>,
}

impl fmt::Debug for StatsAccumulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsAccumulator").field("dim", &self.dim).field("n", &self.n).finish_non_exhaustive()
    }
}

impl StatsAccumulator {
    /// New empty accumulator for feature vectors of dimension `dim` (> 0).
    ///
    /// Allocates the `dim × dim` f64 scatter matrix (32 MiB for `dim = 2048`).
    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(FidError::invalid("dim", "the feature dimension must be positive"));
        }
        Ok(StatsAccumulator { dim, n: 0, mean: vec![0.0; dim], m2: Mat::zeros(dim, dim) })
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of feature vectors added so far.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Adds a batch of f32 feature vectors, row-major `B × dim` (an empty slice is a no-op).
    ///
    /// Errors if the length is not a multiple of `dim` or a value is NaN/±∞ (the error gives the
    /// global sample index and the feature index); the accumulator is unchanged on error.
    pub fn add_batch(&mut self, rows: &[f32]) -> Result<()> {
        self.add_rows(rows, f64::from)
    }

    /// Adds a batch of f64 feature vectors, row-major `B × dim`. See [`Self::add_batch`].
    pub fn add_batch_f64(&mut self, rows: &[f64]) -> Result<()> {
        self.add_rows(rows, |v| v)
    }

    fn add_rows<T: Copy>(&mut self, rows: &[T], to_f64: impl Fn(T) -> f64) -> Result<()> {
        let d = self.dim;
        if rows.is_empty() {
            return Ok(());
        }
        if !rows.len().is_multiple_of(d) {
            return Err(FidError::ShapeMismatch {
                what: "feature batch".into(),
                expected: format!("[B, {d}] (a multiple of {d} values)"),
                actual: format!("{} values", rows.len()),
            });
        }
        let b = rows.len() / d;
        for (k, &v) in rows.iter().enumerate() {
            let v = to_f64(v);
            if !v.is_finite() {
                return Err(FidError::NonFinite { what: "feature batch".into(), row: self.n + k / d, col: k % d, value: v });
            }
        }

        // Batch mean, then the batch centred on it (column-major B × d for faer).
        let mut batch_mean = vec![0.0f64; d];
        for row in rows.chunks_exact(d) {
            for (m, &v) in batch_mean.iter_mut().zip(row) {
                *m += to_f64(v);
            }
        }
        let inv_b = 1.0 / b as f64;
        batch_mean.iter_mut().for_each(|m| *m *= inv_b);
        let xc = Mat::<f64>::from_fn(b, d, |i, j| to_f64(rows[i * d + j]) - batch_mean[j]);

        let mut batch_m2 = Mat::<f64>::zeros(d, d);
        tri_matmul(
            batch_m2.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            xc.transpose(),
            BlockStructure::Rectangular,
            xc.as_ref(),
            BlockStructure::Rectangular,
            1.0,
            par(),
        );
        self.merge_parts(b, &batch_mean, &batch_m2);
        Ok(())
    }

    /// Merges another accumulator into this one (for example one per device or per thread).
    pub fn merge(&mut self, other: &StatsAccumulator) -> Result<()> {
        if other.dim != self.dim {
            return Err(FidError::DimensionMismatch {
                what: "this accumulator",
                a: self.dim,
                other: "the merged accumulator",
                b: other.dim,
            });
        }
        if other.n > 0 {
            self.merge_parts(other.n, &other.mean, &other.m2);
        }
        Ok(())
    }

    /// Chan et al. pairwise merge of (n_b, mean_b, lower(M2_b)) into self.
    fn merge_parts(&mut self, n_b: usize, mean_b: &[f64], m2_b: &Mat<f64>) {
        let d = self.dim;
        if self.n == 0 {
            self.n = n_b;
            self.mean.copy_from_slice(mean_b);
            for j in 0..d {
                for i in j..d {
                    self.m2[(i, j)] = m2_b[(i, j)];
                }
            }
            return;
        }
        let n_a = self.n as f64;
        let nb = n_b as f64;
        let n = n_a + nb;
        let delta: Vec<f64> = mean_b.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let coef = n_a * nb / n;
        for j in 0..d {
            let cj = coef * delta[j];
            for i in j..d {
                self.m2[(i, j)] += m2_b[(i, j)] + cj * delta[i];
            }
        }
        let w = nb / n;
        for (m, dl) in self.mean.iter_mut().zip(&delta) {
            *m += dl * w;
        }
        self.n += n_b;
    }

    /// Mean and unbiased covariance of everything added so far (needs at least 2 samples).
    ///
    /// Does not consume the accumulator, so it can be called for intermediate snapshots.
    pub fn finish(&self) -> Result<FeatureStats> {
        if self.n < 2 {
            return Err(FidError::TooFewSamples { what: "an unbiased covariance", needed: 2, got: self.n });
        }
        let d = self.dim;
        let inv = 1.0 / (self.n - 1) as f64;
        let mut sigma = vec![0.0f64; d * d];
        for j in 0..d {
            for i in j..d {
                let v = self.m2[(i, j)] * inv;
                sigma[i * d + j] = v;
                sigma[j * d + i] = v;
            }
        }
        Ok(FeatureStats { mu: self.mean.clone(), sigma, n: self.n })
    }
}
