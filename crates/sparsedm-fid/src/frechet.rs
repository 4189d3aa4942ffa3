//! Fréchet distance between two Gaussians fitted to feature statistics (the "FID" number).
//!
//! ```text
//! d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 · tr sqrt(Σ₁ Σ₂)
//! ```
//!
//! # Why no general matrix square root
//! pytorch-fid evaluates `tr sqrt(Σ₁Σ₂)` with `scipy.linalg.sqrtm` (a Schur method on a
//! non-symmetric matrix), which yields spurious complex parts and loses accuracy when a
//! covariance is singular (fewer samples than dimensions); it then retries with `Σ + 1e-6·I`.
//! Here the identity `Σ₁Σ₂ ~ Σ₁^½ Σ₂ Σ₁^½` (similar matrices, same eigenvalues) is used instead:
//!
//! 1. `Σ₁ = U diag(λ) Uᵀ` by a *symmetric* eigendecomposition; negative eigenvalues (round-off
//!    on a positive semi-definite matrix) are clamped to 0, giving `Σ₁^½ = U diag(√λ) Uᵀ`.
//!    "Negative" means below the solver's round-off level `d·ε·max λ` (see `numerical_zero`).
//! 2. With `B = U diag(√λ)`, the matrix `M = Bᵀ Σ₂ B` is similar to `Σ₁^½ Σ₂ Σ₁^½`
//!    (`Σ₁^½ Σ₂ Σ₁^½ = U M Uᵀ`), symmetric and positive semi-definite. Columns of `B` for
//!    zero eigenvalues are dropped, so a rank-r `Σ₁` gives an `r × r` problem.
//! 3. `tr sqrt(Σ₁Σ₂) = Σᵢ √max(μᵢ, 0)` over the eigenvalues `μᵢ` of `M` (symmetric solver again),
//!    with the same round-off threshold.
//!
//! Everything is f64 and real; there is no epsilon fallback and no complex arithmetic, and the
//! method is exact for singular covariances. In exact arithmetic it equals torch-fidelity's
//! `Σ √eigvals(Σ₁Σ₂)` and pytorch-fid's `tr sqrtm(Σ₁Σ₂)`.
//!
//! Cost for `d = 2048`: two symmetric eigendecompositions (one with vectors) and two GEMMs.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{ComputeEigenvectors, self_adjoint_evd, self_adjoint_evd_scratch};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

use crate::covariance::check_covariance;
use crate::error::{FidError, Result};
use crate::stats::{FeatureStats, par};

/// The terms of the Fréchet distance, for diagnostics.
///
/// `value = mean_term + trace_a + trace_b − 2 · trace_sqrt`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrechetTerms {
    /// ‖μ₁ − μ₂‖².
    pub mean_term: f64,
    /// tr Σ₁.
    pub trace_a: f64,
    /// tr Σ₂.
    pub trace_b: f64,
    /// tr sqrt(Σ₁ Σ₂).
    pub trace_sqrt: f64,
    /// The Fréchet distance (squared, as FID reports it).
    pub value: f64,
}

/// Fréchet distance between `a` and `b` (pytorch-fid's `calculate_frechet_distance`).
///
/// Errors if the dimensions differ, a shape is inconsistent, a value is non-finite, a
/// covariance is not symmetric positive semi-definite ([`crate::covariance`]), or the
/// eigensolver fails to converge. Never negative: a round-off negative (identical statistics
/// give 0 up to round-off) is reported as 0, and a clearly negative value is an error.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    Ok(frechet_terms(a, b)?.value)
}

/// [`frechet_distance`] together with its individual terms.
pub fn frechet_terms(a: &FeatureStats, b: &FeatureStats) -> Result<FrechetTerms> {
    a.check("the first statistics")?;
    b.check("the second statistics")?;
    let d = a.dim();
    if b.dim() != d {
        return Err(FidError::DimensionMismatch { what: "the first statistics", a: d, other: "the second statistics", b: b.dim() });
    }

    let mean_term: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace_a: f64 = (0..d).map(|i| a.sigma[i * d + i]).sum();
    let trace_b: f64 = (0..d).map(|i| b.sigma[i * d + i]).sum();
    check_covariance(&a.sigma, d, "the first statistics")?;
    check_covariance(&b.sigma, d, "the second statistics")?;
    let trace_sqrt = trace_sqrt_product(&a.sigma, &b.sigma, d)?;
    let value = mean_term + trace_a + trace_b - 2.0 * trace_sqrt;
    // Round-off of the traces: a distance below zero by less than this is zero.
    let round_off = 1e-6 * (trace_a.abs() + trace_b.abs() + mean_term) + f64::EPSILON;
    if value < -round_off {
        return Err(FidError::invalid(
            "statistics",
            format!("the Fréchet distance came out negative ({value:e}): the statistics are inconsistent"),
        ));
    }
    let value = value.max(0.0);
    Ok(FrechetTerms { mean_term, trace_a, trace_b, trace_sqrt, value })
}

/// `tr sqrt(Σ₁ Σ₂)` for symmetric positive semi-definite row-major `d × d` matrices.
///
/// Inputs are symmetrised (`(S + Sᵀ)/2`) first, so a covariance that is symmetric only up to
/// round-off (as read from a file) is fine. Shapes must already be checked.
fn trace_sqrt_product(s1: &[f64], s2: &[f64], d: usize) -> Result<f64> {
    let sym = |s: &[f64]| Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (s[i * d + j] + s[j * d + i]));
    let s1 = sym(s1);
    let s2 = sym(s2);

    // Σ₁ = U diag(λ) Uᵀ; keep the columns of B = U diag(√λ) with λ > 0.
    let (lambda, u) = eigh(s1.as_ref(), true, "the first covariance")?;
    let u = u.ok_or(FidError::EigenNoConvergence { what: "the first covariance", dim: d })?;
    let tol = numerical_zero(&lambda);
    let keep: Vec<usize> = (0..d).filter(|&k| lambda[k] > tol).collect();
    let r = keep.len();
    if r == 0 {
        // Σ₁ = 0 (numerically): Σ₁Σ₂ = 0.
        return Ok(0.0);
    }
    let bmat = Mat::<f64>::from_fn(d, r, |i, c| u[(i, keep[c])] * lambda[keep[c]].sqrt());

    // M = Bᵀ Σ₂ B  (r × r), symmetric PSD and similar to Σ₁^½ Σ₂ Σ₁^½ (up to zero eigenvalues).
    let mut t = Mat::<f64>::zeros(d, r);
    matmul(t.as_mut(), Accum::Replace, s2.as_ref(), bmat.as_ref(), 1.0, par());
    let mut m = Mat::<f64>::zeros(r, r);
    matmul(m.as_mut(), Accum::Replace, bmat.transpose(), t.as_ref(), 1.0, par());
    let m = Mat::<f64>::from_fn(r, r, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));

    let (mu, _) = eigh(m.as_ref(), false, "the product sqrt(S1) S2 sqrt(S1)")?;
    let tol = numerical_zero(&mu);
    Ok(mu.iter().filter(|&&x| x > tol).map(|&x| x.sqrt()).sum())
}

/// Eigenvalues at or below this are zero within the solver's backward error
/// (`n · ε · max |λ|`), i.e. negative or round-off values of a singular PSD matrix.
///
/// Dropping them matters because `√` amplifies round-off: an exactly-zero eigenvalue computed
/// as `ε·‖M‖` would add `√(ε·‖M‖)` (≈ 1e-8 relative) per null direction to `tr sqrt`, which is
/// visible when comparing a singular covariance with itself. Eigenvalues this small contribute
/// at most `√tol` each, the same order as that noise, so regular cases are unaffected.
fn numerical_zero(eigenvalues: &[f64]) -> f64 {
    let max_abs = eigenvalues.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    max_abs * eigenvalues.len() as f64 * f64::EPSILON
}

/// Symmetric eigendecomposition of `a` (lower triangle read), eigenvalues ascending.
///
/// Calls faer's solver with this crate's explicit parallelism (the convenience methods on `Mat`
/// consult faer's global setting, which panics when it has been disabled).
pub(crate) fn eigh(a: MatRef<'_, f64>, vectors: bool, what: &'static str) -> Result<(Vec<f64>, Option<Mat<f64>>)> {
    let n = a.nrows();
    let compute = if vectors { ComputeEigenvectors::Yes } else { ComputeEigenvectors::No };
    let par = par();
    let mut s = Diag::<f64>::zeros(n);
    let mut u = vectors.then(|| Mat::<f64>::zeros(n, n));
    let mut buf = MemBuffer::new(self_adjoint_evd_scratch::<f64>(n, compute, par, Default::default()));
    self_adjoint_evd(a, s.as_mut(), u.as_mut().map(|u| u.as_mut()), par, MemStack::new(&mut buf), Default::default())
        .map_err(|_| FidError::EigenNoConvergence { what, dim: n })?;
    let values = s.column_vector().iter().copied().collect();
    Ok((values, u))
}
