//! `sparsedm inspect`: what a checkpoint holds — every tensor's name, dtype
//! and shape, the sparsity of each weight, and for weights that look N:M
//! sparse whether every group really satisfies the pattern.

use anyhow::{Context, Result};
use sparsedm_layers::{NmPattern, NonDivisible, WeightLayout, check_nm, sparsity};
use sparsedm_tensor::load_weights;
use std::path::PathBuf;

/// Patterns tried, densest first, when no pattern is given.
const CANDIDATES: [&str; 9] = ["31:32", "15:16", "7:8", "3:4", "2:4", "1:4", "1:8", "1:16", "1:32"];

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sparsedm inspect demo-output/sparsedm.safetensors   (after `sparsedm demo`: its masked layers are checked against the stored spec)\n  sparsedm inspect model.safetensors --pattern 2:4"
)]
pub struct Args {
    /// The checkpoint: safetensors or a PyTorch .pth/.pt/.ckpt.
    pub checkpoint: PathBuf,
    /// The key of the state dict inside a PyTorch checkpoint (e.g. state_dict; nested: a/b). Default: the only dict of tensors.
    #[arg(long)]
    pub key: Option<String>,
    /// Check every 2-D/4-D weight against this N:M pattern (otherwise the
    /// sparsest pattern each sparse weight satisfies is reported).
    #[arg(long)]
    pub pattern: Option<NmPattern>,
}

pub fn run(args: Args) -> Result<()> {
    let tensors = load_weights(&args.checkpoint, args.key.as_deref())?;
    let mut total = 0usize;
    let mut zeros = 0f64;
    println!("{:<48} {:<6} {:<20} {:>9}  n:m", "tensor", "dtype", "shape", "sparsity");
    for (name, t) in &tensors {
        total += t.elem_count();
        let shape = format!("{:?}", t.shape());
        let dtype = format!("{:?}", t.dtype()).to_lowercase();
        let mut line = format!("{name:<48} {dtype:<6} {shape:<20}");
        if t.dtype().is_float() {
            let v = t.to_vec_f32().with_context(|| format!("reading tensor {name}"))?;
            let s = sparsity(&v);
            zeros += s * v.len() as f64;
            line += &format!(" {:>8.2}%", 100.0 * s);
            if let Ok(layout) = WeightLayout::from_shape(t.shape()) {
                line += &format!("  {}", nm_verdict(&v, layout, args.pattern, s));
            }
        }
        println!("{line}");
    }
    println!("{} tensors, {total} values, {:.2}% zeros", tensors.len(), 100.0 * zeros / total.max(1) as f64);
    Ok(())
}

fn nm_verdict(v: &[f32], layout: WeightLayout, pattern: Option<NmPattern>, s: f64) -> String {
    match pattern {
        Some(p) => match check_nm(v, layout, p, NonDivisible::LeaveDense) {
            Ok(()) => format!("valid {p}"),
            Err(e) => format!("NOT {p}: {e}"),
        },
        None if s == 0.0 => "dense".into(),
        None => CANDIDATES
            .iter()
            .rev()
            .filter_map(|c| c.parse::<NmPattern>().ok())
            .find(|p| check_nm(v, layout, *p, NonDivisible::LeaveDense).is_ok())
            .map(|p| format!("valid {p}"))
            .unwrap_or_else(|| "unstructured".into()),
    }
}
