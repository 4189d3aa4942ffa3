//! Fréchet distance and statistics against golden data.
//!
//! Fixtures `tests/fixtures/frechet.safetensors` and `frechet.json` are copied unchanged from
//! the project's shared reference fixtures (`/work/shared/fixtures/`, see its README, `frechet.*`):
//! produced by running pytorch-fid's `calculate_frechet_distance` (matrix square root by
//! `scipy.linalg.sqrtm`) in float64, with `sigma = np.cov(features, rowvar=False)` (unbiased)
//! and `mu = features.mean(0)`. Cases: `small` (64-d, 500/400 samples), `singular` (64-d from
//! 40/50 samples: both covariances rank-deficient), `wide` (256-d, 1200/1000 samples, no raw
//! features stored). Tolerances: 1e-6 relative for regular cases, 1e-4 for the singular one
//! (scipy's `sqrtm` itself is inaccurate there).

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use sparsedm_fid::{FeatureStats, FidError, StatsAccumulator, frechet_distance, frechet_terms};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Fixture {
    bytes: Vec<u8>,
    json: serde_json::Value,
}

impl Fixture {
    fn load() -> Self {
        let bytes = std::fs::read(fixture("frechet.safetensors")).expect("read frechet.safetensors");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture("frechet.json")).expect("read frechet.json")).expect("parse frechet.json");
        Fixture { bytes, json }
    }

    /// (shape, f64 values) of tensor `name`.
    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let st = SafeTensors::deserialize(&self.bytes).expect("parse safetensors");
        let t = st.tensor(name).unwrap_or_else(|e| panic!("tensor {name}: {e}"));
        assert_eq!(t.dtype(), Dtype::F64, "{name} dtype");
        let data = t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        (t.shape().to_vec(), data)
    }

    fn stats(&self, case: &str, side: &str) -> FeatureStats {
        let (_, mu) = self.tensor(&format!("{case}.mu_{side}"));
        let (_, sigma) = self.tensor(&format!("{case}.sigma_{side}"));
        FeatureStats::new(mu, sigma, 0).expect("fixture stats shape")
    }

    fn expected_fd(&self, case: &str) -> f64 {
        self.json["cases"][case]["fd"].as_f64().expect("fd in frechet.json")
    }
}

fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

#[test]
fn frechet_distance_matches_pytorch_fid() {
    let fx = Fixture::load();
    for (case, tol) in [("small", 1e-6), ("wide", 1e-6), ("singular", 1e-4)] {
        let a = fx.stats(case, "a");
        let b = fx.stats(case, "b");
        let want = fx.expected_fd(case);
        let got = frechet_distance(&a, &b).unwrap();
        let err = rel_err(got, want);
        println!("{case}: got {got:.12}, want {want:.12}, rel err {err:.2e}");
        assert!(err < tol, "{case}: FD {got} vs reference {want} (rel err {err:e} > {tol:e})");
        // Symmetric in its arguments.
        let swapped = frechet_distance(&b, &a).unwrap();
        assert!(rel_err(swapped, want) < tol, "{case}: swapped FD {swapped} vs {want}");
    }
}

/// Independent ground truth for the cases with raw features: with centred feature matrices
/// `A` (n_a × d) and `B`, `tr sqrt(Σ_a Σ_b) = ‖A Bᵀ‖_* / sqrt((n_a − 1)(n_b − 1))` (nuclear
/// norm = sum of singular values), which needs no square root of a singular matrix. In the
/// singular case this is more accurate than the scipy reference; we agree with it to ~1e-13.
#[test]
fn frechet_matches_nuclear_norm_ground_truth() {
    let fx = Fixture::load();
    for case in ["small", "singular"] {
        let centred = |side: &str| {
            let (shape, f) = fx.tensor(&format!("{case}.features_{side}"));
            let (n, d) = (shape[0], shape[1]);
            let mean: Vec<f64> = (0..d).map(|j| (0..n).map(|i| f[i * d + j]).sum::<f64>() / n as f64).collect();
            (n, faer::Mat::<f64>::from_fn(n, d, |i, j| f[i * d + j] - mean[j]))
        };
        let (na, a) = centred("a");
        let (nb, b) = centred("b");
        let prod = &a * b.transpose();
        let nuclear: f64 = prod.singular_values().unwrap().iter().sum();
        let trace_sqrt = nuclear / (((na - 1) * (nb - 1)) as f64).sqrt();
        let t = frechet_terms(&fx.stats(case, "a"), &fx.stats(case, "b")).unwrap();
        let err = rel_err(t.trace_sqrt, trace_sqrt);
        println!("{case}: tr sqrt = {:.15} (ground truth {trace_sqrt:.15}), rel err {err:.1e}", t.trace_sqrt);
        assert!(err < 1e-11, "{case}: tr sqrt {} vs {trace_sqrt}", t.trace_sqrt);
    }
}

#[test]
fn frechet_of_identical_stats_is_zero_and_terms_add_up() {
    let fx = Fixture::load();
    for case in ["small", "singular", "wide"] {
        let a = fx.stats(case, "a");
        let t = frechet_terms(&a, &a).unwrap();
        // tr sqrt(Σ Σ) = tr Σ; the distance is 0 up to round-off relative to the traces.
        assert!(t.value.abs() < 1e-9 * t.trace_a, "{case}: FD(a, a) = {}", t.value);
        assert!(rel_err(t.trace_sqrt, t.trace_a) < 1e-10, "{case}: {} vs {}", t.trace_sqrt, t.trace_a);
        assert_eq!(t.mean_term, 0.0);
    }
    let b = fx.stats("small", "b");
    let a = fx.stats("small", "a");
    let t = frechet_terms(&a, &b).unwrap();
    let sum = t.mean_term + t.trace_a + t.trace_b - 2.0 * t.trace_sqrt;
    assert_eq!(sum, t.value);
}

/// Statistics from the raw fixture features, through the streaming accumulator, must equal the
/// fixture's `np.mean` / `np.cov(rowvar=False)` whatever the batching.
#[test]
fn accumulator_matches_numpy_mean_and_cov() {
    let fx = Fixture::load();
    for case in ["small", "singular"] {
        for side in ["a", "b"] {
            let (shape, feats) = fx.tensor(&format!("{case}.features_{side}"));
            let (n, d) = (shape[0], shape[1]);
            let want = fx.stats(case, side);
            let sigma_scale = want.sigma.iter().fold(0f64, |m, v| m.max(v.abs()));
            let mu_scale = want.mu.iter().fold(0f64, |m, v| m.max(v.abs()));
            for batch in [1usize, 7, 64, n] {
                let mut acc = StatsAccumulator::new(d).unwrap();
                for rows in feats.chunks(batch * d) {
                    acc.add_batch_f64(rows).unwrap();
                }
                let got = acc.finish().unwrap();
                assert_eq!(got.n, n);
                let mu_err = max_abs_diff(&got.mu, &want.mu) / mu_scale;
                let sigma_err = max_abs_diff(&got.sigma, &want.sigma) / sigma_scale;
                assert!(mu_err < 1e-12, "{case}.{side} batch {batch}: mu rel err {mu_err:e}");
                assert!(sigma_err < 1e-12, "{case}.{side} batch {batch}: sigma rel err {sigma_err:e}");
            }
        }
    }
}

/// A large common offset must not cost precision (the naive Σxxᵀ − nμμᵀ formula would lose
/// about 16 of the ~16 significant digits here).
#[test]
fn accumulator_is_stable_under_large_mean() {
    let fx = Fixture::load();
    let (shape, feats) = fx.tensor("small.features_a");
    let d = shape[1];
    let want = fx.stats("small", "a");
    let offset = 1.0e6;
    let shifted: Vec<f64> = feats.iter().map(|v| v + offset).collect();
    let mut acc = StatsAccumulator::new(d).unwrap();
    for rows in shifted.chunks(50 * d) {
        acc.add_batch_f64(rows).unwrap();
    }
    let got = acc.finish().unwrap();
    let sigma_scale = want.sigma.iter().fold(0f64, |m, v| m.max(v.abs()));
    let err = max_abs_diff(&got.sigma, &want.sigma) / sigma_scale;
    // The input itself is only exact to ~1e6 · 2^-53 ≈ 1e-10 absolute.
    assert!(err < 1e-8, "sigma rel err {err:e} with offset {offset}");
    let mu_back: Vec<f64> = got.mu.iter().map(|m| m - offset).collect();
    assert!(max_abs_diff(&mu_back, &want.mu) < 1e-8);
}

/// f32 input (what the Inception network produces) goes through the same path.
#[test]
fn accumulator_f32_and_merge() {
    let fx = Fixture::load();
    let (shape, feats) = fx.tensor("small.features_b");
    let d = shape[1];
    let feats32: Vec<f32> = feats.iter().map(|&v| v as f32).collect();
    let want = fx.stats("small", "b");
    let sigma_scale = want.sigma.iter().fold(0f64, |m, v| m.max(v.abs()));

    let whole = FeatureStats::from_features(&feats32, d).unwrap();
    // f32 rounding of the inputs (~6e-8 relative) bounds the agreement.
    assert!(max_abs_diff(&whole.sigma, &want.sigma) / sigma_scale < 1e-6);

    // Two accumulators merged == one accumulator over everything.
    let (first, second) = feats32.split_at(123 * d);
    let mut a = StatsAccumulator::new(d).unwrap();
    a.add_batch(first).unwrap();
    let mut b = StatsAccumulator::new(d).unwrap();
    b.add_batch(second).unwrap();
    a.merge(&b).unwrap();
    let merged = a.finish().unwrap();
    assert_eq!(merged.n, whole.n);
    assert!(max_abs_diff(&merged.sigma, &whole.sigma) / sigma_scale < 1e-13);
    assert!(max_abs_diff(&merged.mu, &whole.mu) < 1e-13);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    // Dimension 0.
    assert!(matches!(StatsAccumulator::new(0), Err(FidError::InvalidArgument { .. })));
    // Ragged batch.
    let mut acc = StatsAccumulator::new(3).unwrap();
    let err = acc.add_batch(&[1.0, 2.0, 3.0, 4.0]).unwrap_err();
    assert!(matches!(err, FidError::ShapeMismatch { .. }), "{err}");
    // Non-finite value: names the global row and the column, leaves the accumulator unchanged.
    acc.add_batch(&[1.0, 2.0, 3.0]).unwrap();
    let err = acc.add_batch(&[0.0, 0.0, 0.0, 1.0, f32::NAN, 0.0]).unwrap_err();
    match &err {
        FidError::NonFinite { row, col, .. } => assert_eq!((*row, *col), (2, 1), "{err}"),
        other => panic!("unexpected {other}"),
    }
    assert_eq!(acc.count(), 1);
    // One sample: no unbiased covariance.
    assert!(matches!(acc.finish(), Err(FidError::TooFewSamples { got: 1, .. })));
    // Merge of different dimensions.
    let other = StatsAccumulator::new(4).unwrap();
    assert!(matches!(acc.merge(&other), Err(FidError::DimensionMismatch { .. })));

    // Frechet: dimension mismatch, inconsistent sigma, NaN.
    let a = FeatureStats::new(vec![0.0; 2], vec![1.0, 0.0, 0.0, 1.0], 10).unwrap();
    let b = FeatureStats::new(vec![0.0; 3], vec![0.0; 9], 10).unwrap();
    assert!(matches!(frechet_distance(&a, &b), Err(FidError::DimensionMismatch { a: 2, b: 3, .. })));
    assert!(matches!(FeatureStats::new(vec![0.0; 2], vec![0.0; 3], 1), Err(FidError::ShapeMismatch { .. })));
    let bad = FeatureStats { mu: vec![0.0; 2], sigma: vec![1.0; 5], n: 0 };
    assert!(matches!(frechet_distance(&a, &bad), Err(FidError::ShapeMismatch { .. })));
    let nan = FeatureStats { mu: vec![0.0; 2], sigma: vec![1.0, 0.0, f64::NAN, 1.0], n: 0 };
    let err = frechet_distance(&a, &nan).unwrap_err();
    match &err {
        FidError::NonFinite { row, col, what, .. } => {
            assert_eq!((*row, *col), (1, 0));
            assert!(what.contains("sigma of the second"), "{err}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn zero_covariance_is_handled() {
    // Σ₁ = 0 (all samples identical): FD = ‖Δμ‖² + tr Σ₂.
    let a = FeatureStats::new(vec![1.0, 2.0], vec![0.0; 4], 5).unwrap();
    let b = FeatureStats::new(vec![0.0, 0.0], vec![2.0, 0.5, 0.5, 1.0], 5).unwrap();
    let fd = frechet_distance(&a, &b).unwrap();
    assert!((fd - (5.0 + 3.0)).abs() < 1e-12, "{fd}");
    // Commuting diagonal case: tr sqrt(Σ₁Σ₂) = Σ sqrt(a_i b_i).
    let a = FeatureStats::new(vec![0.0; 3], diag(&[1.0, 4.0, 0.0]), 5).unwrap();
    let b = FeatureStats::new(vec![0.0; 3], diag(&[9.0, 1.0, 7.0]), 5).unwrap();
    let fd = frechet_distance(&a, &b).unwrap();
    let want = (1.0 + 4.0) + (9.0 + 1.0 + 7.0) - 2.0 * (3.0 + 2.0);
    assert!((fd - want).abs() < 1e-12, "{fd} vs {want}");
}

fn diag(v: &[f64]) -> Vec<f64> {
    let d = v.len();
    let mut m = vec![0.0; d * d];
    for (i, x) in v.iter().enumerate() {
        m[i * d + i] = *x;
    }
    m
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}
