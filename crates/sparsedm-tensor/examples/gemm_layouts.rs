//! Times the `gemm` crate on the products of a U-ViT step (the demo
//! model's at batch 64 and U-ViT-S/2's at batch 8, forward and weight
//! gradient) threaded two ways: handed to gemm's own rayon split, and cut
//! into one (or two) bands of rows per thread, each band a single-threaded
//! GEMM — the choice `backend/cpu/matmul.rs` makes. Not a test.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p sparsedm-tensor --example gemm_layouts [-- reps]`

use rayon::prelude::*;
use std::time::Instant;

/// `out[m, n] = lhs[m, k] · w[n, k]ᵀ`, lhs row-major or (`lhs_t`) a
/// transposed view of a row-major `[k, m]` (a weight gradient's `dYᵀ`).
fn bench(reps: usize, m: usize, k: usize, n: usize, lhs_t: bool) {
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32) * 0.1).collect();
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32) * 0.1).collect();
    let mut out = vec![0f32; m * n];
    let (lrs, lcs) = if lhs_t { (1isize, m as isize) } else { (k as isize, 1isize) };
    let run = |name: &str, f: &mut dyn FnMut()| {
        f();
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("  {name:26} {:8.3} ms {:6.1} GFLOP/s", best * 1e3, 2.0 * (m * n * k) as f64 / best / 1e9);
    };
    println!("[{m}, {k}] x [{k}, {n}]{}", if lhs_t { " (lhs transposed)" } else { "" });
    let (op, xp, wp) = (out.as_mut_ptr() as usize, x.as_ptr() as usize, w.as_ptr() as usize);
    // Rows r0..r0+rows of the product.
    let rows_of = move |r0: usize, rows: usize, par: gemm::Parallelism| {
        // SAFETY: rows r0..r0+rows < m of `out`, `x` (through its strides)
        // and all of `w` lie inside the vectors, which outlive every call;
        // concurrent calls write disjoint rows.
        unsafe {
            gemm::gemm(
                rows,
                n,
                k,
                (op as *mut f32).add(r0 * n),
                1,
                n as isize,
                false,
                (xp as *const f32).offset(r0 as isize * lrs),
                lcs,
                lrs,
                wp as *const f32,
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    };
    let threads = rayon::current_num_threads();
    run("gemm's rayon split", &mut || rows_of(0, m, gemm::Parallelism::Rayon(threads)));
    for per_thread in [1, 2] {
        let band = m.div_ceil(threads * per_thread).div_ceil(16) * 16;
        run(&format!("{per_thread} band(s) per thread"), &mut || {
            (0..m.div_ceil(band)).into_par_iter().for_each(|i| rows_of(i * band, band.min(m - i * band), gemm::Parallelism::None))
        });
    }
}

fn main() {
    let reps = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    println!("threads {}", rayon::current_num_threads());
    // Demo model, batch 64 (4160 tokens of width 128, MLP 512).
    bench(reps, 4160, 128, 384, false);
    bench(reps, 4160, 128, 512, false);
    bench(reps, 4160, 512, 128, false);
    bench(reps, 512, 4160, 128, true);
    // U-ViT-S/2, batch 8 (2056 tokens of width 512, MLP 2048).
    bench(reps, 2056, 512, 1536, false);
    bench(reps, 2056, 512, 2048, false);
    bench(reps, 2056, 2048, 512, false);
    bench(reps, 2048, 2056, 512, true);
}
