//! Speed of a run config's model: one sampling forward, one dense training
//! step (forward, backward, AdamW) and one step with 2:4 SR-STE masks on
//! the `sparsedm-uvit`/`all` policy, each the mean of timed repetitions
//! after warm-up, beside PyTorch's time for the same model and batch when
//! it was measured (../shared/GPU.md §6). `sparsedm bench` and
//! `cargo xtask bench train-cpu` print these.
//!
//! On a GPU the model, its inputs, the optimizer moments and the SR-STE
//! masks all live on the device; every timed region ends with
//! [`Device::synchronize`] so queued kernels are counted, the CUDA matrix
//! products run at the precision given to [`measure_at`], and the report
//! carries the device allocator's peak footprint.

use crate::build::{self, Bundle};
use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig};
use sparsedm_layers::{NmPattern, Policy, SparseMode, apply_policy};
use sparsedm_tensor::{Device, MatmulPrecision, Rng, Tensor, matmul_precision, no_grad, set_matmul_precision};
use std::str::FromStr;
use std::time::Instant;

/// PyTorch 2.11's time for the same work, where it was measured (each
/// figure only at the batch it was taken at, hence the options).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Peer {
    /// Where and how (e.g. "PyTorch 2.11 CPU fp32, 2 threads").
    pub what: &'static str,
    pub forward_ms: Option<f64>,
    pub train_step_ms: Option<f64>,
    /// A training step with 2:4 SR-STE masks recomputed every step.
    pub train_step_srste_ms: Option<f64>,
}

/// What [`measure`] found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpeedReport {
    pub model: String,
    pub params: usize,
    pub batch: usize,
    /// Where it ran (`cpu`, `cuda:0`).
    pub device: String,
    /// Precision of the matrix products: `f32` on the CPU, the CUDA
    /// setting (`f32`, `tf32`, `bf16`) on a GPU.
    pub precision: String,
    /// The GPU allocator's peak footprint (live plus cached bytes) over the
    /// whole bench, in bytes; `None` on the CPU.
    pub peak_device_memory_bytes: Option<usize>,
    pub threads: usize,
    pub iters: usize,
    /// One forward without autograd (a sampling step), ms.
    pub forward_ms: f64,
    /// One dense training step, ms.
    pub train_step_ms: f64,
    /// One training step with 2:4 SR-STE masks recomputed every forward, ms.
    pub train_step_srste_ms: f64,
    pub peer: Option<Peer>,
}

impl SpeedReport {
    /// A few aligned lines: each time and its ratio to the peer.
    pub fn table(&self) -> String {
        let peer = |ours: f64, theirs: Option<f64>| match (theirs, self.peer) {
            (Some(t), Some(p)) => format!("   {}: {t:8.1} ms   ratio {:.2}", p.what, ours / t),
            _ => String::new(),
        };
        let place = match self.device.as_str() {
            "cpu" => format!("{} threads", self.threads),
            d => format!("{d}, {} matmuls", self.precision),
        };
        let mut s = format!(
            "{} ({:.2} M params), batch {}, {place}, mean of {} timed repetitions\n",
            self.model,
            self.params as f64 / 1e6,
            self.batch,
            self.iters
        );
        s += &format!("forward              {:8.1} ms{}\n", self.forward_ms, peer(self.forward_ms, self.peer.and_then(|p| p.forward_ms)));
        s += &format!(
            "train step, dense    {:8.1} ms{}\n",
            self.train_step_ms,
            peer(self.train_step_ms, self.peer.and_then(|p| p.train_step_ms))
        );
        s += &format!(
            "train step, SR-STE   {:8.1} ms   ({:.2}x our dense step){}",
            self.train_step_srste_ms,
            self.train_step_srste_ms / self.train_step_ms,
            peer(self.train_step_srste_ms, self.peer.and_then(|p| p.train_step_srste_ms))
        );
        if let Some(b) = self.peak_device_memory_bytes {
            s += &format!("\npeak GPU memory      {:8.1} MiB (allocator peak, live + cached, whole bench)", b as f64 / (1024.0 * 1024.0));
        }
        s
    }
}

/// PyTorch's numbers on the 2-core build machine (../shared/GPU.md §6),
/// keyed by the U-ViT constructor arguments and batch they were taken at.
fn cpu_peer(cfg: &RunConfig, batch: usize) -> Option<Peer> {
    let what = "PyTorch 2.11 CPU fp32, 2 threads";
    let peer = |forward_ms: f64, train_step_ms: f64| {
        Some(Peer { what, forward_ms: Some(forward_ms), train_step_ms: Some(train_step_ms), train_step_srste_ms: None })
    };
    match (uvit_key(cfg)?, batch) {
        ((16, 2, 128, 6, 4, 4), 64) => peer(99.0, 336.0),
        ((32, 4, 192, 8, 6, 4), 64) => peer(258.0, 773.0),
        ((32, 2, 512, 12, 8, 4), 8) => peer(1092.0, 3278.0),
        _ => None,
    }
}

/// PyTorch 2.11's numbers for U-ViT-S/2 (the `cifar10_uvit_small` model)
/// on an H200 (../shared/GPU.md §6): training steps at batch 128 (AdamW;
/// bf16 autocast, or fp32), the sampling forward at batch 500 (bf16).
/// Matched on the model, the batch and our matmul precision.
fn cuda_peer(cfg: &RunConfig, batch: usize, precision: MatmulPrecision) -> Option<Peer> {
    if uvit_key(cfg)? != (32, 2, 512, 12, 8, 4) {
        return None;
    }
    let none = Peer { what: "", forward_ms: None, train_step_ms: None, train_step_srste_ms: None };
    match (precision, batch) {
        (MatmulPrecision::Bf16, 128) => {
            Some(Peer { what: "PyTorch 2.11 H200 bf16 autocast", train_step_ms: Some(46.9), train_step_srste_ms: Some(71.9), ..none })
        }
        (MatmulPrecision::Bf16, 500) => Some(Peer { what: "PyTorch 2.11 H200 bf16 autocast", forward_ms: Some(51.0), ..none }),
        (MatmulPrecision::F32, 128) => Some(Peer { what: "PyTorch 2.11 H200 fp32", train_step_ms: Some(241.6), ..none }),
        _ => None,
    }
}

/// `(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio)` of a
/// U-ViT config: what the peers are keyed by.
fn uvit_key(cfg: &RunConfig) -> Option<(i64, i64, i64, i64, i64, i64)> {
    if cfg.arch != "uvit" {
        return None;
    }
    let get = |k: &str| cfg.nnet.get(k).and_then(|v| v.as_integer().or_else(|| v.as_float().map(|f| f as i64)));
    Some((get("img_size")?, get("patch_size")?, get("embed_dim")?, get("depth")?, get("num_heads")?, get("mlp_ratio").unwrap_or(4)))
}

/// Times the model of `cfg` at `batch` on `device` (`iters` timed
/// repetitions after two warm-ups each) with the current CUDA matmul
/// precision ([`matmul_precision`]). Random weights and inputs: speed does
/// not depend on them.
pub fn measure(cfg: &RunConfig, batch: usize, iters: usize, device: Device) -> Result<SpeedReport> {
    measure_at(cfg, batch, iters, device, matmul_precision())
}

/// [`measure`] with the CUDA matrix products at `precision` (the setting is
/// process-wide; it is restored afterwards). The CPU computes in f32 only,
/// so there any other precision is an error.
pub fn measure_at(cfg: &RunConfig, batch: usize, iters: usize, device: Device, precision: MatmulPrecision) -> Result<SpeedReport> {
    device.ensure_available()?;
    if batch == 0 || iters == 0 {
        return Err(TrainError::Config("bench: --batch and --iters must be at least 1".into()));
    }
    if device == Device::Cpu && precision != MatmulPrecision::F32 {
        return Err(TrainError::Config(format!("bench: CPU matrix products are f32 only, not {}", precision_name(precision))));
    }
    let before = matmul_precision();
    set_matmul_precision(precision);
    let report = run_measurements(cfg, batch, iters, device, precision);
    set_matmul_precision(before);
    report
}

/// `f32`, `tf32` or `bf16`.
pub fn precision_name(p: MatmulPrecision) -> &'static str {
    match p {
        MatmulPrecision::F32 => "f32",
        MatmulPrecision::Tf32 => "tf32",
        MatmulPrecision::Bf16 => "bf16",
    }
}

fn run_measurements(cfg: &RunConfig, batch: usize, iters: usize, device: Device, precision: MatmulPrecision) -> Result<SpeedReport> {
    let dense = build::new_model_on(cfg, 0, device)?;
    let shape = dense.config.input_shape();
    let mut rng = Rng::new(1);
    let x = Tensor::randn(&[batch, shape[0], shape[1], shape[2]], &mut rng, &Device::Cpu)?.to_device(&device)?;
    let forward_ms = time_forward(&dense, &x, iters)?;
    let train_step_ms = time_train(cfg, &dense, &x, iters)?;
    drop(dense);
    let sparse = build::new_model_on(cfg, 0, device)?;
    let policy = if cfg.arch == "uvit" { "sparsedm-uvit" } else { "all" };
    apply_policy(&sparse.store, &Policy::from_str(policy)?, NmPattern::new(2, 4)?, |pattern| SparseMode::SrSte { pattern, lambda: 2e-4 })?;
    let train_step_srste_ms = time_train(cfg, &sparse, &x, iters)?;
    let peer = match device {
        Device::Cpu => cpu_peer(cfg, batch),
        Device::Cuda(_) => cuda_peer(cfg, batch, precision),
    };
    Ok(SpeedReport {
        model: format!("{} {}", cfg.arch, describe_nnet(cfg)),
        params: sparse.store.num_params(),
        batch,
        device: device.to_string(),
        precision: precision_name(precision).to_string(),
        peak_device_memory_bytes: device.peak_memory_bytes()?,
        threads: rayon::current_num_threads(),
        iters,
        forward_ms,
        train_step_ms,
        train_step_srste_ms,
        peer,
    })
}

fn describe_nnet(cfg: &RunConfig) -> String {
    let keys = ["img_size", "patch_size", "embed_dim", "depth", "num_heads", "ch", "ch_mult"];
    keys.iter().filter_map(|k| cfg.nnet.get(*k).map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(" ")
}

fn time_forward(b: &Bundle, x: &Tensor, iters: usize) -> Result<f64> {
    let _g = no_grad();
    b.store.set_training(false);
    let dev = x.device();
    let t = Tensor::full(500.0, &[x.dims()[0]], &dev)?;
    for _ in 0..2 {
        b.model.predict_eps(x, &t, None)?;
    }
    dev.synchronize()?;
    let start = Instant::now();
    for _ in 0..iters {
        b.model.predict_eps(x, &t, None)?;
    }
    dev.synchronize()?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
}

fn time_train(cfg: &RunConfig, b: &Bundle, x0: &Tensor, iters: usize) -> Result<f64> {
    b.store.set_training(true);
    let o = &cfg.optimizer;
    let mut opt = AdamW::new(b.store.params(), AdamWConfig { lr: o.lr, betas: o.betas, eps: o.eps, weight_decay: o.weight_decay });
    let sched = build::schedule(cfg)?;
    let mut rng = Rng::new(2);
    let mut step = || -> Result<()> {
        let tr = sched.sample_training(x0, &mut rng)?;
        let eps = b.model.predict_eps(&tr.x_t, &tr.model_t, None)?;
        let loss = eps.sub(&tr.eps)?.sqr()?.mean_all()?;
        let g = loss.backward()?;
        opt.step(&g, o.lr)?;
        for (_, slot) in b.store.sparse_slots() {
            slot.after_optimizer_step()?;
        }
        Ok(())
    };
    let dev = x0.device();
    for _ in 0..2 {
        step()?;
    }
    dev.synchronize()?;
    let start = Instant::now();
    for _ in 0..iters {
        step()?;
    }
    dev.synchronize()?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
}
