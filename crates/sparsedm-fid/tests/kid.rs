//! KID against a numpy reference and a direct computation.
//!
//! The reference in `tests/fixtures/numpy_expected.json` ("kid", "choice_*") was produced by
//! `tests/fixtures/make_numpy_npz.py` (numpy 2.4.6): torch-fidelity's `metric_kid.py` algorithm
//! (`polynomial_kernel`, unbiased `mmd2`, subsets drawn with
//! `np.random.RandomState(seed).choice(n, subset_size, replace=False)`, `np.mean` / `np.std`),
//! evaluated in float64 on integer-formula features that are exact in float32, which the test
//! regenerates with the same formula.

use std::path::PathBuf;

use sparsedm_fid::{FidError, KidOptions, kernel_inception_distance, polynomial_mmd2_unbiased};

fn expected() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/numpy_expected.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Same formula as `features()` in make_numpy_npz.py (exact in f32).
fn features(n: usize, d: usize, salt: i64, shift: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * d);
    for i in 0..n as i64 {
        for j in 0..d as i64 {
            let h = (i * 2_654_435_761 + j * 40_503 + salt * 97) % 1_000_003;
            out.push(((h % 2001 - 1000) as f64 / 512.0 + shift) as f32);
        }
    }
    out
}

/// Textbook unbiased MMD² with explicit loops, for cross-checking.
fn direct_mmd2(x: &[f32], y: &[f32], d: usize) -> f64 {
    let k = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(p, q)| f64::from(*p) * f64::from(*q)).sum();
        (dot / d as f64 + 1.0).powi(3)
    };
    let xs: Vec<&[f32]> = x.chunks(d).collect();
    let ys: Vec<&[f32]> = y.chunks(d).collect();
    let (m, n) = (xs.len() as f64, ys.len() as f64);
    let mut sxx = 0.0;
    for (i, a) in xs.iter().enumerate() {
        for (j, b) in xs.iter().enumerate() {
            if i != j {
                sxx += k(a, b);
            }
        }
    }
    let mut syy = 0.0;
    for (i, a) in ys.iter().enumerate() {
        for (j, b) in ys.iter().enumerate() {
            if i != j {
                syy += k(a, b);
            }
        }
    }
    let sxy: f64 = xs.iter().flat_map(|a| ys.iter().map(move |b| k(a, b))).sum();
    sxx / (m * (m - 1.0)) + syy / (n * (n - 1.0)) - 2.0 * sxy / (m * n)
}

#[test]
fn kid_matches_numpy_torch_fidelity_algorithm() {
    let e = expected();
    let r = &e["kid"];
    let dim = r["dim"].as_u64().unwrap() as usize;
    let f1 = features(r["n1"].as_u64().unwrap() as usize, dim, r["salt1"].as_i64().unwrap(), r["shift1"].as_f64().unwrap());
    let f2 = features(r["n2"].as_u64().unwrap() as usize, dim, r["salt2"].as_i64().unwrap(), r["shift2"].as_f64().unwrap());
    let opts = KidOptions {
        subsets: r["subsets"].as_u64().unwrap() as usize,
        subset_size: r["subset_size"].as_u64().unwrap() as usize,
        seed: r["seed"].as_u64().unwrap() as u32,
        ..KidOptions::default()
    };
    let kid = kernel_inception_distance(&f1, &f2, dim, &opts).unwrap();
    let want: Vec<f64> = r["per_subset"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(kid.per_subset.len(), want.len());
    for (i, (g, w)) in kid.per_subset.iter().zip(&want).enumerate() {
        // Same subsets (else errors would be O(1)); f64 summation order differs slightly.
        assert!((g - w).abs() <= 1e-10 * w.abs(), "subset {i}: {g} vs {w}");
    }
    let (mean, std) = (r["mean"].as_f64().unwrap(), r["std"].as_f64().unwrap());
    assert!((kid.mean - mean).abs() <= 1e-10 * mean.abs(), "{} vs {mean}", kid.mean);
    assert!((kid.std - std).abs() <= 1e-8 * std.abs(), "{} vs {std}", kid.std);
}

#[test]
fn mmd2_matches_direct_computation() {
    let d = 16;
    let x = features(30, d, 5, 0.0);
    let y = features(23, d, 9, 0.25); // different sizes: the general unbiased estimator
    let got = polynomial_mmd2_unbiased(&x, &y, d, 3, None, 1.0).unwrap();
    let want = direct_mmd2(&x, &y, d);
    assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{got} vs {want}");

    // A single full-size "subset" is the full estimate (subset selection only permutes rows).
    let y30 = features(30, d, 9, 0.25);
    let opts = KidOptions { subsets: 1, subset_size: 30, ..KidOptions::default() };
    let kid = kernel_inception_distance(&x, &y30, d, &opts).unwrap();
    let want = direct_mmd2(&x, &y30, d);
    assert!((kid.mean - want).abs() <= 1e-12 * want.abs().max(1.0), "{} vs {want}", kid.mean);
    assert_eq!(kid.std, 0.0);
}

#[test]
fn kid_properties() {
    let d = 16;
    // Two independent draws of the same distribution: KID ≈ 0 (unbiased; it can be negative).
    let a = features(400, d, 11, 0.0);
    let b = features(400, d, 12, 0.0);
    let opts = KidOptions { subsets: 20, subset_size: 100, ..KidOptions::default() };
    let same = kernel_inception_distance(&a, &b, d, &opts).unwrap();
    // Identical sets: also ≈ 0.
    let ident = kernel_inception_distance(&a, &a, d, &opts).unwrap();
    // Shifted set: clearly positive, larger for a larger shift.
    let s1 = kernel_inception_distance(&a, &features(400, d, 12, 0.5), d, &opts).unwrap();
    let s2 = kernel_inception_distance(&a, &features(400, d, 12, 1.0), d, &opts).unwrap();
    println!("same {same:?}\nident {:?}\nshift0.5 {:?}\nshift1 {:?}", ident.mean, s1.mean, s2.mean);
    assert!(same.mean.abs() < 3.0 * same.std.max(1e-3), "{same:?}");
    assert!(ident.mean.abs() < 3.0 * ident.std.max(1e-3), "{ident:?}");
    assert!(s1.mean > 10.0 * same.mean.abs() && s1.mean > 5.0 * s1.std, "{s1:?}");
    assert!(s2.mean > s1.mean, "{} <= {}", s2.mean, s1.mean);

    // Seeded: same seed → same result; another seed → other subsets.
    let again = kernel_inception_distance(&a, &b, d, &opts).unwrap();
    assert_eq!(again, same);
    let other = kernel_inception_distance(&a, &b, d, &KidOptions { seed: 7, ..opts.clone() }).unwrap();
    assert_ne!(other.per_subset, same.per_subset);
}

#[test]
fn kid_bad_inputs() {
    let d = 4;
    let a = features(10, d, 1, 0.0);
    let opts = KidOptions { subsets: 2, subset_size: 11, ..KidOptions::default() };
    assert!(matches!(kernel_inception_distance(&a, &a, d, &opts), Err(FidError::InvalidArgument { .. })));
    let opts = KidOptions { subsets: 2, subset_size: 1, ..KidOptions::default() };
    assert!(kernel_inception_distance(&a, &a, d, &opts).is_err());
    let opts = KidOptions { subsets: 0, subset_size: 5, ..KidOptions::default() };
    assert!(kernel_inception_distance(&a, &a, d, &opts).is_err());
    let opts = KidOptions { subsets: 1, subset_size: 5, ..KidOptions::default() };
    assert!(matches!(kernel_inception_distance(&a[..39], &a, d, &opts), Err(FidError::ShapeMismatch { .. })));
    assert!(kernel_inception_distance(&a, &a, 0, &opts).is_err());
    let mut bad = a.clone();
    bad[4 * 3 + 2] = f32::INFINITY;
    match kernel_inception_distance(&a, &bad, d, &opts) {
        Err(FidError::NonFinite { row: 3, col: 2, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(polynomial_mmd2_unbiased(&a[..4], &a, d, 3, None, 1.0), Err(FidError::TooFewSamples { .. })));
}
