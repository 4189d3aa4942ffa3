//! `sparsedm macs`: multiply–accumulate counts of one forward pass, layer
//! by layer, for a model configuration (or a published preset), dense or
//! with an N:M pattern on chosen layers, or for a checkpoint with the N:M
//! layers it holds. Counted analytically from the configuration; nothing
//! is run (a checkpoint's model is built to read its sparsity spec).

use anyhow::{Result, bail};
use sparsedm_diffusion::registry::{Arch, ModelConfig};
use sparsedm_layers::{NmPattern, Policy};
use sparsedm_train::restore::restore;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(after_help = "Policies (as for `sparsedm prune`): sparsedm-uvit (U-ViT attn.qkv/attn.proj/mlp.fc1/mlp.fc2, as \
SparseDM), asp (Linear/Conv2d with out % 8 == 0 and in % 16 == 0), all (every Linear/Conv2d), or name globs, \
comma-separated, with ! to exclude.\n\nExamples:\n  sparsedm macs --preset cifar10_uvit_small\n  \
sparsedm macs --arch uvit --config uvit.json --batch 8 --pattern 2:4 --policy sparsedm-uvit\n  \
sparsedm macs --checkpoint demo-output/sparsedm.safetensors   (the N:M layers the checkpoint holds)")]
pub struct Args {
    /// Model family: uvit or ddpm-unet (required with --config).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// JSON with the constructor's keyword arguments (top level or under "config").
    #[arg(long, conflicts_with = "preset", required_unless_present_any = ["preset", "checkpoint"])]
    pub config: Option<PathBuf>,
    /// A checkpoint (a run's, an exported or compressed sparse model; official weights with
    /// --arch/--config): its model, with the N:M layers it holds counted at N/M.
    #[arg(long, visible_alias = "weights", conflicts_with_all = ["preset", "pattern"])]
    pub checkpoint: Option<PathBuf>,
    /// A published configuration instead of --config: cifar10_uvit_small, celeba64_uvit_small,
    /// imagenet256_uvit_large, cifar10_ddpm.
    #[arg(long)]
    pub preset: Option<String>,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Count the chosen layers as N:M sparse (N/M of their dense MACs).
    #[arg(long)]
    pub pattern: Option<NmPattern>,
    /// Which layers --pattern applies to: sparsedm-uvit, asp, all, or name globs (see below).
    #[arg(long, default_value = "all", requires = "pattern")]
    pub policy: Policy,
}

pub fn run(args: Args) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if let Some(path) = &args.checkpoint {
        return run_checkpoint(&args, path);
    }
    let cfg = match (&args.config, &args.preset) {
        (Some(path), _) => {
            let Some(arch) = args.arch else { bail!("--config needs --arch (uvit or ddpm-unet)") };
            ModelConfig::from_file(arch, path)?
        }
        (None, Some(name)) => {
            let cfg = ModelConfig::preset(name)?;
            if let Some(arch) = args.arch.filter(|&a| a != cfg.arch()) {
                bail!("preset {name} is a {} model, not {arch}", cfg.arch());
            }
            cfg
        }
        (None, None) => bail!("give --config (with --arch) or --preset"),
    };
    let mut report = cfg.mac_report(args.batch);
    report.check()?;
    if let Some(pattern) = args.pattern {
        report.apply_policy(&args.policy, pattern);
        if !report.entries.iter().any(|e| e.pattern.is_some()) {
            bail!("policy {} selects no layer that can be {pattern} sparse", args.policy);
        }
    }
    let [c, h, w] = cfg.input_shape();
    println!("{} at {}x{}x{}, batch {}", cfg.arch(), c, h, w, args.batch);
    print!("{}", report.table());
    Ok(())
}

/// The counts of a checkpoint's model, each layer at the pattern its
/// stored sparsity spec gives it.
fn run_checkpoint(args: &Args, path: &Path) -> Result<()> {
    crate::model_source::checkpoint_file("--checkpoint", path)?;
    let external = crate::model_source::model_source(path, args.arch, args.config.as_deref(), None)?;
    let r = restore(path, true, external.as_ref())?;
    let cfg = &r.bundle.config;
    let mut report = cfg.mac_report(args.batch);
    report.check()?;
    report.apply_store(&r.bundle.store);
    let nm = report.entries.iter().filter(|e| e.pattern.is_some()).count();
    let [c, h, w] = cfg.input_shape();
    println!("{} at {}x{}x{}, batch {}: {} ({} N:M layers)", cfg.arch(), c, h, w, args.batch, path.display(), nm);
    print!("{}", report.table());
    Ok(())
}
