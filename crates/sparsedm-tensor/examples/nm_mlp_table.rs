//! The fused N:M MLP (`nm_cpu::nm_mlp_forward`: fc1 → GELU → fc2 tile by
//! tile) against the same two N:M layers run apart with a GELU op between
//! them, at the MLP shapes of the demo U-ViT (batch 64: 4160 tokens,
//! 128 → 512 → 128) and U-ViT-S/2 (batch 8: 2056 tokens, 512 → 2048 →
//! 512), for 2:4, 1:4 and 1:8: medians of 15 interleaved runs and the
//! largest difference between the two results. A profiling aid, not a test.
//!
//! `cargo run --release -p sparsedm-tensor --example nm_mlp_table`
//! (`RAYON_NUM_THREADS` sets the threads).

#[global_allocator]
static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;
use sparsedm_tensor::nm_cpu::*;
use sparsedm_tensor::{Device, Tensor, no_grad};
use std::time::Instant;
#[path = "support/nm_data.rs"]
mod nm_data;
use nm_data::{lcg, masked};
fn main() -> sparsedm_tensor::Result<()> {
    sparsedm_tensor::host_alloc::keep_freed_pages();
    let _g = no_grad();
    for &(name, rows, d, hid) in &[("demo", 4160usize, 128usize, 512usize), ("s2b8", 2056, 512, 2048)] {
        for &(n, m) in &[(2usize, 4usize), (1, 4), (1, 8)] {
            let w1 = masked(hid, d, n, m, 3);
            let w2 = masked(d, hid, n, m, 4);
            let b1: Vec<f32> = (0..hid).map(|i| (i as f32) * 0.001).collect();
            let b2: Vec<f32> = (0..d).map(|i| (i as f32) * -0.002).collect();
            let l1 = NmLinear::new(&w1, hid, d, Some(&b1), n, m)?;
            let l2 = NmLinear::new(&w2, d, hid, Some(&b2), n, m)?;
            let mut s = 9u64;
            let x = Tensor::from_vec((0..rows * d).map(|_| lcg(&mut s)).collect(), &[rows, d], &Device::Cpu)?;
            let apart = || -> sparsedm_tensor::Result<Tensor> { l2.forward_tensor(&l1.forward_tensor(&x)?.gelu()?) };
            force_path(Some(NmPath::Sparse));
            let fused = || nm_mlp_forward(&l1, MlpActivation::Gelu, &l2, &x);
            let (a, f) = (apart()?.to_vec_f32()?, fused()?.to_vec_f32()?);
            let md = a.iter().zip(&f).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            let mut ta = vec![];
            let mut tf = vec![];
            for _ in 0..15 {
                let t = Instant::now();
                apart()?;
                ta.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                fused()?;
                tf.push(t.elapsed().as_secs_f64() * 1e3);
            }
            ta.sort_by(f64::total_cmp);
            tf.sort_by(f64::total_cmp);
            println!("{name} {n}:{m} apart {:.3} fused {:.3} ratio {:.2} maxdiff {:.1e}", ta[7], tf[7], ta[7] / tf[7], md);
        }
    }
    Ok(())
}
