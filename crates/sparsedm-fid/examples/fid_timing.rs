//! Rough timings of the statistics half at Inception size (d = 2048):
//! `cargo run --release -p sparsedm-fid --example fid_timing [n_samples]`.
//!
//! Features are synthetic (correlated pseudo-random rows), so only the timings mean anything.

use std::time::Instant;

use sparsedm_fid::{KidOptions, StatsAccumulator, frechet_distance, kernel_inception_distance};

fn main() -> Result<(), sparsedm_fid::FidError> {
    let d = 2048;
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let batch = 250;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut make = |shift: f32| -> Vec<f32> {
        let mut f = vec![0f32; n * d];
        for row in f.chunks_mut(d) {
            let common = next();
            for (j, v) in row.iter_mut().enumerate() {
                *v = (next() + common * (j % 7) as f32 * 0.3 + shift).max(0.0);
            }
        }
        f
    };
    let fa = make(0.0);
    let fb = make(0.05);

    let t = Instant::now();
    let mut acc = StatsAccumulator::new(d)?;
    for rows in fa.chunks(batch * d) {
        acc.add_batch(rows)?;
    }
    let a = acc.finish()?;
    let dt = t.elapsed();
    println!(
        "accumulate {n} x {d} in batches of {batch}: {:.3} s ({:.1} ms/batch)",
        dt.as_secs_f64(),
        dt.as_secs_f64() * 1e3 / (n / batch) as f64
    );
    let mut acc = StatsAccumulator::new(d)?;
    for rows in fb.chunks(batch * d) {
        acc.add_batch(rows)?;
    }
    let b = acc.finish()?;

    for _ in 0..3 {
        let t = Instant::now();
        let fd = frechet_distance(&a, &b)?;
        println!("frechet_distance d={d}: {fd:.6} in {:.3} s", t.elapsed().as_secs_f64());
    }

    let opts = KidOptions { subsets: 10, ..KidOptions::default() };
    let t = Instant::now();
    let kid = kernel_inception_distance(&fa, &fb, d, &opts)?;
    println!(
        "KID ({} subsets of {}): {:.6} ± {:.6} in {:.3} s",
        opts.subsets,
        opts.subset_size,
        kid.mean,
        kid.std,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
