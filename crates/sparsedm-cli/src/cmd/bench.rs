//! `sparsedm bench`: how fast this machine runs a model — one sampling
//! forward, one dense training step and one 2:4 SR-STE training step — with
//! PyTorch's time for the same model and batch beside it where it was
//! measured (the demo model at batch 64 and U-ViT-S/2 at batch 8 on a
//! 2-core CPU; U-ViT-S/2 on an H200 at batch 128 for the training steps and
//! 500 for the forward). Random weights: speed does not depend on them.
//!
//! `--pattern N:M` also masks a copy of the model to N:M by magnitude (the
//! config's sparse policy, else SparseDM's U-ViT layers / every layer of a
//! UNet) and times its sampling forward on the deployed N:M kernels
//! (`nm_cpu` on the CPU, any N:M with M ≤ 32; cuSPARSELt on a GPU, 2:4 at
//! bf16 only) interleaved with the dense forward: `forward_nm_ms` beside
//! `forward_ms`.
//!
//! `--device cuda[:N]` runs everything on that GPU, with bf16 matrix
//! products unless `--precision` says otherwise, and reports the GPU's peak
//! memory.

use super::DeviceArg;
use anyhow::{Result, bail};
use sparsedm_layers::NmPattern;
use sparsedm_tensor::{Device, MatmulPrecision};
use sparsedm_train::{RunConfig, speed};

#[derive(Debug, clap::Args)]
#[command(after_help = crate::presets::help_with_presets("Examples:\n  \
sparsedm bench\n  \
sparsedm bench --config cifar10_uvit_small --batch 8 --iters 3 --json\n  \
sparsedm bench --pattern 2:4 --json\n  \
sparsedm bench --config cifar10_uvit_small --batch 8 --pattern 1:8 --forward-only\n  \
sparsedm bench --config cifar10_uvit_small --batch 128 --device cuda --precision bf16"))]
pub struct Args {
    /// A run config (TOML file) or preset whose model is timed.
    #[arg(long, default_value = "demo_shapes_uvit")]
    pub config: String,
    /// Override a config field, e.g. `--set nnet.mlp_ratio=8` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed repetitions of each measurement (after two warm-ups).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Precision of CUDA matrix products: f32, tf32 or bf16 (bf16 operands, f32 accumulation).
    /// Default: f32 on the CPU (the only choice there), bf16 on a GPU.
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<String>,
    /// Also time the sampling forward with the policy's layers masked to this N:M pattern
    /// (e.g. 2:4, 1:8) on the N:M kernels, reported as `forward_nm_ms`.
    #[arg(long, value_name = "N:M")]
    pub pattern: Option<String>,
    /// Time only the sampling forward(s), not the training steps (profiling a forward,
    /// or a quick N:M comparison); `train_step_ms` and `train_step_srste_ms` are then null.
    #[arg(long)]
    pub forward_only: bool,
}

/// Parses `--precision`.
fn parse_precision(s: &str) -> Result<MatmulPrecision> {
    Ok(match s {
        "f32" | "fp32" => MatmulPrecision::F32,
        "tf32" => MatmulPrecision::Tf32,
        "bf16" => MatmulPrecision::Bf16,
        _ => bail!("--precision {s:?}: expected f32, tf32 or bf16"),
    })
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.resolve()?;
    let precision = match (&a.precision, device) {
        (Some(p), _) => parse_precision(p)?,
        (None, Device::Cpu) => MatmulPrecision::F32,
        (None, Device::Cuda(_)) => MatmulPrecision::Bf16,
    };
    if device == Device::Cpu && precision != MatmulPrecision::F32 {
        bail!("--precision {}: CPU matrix products are f32 only (tf32 and bf16 need --device cuda)", speed::precision_name(precision));
    }
    let pattern = match &a.pattern {
        Some(p) => Some(p.parse::<NmPattern>().map_err(|e| anyhow::anyhow!("--pattern {p:?}: {e}"))?),
        None => None,
    };
    let cfg = RunConfig::load(&a.config, &a.set)?;
    a.device.announce();
    let mut report = speed::measure_nm(&cfg, a.batch, a.iters, device, precision, pattern, !a.forward_only)?;
    if super::is_simulated(device) {
        // The simulator's times are the CPU's: labelled as such, with no GPU peer beside them.
        report.device = format!("{} ({}: times are the CPU's, not a GPU's)", report.device, sparsedm_kernels::sim::DEVICE_NAME);
        report.peer = None;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.table());
    }
    Ok(())
}
