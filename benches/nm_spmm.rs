//! N:M SpMM (`sparsedm_tensor::nm_cpu`) against the dense GEMM the CPU
//! engine uses, at the Linear shapes of U-ViT-S/2 (batch 8 and 1: 8 × 257
//! and 257 tokens, width 512, MLP 2048) and of the demo U-ViT (batch 64 ×
//! 65 tokens, width 128, MLP 512), for 2:4, 1:4 and 1:8. Throughput is the
//! dense layer's FLOP (2·rows·in·out) for every line, so criterion's
//! "elem/s" ratios are the speed-ups over dense. Run with
//! `cargo bench --bench nm_spmm [-- filter]`; for one table of interleaved
//! medians see `cargo run --release -p sparsedm-tensor --example nm_spmm_table`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sparsedm_tensor::nm_cpu::{NmLinear, NmPath};
use std::time::Duration;

// The same allocator as the `sparsedm` binary.
#[global_allocator]
static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;

/// (name, rows, in, out).
const LINEARS: &[(&str, usize, usize, usize)] = &[
    ("uvit_s2_b8_qkv", 8 * 257, 512, 1536),
    ("uvit_s2_b8_proj", 8 * 257, 512, 512),
    ("uvit_s2_b8_fc1", 8 * 257, 512, 2048),
    ("uvit_s2_b8_fc2", 8 * 257, 2048, 512),
    ("uvit_s2_b1_qkv", 257, 512, 1536),
    ("uvit_s2_b1_fc2", 257, 2048, 512),
    ("demo_b64_qkv", 64 * 65, 128, 384),
    ("demo_b64_proj", 64 * 65, 128, 128),
    ("demo_b64_fc1", 64 * 65, 128, 512),
    ("demo_b64_fc2", 64 * 65, 512, 128),
];

/// Deterministic values in [-0.5, 0.5).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Keeps the `n` largest magnitudes of every `m` consecutive weights.
fn nm_mask(w: &mut [f32], n: usize, m: usize) {
    for g in w.chunks_mut(m) {
        let mut idx: Vec<usize> = (0..m).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &p in &idx[n..] {
            g[p] = 0.0;
        }
    }
}

fn nm_spmm(c: &mut Criterion) {
    // Freed buffers stay committed and are reused without page faults.
    sparsedm_tensor::host_alloc::keep_freed_pages();
    let mut group = c.benchmark_group("nm_spmm");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for &(name, rows, inp, out) in LINEARS {
        let x = values(rows * inp, 1);
        let bias = values(out, 3);
        let mut y = vec![0f32; rows * out];
        group.throughput(Throughput::Elements((2 * rows * inp * out) as u64));
        for (i, (n, m)) in [(2, 4), (1, 4), (1, 8)].into_iter().enumerate() {
            let mut w = values(out * inp, 2);
            nm_mask(&mut w, n, m);
            let layer = NmLinear::new(&w, out, inp, Some(&bias), n, m).expect("N:M weight");
            if i == 0 {
                // Dense cost does not depend on the mask: once per shape.
                group.bench_function(BenchmarkId::new(name, "dense"), |b| {
                    b.iter(|| layer.forward_with(NmPath::Dense, &x, rows, &mut y).unwrap())
                });
            }
            group.bench_function(BenchmarkId::new(name, format!("{n}:{m}")), |b| {
                b.iter(|| layer.forward_with(NmPath::Sparse, &x, rows, &mut y).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, nm_spmm);
criterion_main!(benches);
