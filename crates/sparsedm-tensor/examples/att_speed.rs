//! Times the CPU's inference attention on U-ViT's packed qkv heads with
//! the short-sequence kernel (`backend/cpu/attention_short.rs`) and with
//! the `gemm` path it replaces, interleaved, best of 60 each: µs per
//! (image, head). A profiling aid for choosing the kernel's key limit; not
//! a test (both paths give the same bits, `tests/attention_tests.rs`).
//!
//! `RAYON_NUM_THREADS=1 cargo run --release -p sparsedm-tensor --example att_speed`

#[global_allocator]
static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;

use sparsedm_tensor::backend::cpu::set_short_attention;
use sparsedm_tensor::{Device, Result, Rng, Tensor, no_grad};
use std::time::Instant;

fn main() -> Result<()> {
    sparsedm_tensor::host_alloc::keep_freed_pages();
    let _g = no_grad();
    let dev = Device::Cpu;
    let mut rng = Rng::new(1);
    // (images, heads, tokens, channels per head): the demo model's heads,
    // two sizes around the kernel's limit, U-ViT-S/2's heads.
    for (b, h, l, d) in [(64usize, 4usize, 65usize, 32usize), (32, 4, 96, 32), (16, 4, 128, 32), (8, 8, 257, 64)] {
        let qkv = Tensor::randn(&[b, l, 3 * h * d], &mut rng, &dev)?.reshape(&[b, l, 3, h, d])?.permute(&[2, 0, 3, 1, 4])?;
        let mut best = [f64::INFINITY; 2];
        for r in 0..120 {
            let gemm = r % 2;
            set_short_attention(gemm == 0);
            let t = Instant::now();
            Tensor::scaled_dot_product_attention_qkv(&qkv, None)?;
            best[gemm] = best[gemm].min(t.elapsed().as_secs_f64());
        }
        let per = |s: f64| s * 1e6 / (b * h) as f64;
        println!("[{b}, {h}, {l}, {d}]  short kernel {:8.2} µs/head  gemm path {:8.2} µs/head", per(best[0]), per(best[1]));
    }
    set_short_attention(true);
    Ok(())
}
