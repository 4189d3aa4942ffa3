//! GEMM and conv2d throughput of the CPU tensor engine at the shapes of
//! U-ViT-S/2 (CIFAR-10, batch 8: 8 × 257 tokens, width 512) and of the small
//! demo U-ViT (img 16, patch 2, width 128, batch 64: 64 × 65 tokens), in
//! GFLOP/s (criterion reports "elem/s" = FLOP/s; 1 MAC = 2 FLOP).
//! Run with `cargo xtask bench tensor`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sparsedm_tensor::{Device, Rng, Tensor, no_grad};

// The same allocator as the `sparsedm` binary.
#[global_allocator]
static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, &mut Rng::new(seed), &Device::Cpu).expect("randn")
}

/// (name, M tokens, K in, N out) of the Linear layers.
const LINEARS: &[(&str, usize, usize, usize)] = &[
    ("uvit_s2_qkv", 8 * 257, 512, 1536),
    ("uvit_s2_proj", 8 * 257, 512, 512),
    ("uvit_s2_fc1", 8 * 257, 512, 2048),
    ("uvit_s2_fc2", 8 * 257, 2048, 512),
    ("uvit_w128_qkv", 64 * 65, 128, 384),
    ("uvit_w128_fc1", 64 * 65, 128, 512),
    ("uvit_w128_fc2", 64 * 65, 512, 128),
];

fn gemm(c: &mut Criterion) {
    // Freed buffers stay committed and are reused without page faults.
    sparsedm_tensor::host_alloc::keep_freed_pages();
    let _g = no_grad();
    let mut group = c.benchmark_group("gemm_forward");
    group.sample_size(10);
    for &(name, m, k, n) in LINEARS {
        let (x, w) = (randn(&[m, k], 1), randn(&[n, k], 2));
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| x.matmul(&w.t().unwrap()).unwrap()));
    }
    group.finish();

    // Forward + backward of one Linear: three GEMMs.
    let mut group = c.benchmark_group("linear_fwd_bwd");
    group.sample_size(10);
    drop(_g);
    for &(name, m, k, n) in LINEARS.iter().filter(|l| l.0.ends_with("fc1")) {
        let (x, w) = (randn(&[m, k], 1).to_var(), randn(&[n, k], 2).to_var());
        group.throughput(Throughput::Elements((6 * m * k * n) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| x.matmul(&w.t().unwrap()).unwrap().sum_all().unwrap().backward().unwrap())
        });
    }
    group.finish();
}

/// (name, input NCHW, weight OIHW, stride, padding).
type ConvCase = (&'static str, [usize; 4], [usize; 4], usize, usize);
const CONVS: &[ConvCase] = &[
    ("uvit_s2_patch_embed", [8, 3, 32, 32], [512, 3, 2, 2], 2, 0),
    ("uvit_s2_final_conv3x3", [8, 3, 32, 32], [3, 3, 3, 3], 1, 1),
    ("uvit_w128_patch_embed", [64, 3, 16, 16], [128, 3, 2, 2], 2, 0),
    ("unet_128ch_3x3_32px", [8, 128, 32, 32], [128, 128, 3, 3], 1, 1),
];

fn conv(c: &mut Criterion) {
    // Freed buffers stay committed and are reused without page faults.
    sparsedm_tensor::host_alloc::keep_freed_pages();
    let mut group = c.benchmark_group("conv2d_forward");
    group.sample_size(10);
    let _g = no_grad();
    for &(name, xs, ws, s, p) in CONVS {
        let (x, w) = (randn(&xs, 3), randn(&ws, 4));
        let out = (xs[2] + 2 * p - ws[2]) / s + 1;
        let macs = xs[0] * ws[0] * out * out * ws[1] * ws[2] * ws[3];
        group.throughput(Throughput::Elements(2 * macs as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| x.conv2d(&w, None, (s, s), (p, p)).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, gemm, conv);
criterion_main!(benches);
