//! Kernel Inception Distance (KID) as torch-fidelity computes it.
//!
//! KID (Bińkowski et al. 2018) is the unbiased estimate of the squared maximum mean discrepancy
//! (MMD²) between two feature sets under the cubic polynomial kernel
//! `k(x, y) = (γ·xᵀy + c₀)^degree` with `γ = 1/d`, `c₀ = 1`, `degree = 3`. Because the full
//! estimate is quadratic in the number of samples, torch-fidelity averages it over `subsets`
//! random subsets of `subset_size` samples drawn without replacement from each set, and reports
//! the mean and the (population, `np.std`) standard deviation of those estimates. Defaults
//! ([`KidOptions::default`]) are torch-fidelity's: 100 subsets of 1000, seed 2020.
//!
//! # Subset sampling
//! torch-fidelity draws subsets with `np.random.RandomState(seed)` and
//! `rng.choice(n, subset_size, replace=False)` (first set, then second set, per subset). That
//! generator is reproduced exactly here (MT19937 with numpy's legacy seeding, the legacy
//! Fisher–Yates `permutation` and its masked-rejection bounded integers), so the *same samples*
//! are selected as in torch-fidelity for the same seed. The kernel sums are computed in f64
//! (torch-fidelity multiplies float32 features in float32), so results agree to float32 round-off.
//!
//! Unlike FID, KID is unbiased and usable with fewer samples than feature dimensions.

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{BlockStructure, matmul as tri_matmul};
use faer::{Accum, Mat};

use crate::error::{FidError, Result};
use crate::stats::par;

/// Parameters of [`kernel_inception_distance`]; `Default` gives torch-fidelity's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct KidOptions {
    /// Number of random subsets the MMD² is averaged over (torch-fidelity `kid_subsets`, 100).
    pub subsets: usize,
    /// Samples per subset, drawn without replacement from each set (`kid_subset_size`, 1000).
    pub subset_size: usize,
    /// Polynomial kernel degree (`kid_degree`, 3).
    pub degree: i32,
    /// Kernel scale γ; `None` means `1/d` (`kid_gamma`, None).
    pub gamma: Option<f64>,
    /// Kernel offset c₀ (`kid_coef0`, 1).
    pub coef0: f64,
    /// Seed of numpy's `RandomState` used for the subsets (`rng_seed`, 2020).
    pub seed: u32,
}

impl Default for KidOptions {
    fn default() -> Self {
        KidOptions { subsets: 100, subset_size: 1000, degree: 3, gamma: None, coef0: 1.0, seed: 2020 }
    }
}

/// Result of [`kernel_inception_distance`].
#[derive(Clone, Debug, PartialEq)]
pub struct Kid {
    /// Mean of the per-subset MMD² estimates (the reported KID).
    pub mean: f64,
    /// Population standard deviation (`np.std`, ddof = 0) of the per-subset estimates.
    pub std: f64,
    /// The per-subset MMD² estimates, in sampling order.
    pub per_subset: Vec<f64>,
}

/// KID between two feature sets, row-major `n1 × dim` and `n2 × dim` f32 (torch-fidelity's
/// `kid_features_to_metric`).
///
/// Errors on shape problems, non-finite features, `subsets == 0`, `subset_size < 2`, or a set
/// with fewer than `subset_size` samples (torch-fidelity refuses that case as well).
pub fn kernel_inception_distance(features_1: &[f32], features_2: &[f32], dim: usize, opts: &KidOptions) -> Result<Kid> {
    let n1 = rows_of(features_1, dim, "first feature set")?;
    let n2 = rows_of(features_2, dim, "second feature set")?;
    if opts.subsets == 0 {
        return Err(FidError::invalid("subsets", "must be at least 1"));
    }
    if opts.subset_size < 2 {
        return Err(FidError::invalid("subset_size", format!("must be at least 2, got {}", opts.subset_size)));
    }
    for (n, what) in [(n1, "the first feature set"), (n2, "the second feature set")] {
        if n < opts.subset_size {
            return Err(FidError::invalid(
                "subset_size",
                format!("KID subset size {} is larger than {what} ({n} samples)", opts.subset_size),
            ));
        }
    }
    check_finite(features_1, dim, "first feature set")?;
    check_finite(features_2, dim, "second feature set")?;

    let mut rng = Mt19937::new(opts.seed);
    let mut per_subset = Vec::with_capacity(opts.subsets);
    let m = opts.subset_size;
    for _ in 0..opts.subsets {
        let idx1 = rng.choice_without_replacement(n1, m);
        let idx2 = rng.choice_without_replacement(n2, m);
        let x = gather(features_1, dim, &idx1);
        let y = gather(features_2, dim, &idx2);
        per_subset.push(mmd2_unbiased(&x, &y, opts.degree, opts.gamma, opts.coef0));
    }
    let k = per_subset.len() as f64;
    let mean = per_subset.iter().sum::<f64>() / k;
    let std = (per_subset.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / k).sqrt();
    Ok(Kid { mean, std, per_subset })
}

/// Unbiased MMD² between all of `x` (`m × dim`) and all of `y` (`n × dim`) under the
/// polynomial kernel `(γ·xᵀy + c₀)^degree` (γ = `1/dim` when `None`); `m, n ≥ 2`.
///
/// ```text
/// MMD²_u = Σ_{i≠j} k(xᵢ,xⱼ)/(m(m−1)) + Σ_{i≠j} k(yᵢ,yⱼ)/(n(n−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ)/(mn)
/// ```
///
/// For `m = n` this is torch-fidelity's `polynomial_mmd` (`mmd_est="unbiased"`).
pub fn polynomial_mmd2_unbiased(x: &[f32], y: &[f32], dim: usize, degree: i32, gamma: Option<f64>, coef0: f64) -> Result<f64> {
    let m = rows_of(x, dim, "first feature set")?;
    let n = rows_of(y, dim, "second feature set")?;
    if m < 2 || n < 2 {
        return Err(FidError::TooFewSamples { what: "an unbiased MMD estimate", needed: 2, got: m.min(n) });
    }
    check_finite(x, dim, "first feature set")?;
    check_finite(y, dim, "second feature set")?;
    let to_mat = |f: &[f32], rows: usize| Mat::<f64>::from_fn(rows, dim, |i, j| f64::from(f[i * dim + j]));
    Ok(mmd2_unbiased(&to_mat(x, m), &to_mat(y, n), degree, gamma, coef0))
}

/// Number of rows of a flat row-major feature buffer, or a shape error.
fn rows_of(f: &[f32], dim: usize, what: &str) -> Result<usize> {
    if dim == 0 {
        return Err(FidError::invalid("dim", "the feature dimension must be positive"));
    }
    if !f.len().is_multiple_of(dim) {
        return Err(FidError::ShapeMismatch {
            what: what.to_owned(),
            expected: format!("[n, {dim}] (a multiple of {dim} values)"),
            actual: format!("{} values", f.len()),
        });
    }
    Ok(f.len() / dim)
}

fn check_finite(f: &[f32], dim: usize, what: &str) -> Result<()> {
    match f.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(k) => Err(FidError::NonFinite { what: what.to_owned(), row: k / dim, col: k % dim, value: f64::from(f[k]) }),
    }
}

fn gather(f: &[f32], dim: usize, idx: &[usize]) -> Mat<f64> {
    Mat::<f64>::from_fn(idx.len(), dim, |i, j| f64::from(f[idx[i] * dim + j]))
}

/// Unbiased MMD² of the rows of `x` and `y` (shapes already validated, ≥ 2 rows each).
fn mmd2_unbiased(x: &Mat<f64>, y: &Mat<f64>, degree: i32, gamma: Option<f64>, coef0: f64) -> f64 {
    let gamma = gamma.unwrap_or(1.0 / x.ncols() as f64);
    let k = |dot: f64| (dot * gamma + coef0).powi(degree);

    // Sum of k over the strict lower triangle of the Gram matrix of `a` (times 2 = off-diagonal sum).
    let offdiag_sum = |a: &Mat<f64>| -> f64 {
        let r = a.nrows();
        let mut g = Mat::<f64>::zeros(r, r);
        tri_matmul(
            g.as_mut(),
            BlockStructure::StrictTriangularLower,
            Accum::Replace,
            a.as_ref(),
            BlockStructure::Rectangular,
            a.transpose(),
            BlockStructure::Rectangular,
            1.0,
            par(),
        );
        let mut s = 0.0;
        for j in 0..r {
            for i in j + 1..r {
                s += k(g[(i, j)]);
            }
        }
        2.0 * s
    };

    let (m, n) = (x.nrows() as f64, y.nrows() as f64);
    let sxx = offdiag_sum(x);
    let syy = offdiag_sum(y);
    let mut gxy = Mat::<f64>::zeros(x.nrows(), y.nrows());
    matmul(gxy.as_mut(), Accum::Replace, x.as_ref(), y.transpose(), 1.0, par());
    let mut sxy = 0.0;
    for j in 0..y.nrows() {
        for i in 0..x.nrows() {
            sxy += k(gxy[(i, j)]);
        }
    }
    sxx / (m * (m - 1.0)) + syy / (n * (n - 1.0)) - 2.0 * sxy / (m * n)
}

/// MT19937 with numpy's legacy `RandomState` seeding and the legacy bounded-integer and
/// permutation algorithms, so that subsets match `RandomState(seed).choice(n, k, replace=False)`.
#[derive(Clone)]
pub(crate) struct Mt19937 {
    state: [u32; 624],
    pos: usize,
}

impl Mt19937 {
    const N: usize = 624;
    const M: usize = 397;

    /// `RandomState(seed)` / `mt19937_seed` (Knuth's initialisation, as `init_genrand`).
    pub(crate) fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..Self::N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Mt19937 { state, pos: Self::N }
    }

    fn regenerate(&mut self) {
        for i in 0..Self::N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % Self::N] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.state[i] = self.state[(i + Self::M) % Self::N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// `genrand_int32`.
    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.pos >= Self::N {
            self.regenerate();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// numpy's legacy `random_interval(max)`: uniform in `[0, max]` by masked rejection.
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        if max <= u64::from(u32::MAX) {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let v = self.next_u64() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.choice(n, k, replace=False)` = `permutation(n)[:k]`, where `permutation`
    /// shuffles `arange(n)` with the legacy Fisher–Yates loop `for i in n-1..1: swap(i, interval(i))`.
    pub(crate) fn choice_without_replacement(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut perm: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            perm.swap(i, j);
        }
        perm.truncate(k);
        perm
    }
}

#[cfg(test)]
mod tests {
    use super::Mt19937;

    #[test]
    fn mt19937_matches_reference_sequence() {
        // First outputs of init_genrand(5489) (the reference MT19937 default seed).
        let mut r = Mt19937::new(5489);
        let got: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(got, vec![3_499_211_612, 581_869_302, 3_890_346_734]);
    }

    #[test]
    fn choice_matches_numpy_random_state() {
        // numpy 2.4.6: r = np.random.RandomState(2020); r.choice(10, 5, replace=False) -> [2 4 9 1 5];
        // then r.choice(1000, 4, replace=False) -> [358 763 430 530].
        let mut r = Mt19937::new(2020);
        assert_eq!(r.choice_without_replacement(10, 5), vec![2, 4, 9, 1, 5]);
        assert_eq!(r.choice_without_replacement(1000, 4), vec![358, 763, 430, 530]);
    }

    #[test]
    fn choice_matches_numpy_fixture() {
        // Written by tests/fixtures/make_numpy_npz.py (numpy 2.4.6).
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/numpy_expected.json");
        let e: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let as_vec = |v: &serde_json::Value| -> Vec<usize> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect() };
        let mut r = Mt19937::new(123);
        for (i, want) in e["choice_seed_123_n50_k10_x3"].as_array().unwrap().iter().enumerate() {
            assert_eq!(r.choice_without_replacement(50, 10), as_vec(want), "draw {i}");
        }
        let mut r = Mt19937::new(7);
        assert_eq!(r.choice_without_replacement(70_000, 5), as_vec(&e["choice_seed_7_n70000_k5"]));
    }
}
