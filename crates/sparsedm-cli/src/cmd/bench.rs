//! `sparsedm bench`: how fast this machine runs a model — one sampling
//! forward, one dense training step and one 2:4 SR-STE training step — with
//! PyTorch's time for the same model and batch beside it where it was
//! measured (the demo model at batch 64 and U-ViT-S/2 at batch 8 on a
//! 2-core CPU). Random weights: speed does not depend on them.

use super::DeviceArg;
use anyhow::Result;
use sparsedm_train::{RunConfig, speed};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
sparsedm bench\n  \
sparsedm bench --config cifar10_uvit_small --batch 8 --iters 3 --json\n\n\
Presets: cifar10_uvit_small, celeba64_uvit_small, cifar10_ddpm, cifar10_uvit_small_sparsedm_2of4, demo_shapes_uvit")]
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
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.resolve()?;
    let cfg = RunConfig::load(&a.config, &a.set)?;
    let report = speed::measure(&cfg, a.batch, a.iters, device)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.table());
    }
    Ok(())
}
