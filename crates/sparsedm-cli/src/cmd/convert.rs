//! `sparsedm convert`: a PyTorch checkpoint (`.pth`, `.pt`, `.ckpt`, zip or
//! legacy format) to safetensors, with the tensors' names, shapes and dtypes
//! unchanged, read without Python and without executing the pickle (see
//! `sparsedm_tensor::pth`). Every command that reads weights also takes the
//! PyTorch file directly; converting once makes later loads faster and the
//! file inspectable by any safetensors tool. With `--arch` and `--config`
//! the tensors are loaded strictly into that model first (every name and
//! shape checked) and the output records the model (`sparsedm.model`), so
//! that `sample`, `forward`, `export`, `macs` and `prune` need no
//! `--arch/--config` for it.

use anyhow::{Context, Result, bail};
use sparsedm_diffusion::{Arch, MODEL_METADATA_KEY, ModelConfig};
use sparsedm_tensor::{WeightsFormat, load_weights, save_safetensors, weights_format};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sparsedm convert nnet_ema.pth nnet_ema.safetensors\n  \
sparsedm convert last.ckpt model.safetensors --key state_dict\n  \
sparsedm convert cifar10_uvit_small.pth uvit_s2.safetensors --arch uvit --config uvit_s2.json   (records the model)")]
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
    /// The model family (with --config): the tensors are checked against that model and the output records it.
    #[arg(long, requires = "config")]
    pub arch: Option<Arch>,
    /// The model's constructor arguments as JSON (with --arch).
    #[arg(long, requires = "arch")]
    pub config: Option<PathBuf>,
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
    let model = match (args.arch, &args.config) {
        (Some(arch), Some(path)) => {
            let cfg = ModelConfig::from_file(arch, path)?;
            crate::model_size::check_fits(&cfg, &path.display().to_string())?;
            Some(cfg)
        }
        _ => None,
    };
    let tensors = load_weights(&args.input, args.key.as_deref())?;
    let values: usize = tensors.iter().map(|(_, t)| t.elem_count()).sum();
    let source = args.input.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let mut meta = HashMap::from([("sparsedm.convert.source".to_string(), source)]);
    if let Some(cfg) = &model {
        // Strict: every parameter from the file, nothing left over.
        let store = sparsedm_layers::ParamStore::new(sparsedm_tensor::Device::Cpu, 0);
        cfg.build(&store)?;
        store.load_tensors(&args.input.display().to_string(), tensors.clone(), |_| false).with_context(|| {
            format!(
                "--arch {} --config {} does not describe {}",
                cfg.arch(),
                args.config.as_deref().unwrap_or(Path::new("")).display(),
                args.input.display()
            )
        })?;
        meta.insert(MODEL_METADATA_KEY.to_string(), cfg.to_metadata());
    }
    save_safetensors(&args.output, &tensors, Some(meta)).with_context(|| format!("writing {}", args.output.display()))?;
    let recorded =
        model.map(|c| format!(" (recording the {} model: later commands need no --arch/--config)", c.arch())).unwrap_or_default();
    println!("converted {} tensors ({values} values) from {} to {}{recorded}", tensors.len(), args.input.display(), args.output.display());
    Ok(())
}
