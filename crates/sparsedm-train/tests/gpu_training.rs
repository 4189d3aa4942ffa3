//! Training on a GPU against the same training on the CPU.
//!
//! - AdamW and EMA: the fused kernels (`Tensor::adamw_step_`,
//!   `Tensor::ema_update_`) reproduce the host loops operation by operation,
//!   so parameters, moments and averages must be *bit-identical* after
//!   several steps (learning rates including 0, weight decay on), and the
//!   optimizer state must round-trip through checkpoints between devices.
//! - A tiny U-ViT trained for a few steps from the same initial weights, data
//!   and noise stream on both devices: with f32 matmuls the losses agree to
//!   rounding (the GPU's normals differ from the CPU's by a few ulp, its
//!   reductions sum in another order); with bf16 matmuls (see
//!   [`gpu_tiny_uvit_training_follows_the_cpu_in_bf16`]) the losses follow
//!   the CPU's within one bf16 rounding and the parameters' updates within
//!   a fraction of their length. The same for SR-STE 2:4 (bf16: SR-STE only).
//!
//! - The trainer itself on a GPU: the same run as on the CPU, a checkpoint
//!   written by the GPU run (on the host) resumed on the CPU.
//!
//! Without a GPU each test prints why it is skipped and passes, unless
//! `SPARSEDM_REQUIRE_GPU=1` (the H200 runs), where a missing GPU fails it.
//! The last test (CPU tensors refused by the fused updates) runs everywhere.

use std::collections::HashMap;
use std::sync::RwLock;

use sparsedm_diffusion::{EpsModel, NoiseSchedule, UViT, UViTConfig, VpLinear};
use sparsedm_kernels::testing::gpu_or_skip;
use sparsedm_layers::{NmPattern, ParamStore, Policy, SparseMode, apply_policy};
use sparsedm_tensor::testing::max_rel_diff;
use sparsedm_tensor::{AdamWScalars, Device, MatmulPrecision, Rng, Tensor, set_matmul_precision};
use sparsedm_train::ema::Ema;
use sparsedm_train::optim::{AdamW, AdamWConfig};
use sparsedm_train::{RunConfig, Trainer};

const CPU: Device = Device::Cpu;

/// The matmul precision is process-wide: the bf16 test holds this for
/// writing, every other test for reading.
static PRECISION: RwLock<()> = RwLock::new(());

fn device(test: &str) -> Option<Device> {
    gpu_or_skip(test).map(|g| Device::Cuda(g.ordinal()))
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, &mut Rng::new(seed), &CPU).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().unwrap().into_iter().map(f32::to_bits).collect()
}

/// Named parameters, the gradients of each step, the learning rate of each step.
type OptimizerCase = (Vec<(String, Tensor)>, Vec<Vec<Tensor>>, Vec<f32>);
/// After one step, as bits: the parameters, the optimizer state by name, the EMA.
type StepBits = (Vec<Vec<u32>>, HashMap<String, Vec<u32>>, Vec<Vec<u32>>);

/// Parameters of awkward sizes (one element, not a multiple of the block,
/// several blocks) and the gradients of each step.
fn optimizer_case() -> OptimizerCase {
    let shapes: [&[usize]; 4] = [&[1], &[7, 3], &[300], &[33, 65]];
    let params = shapes.iter().enumerate().map(|(i, s)| (format!("p{i}"), randn(s, 10 + i as u64))).collect();
    let lrs = vec![0.0, 1e-3, 2e-4, 5e-2, 1e-3];
    let grads = (0..lrs.len())
        .map(|k| {
            shapes
                .iter()
                .enumerate()
                .map(|(i, s)| randn(s, 100 * k as u64 + i as u64).mul_scalar(if k == 3 { 1e-3 } else { 1.0 }).unwrap())
                .collect()
        })
        .collect();
    (params, grads, lrs)
}

/// Runs AdamW (and an EMA of the parameters) over `optimizer_case` on `dev`;
/// returns the parameters, the optimizer state and the EMA after each step.
fn run_optimizer(dev: Device) -> Vec<StepBits> {
    let (params, grads, lrs) = optimizer_case();
    let params: Vec<(String, Tensor)> = params.into_iter().map(|(n, p)| (n, p.to_device(&dev).unwrap().to_var())).collect();
    let cfg = AdamWConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.03 };
    let mut opt = AdamW::new(params.clone(), cfg);
    let mut ema = Ema::new(&params, 0.9999).unwrap();
    let mut out = Vec::new();
    for (k, lr) in lrs.iter().enumerate() {
        // Σ p ⊙ G has gradient exactly G on either device.
        let mut loss = Tensor::scalar(0.0, &dev).unwrap();
        for ((_, p), g) in params.iter().zip(&grads[k]) {
            loss = loss.add(&p.mul(&g.to_device(&dev).unwrap()).unwrap().sum_all().unwrap()).unwrap();
        }
        let g = loss.backward().unwrap();
        opt.step(&g, *lr).unwrap();
        ema.update(&params).unwrap();
        for (_, p) in &params {
            assert_eq!(p.device(), dev, "the parameter left its device");
        }
        for (_, e) in ema.tensors() {
            assert_eq!(e.device(), dev, "the EMA left the parameters' device");
        }
        let state =
            opt.state_tensors().unwrap().into_iter().map(|(n, t)| (n, bits(&t.to_dtype(sparsedm_tensor::DType::F32).unwrap()))).collect();
        out.push((params.iter().map(|(_, p)| bits(p)).collect(), state, ema.tensors().iter().map(|(_, e)| bits(e)).collect()));
    }
    out
}

#[test]
fn gpu_adamw_and_ema_equal_the_cpu_bit_for_bit() {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_adamw_and_ema_equal_the_cpu_bit_for_bit") else { return };
    let cpu = run_optimizer(CPU);
    let gpu = run_optimizer(dev);
    for (k, ((pc, sc, ec), (pg, sg, eg))) in cpu.iter().zip(&gpu).enumerate() {
        assert_eq!(pg, pc, "step {k}: parameters differ");
        assert_eq!(sg, sc, "step {k}: optimizer state differs");
        assert_eq!(eg, ec, "step {k}: EMA differs");
    }
}

#[test]
fn gpu_optimizer_state_moves_between_devices() {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_optimizer_state_moves_between_devices") else { return };
    let (params, grads, lrs) = optimizer_case();
    let cfg = AdamWConfig::default();
    // Two steps on the GPU, then the state continues on the CPU and on a fresh GPU optimizer.
    let on = |d: Device| -> Vec<(String, Tensor)> { params.iter().map(|(n, p)| (n.clone(), p.to_device(&d).unwrap().to_var())).collect() };
    let step = |opt: &mut AdamW, ps: &[(String, Tensor)], k: usize| {
        let d = ps[0].1.device();
        let mut loss = Tensor::scalar(0.0, &d).unwrap();
        for ((_, p), g) in ps.iter().zip(&grads[k]) {
            loss = loss.add(&p.mul(&g.to_device(&d).unwrap()).unwrap().sum_all().unwrap()).unwrap();
        }
        opt.step(&loss.backward().unwrap(), lrs[k].max(1e-4)).unwrap();
    };
    let gp = on(dev);
    let mut g_opt = AdamW::new(gp.clone(), cfg);
    step(&mut g_opt, &gp, 1);
    step(&mut g_opt, &gp, 2);
    let state: HashMap<String, Tensor> = g_opt.state_tensors().unwrap().into_iter().collect();
    assert!(state.values().all(|t| t.device() == CPU), "checkpointed state must be on the CPU");
    let cp: Vec<(String, Tensor)> =
        gp.iter().map(|(n, p)| (n.clone(), p.to_device(&CPU).unwrap().detach().contiguous().unwrap().to_var())).collect();
    let mut c_opt = AdamW::new(cp.clone(), cfg);
    c_opt.load_state(&state).unwrap();
    let gp2: Vec<(String, Tensor)> = gp.iter().map(|(n, p)| (n.clone(), p.detach().contiguous().unwrap().to_var())).collect();
    let mut g_opt2 = AdamW::new(gp2.clone(), cfg);
    g_opt2.load_state(&state).unwrap();
    assert_eq!(g_opt2.step_count(), 2);
    step(&mut c_opt, &cp, 3);
    step(&mut g_opt2, &gp2, 3);
    for ((n, c), (_, g)) in cp.iter().zip(&gp2) {
        assert_eq!(bits(g), bits(c), "{n}: resumed GPU and CPU steps differ");
    }
}

/// A small U-ViT (every layer kind of the real one: patch conv, attention,
/// MLPs, long skips, final conv).
fn tiny_uvit() -> UViTConfig {
    UViTConfig { img_size: 8, patch_size: 2, in_chans: 3, embed_dim: 32, depth: 3, num_heads: 2, mlp_ratio: 2.0, ..UViTConfig::default() }
}

/// Trains the tiny U-ViT for `steps` steps on `dev` (same seed, data and
/// noise stream everywhere); returns the losses and the final parameters.
fn train_curve(dev: Device, steps: usize, srste: bool) -> (Vec<f32>, Vec<Vec<f32>>) {
    train_curve_from(dev, steps, srste).1
}

/// The initial parameters, then the losses and the final parameters.
type Curve = (Vec<Vec<f32>>, (Vec<f32>, Vec<Vec<f32>>));

/// [`train_curve`] with the initial parameters (drawn on the host from the
/// store's seed, so the same on every device) first.
fn train_curve_from(dev: Device, steps: usize, srste: bool) -> Curve {
    let store = ParamStore::new(dev, 3);
    let model = UViT::new(&store, &tiny_uvit()).unwrap();
    let init = store.params().iter().map(|(_, p)| p.to_vec_f32().unwrap()).collect();
    if srste {
        apply_policy(&store, &"all".parse::<Policy>().unwrap(), NmPattern::new(2, 4).unwrap(), SparseMode::srste).unwrap();
    }
    let mut opt = AdamW::new(store.params(), AdamWConfig { lr: 1e-3, ..AdamWConfig::default() });
    let sched = VpLinear::default();
    let x0 = randn(&[8, 3, 8, 8], 42).to_device(&dev).unwrap();
    let mut rng = Rng::new(7);
    let mut losses = Vec::new();
    for _ in 0..steps {
        let tr = sched.sample_training(&x0, &mut rng).unwrap();
        let eps = model.predict_eps(&tr.x_t, &tr.model_t, None).unwrap();
        assert_eq!(eps.device(), dev, "the forward left the device");
        let loss = eps.sub(&tr.eps).unwrap().sqr().unwrap().mean_all().unwrap();
        losses.push(loss.to_scalar().unwrap());
        opt.step(&loss.backward().unwrap(), 1e-3).unwrap();
        store.after_optimizer_step().unwrap();
    }
    (init, (losses, store.params().iter().map(|(_, p)| p.to_vec_f32().unwrap()).collect()))
}

fn compare_curves(test: &str, cpu: &(Vec<f32>, Vec<Vec<f32>>), gpu: &(Vec<f32>, Vec<Vec<f32>>), loss_tol: f32, param_tol: f32) {
    for (k, (g, c)) in gpu.0.iter().zip(&cpu.0).enumerate() {
        let rel = (g - c).abs() / c.abs().max(1e-6);
        assert!(rel <= loss_tol, "{test}: step {k}: loss {g} on the GPU, {c} on the CPU (relative difference {rel:.2e} > {loss_tol:.0e})");
    }
    assert!(cpu.0.last() < cpu.0.first(), "{test}: the CPU run did not learn ({:?})", cpu.0);
    for (i, (g, c)) in gpu.1.iter().zip(&cpu.1).enumerate() {
        let d = max_rel_diff(g, c);
        assert!(d <= param_tol, "{test}: parameter {i} differs by {d:.2e} > {param_tol:.0e}");
    }
}

#[test]
fn gpu_tiny_uvit_training_follows_the_cpu_in_f32() {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_tiny_uvit_training_follows_the_cpu_in_f32") else { return };
    for srste in [false, true] {
        let cpu = train_curve(CPU, 8, srste);
        let gpu = train_curve(dev, 8, srste);
        compare_curves(&format!("f32, SR-STE {srste}"), &cpu, &gpu, 1e-4, 1e-3);
    }
}

/// bf16 CUDA matmuls until dropped (also when a test panics).
struct Bf16Matmuls;

impl Bf16Matmuls {
    fn on() -> Self {
        set_matmul_precision(MatmulPrecision::Bf16);
        Bf16Matmuls
    }
}

impl Drop for Bf16Matmuls {
    fn drop(&mut self) {
        set_matmul_precision(MatmulPrecision::F32);
    }
}

/// ‖a − b‖₂ / ‖b‖₂ of two update vectors.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}

/// The bf16 run against the f32 CPU run. The CPU has no bf16 matmuls, so
/// the two runs compute different (both correct) products: every GPU matmul
/// rounds its operands to bf16 (8 mantissa bits, 2^-9 relative) and
/// accumulates in f32, as cuBLAS does (the simulator's GEMM reproduces
/// that: round-to-nearest-even casts, exact widening, f32 sums). What must
/// agree, and how closely:
///
/// - the losses, within 2e-3 relative (one bf16 rounding, 2^-9 ≈ 1.95e-3):
///   the operand roundings average out over each loss's many terms
///   (observed on the simulator: under 1e-4);
/// - each parameter's *update* (final − initial), within 0.2 of its length
///   in the L2 norm (observed on the simulator: at most 0.03 dense, 0.07
///   with SR-STE). Not max |Δ| over max |p|: Adam moves every element by
///   about lr per step whatever its gradient's size, so an element whose
///   gradient is near zero — where bf16 rounding decides its sign — moves by
///   ±lr either way, and for the zero-initialised biases (max |p| = the
///   travelled ~8·lr) one such element is 20–30 % of max |p| (the 0.19 of
///   `in_blocks.0.mlp.fc1.bias` that made this test fail before); SR-STE
///   adds mask flips between nearly equal weights. The norm of the whole
///   update is carried by the elements whose gradients bf16 does not flip.
///
/// A GPU path that drops a gradient, uses a stale mask or a wrong transpose
/// moves the losses by far more than 2e-3 and the updates by O(1).
///
/// SR-STE 2:4 only: it runs every bf16 GEMM of the dense run plus the masks
/// (whose flips between nearly equal weights make it the harder case), and
/// one run keeps the simulated CI time down (the dense run adds ~20 s).
#[test]
fn gpu_tiny_uvit_training_follows_the_cpu_in_bf16() {
    let _p = PRECISION.write().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_tiny_uvit_training_follows_the_cpu_in_bf16") else { return };
    {
        let srste = true;
        let test = format!("bf16, SR-STE {srste}");
        let (init, cpu) = train_curve_from(CPU, 8, srste);
        let (init_gpu, gpu) = {
            let _bf16 = Bf16Matmuls::on();
            train_curve_from(dev, 8, srste)
        };
        assert_eq!(init_gpu, init, "{test}: the same initial parameters on both devices");
        for (k, (g, c)) in gpu.0.iter().zip(&cpu.0).enumerate() {
            let rel = (g - c).abs() / c.abs().max(1e-6);
            assert!(rel <= 2e-3, "{test}: step {k}: loss {g} on the GPU, {c} on the CPU (relative difference {rel:.2e} > 2e-3)");
        }
        assert!(cpu.0.last() < cpu.0.first(), "{test}: the CPU run did not learn ({:?})", cpu.0);
        let mut worst = (0.0, 0);
        for (i, ((g, c), p0)) in gpu.1.iter().zip(&cpu.1).zip(&init).enumerate() {
            let dg: Vec<f32> = g.iter().zip(p0).map(|(a, b)| a - b).collect();
            let dc: Vec<f32> = c.iter().zip(p0).map(|(a, b)| a - b).collect();
            let d = rel_l2(&dg, &dc);
            if d > worst.0 {
                worst = (d, i);
            }
            assert!(d <= 0.2, "{test}: parameter {i}'s update differs by {d:.3} of its length (> 0.2)");
        }
        eprintln!("{test}: largest update difference {:.3} (parameter {})", worst.0, worst.1);
    }
}

/// A tiny U-ViT run on the embedded shapes, checkpointed every 2 steps, at
/// f32 matmuls (a run on a GPU defaults to bf16, which follows the CPU's
/// curve but not to 1e-3).
const TINY_RUN: &str = r#"
seed = 3
arch = "uvit"
[nnet]
img_size = 16
patch_size = 4
embed_dim = 32
depth = 2
num_heads = 2
mlp_ratio = 2.0
[dataset]
name = "shapes"
resolution = 16
len = 256
[train]
n_steps = 4
batch_size = 16
ema_rate = 0.9
save_interval = 2
precision = "f32"
[optimizer]
lr = 2e-3
weight_decay = 0.03
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 0
"#;

#[test]
fn gpu_trainer_follows_the_cpu_and_its_checkpoint_resumes_on_the_cpu() {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_trainer_follows_the_cpu_and_its_checkpoint_resumes_on_the_cpu") else { return };
    let dir = sparsedm_testkit::Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), "gpu-trainer");
    let cfg = |n: u64| RunConfig::parse(TINY_RUN, "tiny", &[format!("train.n_steps={n}")]).unwrap();
    let mut cpu = Trainer::new(cfg(4), &dir.join("cpu"), false, CPU).unwrap();
    let mut cpu_losses = Vec::new();
    cpu.run(None, |m, _| cpu_losses.push(m.loss)).unwrap();

    let mut gpu = Trainer::new(cfg(2), &dir.join("gpu"), false, dev).unwrap();
    assert_eq!(gpu.device(), dev);
    let mut losses = Vec::new();
    gpu.run(None, |m, _| losses.push(m.loss)).unwrap();
    for (n, p) in gpu.student().store.params() {
        assert_eq!(p.device(), dev, "{n} left the GPU");
    }
    drop(gpu);
    let mut resumed = Trainer::new(cfg(4), &dir.join("gpu"), true, CPU).unwrap();
    assert_eq!(resumed.step(), 2);
    resumed.run(None, |m, _| losses.push(m.loss)).unwrap();

    assert_eq!(losses.len(), cpu_losses.len());
    for (k, (g, c)) in losses.iter().zip(&cpu_losses).enumerate() {
        let rel = (g - c).abs() / c.abs().max(1e-6);
        assert!(rel <= 1e-3, "step {k}: loss {g} (GPU, then resumed on the CPU) vs {c} (CPU): relative difference {rel:.2e}");
    }
    for ((n, a), (_, b)) in cpu.student().store.params().iter().zip(resumed.student().store.params().iter()) {
        let d = max_rel_diff(&b.to_vec_f32().unwrap(), &a.to_vec_f32().unwrap());
        assert!(d <= 1e-2, "{n}: differs by {d:.2e} between the CPU run and the GPU run resumed on the CPU");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A class-conditional run on the GPU (label embedding, labels swapped for the null one with
/// `dataset.p_uncond`, a guided preview grid with labels in turn) follows the same run on the CPU.
#[test]
fn gpu_class_conditional_trainer_follows_the_cpu() {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_class_conditional_trainer_follows_the_cpu") else { return };
    let dir = sparsedm_testkit::Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), "gpu-cond");
    let sets: Vec<String> =
        ["train.n_steps=2", "nnet.num_classes=4", "dataset.p_uncond=0.3", "sample.cfg_scale=1.5", "sample.grid=6", "sample.steps=2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let run = |device: Device, name: &str| {
        let mut t = Trainer::new(RunConfig::parse(TINY_RUN, "tiny", &sets).unwrap(), &dir.join(name), false, device).unwrap();
        let mut losses = Vec::new();
        t.run(None, |m, _| losses.push(m.loss)).unwrap();
        assert!(t.sample_grid().unwrap().is_file(), "{name}: the preview grid");
        losses
    };
    let (cpu, gpu) = (run(CPU, "cpu"), run(dev, "gpu"));
    for (k, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        let rel = (g - c).abs() / c.abs().max(1e-6);
        assert!(rel <= 1e-3, "step {k}: loss {g} (GPU) vs {c} (CPU): relative difference {rel:.2e}");
    }
}

#[test]
fn fused_updates_run_on_cpu_tensors_too() {
    // Runs everywhere. Since the backend boundary (issue 14 item 2) the fused AdamW/EMA updates
    // are backend primitives with a CPU implementation; this used to be a "CUDA tensors only" error.
    let p = randn(&[4], 1);
    let before = p.to_vec_f32().unwrap();
    let v = randn(&[4], 2);
    p.ema_update_(&v, 0.9).unwrap();
    let want: Vec<f32> = before.iter().zip(v.to_vec_f32().unwrap()).map(|(a, b)| 0.9 * a + (1.0 - 0.9) * b).collect();
    assert!(max_rel_diff(&p.to_vec_f32().unwrap(), &want) < 1e-6);
    let z = Tensor::zeros(&[4], &CPU).unwrap();
    let s = AdamWScalars::new(1e-3, (0.9, 0.999), 1e-8, 0.0, 1);
    let g = randn(&[4], 3);
    let before = p.to_vec_f32().unwrap();
    p.adamw_step_(&g, &z, &z.zeros_like().unwrap(), &s).unwrap();
    // First AdamW step without weight decay moves each weight by lr·sign(g) (up to eps).
    for ((a, b), gi) in p.to_vec_f32().unwrap().iter().zip(&before).zip(g.to_vec_f32().unwrap()) {
        assert!((b - a - 1e-3 * gi.signum()).abs() < 1e-6, "{b} -> {a} with grad {gi}");
    }
}
