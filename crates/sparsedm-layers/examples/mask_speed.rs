//! Quick timing of the mask kernels (not a benchmark suite):
//! `cargo run --release -p sparsedm-layers --example mask_speed [label filter]`.
//!
//! SR-STE recomputes every sparse layer's mask at every forward pass, so `mask_into` on a
//! U-ViT-sized weight must cost far less than the layer's GEMM.

use std::time::Instant;

use sparsedm_layers::{NmPattern, NonDivisible, TransposableMethod, WeightLayout};

fn weights(n: usize) -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn time(label: &str, iters: u32, mut f: impl FnMut()) {
    // Optional filter: `mask_speed Greedy` runs only the cases whose label contains "Greedy".
    if let Some(filter) = std::env::args().nth(1)
        && !label.contains(&filter)
    {
        return;
    }
    f(); // warm-up (rayon pool, page faults)
    // Best of `iters`: the machine may be shared, and the minimum is the least noisy estimate.
    let mut best = f64::INFINITY;
    for _ in 0..iters {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{label:<52} {:>9.3} ms", best * 1e3);
}

fn main() -> Result<(), sparsedm_layers::LayersError> {
    println!("rayon threads: {}", rayon::current_num_threads());
    let cases = [
        ("Linear [2048, 512]", WeightLayout::linear(2048, 512)?),
        ("Linear [512, 2048]", WeightLayout::linear(512, 2048)?),
        ("Conv2d [256, 256, 3, 3]", WeightLayout::conv2d(256, 256, 3, 3)?),
    ];
    for (name, layout) in cases {
        let w = weights(layout.numel());
        let mut mask = vec![0.0f32; layout.numel()];
        for p in ["2:4", "4:8", "1:32", "16:32", "31:32"] {
            let p: NmPattern = p.parse()?;
            time(&format!("mask_into {p} {name}"), 50, || {
                sparsedm_layers::mask_into(&w, &mut mask, layout, p, NonDivisible::default()).expect("valid");
            });
        }
        for method in [TransposableMethod::Exact, TransposableMethod::Greedy] {
            time(&format!("transposable {method:?} {name}"), 10, || {
                sparsedm_layers::transposable::transposable_mask_into(&w, &mut mask, layout, method).expect("valid");
            });
        }
    }
    Ok(())
}
