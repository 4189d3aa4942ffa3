//! `cargo xtask bench train-cpu`: the time of one training step (forward,
//! backward, AdamW) of the demo-size U-ViT — img 16, patch 2, width 128,
//! depth 6, 4 heads, mlp_ratio 4, batch 64 — dense and with 2:4 SR-STE
//! masks, compared with PyTorch 2.11's 336 ms/step (dense, fp32, 2 threads)
//! on the same 2-core machine class (../shared/GPU.md §6). Also the
//! forward alone (PyTorch: 99 ms).

use sparsedm_diffusion::{EpsModel, ModelConfig, Arch, NoiseSchedule, VpLinear};
use sparsedm_layers::{apply_policy, NmPattern, ParamStore, Policy, SparseMode};
use sparsedm_tensor::{no_grad, Device, Rng, Tensor};
use sparsedm_train::optim::{AdamW, AdamWConfig};
use std::str::FromStr;
use std::time::Instant;

// The same allocator as the `sparsedm` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PYTORCH_STEP_MS: f64 = 336.0;
const PYTORCH_FORWARD_MS: f64 = 99.0;

fn model(sparse: bool) -> (ParamStore, Box<dyn EpsModel>) {
    let cfg = serde_json::json!({"img_size": 16, "patch_size": 2, "embed_dim": 128, "depth": 6, "num_heads": 4,
        "mlp_ratio": 4.0, "qkv_bias": false, "mlp_time_embed": false, "num_classes": -1});
    let store = ParamStore::new(Device::Cpu, 0);
    let m = ModelConfig::from_json(Arch::UViT, &cfg).expect("config").build(&store).expect("model");
    if sparse {
        let p = NmPattern::new(2, 4).expect("2:4");
        apply_policy(&store, &Policy::from_str("sparsedm-uvit").expect("policy"), p, |pattern| SparseMode::SrSte { pattern, lambda: 2e-4 }).expect("policy");
    }
    (store, m)
}

fn time_steps(sparse: bool, steps: usize) -> f64 {
    let (store, m) = model(sparse);
    let mut opt = AdamW::new(store.params(), AdamWConfig { lr: 2e-4, betas: (0.99, 0.999), eps: 1e-8, weight_decay: 0.03 });
    let sched = VpLinear::uvit();
    let mut rng = Rng::new(1);
    let x0 = Tensor::randn(&[64, 3, 16, 16], &mut rng, &Device::Cpu).expect("data");
    let mut step = || {
        let tr = sched.sample_training(&x0, &mut rng).expect("triple");
        let eps = m.predict_eps(&tr.x_t, &tr.model_t, None).expect("forward");
        let loss = eps.sub(&tr.eps).expect("sub").sqr().expect("sqr").mean_all().expect("mean");
        let g = loss.backward().expect("backward");
        opt.step(&g, 2e-4).expect("adamw");
    };
    for _ in 0..2 {
        step();
    }
    let t = Instant::now();
    for _ in 0..steps {
        step();
    }
    t.elapsed().as_secs_f64() * 1e3 / steps as f64
}

fn time_forward(steps: usize) -> f64 {
    let (_store, m) = model(false);
    let _g = no_grad();
    let mut rng = Rng::new(2);
    let x = Tensor::randn(&[64, 3, 16, 16], &mut rng, &Device::Cpu).expect("x");
    let t = Tensor::full(500.0, &[64], &Device::Cpu).expect("t");
    m.predict_eps(&x, &t, None).expect("warm-up");
    let s = Instant::now();
    for _ in 0..steps {
        m.predict_eps(&x, &t, None).expect("forward");
    }
    s.elapsed().as_secs_f64() * 1e3 / steps as f64
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is accepted and ignored.
    let steps: usize = std::env::var("SPARSEDM_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    println!("demo-size U-ViT (1.50 M params), batch 64, {} rayon threads, {steps} timed steps", rayon::current_num_threads());
    let fwd = time_forward(steps);
    println!("forward             {fwd:8.1} ms   PyTorch {PYTORCH_FORWARD_MS:6.1} ms   ratio {:.2}", fwd / PYTORCH_FORWARD_MS);
    let dense = time_steps(false, steps);
    println!("train step, dense   {dense:8.1} ms   PyTorch {PYTORCH_STEP_MS:6.1} ms   ratio {:.2}", dense / PYTORCH_STEP_MS);
    let sparse = time_steps(true, steps);
    println!("train step, SR-STE  {sparse:8.1} ms   (vs our dense: {:.2}x)", sparse / dense);
}
