//! Speed of a run config's model: one sampling forward, one dense training
//! step (forward, backward, AdamW) and one step with 2:4 SR-STE masks on
//! the `sparsedm-uvit`/`all` policy, each the mean of timed repetitions
//! after warm-up, beside PyTorch's time for the same model and batch when
//! it was measured (../shared/GPU.md §6). `sparsedm bench` and
//! `cargo xtask bench train-cpu` print these.

use crate::build::{self, Bundle};
use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig};
use sparsedm_layers::{NmPattern, Policy, SparseMode, apply_policy};
use sparsedm_tensor::{Device, Rng, Tensor, no_grad};
use std::str::FromStr;
use std::time::Instant;

/// PyTorch 2.11's time for the same work, where it was measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Peer {
    /// Where and how (e.g. "PyTorch 2.11 CPU fp32, 2 threads").
    pub what: &'static str,
    pub forward_ms: f64,
    pub train_step_ms: f64,
}

/// What [`measure`] found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpeedReport {
    pub model: String,
    pub params: usize,
    pub batch: usize,
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
        let mut s = format!(
            "{} ({:.2} M params), batch {}, {} threads, mean of {} timed repetitions\n",
            self.model,
            self.params as f64 / 1e6,
            self.batch,
            self.threads,
            self.iters
        );
        s += &format!("forward              {:8.1} ms{}\n", self.forward_ms, peer(self.forward_ms, self.peer.map(|p| p.forward_ms)));
        s += &format!(
            "train step, dense    {:8.1} ms{}\n",
            self.train_step_ms,
            peer(self.train_step_ms, self.peer.map(|p| p.train_step_ms))
        );
        s += &format!(
            "train step, SR-STE   {:8.1} ms   ({:.2}x our dense step)",
            self.train_step_srste_ms,
            self.train_step_srste_ms / self.train_step_ms
        );
        s
    }
}

/// PyTorch's numbers on the 2-core build machine (../shared/GPU.md §6),
/// keyed by the U-ViT constructor arguments and batch they were taken at.
fn cpu_peer(cfg: &RunConfig, batch: usize) -> Option<Peer> {
    if cfg.arch != "uvit" {
        return None;
    }
    let get = |k: &str| cfg.nnet.get(k).and_then(|v| v.as_integer().or_else(|| v.as_float().map(|f| f as i64)));
    let key =
        (get("img_size")?, get("patch_size")?, get("embed_dim")?, get("depth")?, get("num_heads")?, get("mlp_ratio").unwrap_or(4), batch);
    let what = "PyTorch 2.11 CPU fp32, 2 threads";
    match key {
        (16, 2, 128, 6, 4, 4, 64) => Some(Peer { what, forward_ms: 99.0, train_step_ms: 336.0 }),
        (32, 4, 192, 8, 6, 4, 64) => Some(Peer { what, forward_ms: 258.0, train_step_ms: 773.0 }),
        (32, 2, 512, 12, 8, 4, 8) => Some(Peer { what, forward_ms: 1092.0, train_step_ms: 3278.0 }),
        _ => None,
    }
}

/// Times the model of `cfg` at `batch` on `device` (`iters` timed
/// repetitions after two warm-ups each). Random weights and inputs: speed
/// does not depend on them.
pub fn measure(cfg: &RunConfig, batch: usize, iters: usize, device: Device) -> Result<SpeedReport> {
    device.ensure_available()?;
    if batch == 0 || iters == 0 {
        return Err(TrainError::Config("bench: --batch and --iters must be at least 1".into()));
    }
    let dense = build::new_model(cfg, 0)?;
    let shape = dense.config.input_shape();
    let mut rng = Rng::new(1);
    let x = Tensor::randn(&[batch, shape[0], shape[1], shape[2]], &mut rng, &Device::Cpu)?;
    let forward_ms = time_forward(&dense, &x, iters)?;
    let train_step_ms = time_train(cfg, &dense, &x, iters)?;
    drop(dense);
    let sparse = build::new_model(cfg, 0)?;
    let policy = if cfg.arch == "uvit" { "sparsedm-uvit" } else { "all" };
    apply_policy(&sparse.store, &Policy::from_str(policy)?, NmPattern::new(2, 4)?, |pattern| SparseMode::SrSte { pattern, lambda: 2e-4 })?;
    let train_step_srste_ms = time_train(cfg, &sparse, &x, iters)?;
    Ok(SpeedReport {
        model: format!("{} {}", cfg.arch, describe_nnet(cfg)),
        params: sparse.store.num_params(),
        batch,
        threads: rayon::current_num_threads(),
        iters,
        forward_ms,
        train_step_ms,
        train_step_srste_ms,
        peer: cpu_peer(cfg, batch).filter(|_| matches!(device, Device::Cpu)),
    })
}

fn describe_nnet(cfg: &RunConfig) -> String {
    let keys = ["img_size", "patch_size", "embed_dim", "depth", "num_heads", "ch", "ch_mult"];
    keys.iter().filter_map(|k| cfg.nnet.get(*k).map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(" ")
}

fn time_forward(b: &Bundle, x: &Tensor, iters: usize) -> Result<f64> {
    let _g = no_grad();
    b.store.set_training(false);
    let t = Tensor::full(500.0, &[x.dims()[0]], &Device::Cpu)?;
    for _ in 0..2 {
        b.model.predict_eps(x, &t, None)?;
    }
    let start = Instant::now();
    for _ in 0..iters {
        b.model.predict_eps(x, &t, None)?;
    }
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
    for _ in 0..2 {
        step()?;
    }
    let start = Instant::now();
    for _ in 0..iters {
        step()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
}
