//! Times the CPU ops around the matrix products of a U-ViT forward at
//! U-ViT-S/2 shapes (batch 8: 257 tokens of width 512, 8 heads of 64, an
//! MLP of 2048): GELU, softmax over 257 keys, layer norm, a residual add,
//! and the fused attention, then three matrix products. A profiling aid
//! for issue 16's "rest" (what a forward spends outside the Linear
//! layers) and for thread scaling; not a test.
//!
//! `cargo run --release -p sparsedm-tensor --example op_speed [-- reps]`
//! (`RAYON_NUM_THREADS` sets the threads).

#[global_allocator]
static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;

use sparsedm_tensor::{Device, Result, Rng, Tensor, no_grad};
use std::time::Instant;

fn time(what: &str, elems: usize, reps: usize, f: impl Fn() -> Result<Tensor>) -> Result<()> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{what:32} {:8.3} ms  {:6.3} ns/element", best * 1e3, best * 1e9 / elems as f64);
    Ok(())
}

fn main() -> Result<()> {
    sparsedm_tensor::host_alloc::keep_freed_pages();
    let reps = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let _g = no_grad();
    let dev = Device::Cpu;
    let mut rng = Rng::new(1);
    let (b, l, d, h, hidden) = (8, 257, 512, 8, 2048);
    let mlp = Tensor::randn(&[b, l, hidden], &mut rng, &dev)?;
    let tok = Tensor::randn(&[b, l, d], &mut rng, &dev)?;
    let tok2 = Tensor::randn(&[b, l, d], &mut rng, &dev)?;
    let scores = Tensor::randn(&[b * h * l, l], &mut rng, &dev)?;
    let q = Tensor::randn(&[b, h, l, d / h], &mut rng, &dev)?;
    let k = Tensor::randn(&[b, h, l, d / h], &mut rng, &dev)?;
    let v = Tensor::randn(&[b, h, l, d / h], &mut rng, &dev)?;
    println!("threads {}", rayon::current_num_threads());
    time("gelu [8,257,2048]", mlp.elem_count(), reps, || mlp.gelu())?;
    time("softmax [16448,257]", scores.elem_count(), reps, || scores.softmax(1))?;
    time("layer_norm [8,257,512]", tok.elem_count(), reps, || tok.layer_norm(None, None, 1e-5))?;
    // The demo model's token rows (batch 64: 4160 tokens of width 128), with its affine parts.
    let (tokd, lw, lb) =
        (Tensor::randn(&[64, 65, 128], &mut rng, &dev)?, Tensor::randn(&[128], &mut rng, &dev)?, Tensor::randn(&[128], &mut rng, &dev)?);
    time("layer_norm [64,65,128] affine", tokd.elem_count(), reps, || tokd.layer_norm(Some(&lw), Some(&lb), 1e-5))?;
    time("add [8,257,512]", tok.elem_count(), reps, || tok.add(&tok2))?;
    time("attention [8,8,257,64]", b * h * l * l, reps, || Tensor::scaled_dot_product_attention(&q, &k, &v, None))?;
    // The demo model's heads (batch 64: 4 heads of 32 over 65 tokens).
    let (qd, kd, vd) = (
        Tensor::randn(&[64, 4, 65, 32], &mut rng, &dev)?,
        Tensor::randn(&[64, 4, 65, 32], &mut rng, &dev)?,
        Tensor::randn(&[64, 4, 65, 32], &mut rng, &dev)?,
    );
    time("attention [64,4,65,32]", 64 * 4 * 65 * 65, reps, || Tensor::scaled_dot_product_attention(&qd, &kd, &vd, None))?;
    // The products themselves (ns per multiply-add): a U-ViT-S/2 fc1, the
    // demo model's fc1 (batch 64: 4160 tokens of width 128) with a bias,
    // and the demo fc1's weight gradient dYᵀ·X (long inner dimension).
    let w = Tensor::randn(&[hidden, d], &mut rng, &dev)?;
    let x2 = tok.reshape(&[b * l, d])?;
    time("linear [2056,512]->2048", b * l * d * hidden, reps, || x2.linear(&w, None))?;
    let xd = Tensor::randn(&[4160, 128], &mut rng, &dev)?;
    let wd = Tensor::randn(&[512, 128], &mut rng, &dev)?;
    let bd = Tensor::randn(&[512], &mut rng, &dev)?;
    time("linear+bias [4160,128]->512", 4160 * 128 * 512, reps, || xd.linear(&wd, Some(&bd)))?;
    time("linear [4160,128]->512", 4160 * 128 * 512, reps, || xd.linear(&wd, None))?;
    let wq = Tensor::randn(&[384, 128], &mut rng, &dev)?;
    time("linear [4160,128]->384", 4160 * 128 * 384, reps, || xd.linear(&wq, None))?;
    let wp = Tensor::randn(&[128, 128], &mut rng, &dev)?;
    time("linear [4160,128]->128", 4160 * 128 * 128, reps, || xd.linear(&wp, None))?;
    let wf = Tensor::randn(&[128, 512], &mut rng, &dev)?;
    let gd = Tensor::randn(&[4160, 512], &mut rng, &dev)?;
    time("dW [512,4160]x[4160,128]", 4160 * 128 * 512, reps, || gd.t()?.matmul(&xd))?;
    time("linear [4160,512]->128", 4160 * 128 * 512, reps, || gd.linear(&wf, None))?;
    Ok(())
}
