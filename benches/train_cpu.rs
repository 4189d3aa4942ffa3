//! `cargo xtask bench train-cpu`: the time of one sampling forward and one
//! training step (forward, backward, AdamW) of the demo-size U-ViT — img 16,
//! patch 2, width 128, depth 6, 4 heads, mlp_ratio 4, batch 64 — dense and
//! with 2:4 SR-STE masks, beside PyTorch 2.11's 99 ms / 336 ms on the same
//! 2-core machine class (../shared/GPU.md §6). The measuring code is
//! `sparsedm_train::speed`, the same as `sparsedm bench`.

use sparsedm_tensor::Device;
use sparsedm_train::{RunConfig, speed};

// The same allocator as the `sparsedm` binary.
#[global_allocator]
static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;

fn main() {
    // Freed buffers stay committed and are reused without page faults.
    sparsedm_tensor::host_alloc::keep_freed_pages();
    // `cargo bench` passes --bench; a filter argument is accepted and ignored.
    let iters: usize = std::env::var("SPARSEDM_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let cfg = RunConfig::load("demo_shapes_uvit", &[]).expect("the demo preset");
    match speed::measure(&cfg, 64, iters, Device::Cpu) {
        Ok(r) => println!("{}", r.table()),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
