//! GEMM-level 2:4 benchmark (issue: 2:4 sparse acceleration): for every shape of
//! ../shared/GPU.md §6, `Y[M,N] = X[M,K]·W[N,K]ᵀ` with W 2:4 along K, our cuBLAS dense GEMM against
//! our cuSPARSELt path (plan made once, searched once for bf16 — see `sparse24::searches` — then reused), f16 and bf16, CUDA events, best
//! of 3 batches of 20 calls. Printed beside the ceiling measured there (cuSPARSELt C++ with a plan
//! made once vs cuBLAS dense), with the target "at least 95 % of the ceiling's speedup" marked.
//!
//! Run: `cargo bench --bench gpu_gemm` on a GPU machine, or `bench-gpu_gemm` from the GPU bundle.
//! Without a GPU it prints why and exits 0 (1 with `SPARSEDM_REQUIRE_GPU=1`). `SPARSEDM_BENCH_QUICK=1`
//! skips the three largest shapes. On the CUDA simulator (`SPARSEDM_CUDA_SIM=1`) nothing is timed:
//! every shape, scaled down, is checked for dense-vs-2:4 agreement instead (exit 1 on a mismatch).

use std::sync::Arc;

use sparsedm_kernels::gemm::{F32Math, GemmShape, Operand, gemm};
use sparsedm_kernels::ops;
use sparsedm_kernels::sparse24::{SparseLt, SparseWeight};
use sparsedm_kernels::testing::gpu_required;
use sparsedm_kernels::timing::time_ms;
use sparsedm_kernels::{DeviceBuffer, Gpu, GpuDType, Result};

/// (M, N, K, ceiling f16 speedup, ceiling bf16 speedup, label) from ../shared/GPU.md §6.
const SHAPES: &[(usize, usize, usize, f64, f64, &str)] = &[
    (32896, 1536, 512, 1.29, 1.06, "U-ViT-S qkv, batch 128"),
    (32896, 512, 512, 1.21, 0.98, "U-ViT-S proj"),
    (32896, 2048, 512, 1.30, 1.09, "U-ViT-S fc1"),
    (32896, 512, 2048, 1.43, 1.30, "U-ViT-S fc2"),
    (32768, 4096, 1024, 1.46, 1.31, ""),
    (32768, 1024, 4096, 1.55, 1.57, ""),
    (16384, 4096, 4096, 1.39, 1.59, ""),
    (65536, 8192, 1024, 1.32, 1.36, ""),
    (8192, 8192, 8192, 1.57, 1.62, ""),
    (65600, 32768, 8192, 1.54, 1.58, "paper Table 3 fc1, r=4"),
];

fn operands(g: &Gpu, m: usize, n: usize, k: usize, dt: GpuDType) -> Result<(DeviceBuffer, DeviceBuffer)> {
    let mut wf = g.alloc(n * k * 4)?;
    ops::rng::normal(g, n * k, 1, 0, &mut wf)?;
    let mut mask = g.alloc(n * k * 4)?;
    ops::sparse::nm_mask(g, n, k, 1, 2, 4, &wf, &mut mask)?;
    let mut w = g.alloc(n * k * dt.size())?;
    ops::sparse::masked_weight(g, dt, n * k, &wf, &mask, &mut w)?;
    drop((wf, mask));
    let mut xf = g.alloc(m * k * 4)?;
    ops::rng::normal(g, m * k, 2, 0, &mut xf)?;
    let mut x = g.alloc(m * k * dt.size())?;
    ops::copy::cast(g, m * k, GpuDType::F32, &xf, dt, &mut x)?;
    Ok((x, w))
}

fn run(g: &Arc<Gpu>) -> Result<bool> {
    let lt = SparseLt::get(g)?;
    let quick = std::env::var("SPARSEDM_BENCH_QUICK").is_ok_and(|v| v == "1");
    println!("GPU: {} (compute capability {}.{})", g.name(), g.compute_capability().0, g.compute_capability().1);
    println!("| M×N×K | dtype | dense ms | 2:4 ms | speedup | ceiling | ≥95% of ceiling | |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut all_met = true;
    for &(m, n, k, c16, cbf, label) in SHAPES {
        if quick && m * n * k > 8192 * 8192 * 8192 {
            continue;
        }
        for (dt, ceiling) in [(GpuDType::F16, c16), (GpuDType::BF16, cbf)] {
            let (x, w) = operands(g, m, n, k, dt)?;
            let mut y = g.alloc(m * n * dt.size())?;
            let s = GemmShape { m, n, k, batch: 1, input: dt, output: dt, f32_math: F32Math::Exact };
            let iters = if m * n * k > 1 << 36 { 5 } else { 20 };
            let dense_ms = time_ms(g, 3, 3, iters, || {
                gemm(
                    g,
                    &s,
                    1.0,
                    Operand { buf: &x, offset: 0, ld: k, batch_stride: 0, trans: false },
                    Operand { buf: &w, offset: 0, ld: k, batch_stride: 0, trans: true },
                    0.0,
                    &mut y,
                    0,
                    n,
                    0,
                )
            })?;
            let sw = SparseWeight::new(&lt, &w, n, k, dt, None)?;
            let sparse_ms = time_ms(g, 3, 3, iters, || sw.matmul(&x, m, &mut y))?;
            let speedup = dense_ms / sparse_ms;
            let met = speedup >= 0.95 * ceiling;
            all_met &= met;
            println!(
                "| {m}×{n}×{k} | {dt} | {dense_ms:.3} | {sparse_ms:.3} | {speedup:.2} | {ceiling:.2} | {} | {label} |",
                if met { "met" } else { "NOT met" }
            );
        }
        g.empty_cache()?;
    }
    Ok(all_met)
}

/// The simulator's check: the same code paths on each shape scaled down (M/256, N/8, K/8, kept
/// multiples of 16), 2:4 output against the dense GEMM's on the same masked weight.
fn check_on_simulator(g: &Arc<Gpu>) -> Result<bool> {
    let lt = SparseLt::get(g)?;
    println!("{}: correctness only, no timings", g.name());
    let mut ok = true;
    for &(m, n, k, _, _, label) in SHAPES {
        let (m, n, k) = ((m / 256).max(16), (n / 8).div_ceil(16) * 16, (k / 8).div_ceil(16) * 16);
        for dt in [GpuDType::F16, GpuDType::BF16] {
            let (x, w) = operands(g, m, n, k, dt)?;
            let s = GemmShape { m, n, k, batch: 1, input: dt, output: GpuDType::F32, f32_math: F32Math::Exact };
            let mut yd = g.alloc(m * n * 4)?;
            let (xo, wo) = (
                Operand { buf: &x, offset: 0, ld: k, batch_stride: 0, trans: false },
                Operand { buf: &w, offset: 0, ld: k, batch_stride: 0, trans: true },
            );
            gemm(g, &s, 1.0, xo, wo, 0.0, &mut yd, 0, n, 0)?;
            let sw = SparseWeight::new(&lt, &w, n, k, dt, None)?;
            let mut ys = g.alloc(m * n * dt.size())?;
            sw.matmul(&x, m, &mut ys)?;
            let mut ysf = g.alloc(m * n * 4)?;
            ops::copy::cast(g, m * n, dt, &ys, GpuDType::F32, &mut ysf)?;
            let (d, sp): (Vec<f32>, Vec<f32>) = (g.download(&yd, 0, m * n)?, g.download(&ysf, 0, m * n)?);
            let worst = d.iter().zip(&sp).map(|(a, b)| (a - b).abs() / (1.0 + a.abs())).fold(0.0f32, f32::max);
            let tol = if dt == GpuDType::BF16 { 1e-2 } else { 2e-3 };
            ok &= worst <= tol;
            println!("| {m}×{n}×{k} | {dt} | worst relative difference {worst:.2e} (≤ {tol}) | {label} |");
        }
    }
    Ok(ok)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is parsed.
    let gpu = match Gpu::get(0) {
        Ok(g) => g,
        Err(e) if gpu_required() => {
            eprintln!("gpu_gemm: SPARSEDM_REQUIRE_GPU=1 but no GPU is usable: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("gpu_gemm: skipped, no usable GPU ({e})");
            return;
        }
    };
    if gpu.is_simulated() {
        match check_on_simulator(&gpu) {
            Ok(true) => println!("2:4 and dense GEMMs agree on every shape (simulated)"),
            Ok(false) => {
                eprintln!("gpu_gemm: 2:4 and dense GEMMs disagree on the simulator (see the table)");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("gpu_gemm: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    match run(&gpu) {
        Ok(true) => println!("all shapes reach 95 % of the ceiling's speedup"),
        Ok(false) => println!("some shapes miss 95 % of the ceiling's speedup (see the table)"),
        Err(e) => {
            eprintln!("gpu_gemm: {e}");
            std::process::exit(1);
        }
    }
}
