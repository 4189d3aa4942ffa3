//! `sparsedm export --format onnx`: a model's ε-prediction as an ONNX graph
//! (opset 17; inputs `x`, `timesteps`, and `y` for class-conditional
//! models; output `eps`; dynamic batch) with its weights as the forward uses
//! them, N:M zeros in place, for TensorRT:
//! `trtexec --onnx=model.onnx --sparsity=enable --fp16`.
//! The model comes from a checkpoint as `sparsedm sample` reads it (a run's
//! EMA weights by default, an exported model, or official weights with
//! `--arch` and `--config`).

use anyhow::{Context, Result, bail};
use sparsedm_diffusion::Arch;
use sparsedm_diffusion::onnx::export_onnx;
use sparsedm_train::restore::{ExternalModel, restore};
use std::path::PathBuf;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Onnx,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sparsedm export --checkpoint demo-output/sparsedm.safetensors --format onnx --out model.onnx\n  \
sparsedm export --weights nnet_ema.pth --arch uvit --config uvit_s2.json --format onnx --out model.onnx\n  \
trtexec --onnx=model.onnx --sparsity=enable --fp16")]
pub struct Args {
    /// The checkpoint (a run's, an exported model, or official weights with --arch/--config; .pth accepted).
    #[arg(long, visible_alias = "weights")]
    pub checkpoint: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "onnx")]
    pub format: Format,
    /// Where to write the model.
    #[arg(long)]
    pub out: PathBuf,
    /// Export the raw (non-EMA) weights of a training checkpoint.
    #[arg(long)]
    pub raw: bool,
    /// Architecture of a checkpoint without a run config.
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Model constructor arguments (JSON) for --arch.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.out.exists() && !a.force {
        bail!("{} exists; give --force to overwrite it", a.out.display());
    }
    let external = match (&a.arch, &a.config) {
        (Some(arch), Some(cfg)) => {
            let text = std::fs::read_to_string(cfg).with_context(|| format!("reading {}", cfg.display()))?;
            let config: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", cfg.display()))?;
            Some(ExternalModel { arch: *arch, config, schedule: None })
        }
        (Some(_), None) | (None, Some(_)) => bail!("--arch and --config go together"),
        _ => None,
    };
    let r = restore(&a.checkpoint, !a.raw, external.as_ref())?;
    let bytes = match a.format {
        Format::Onnx => export_onnx(&r.bundle.config, &r.bundle.store).with_context(|| format!("exporting {}", a.checkpoint.display()))?,
    };
    sparsedm_tensor::write_atomic(&a.out, &bytes)?;
    let y = if r.bundle.config.num_classes().is_some() { ", y (i64 [B])" } else { "" };
    println!(
        "wrote {} ({} bytes, ONNX opset {}): inputs x (f32 [B, {}]), timesteps (f32 [B]){y}; output eps",
        a.out.display(),
        bytes.len(),
        sparsedm_diffusion::onnx::OPSET,
        r.bundle.config.input_shape().map(|d| d.to_string()).join(", ")
    );
    Ok(())
}
