//! Speed of a run config's model: one sampling forward, one dense training
//! step and one step with 2:4 SR-STE masks on the `sparsedm-uvit`/`all`
//! policy, each the mean of timed repetitions after warm-up, beside
//! PyTorch's time for the same model and batch when it was measured
//! (../shared/GPU.md §6). `sparsedm bench` and `cargo xtask bench
//! train-cpu` print these.
//!
//! The training steps timed are the trainer's own ([`TrainStep::run`]:
//! forward, backward, gradient norm, AdamW, the sparse layers' step and
//! the EMA update), built from the config with random weights, no teacher
//! and one micro-batch, on a synthetic batch: there is no second training
//! loop to drift from the real one.
//!
//! With an N:M pattern ([`measure_nm`], `sparsedm bench --pattern N:M`)
//! a second copy of the model (same random weights) is masked to N:M by
//! magnitude on the config's policy (SparseDM's U-ViT layers by default)
//! and its sampling forward, which runs the deployed N:M kernels
//! (`sparsedm-layers`' `nn/deployed.rs`: `nm_cpu` on the CPU, cuSPARSELt
//! 2:4 on a GPU), is timed interleaved with the dense one, repetition by
//! repetition, so both see the same machine load: `forward_nm_ms` beside
//! `forward_ms`.
//!
//! On a GPU the model, its inputs, the optimizer moments, the EMA and the
//! SR-STE masks all live on the device; every timed region ends with
//! [`Device::synchronize`] so queued kernels are counted, the CUDA matrix
//! products run at the precision given to [`measure_at`], and the report
//! carries the device allocator's peak footprint.

use crate::build::Bundle;
use crate::config::{RunConfig, SparseConfig};
use crate::data::Batch;
use crate::error::{Result, TrainError};
use crate::step::TrainStep;
use crate::vocab::{SparseMethod, Teacher};
use sparsedm_layers::deployed::deployed_time;
use sparsedm_layers::{NmPattern, SparseMode, apply_policy};
use sparsedm_tensor::nm_cpu::{NmPath, force_path, forced_path, layer_calls};
use sparsedm_tensor::{Device, MatmulPrecision, Rng, Tensor, matmul_precision, no_grad, set_matmul_precision};
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
    /// The N:M pattern of the N:M forward (`--pattern`), if measured.
    pub pattern: Option<String>,
    /// The same forward with the model's policy layers masked to `pattern`
    /// and run by the deployed N:M kernels, ms (timed interleaved with
    /// `forward_ms`).
    pub forward_nm_ms: Option<f64>,
    /// Layers deployed on N:M kernels in that forward (the others: dense).
    pub nm_layers: Option<usize>,
    /// CPU: how many of those layers the N:M kernels ran, per forward; the
    /// others chose the dense GEMM on their masked weight, faster at their
    /// shape (timed once per shape, `sparsedm_tensor::nm_cpu`), so the N:M
    /// forward is never slower than the dense one beyond timing noise.
    pub nm_layers_on_kernels: Option<usize>,
    /// CPU: time per N:M forward spent inside those layers, ms (the rest is
    /// attention, norms, activations and the dense layers).
    pub nm_layers_ms: Option<f64>,
    /// CPU: the same layers on the same masked weights forced to the dense
    /// GEMM, ms per forward: the layers' own speed-up is
    /// `nm_layers_dense_ms / nm_layers_ms`.
    pub nm_layers_dense_ms: Option<f64>,
    /// One dense training step, ms (`None` with `--forward-only`).
    pub train_step_ms: Option<f64>,
    /// One training step with 2:4 SR-STE masks recomputed every forward, ms
    /// (`None` with `--forward-only`).
    pub train_step_srste_ms: Option<f64>,
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
            "cpu" => format!("{} thread{}", self.threads, if self.threads == 1 { "" } else { "s" }),
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
        if let (Some(p), Some(nm)) = (&self.pattern, self.forward_nm_ms) {
            let layers = self.nm_layers.unwrap_or(0);
            let on = match self.nm_layers_on_kernels {
                Some(k) if k < layers => {
                    format!("{layers} layers N:M, {k} run by the N:M kernels, {} by the dense GEMM (faster at their shapes)", layers - k)
                }
                _ => format!("{layers} layers on N:M kernels"),
            };
            let speedup = self.forward_ms / nm;
            // Below 1 it is no speed-up: say "slower" rather than "0.97x faster".
            let vs = if speedup >= 1.0 {
                format!("{speedup:.2}x faster than our dense forward")
            } else {
                format!("{:.2}x slower than our dense forward", 1.0 / speedup)
            };
            s += &format!("forward, {p:<11} {nm:8.1} ms   ({vs}; {on})\n");
        }
        if let (Some(l), Some(d)) = (self.nm_layers_ms, self.nm_layers_dense_ms) {
            s += &format!("  of which N:M layers {l:8.1} ms   (the same layers on the dense GEMM: {d:.1} ms, {:.2}x)\n", d / l);
        }
        if let (Some(dense), Some(srste)) = (self.train_step_ms, self.train_step_srste_ms) {
            s += &format!("train step, dense    {dense:8.1} ms{}\n", peer(dense, self.peer.and_then(|p| p.train_step_ms)));
            s += &format!(
                "train step, SR-STE   {srste:8.1} ms   ({:.2}x our dense step){}\n",
                srste / dense,
                peer(srste, self.peer.and_then(|p| p.train_step_srste_ms))
            );
        }
        s.truncate(s.trim_end().len());
        if let Some(b) = self.peak_device_memory_bytes {
            s += &format!("\npeak GPU memory      {:8.1} MiB (allocator peak, live + cached, whole bench)", b as f64 / (1024.0 * 1024.0));
        }
        s
    }
}

/// PyTorch's numbers on the 2-core build machine (../shared/GPU.md §6),
/// keyed by the U-ViT constructor arguments and batch they were taken at.
fn cpu_peer(cfg: &RunConfig, batch: usize) -> Option<Peer> {
    // A reference measurement, not this run: for a peer timed beside us now, `cargo xtask bench vs-torch`.
    let what = "reference: PyTorch 2.11 CPU fp32, 2 threads, 2-core build machine, 2026 (GPU.md §6; not this run)";
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
        (MatmulPrecision::Bf16, 128) => Some(Peer {
            what: "reference: PyTorch 2.11 H200 bf16 autocast, 2026 (GPU.md §6)",
            train_step_ms: Some(46.9),
            train_step_srste_ms: Some(71.9),
            ..none
        }),
        (MatmulPrecision::Bf16, 500) => {
            Some(Peer { what: "reference: PyTorch 2.11 H200 bf16 autocast, 2026 (GPU.md §6)", forward_ms: Some(51.0), ..none })
        }
        (MatmulPrecision::F32, 128) => {
            Some(Peer { what: "reference: PyTorch 2.11 H200 fp32, 2026 (GPU.md §6)", train_step_ms: Some(241.6), ..none })
        }
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
    measure_nm(cfg, batch, iters, device, precision, None, true)
}

/// [`measure_at`], and with `pattern` the N:M sampling forward beside the
/// dense one (see the module docs). On a GPU only 2:4 at bf16 precision has
/// an N:M kernel (cuSPARSELt); anything else is an error, not a dense time
/// reported as N:M. Without `train` only the sampling forwards are timed
/// (the training-step fields are then `None`).
pub fn measure_nm(
    cfg: &RunConfig,
    batch: usize,
    iters: usize,
    device: Device,
    precision: MatmulPrecision,
    pattern: Option<NmPattern>,
    train: bool,
) -> Result<SpeedReport> {
    device.ensure_available()?;
    if let (Some(p), Device::Cuda(_)) = (pattern, device) {
        if p != NmPattern::TWO_FOUR {
            return Err(TrainError::Config(format!(
                "bench: --pattern {p} on {device}: GPUs run N:M only as 2:4 (cuSPARSELt); other patterns run on the CPU"
            )));
        }
        if precision != MatmulPrecision::Bf16 {
            return Err(TrainError::Config(format!(
                "bench: --pattern 2:4 on {device} needs bf16 matrix products (cuSPARSELt has no f32 2:4 mode), not {}",
                precision_name(precision)
            )));
        }
    }
    if batch == 0 || iters == 0 {
        return Err(TrainError::Config("bench: --batch and --iters must be at least 1".into()));
    }
    if device == Device::Cpu && precision != MatmulPrecision::F32 {
        return Err(TrainError::Config(format!("bench: CPU matrix products are f32 only, not {}", precision_name(precision))));
    }
    let before = matmul_precision();
    set_matmul_precision(precision);
    let report = run_measurements(cfg, batch, iters, device, precision, pattern, train);
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

fn run_measurements(
    cfg: &RunConfig,
    batch: usize,
    iters: usize,
    device: Device,
    precision: MatmulPrecision,
    pattern: Option<NmPattern>,
    train: bool,
) -> Result<SpeedReport> {
    let dense = bench_step(cfg, batch, false, device)?;
    let shape = dense.student().config.input_shape();
    let mut rng = Rng::new(1);
    let x = Tensor::randn(&[batch, shape[0], shape[1], shape[2]], &mut rng, &Device::Cpu)?.to_device(&device)?;
    let mut nm = NmTimes::default();
    let forward_ms = match pattern {
        None => time_forward(dense.student(), &x, iters)?,
        Some(p) => {
            let model = nm_model(cfg, batch, device, p)?;
            // The deployed kinds are known once a forward has built them
            // (after the pair's warm-ups).
            let deployed =
                || model.store.sparse_slots().iter().filter(|(_, s)| matches!(s.deployed_kind(), Some(k) if k != "dense")).count();
            let on_cpu = device == Device::Cpu;
            let pair = time_forward_pair(dense.student(), &model, &x, iters, &|| on_cpu && deployed() > 0)?;
            let layers = deployed();
            nm.layers = Some(layers);
            nm.forward_ms = Some(pair.b_ms);
            if layers == 0 {
                let why = match device {
                    Device::Cpu => format!("no masked layer has an input dimension that is a multiple of {}", p.m()),
                    Device::Cuda(_) => "cuSPARSELt's 2:4 needs bf16 matmuls and weights with at most 2 of every 4 kept".to_string(),
                };
                eprintln!("sparsedm: no layer runs on N:M kernels at {p} on {device} ({why}): `forward_nm_ms` is the masked dense forward");
            } else if on_cpu {
                nm.layers_ms = Some(pair.b_layers_ms);
                nm.layers_dense_ms = pair.b_layers_dense_ms;
                nm.on_kernels = Some(pair.b_on_kernels);
            }
            pair.a_ms
        }
    };
    let params = dense.student().store.num_params();
    let (train_step_ms, train_step_srste_ms) = if train {
        let dense_ms = time_train(dense, &x, iters)?;
        (Some(dense_ms), Some(time_train(bench_step(cfg, batch, true, device)?, &x, iters)?))
    } else {
        (None, None)
    };
    let peer = match device {
        // The reference was taken with 2 threads: at other thread counts it is no comparison.
        Device::Cpu if rayon::current_num_threads() == 2 => cpu_peer(cfg, batch),
        Device::Cpu => None,
        Device::Cuda(_) => cuda_peer(cfg, batch, precision),
    };
    Ok(SpeedReport {
        model: format!("{} {}", cfg.arch, describe_nnet(cfg)),
        params,
        batch,
        device: device.to_string(),
        precision: precision_name(precision).to_string(),
        peak_device_memory_bytes: device.peak_memory_bytes()?,
        threads: rayon::current_num_threads(),
        iters,
        forward_ms,
        pattern: pattern.map(|p| p.to_string()),
        forward_nm_ms: nm.forward_ms,
        nm_layers: nm.layers,
        nm_layers_on_kernels: nm.on_kernels,
        nm_layers_ms: nm.layers_ms,
        nm_layers_dense_ms: nm.layers_dense_ms,
        train_step_ms,
        train_step_srste_ms,
        peer,
    })
}

/// The training step `bench` times: the trainer's [`TrainStep`] of
/// [`bench_config`], dense or with [`srste_2of4`], on `device`.
pub fn bench_step(cfg: &RunConfig, batch: usize, srste: bool, device: Device) -> Result<TrainStep> {
    let sparse = srste.then(|| srste_2of4(cfg));
    TrainStep::new(&bench_config(cfg, batch, sparse), device, None)
}

/// `cfg`'s run reduced to what speed depends on: random weights (no
/// `train.init`), batch `batch` in one micro-batch, and `sparse` in place
/// of the config's own sparse section (whose teacher would need files).
pub fn bench_config(cfg: &RunConfig, batch: usize, sparse: Option<SparseConfig>) -> RunConfig {
    let mut c = cfg.clone();
    c.seed = 0;
    c.train.init = None;
    c.train.batch_size = batch;
    c.train.grad_accum = 1;
    c.sparse = sparse;
    c
}

/// The paper's 2:4 SR-STE (λ = 2e-4) without a teacher, on SparseDM's
/// U-ViT layers for a U-ViT and on every layer otherwise.
pub fn srste_2of4(cfg: &RunConfig) -> SparseConfig {
    SparseConfig {
        policy: crate::config::paper_policy(&cfg.arch),
        teacher: Teacher::None,
        w_kt: 0.0,
        ..SparseConfig::new(NmPattern::TWO_FOUR, SparseMethod::SrSte)
    }
}

/// The bench's model (the same random weights as the dense one: same
/// config, same seed) on `device`, masked to `pattern` by magnitude on the
/// config's sparse policy (else SparseDM's U-ViT layers for a U-ViT, every
/// layer otherwise), in evaluation mode.
pub fn nm_model(cfg: &RunConfig, batch: usize, device: Device, pattern: NmPattern) -> Result<Bundle> {
    let c = bench_config(cfg, batch, None);
    let b = crate::build::new_model_on(&c, c.seed, device)?;
    let policy = match &cfg.sparse {
        Some(s) => s.policy.clone(),
        None => srste_2of4(cfg).policy,
    };
    let report = apply_policy(&b.store, &policy, pattern, SparseMode::srste)?;
    crate::validate::ensure_some_layer_masked(
        &report,
        "--pattern",
        &pattern.to_string(),
        &policy.to_string(),
        "the N:M forward would be the dense one",
    )?;
    b.store.set_training(false);
    Ok(b)
}

/// The N:M part of a report.
#[derive(Debug, Default)]
struct NmTimes {
    forward_ms: Option<f64>,
    layers: Option<usize>,
    on_kernels: Option<usize>,
    layers_ms: Option<f64>,
    layers_dense_ms: Option<f64>,
}

/// What [`time_forward_pair`] measured, ms per forward.
struct PairTimes {
    a_ms: f64,
    b_ms: f64,
    /// Time of `b`'s forward spent in its deployed layers.
    b_layers_ms: f64,
    /// The same layers forced to the dense GEMM on their masked weights,
    /// when asked for (CPU).
    b_layers_dense_ms: Option<f64>,
    /// Layers of `b`'s forward that the CPU's N:M kernels ran.
    b_on_kernels: usize,
}

/// Restores the path forced before (`SPARSEDM_NM_PATH`, else none) when
/// dropped, also on an error.
struct Unforce(Option<NmPath>);
impl Drop for Unforce {
    fn drop(&mut self) {
        force_path(self.0);
    }
}

/// Mean forward times of `a` and `b` on `x`, timed alternately (one
/// forward of each per repetition, after two warm-ups of each, the first
/// of which builds `b`'s compressed weights and times its kernel choices),
/// the time per forward of `b` spent in its deployed layers, and how many
/// of those layers a forward of `b` ran on the CPU's N:M kernels. When
/// `forced_dense()` holds after the warm-ups, each repetition also runs
/// `b` with every N:M layer forced to the dense GEMM on its masked weight
/// (CPU), for the same layers' dense time under the same conditions (a
/// separate loop after the pairs ran with warmer caches and read ~5 %
/// faster: 31:32 layers that all chose the dense GEMM showed 0.91-0.95x).
fn time_forward_pair(a: &Bundle, b: &Bundle, x: &Tensor, iters: usize, forced_dense: &dyn Fn() -> bool) -> Result<PairTimes> {
    let _g = no_grad();
    a.store.set_training(false);
    b.store.set_training(false);
    let dev = x.device();
    let t = Tensor::full(500.0, &[x.dims()[0]], &dev)?;
    let y = bench_labels(&a.config, x)?;
    let y = y.as_ref();
    for _ in 0..2 {
        a.model.predict_eps(x, &t, y)?;
        b.model.predict_eps(x, &t, y)?;
    }
    let forced_dense = forced_dense();
    let mut total = [0f64; 2];
    let mut layers = [0f64; 2];
    let mut on_kernels = 0;
    for _ in 0..iters {
        for (i, m) in [a, b].into_iter().enumerate() {
            dev.synchronize()?;
            let (in_layers, calls) = (deployed_time(), layer_calls().sparse);
            let start = Instant::now();
            m.model.predict_eps(x, &t, y)?;
            dev.synchronize()?;
            total[i] += start.elapsed().as_secs_f64();
            if i == 1 {
                layers[0] += (deployed_time() - in_layers).as_secs_f64();
                on_kernels += layer_calls().sparse - calls;
            }
        }
        if forced_dense {
            let _unforce = Unforce(forced_path());
            force_path(Some(NmPath::Dense));
            let in_layers = deployed_time();
            b.model.predict_eps(x, &t, y)?;
            layers[1] += (deployed_time() - in_layers).as_secs_f64();
        }
    }
    let per = |s: f64| s * 1e3 / iters as f64;
    Ok(PairTimes {
        a_ms: per(total[0]),
        b_ms: per(total[1]),
        b_layers_ms: per(layers[0]),
        b_layers_dense_ms: forced_dense.then(|| per(layers[1])),
        b_on_kernels: on_kernels as usize / iters.max(1),
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
    let y = bench_labels(&b.config, x)?;
    for _ in 0..2 {
        b.model.predict_eps(x, &t, y.as_ref())?;
    }
    dev.synchronize()?;
    let start = Instant::now();
    for _ in 0..iters {
        b.model.predict_eps(x, &t, y.as_ref())?;
    }
    dev.synchronize()?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
}

/// Label 0 for every image of `x` when the model is class-conditional (a label costs the same
/// whatever its value), else none.
fn bench_labels(config: &sparsedm_diffusion::ModelConfig, x: &Tensor) -> Result<Option<Tensor>> {
    labels_on(config, x.dims()[0], &x.device())
}

fn labels_on(config: &sparsedm_diffusion::ModelConfig, b: usize, device: &Device) -> Result<Option<Tensor>> {
    Ok(match config.num_classes() {
        Some(_) => Some(Tensor::from_vec_i64(vec![0; b], &[b], device)?),
        None => None,
    })
}

/// The mean time of [`TrainStep::run`] on the batch `x0` (label 0 for a class-conditional model).
fn time_train(mut step: TrainStep, x0: &Tensor, iters: usize) -> Result<f64> {
    let labels = labels_on(&step.student().config, x0.dims()[0], &Device::Cpu)?;
    let batch = Batch { images: x0.clone(), labels, step: 0 };
    let dev = x0.device();
    for _ in 0..2 {
        step.run(&batch)?;
    }
    dev.synchronize()?;
    let start = Instant::now();
    for _ in 0..iters {
        step.run(&batch)?;
    }
    dev.synchronize()?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(forward_ms: f64, forward_nm_ms: f64) -> SpeedReport {
        SpeedReport {
            model: "m".into(),
            params: 1,
            batch: 1,
            device: "cpu".into(),
            precision: "f32".into(),
            peak_device_memory_bytes: None,
            threads: 2,
            iters: 1,
            forward_ms,
            pattern: Some("2:4".into()),
            forward_nm_ms: Some(forward_nm_ms),
            nm_layers: Some(4),
            nm_layers_on_kernels: Some(4),
            nm_layers_ms: None,
            nm_layers_dense_ms: None,
            train_step_ms: None,
            train_step_srste_ms: None,
            peer: None,
        }
    }

    /// The N:M line says "faster" only for a speed-up; an N:M forward that is slower says so
    /// (it read "0.80x faster").
    #[test]
    fn the_nm_line_says_faster_or_slower() {
        assert!(report(100.0, 50.0).table().contains("(2.00x faster than our dense forward; 4 layers on N:M kernels)"));
        assert!(report(100.0, 125.0).table().contains("(1.25x slower than our dense forward; 4 layers on N:M kernels)"));
    }
}
