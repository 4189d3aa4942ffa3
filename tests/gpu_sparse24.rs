//! cuSPARSELt 2:4 GEMM (`sparsedm_kernels::sparse24`) against cuBLAS dense GEMM on the same
//! masked weights, on a real GPU (skipped without one; `SPARSEDM_REQUIRE_GPU=1` makes that a
//! failure). Covers f16 and bf16, the bias epilogue, row counts that are not multiples of 8, the
//! plan cache, and the refusals (non-2:4 weight, unsupported shape).

use sparsedm_kernels::gemm::{F32Math, GemmShape, Operand, gemm};
use sparsedm_kernels::ops;
use sparsedm_kernels::sparse24::{SparseLt, SparseWeight, shape_supported};
use sparsedm_kernels::testing::gpu_or_skip;
use sparsedm_kernels::{DeviceBuffer, Gpu, GpuDType, KernelsError};

/// A random `[n, k]` weight made 2:4 by the GPU mask kernel, stored as `dt`.
fn sparse_weight(g: &Gpu, n: usize, k: usize, dt: GpuDType, seed: u64) -> DeviceBuffer {
    let mut w = g.alloc(n * k * 4).unwrap();
    ops::rng::normal(g, n * k, seed, 0, &mut w).unwrap();
    let mut mask = g.alloc(n * k * 4).unwrap();
    ops::sparse::nm_mask(g, n, k, 1, 2, 4, &w, &mut mask).unwrap();
    let mut out = g.alloc(n * k * dt.size()).unwrap();
    ops::sparse::masked_weight(g, dt, n * k, &w, &mask, &mut out).unwrap();
    out
}

fn random(g: &Gpu, len: usize, dt: GpuDType, seed: u64) -> DeviceBuffer {
    let mut f = g.alloc(len * 4).unwrap();
    ops::rng::normal(g, len, seed, 0, &mut f).unwrap();
    let mut out = g.alloc(len * dt.size()).unwrap();
    ops::copy::cast(g, len, GpuDType::F32, &f, dt, &mut out).unwrap();
    out
}

fn to_f32(g: &Gpu, b: &DeviceBuffer, len: usize, dt: GpuDType) -> Vec<f32> {
    let mut f = g.alloc(len * 4).unwrap();
    ops::copy::cast(g, len, dt, b, GpuDType::F32, &mut f).unwrap();
    g.download(&f, 0, len).unwrap()
}

/// Dense reference: `Y = X·Wᵀ (+ bias)` through cuBLAS with f32 output.
fn dense(g: &Gpu, x: &DeviceBuffer, w: &DeviceBuffer, bias: Option<&[f32]>, m: usize, n: usize, k: usize, dt: GpuDType) -> Vec<f32> {
    let mut y = g.alloc(m * n * 4).unwrap();
    let s = GemmShape { m, n, k, batch: 1, input: dt, output: GpuDType::F32, f32_math: F32Math::Exact };
    gemm(
        g,
        &s,
        1.0,
        Operand { buf: x, offset: 0, ld: k, batch_stride: 0, trans: false },
        Operand { buf: w, offset: 0, ld: k, batch_stride: 0, trans: true },
        0.0,
        &mut y,
        0,
        n,
        0,
    )
    .unwrap();
    let mut v: Vec<f32> = g.download(&y, 0, m * n).unwrap();
    if let Some(b) = bias {
        for row in v.chunks_mut(n) {
            row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    }
    v
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: worst relative error {worst:.3e} > {tol}");
}

#[test]
fn gpu_sparse24_matches_dense_gemm_on_the_same_masked_weights() {
    let Some(g) = gpu_or_skip("gpu_sparse24_matches_dense") else { return };
    let lt = SparseLt::get(&g).expect("cuSPARSELt must load on the GPU machine (run.sh sets LD_LIBRARY_PATH)");
    for dt in [GpuDType::F16, GpuDType::BF16] {
        for &(m, n, k, with_bias) in &[(256usize, 128usize, 256usize, false), (1000, 384, 512, true), (77, 64, 1024, true)] {
            let w = sparse_weight(&g, n, k, dt, 1);
            let x = random(&g, m * k, dt, 2);
            let bias_f32: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let bias_buf = with_bias.then(|| {
                let b = g.upload(&bias_f32).unwrap();
                let mut h = g.alloc(n * dt.size()).unwrap();
                ops::copy::cast(&g, n, GpuDType::F32, &b, dt, &mut h).unwrap();
                h
            });
            let bias_rounded = with_bias.then(|| to_f32(&g, bias_buf.as_ref().unwrap(), n, dt));
            let sw = SparseWeight::new(&lt, &w, n, k, dt, bias_buf.as_ref()).unwrap();
            let mut y = g.alloc(m * n * dt.size()).unwrap();
            sw.matmul(&x, m, &mut y).unwrap();
            let got = to_f32(&g, &y, m * n, dt);
            let want = dense(&g, &x, &w, bias_rounded.as_deref(), m, n, k, dt);
            // Both accumulate in f32; the sparse result is rounded to dt once more.
            let tol = if dt == GpuDType::BF16 { 1e-2 } else { 2e-3 };
            assert_close(&format!("{dt} m={m} n={n} k={k} bias={with_bias}"), &got, &want, tol);
            // Second call reuses the plan and gives the same bits.
            let mut y2 = g.alloc(m * n * dt.size()).unwrap();
            sw.matmul(&x, m, &mut y2).unwrap();
            assert_eq!(to_f32(&g, &y2, m * n, dt), got, "plan reuse is deterministic");
            assert!(sw.compressed_bytes() < n * k * dt.size(), "compressed weight is smaller than dense");
        }
    }
}

#[test]
fn gpu_sparse24_refuses_dense_weights_and_odd_shapes() {
    let Some(g) = gpu_or_skip("gpu_sparse24_refusals") else { return };
    let lt = SparseLt::get(&g).expect("cuSPARSELt must load on the GPU machine");
    let (n, k) = (64, 128);
    let dense_w = random(&g, n * k, GpuDType::F16, 3);
    let err = SparseWeight::new(&lt, &dense_w, n, k, GpuDType::F16, None).unwrap_err();
    assert!(err.to_string().contains("not 2:4"), "{err}");
    assert!(!shape_supported(60, 128) && !shape_supported(64, 100) && shape_supported(64, 128));
    let w = sparse_weight(&g, 64, 96, GpuDType::F16, 4);
    assert!(matches!(SparseWeight::new(&lt, &w, 60, 96, GpuDType::F16, None), Err(KernelsError::Sparse { .. })));
    let w32 = g.alloc(n * k * 4).unwrap();
    assert!(matches!(SparseWeight::new(&lt, &w32, n, k, GpuDType::F32, None), Err(KernelsError::Sparse { .. })));
}
