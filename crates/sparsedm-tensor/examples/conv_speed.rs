//! Times the CPU convolution's forward pass and each backward product
//! (input and weight gradients) at the DDPM UNets' shapes: the demo UNet's
//! 3×3 convs at batch 64 (16×16 and 8×8 planes, 32-64 channels) and the
//! CIFAR-10 UNet's at batch 8 (32×32, 128 channels), plus a stride-2
//! downsampling conv. A profiling aid for issue 16 (the demo UNet's
//! training step against PyTorch's); not a test.
//!
//! `cargo run --release -p sparsedm-tensor --example conv_speed [-- reps]`
//! (`RAYON_NUM_THREADS` sets the threads).

#[global_allocator]
static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;

use sparsedm_tensor::{Device, Result, Rng, Tensor, no_grad};
use std::time::Instant;

fn best(reps: usize, f: impl Fn() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best * 1e3)
}

fn main() -> Result<()> {
    sparsedm_tensor::host_alloc::keep_freed_pages();
    let reps = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let dev = Device::Cpu;
    let mut rng = Rng::new(1);
    println!("threads {}", rayon::current_num_threads());
    println!("{:34} {:>9} {:>9} {:>9}", "conv (N,C,H,W) -> O, k, stride", "fwd ms", "+dx ms", "+dw ms");
    // (n, c, h, w, o, k, stride, pad)
    for (n, c, h, w, o, k, s, p) in [
        (64, 32, 16, 16, 32, 3, 1, 1),
        (64, 64, 16, 16, 64, 3, 1, 1),
        (64, 64, 8, 8, 64, 3, 1, 1),
        (64, 32, 16, 16, 32, 3, 2, 1),
        (8, 128, 32, 32, 128, 3, 1, 1),
    ] {
        let x = Tensor::randn(&[n, c, h, w], &mut rng, &dev)?;
        let wt = Tensor::randn(&[o, c, k, k], &mut rng, &dev)?.affine(0.05, 0.0)?;
        let fwd = {
            let _g = no_grad();
            best(reps, || x.conv2d(&wt, None, (s, s), (p, p)).map(drop))?
        };
        // Forward + the input gradient only, then + the weight gradient only.
        let (xv, wv) = (x.to_var(), wt.to_var());
        let dx = best(reps, || xv.conv2d(&wt, None, (s, s), (p, p))?.sum_all()?.backward().map(drop))?;
        let dw = best(reps, || x.conv2d(&wv, None, (s, s), (p, p))?.sum_all()?.backward().map(drop))?;
        println!("{:34} {fwd:9.2} {:9.2} {:9.2}", format!("({n},{c},{h},{w}) -> {o}, {k}x{k}, s{s}"), dx - fwd, dw - fwd);
    }
    Ok(())
}
