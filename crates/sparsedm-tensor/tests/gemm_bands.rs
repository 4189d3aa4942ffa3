//! The CPU products split into one band of rows per thread (`matmul.rs`):
//! `linear` with and without a bias, `matmul` through a transposed view,
//! and `nm_cpu::dense_linear`, compared with a float64 reference at sizes
//! where the bands are uneven (rows not a multiple of the 16-row rounding,
//! a short last band) and with 1, 2 and 3 threads.

use sparsedm_tensor::{Device, Rng, Tensor, nm_cpu};

/// `n` standard normal values from the crate's generator.
fn values(n: usize, seed: u64) -> Vec<f32> {
    Tensor::randn(&[n], &mut Rng::new(seed), &Device::Cpu).unwrap().to_vec_f32().unwrap()
}

/// `x [m, k] · w [n, k]ᵀ + bias` in float64.
fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p])).sum();
            y[i * n + j] = dot + bias.map_or(0.0, |b| f64::from(b[j]));
        }
    }
    y
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}: element {i} is {g}, want {w}");
    }
}

#[test]
fn banded_products_match_a_float64_reference() {
    let dev = Device::Cpu;
    // 333 rows: bands of 112/112/109 rows on 3 threads, 176/157 on 2.
    for &(m, k, n) in &[(333usize, 96usize, 80usize), (130, 200, 33), (257, 64, 300)] {
        let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
        let with_bias = reference(&x, &w, Some(&b), m, k, n);
        let without = reference(&x, &w, None, m, k, n);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let what = |s: &str| format!("{s} {m}x{k}x{n}, {threads} threads");
                let xt = Tensor::from_slice(&x, &[m, k], &dev).unwrap();
                let wt = Tensor::from_slice(&w, &[n, k], &dev).unwrap();
                let bt = Tensor::from_slice(&b, &[n], &dev).unwrap();
                let y = xt.linear(&wt, Some(&bt)).unwrap().to_vec_f32().unwrap();
                assert_close(&what("linear+bias"), &y, &with_bias);
                let y = xt.linear(&wt, None).unwrap().to_vec_f32().unwrap();
                assert_close(&what("linear"), &y, &without);
                // x · wᵀ through a transposed view of w (strided rhs) and of
                // a transposed copy of x (strided lhs).
                let y = xt.matmul(&wt.t().unwrap()).unwrap().to_vec_f32().unwrap();
                assert_close(&what("matmul"), &y, &without);
                let x_t = xt.t().unwrap().contiguous().unwrap();
                let y = x_t.t().unwrap().matmul(&wt.t().unwrap()).unwrap().to_vec_f32().unwrap();
                assert_close(&what("matmul of a transposed lhs"), &y, &without);
                let mut y = vec![f32::NAN; m * n];
                nm_cpu::dense_linear(&x, m, &w, n, k, Some(&b), &mut y).unwrap();
                assert_close(&what("dense_linear"), &y, &with_bias);
            });
        }
    }
}
