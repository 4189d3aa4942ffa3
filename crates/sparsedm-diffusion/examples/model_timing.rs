//! Wall-clock timing of the models on this machine (not a test):
//! U-ViT-S/2 (CIFAR-10) forward at batch 8, the DDPM CIFAR-10 UNet forward
//! at batch 8, and the tiny demo U-ViT (img 16, patch 2, width 128, depth 6,
//! 4 heads) forward + backward at batch 64.
//!
//! `cargo run --release -p sparsedm-diffusion --example model_timing [REPS] [uvit|unet|tiny]`
//! (the optional second argument runs one part only).

use sparsedm_diffusion::{UNet, UNetConfig, UViT, UViTConfig};
use sparsedm_layers::ParamStore;
use sparsedm_tensor::{Device, Rng, Tensor, no_grad};
use std::time::Instant;

// The allocator of the `sparsedm` binary, so the numbers match it.
#[global_allocator]
static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, f64) {
    let _warm = f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            let _ = f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[0], times[times.len() / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Freed buffers stay committed and are reused without page faults.
    sparsedm_tensor::host_alloc::keep_freed_pages();
    let reps: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let only = std::env::args().nth(2);
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let dev = Device::Cpu;
    let mut rng = Rng::new(0);
    println!("available parallelism: {:?}", std::thread::available_parallelism());

    let x = Tensor::randn(&[8, 3, 32, 32], &mut rng, &dev)?;
    let t = Tensor::from_vec((0..8).map(|i| 100.0 * i as f32 + 0.5).collect(), &[8], &dev)?;
    if run("uvit") {
        let store = ParamStore::new(dev, 0);
        store.set_training(false);
        let m = UViT::new(&store, &UViTConfig::cifar10_uvit_small())?;
        let (best, med) = time(reps, || {
            let _g = no_grad();
            m.forward(&x, &t, None).unwrap()
        });
        println!("U-ViT-S/2 forward, batch 8, 32x32 (no_grad): best {best:.3} s, median {med:.3} s");
    }
    if run("unet") {
        let store = ParamStore::new(dev, 0);
        store.set_training(false);
        let u = UNet::new(&store, &UNetConfig::cifar10_ddpm())?;
        let (best, med) = time(reps, || {
            let _g = no_grad();
            u.forward(&x, &t).unwrap()
        });
        println!("DDPM CIFAR-10 UNet forward, batch 8 (no_grad): best {best:.3} s, median {med:.3} s");
    }
    if !run("tiny") {
        return Ok(());
    }

    let store = ParamStore::new(dev, 0);
    let cfg = UViTConfig { img_size: 16, patch_size: 2, in_chans: 3, embed_dim: 128, depth: 6, num_heads: 4, ..Default::default() };
    let m = UViT::new(&store, &cfg)?;
    let x = Tensor::randn(&[64, 3, 16, 16], &mut rng, &dev)?;
    let t = Tensor::rand_uniform(&[64], 0.0, 999.0, &mut rng, &dev)?;
    let eps = Tensor::randn(&[64, 3, 16, 16], &mut rng, &dev)?;
    let (best, med) = time(reps, || {
        let _g = no_grad();
        m.forward(&x, &t, None).unwrap()
    });
    println!("tiny U-ViT (16px, p2, D128, depth 6, 4 heads) forward, batch 64: best {best:.4} s, median {med:.4} s");
    let (best, med) = time(reps, || {
        let loss = m.forward(&x, &t, None).unwrap().sub(&eps).unwrap().sqr().unwrap().mean_all().unwrap();
        loss.backward().unwrap()
    });
    println!("tiny U-ViT forward + backward (MSE loss), batch 64: best {best:.4} s, median {med:.4} s");
    Ok(())
}
