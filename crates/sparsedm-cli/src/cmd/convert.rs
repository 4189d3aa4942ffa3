//! `sparsedm convert`: a PyTorch checkpoint (`.pth`, `.pt`, `.ckpt`, zip or
//! legacy format) to safetensors, with the tensors' names, shapes and dtypes
//! unchanged, read without Python and without executing the pickle (see
//! `sparsedm_tensor::pth`). Every command that reads weights also takes the
//! PyTorch file directly; converting once makes later loads faster and the
//! file inspectable by any safetensors tool.

use anyhow::{Context, Result, bail};
use sparsedm_tensor::{WeightsFormat, load_weights, save_safetensors, weights_format};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sparsedm convert nnet_ema.pth nnet_ema.safetensors\n  \
sparsedm convert last.ckpt model.safetensors --key state_dict")]
pub struct Args {
    /// The PyTorch checkpoint (torch.save output: .pth, .pt, .ckpt).
    pub input: PathBuf,
    /// The safetensors file to write.
    pub output: PathBuf,
    /// The key of the state dict inside the checkpoint (e.g. state_dict; nested: a/b). Default: the only dict of tensors.
    #[arg(long)]
    pub key: Option<String>,
    /// Overwrite OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let format = weights_format(&args.input)?;
    if format == WeightsFormat::SafeTensors {
        bail!("{} is not a PyTorch checkpoint (no zip or pickle header); it may already be safetensors", args.input.display());
    }
    let same = match (args.input.canonicalize(), args.output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!("the output {} is the input file", args.output.display());
    }
    if args.output.exists() && !args.force {
        bail!("{} exists; give --force to overwrite it", args.output.display());
    }
    let tensors = load_weights(&args.input, args.key.as_deref())?;
    let values: usize = tensors.iter().map(|(_, t)| t.elem_count()).sum();
    let source = args.input.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let meta = HashMap::from([("sparsedm.convert.source".to_string(), source)]);
    save_safetensors(&args.output, &tensors, Some(meta)).with_context(|| format!("writing {}", args.output.display()))?;
    println!("converted {} tensors ({values} values) from {} to {}", tensors.len(), args.input.display(), args.output.display());
    Ok(())
}
