//! The simulator catches what a real GPU would (out-of-bounds extents, uses after free, 2:4 on a
//! dense weight, unsupported shapes) and says it is not a GPU. These tests open a private
//! simulated device, so they run whether or not `SPARSEDM_CUDA_SIM` is set; without a C++
//! compiler they are skipped with a message (or fail under `SPARSEDM_REQUIRE_EMU=1`, as in CI).

use std::sync::Arc;

use crate::abi::{SdmLayout, reduce, unary};
use crate::device::grid_for;
use crate::gemm::{F32Math, GemmShape, Operand, gemm};
use crate::launch::launch;
use crate::sparse24::{SparseLt, SparseWeight};
use crate::{Gpu, GpuDType, KernelsError, ops};

fn sim_gpu(test: &str) -> Option<Arc<Gpu>> {
    match Gpu::open_simulated() {
        Ok(g) => Some(Arc::new(g)),
        Err(e) if std::env::var("SPARSEDM_REQUIRE_EMU").is_ok_and(|v| v == "1") => panic!("{test}: {e}"),
        Err(e) => {
            eprintln!("skipped {test}: {e}");
            None
        }
    }
}

#[test]
fn a_simulated_device_says_so_and_refuses_device_timing() {
    let Some(g) = sim_gpu("says_so") else { return };
    assert!(g.is_simulated());
    assert!(g.name().contains("simulator") && g.name().contains("not a GPU"), "{}", g.name());
    let err = crate::timing::time_ms(&g, 0, 1, 1, || Ok(())).unwrap_err();
    assert!(matches!(err, KernelsError::Simulator { .. }), "{err}");
    assert!(g.stream().is_err() && g.context().is_err());
}

#[test]
fn elementwise_and_block_reductions_match_the_host() {
    let Some(g) = sim_gpu("kernels") else { return };
    let n = 3000;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.01).sin()).collect();
    let xb = g.upload(&x).unwrap();
    let mut yb = g.alloc(n * 4).unwrap();
    let xl = SdmLayout::contiguous(&[n]).unwrap();
    ops::elementwise::unary(&g, GpuDType::F32, unary::EXP, 0.0, 0.0, &xb, &xl, &mut yb).unwrap();
    let y: Vec<f32> = g.download(&yb, 0, n).unwrap();
    for (a, b) in y.iter().zip(&x) {
        assert!((a - b.exp()).abs() <= 1e-6 * b.exp(), "{a} vs {}", b.exp());
    }
    // Rows of 1000: one block per row, 256 fibers each, shuffles and __syncthreads.
    let (rows, cols) = (3usize, 1000usize);
    let mut sums = g.alloc(rows * 4).unwrap();
    ops::reduce::reduce(&g, GpuDType::F32, rows, cols, 1, reduce::SUM, &xb, &mut sums).unwrap();
    let got: Vec<f32> = g.download(&sums, 0, rows).unwrap();
    for r in 0..rows {
        let want: f64 = x[r * cols..(r + 1) * cols].iter().map(|&v| v as f64).sum();
        assert!((got[r] as f64 - want).abs() < 1e-3, "row {r}: {} vs {want}", got[r]);
    }
}

#[test]
fn out_of_bounds_extents_are_refused() {
    let Some(g) = sim_gpu("oob") else { return };
    let x = g.upload(&[1.0f32; 64]).unwrap();
    let mut short = g.alloc(63 * 4).unwrap();
    let l = SdmLayout::contiguous(&[64]).unwrap();
    // The launcher's own check.
    let e = ops::elementwise::unary(&g, GpuDType::F32, unary::NEG, 0.0, 0.0, &x, &l, &mut short).unwrap_err();
    assert!(matches!(e, KernelsError::Invalid { .. }), "{e}");
    // The simulator's check on a raw launch whose pointer lies past the end of its buffer.
    let (n, v, past) = (1i64, 0.0f32, x.device_ptr() + 64 * 4 + 8);
    let e = (|| launch!(&g, "copy", "fill_f32", grid_for(1, 32), n, v, past))().unwrap_err();
    assert!(matches!(e, KernelsError::Simulator { .. }), "{e}");
    assert!(e.to_string().contains("out of bounds") || e.to_string().contains("bytes"), "{e}");
    // cuBLAS-level range checks: C too short for m × n.
    let s = GemmShape { m: 8, n: 8, k: 8, batch: 1, input: GpuDType::F32, output: GpuDType::F32, f32_math: F32Math::Exact };
    let a = Operand { buf: &x, offset: 0, ld: 8, batch_stride: 0, trans: false };
    let e = gemm(&g, &s, 1.0, a, a, 0.0, &mut short, 0, 8, 0).unwrap_err();
    assert!(matches!(e, KernelsError::Invalid { .. }), "{e}");
}

#[test]
fn a_launch_on_a_freed_pooled_buffer_is_a_use_after_free() {
    let Some(g) = sim_gpu("uaf") else { return };
    let buf = g.upload(&[2.0f32; 256]).unwrap();
    let stale = buf.device_ptr();
    drop(buf);
    // The block is back in the allocator's cache, poisoned; a kernel given its address fails.
    let (n, v) = (256i64, 1.0f32);
    let e = (|| launch!(&g, "copy", "fill_f32", grid_for(256, 256), n, v, stale))().unwrap_err();
    assert!(e.to_string().contains("use after free"), "{e}");
    // The next buffer of that size class reuses the block: it reads as NaN until written.
    let again = g.alloc(256 * 4).unwrap();
    assert_eq!(again.device_ptr(), stale);
    let poisoned: Vec<f32> = g.download(&again, 0, 256).unwrap();
    assert!(poisoned.iter().all(|v| v.is_nan()));
}

#[test]
fn gemm_follows_cublas_rounding_of_half_inputs_and_tf32() {
    let Some(g) = sim_gpu("gemm") else { return };
    let (m, n, k) = (5usize, 3usize, 7usize);
    let a: Vec<f32> = (0..m * k).map(|i| 1.0 + (i as f32) * 1e-4).collect();
    let b: Vec<f32> = (0..k * n).map(|i| 1.0 - (i as f32) * 3e-4).collect();
    let run = |input: GpuDType, f32_math: F32Math| -> Vec<f32> {
        let up = |v: &[f32]| {
            let f = g.upload(v).unwrap();
            if input == GpuDType::F32 {
                return f;
            }
            let mut o = g.alloc(v.len() * input.size()).unwrap();
            ops::copy::cast(&g, v.len(), GpuDType::F32, &f, input, &mut o).unwrap();
            o
        };
        let (ab, bb) = (up(&a), up(&b));
        let mut c = g.alloc(m * n * 4).unwrap();
        let s = GemmShape { m, n, k, batch: 1, input, output: GpuDType::F32, f32_math };
        let oa = Operand { buf: &ab, offset: 0, ld: k, batch_stride: 0, trans: false };
        let ob = Operand { buf: &bb, offset: 0, ld: n, batch_stride: 0, trans: false };
        gemm(&g, &s, 1.0, oa, ob, 0.0, &mut c, 0, n, 0).unwrap();
        g.download(&c, 0, m * n).unwrap()
    };
    let reference = |round: &dyn Fn(f32) -> f32| -> Vec<f32> {
        (0..m * n)
            .map(|ij| (0..k).map(|p| round(a[(ij / n) * k + p]) as f64 * round(b[p * n + ij % n]) as f64).sum::<f64>() as f32)
            .collect()
    };
    let close = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(x, y)| (x - y).abs() <= 2e-6 * y.abs());
    assert!(close(&run(GpuDType::F32, F32Math::Exact), &reference(&|x| x)));
    let tf = run(GpuDType::F32, F32Math::Tf32);
    assert!(close(&tf, &reference(&super::blas::round_tf32)));
    assert!(!close(&tf, &reference(&|x| x)), "TF32 must round the inputs");
    let h = run(GpuDType::F16, F32Math::Exact);
    assert!(close(&h, &reference(&|x| half::f16::from_f32(x).to_f32())));
}

#[test]
fn two_four_matmul_refuses_dense_weights_and_unsupported_shapes() {
    let Some(g) = sim_gpu("sparse24") else { return };
    let lt = SparseLt::get(&g).unwrap();
    let (n, k) = (32usize, 64usize);
    let dense: Vec<f32> = (0..n * k).map(|i| 1.0 + i as f32 * 0.01).collect();
    let to_f16 = |v: &[f32]| {
        let f = g.upload(v).unwrap();
        let mut o = g.alloc(v.len() * 2).unwrap();
        ops::copy::cast(&g, v.len(), GpuDType::F32, &f, GpuDType::F16, &mut o).unwrap();
        o
    };
    let w = to_f16(&dense);
    let e = SparseWeight::new(&lt, &w, n, k, GpuDType::F16, None).unwrap_err();
    assert!(e.to_string().contains("not 2:4"), "{e}");
    let e = SparseWeight::new(&lt, &w, 24, k, GpuDType::F16, None).unwrap_err();
    assert!(matches!(e, KernelsError::Sparse { .. }), "{e}");
    let e = SparseWeight::new(&lt, &w, n, k, GpuDType::F32, None).unwrap_err();
    assert!(matches!(e, KernelsError::Sparse { .. }), "{e}");
    // A 2:4 weight (two zeros in every group of four) compresses and multiplies like dense.
    let sparse: Vec<f32> = dense.iter().enumerate().map(|(i, &v)| if i % 4 < 2 { 0.0 } else { v }).collect();
    let ws = to_f16(&sparse);
    let sw = SparseWeight::new(&lt, &ws, n, k, GpuDType::F16, None).unwrap();
    let m = 5;
    let x: Vec<f32> = (0..m * k).map(|i| ((i % 9) as f32 - 4.0) * 0.125).collect();
    let xb = to_f16(&x);
    let mut y = g.alloc(m * n * 2).unwrap();
    sw.matmul(&xb, m, &mut y).unwrap();
    let mut yf = g.alloc(m * n * 4).unwrap();
    ops::copy::cast(&g, m * n, GpuDType::F16, &y, GpuDType::F32, &mut yf).unwrap();
    let got: Vec<f32> = g.download(&yf, 0, m * n).unwrap();
    for j in 0..m {
        for i in 0..n {
            let want: f32 = (0..k).map(|p| half::f16::from_f32(sparse[i * k + p]).to_f32() * x[j * k + p]).sum();
            let v = got[j * n + i];
            assert!((v - want).abs() <= 2e-3 * (1.0 + want.abs()), "Y[{j}][{i}] {v} vs {want}");
        }
    }
}
