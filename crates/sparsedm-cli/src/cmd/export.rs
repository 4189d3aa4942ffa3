//! `sparsedm export`: a model as a deployment file.
//!
//! - `--format onnx`: its ε-prediction as an ONNX graph (opset 17; inputs
//!   `x`, `timesteps`, and `y` for class-conditional models; output `eps`;
//!   dynamic batch) with its weights as the forward uses them, N:M zeros in
//!   place, for TensorRT: `trtexec --onnx=model.onnx --sparsity=enable --fp16`.
//! - `--format safetensors`: the model checkpoint (the weights as `sample`
//!   uses them; in the metadata the run config when there is one, else the
//!   model's arch and constructor arguments, so readers need no
//!   `--arch/--config`). For a
//!   sparse model — a sparse run's training checkpoint, a sparse export or a
//!   `prune` output — a sparse checkpoint: deployed (masked) weights plus
//!   the sparsity spec; with `--compressed [exact|f32|f16]` its N:M layers are
//!   stored as kept values + packed positions and the size ratio is printed
//!   (what `prune --compressed` writes, so every reader takes it). This is
//!   how a training run's result becomes a compressed deployment file.
//!
//! The model comes from a checkpoint as `sparsedm sample` reads it (a run's
//! EMA weights by default, an exported or pruned model, or official weights
//! with `--arch` and `--config`).

use super::prune::{CompressedValues, compressed_line};
use anyhow::{Context, Result, bail};
use sparsedm_diffusion::Arch;
use sparsedm_diffusion::onnx::export_onnx;
use sparsedm_layers::{sparse_state_dict, write_compressed_sparse_checkpoint, write_sparse_checkpoint};
use sparsedm_train::checkpoint::{META_CONFIG, META_KIND};
use sparsedm_train::restore::{Restored, restore};
use std::collections::HashMap;
use std::path::PathBuf;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The ε-prediction graph, for TensorRT and ONNX runtimes.
    Onnx,
    /// The model checkpoint; a sparse model's as a (optionally compressed) sparse checkpoint.
    Safetensors,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sparsedm export --checkpoint demo-output/sparsedm.safetensors --format onnx --out model.onnx\n  \
sparsedm export --weights nnet_ema.pth --arch uvit --config uvit_s2.json --format onnx --out model.onnx\n  \
sparsedm export --checkpoint runs/sparsedm_2of4/checkpoints/step_00500000.safetensors --format safetensors --compressed f16 --out model.safetensors\n  \
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
    /// Architecture of a checkpoint that does not describe its model (official weights).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Model constructor arguments (JSON) for --arch.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// safetensors of a sparse model: store its N:M layers compressed (kept values + packed
    /// positions), values exact (the default: f16 for a checkpoint stored all in f16, else f32),
    /// f32, or f16 (every tensor, lossy); the size ratio is printed.
    #[arg(long, value_enum, value_name = "DTYPE", num_args = 0..=1, default_missing_value = "exact")]
    pub compressed: Option<CompressedValues>,
}

pub fn run(a: Args) -> Result<()> {
    if a.compressed.is_some() && a.format != Format::Safetensors {
        bail!("--compressed applies to --format safetensors (a compressed N:M checkpoint), not to --format onnx");
    }
    crate::output::check_file("--out", &a.out, a.force, &[&a.checkpoint])?;
    crate::model_source::checkpoint_file("--checkpoint", &a.checkpoint)?;
    crate::model_source::check_raw(&a.checkpoint, a.raw)?;
    let external = crate::model_source::model_source(&a.checkpoint, a.arch, a.config.as_deref(), None)?;
    let r = restore(&a.checkpoint, !a.raw, external.as_ref())?;
    match a.format {
        Format::Onnx => write_onnx(&a, &r),
        Format::Safetensors => write_model(&a, &r),
    }
}

fn write_onnx(a: &Args, r: &Restored) -> Result<()> {
    let bytes = export_onnx(&r.bundle.config, &r.bundle.store).with_context(|| format!("exporting {}", a.checkpoint.display()))?;
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

/// The model checkpoint: the state dict with deployed weights and, for a
/// sparse model, its spec (compressed with `--compressed`); the run config
/// and the source in the metadata.
fn write_model(a: &Args, r: &Restored) -> Result<()> {
    let store = &r.bundle.store;
    let mut meta = HashMap::new();
    if let Some(run) = &r.run {
        meta.insert(META_CONFIG.to_string(), run.to_toml()?);
    }
    // Official weights have no run config: the file records their model.
    crate::model_source::record_model(&mut meta, &r.bundle.config);
    meta.insert(META_KIND.to_string(), "model".to_string());
    meta.insert("sparsedm.export.source".to_string(), a.checkpoint.display().to_string());
    let (tensors, spec) = sparse_state_dict(store)?;
    if spec.layers.is_empty() {
        if a.compressed.is_some() {
            bail!(
                "{} has no N:M layers: --compressed stores a sparse model's N:M layers compressed (export it without --compressed)",
                a.checkpoint.display()
            );
        }
        sparsedm_tensor::save_safetensors(&a.out, &tensors, Some(meta))?;
        println!("wrote {} ({} bytes): the dense model", a.out.display(), std::fs::metadata(&a.out)?.len());
        return Ok(());
    }
    let mut patterns: Vec<&str> = spec.layers.values().map(|l| l.pattern.as_str()).collect();
    patterns.sort();
    patterns.dedup();
    let report = match a.compressed {
        None => {
            write_sparse_checkpoint(&a.out, &tensors, &spec, Some(meta))?;
            None
        }
        Some(values) => {
            // The model holds f32 whatever the file stored: "exact" follows the file (an f16
            // release, or an f16-compressed export, stays f16 rather than doubling to f32).
            let dtype = match values {
                CompressedValues::Exact if super::prune::all_f16(&sparsedm_tensor::load_weights(&a.checkpoint, None)?) => {
                    sparsedm_tensor::nm_cpu::NmValueDtype::F16
                }
                v => v.dtype(&tensors),
            };
            Some(write_compressed_sparse_checkpoint(&a.out, &tensors, &spec, Some(meta), dtype)?)
        }
    };
    println!(
        "wrote {} ({} bytes): a sparse checkpoint, {} N:M layers ({})",
        a.out.display(),
        std::fs::metadata(&a.out)?.len(),
        spec.layers.len(),
        patterns.join(", ")
    );
    if let Some(c) = report {
        println!("{}", compressed_line(&c));
    }
    Ok(())
}
