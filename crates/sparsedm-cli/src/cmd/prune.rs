//! `sparsedm prune`: one-shot magnitude pruning of a trained checkpoint to
//! an N:M pattern (ASP's `prune_trained_model`, at any N:M, on the layers a
//! policy selects), written as a sparse checkpoint, with the per-layer
//! report printed.
//!
//! The model is built from its config (as `sparsedm forward` does) only to
//! know its layers; the checkpoint is loaded strictly (its own sparsity spec
//! verified, NaN/Inf weights refused: pruning would keep NaN as the largest).
//! An existing `--out` needs `--force`, and never may be the input.
//! The output holds the input's tensors under the same names and dtypes: pruned weights with
//! zeros where pruned, every other tensor bit for bit as it was, plus the
//! sparsity spec in the safetensors metadata (`sparsedm.sparsity`), so
//! `sparsedm inspect` and the loaders can verify it.

use anyhow::{Context, Result, bail};
use sparsedm_diffusion::checkpoint::read_verified_key;
use sparsedm_diffusion::registry::{Arch, ModelConfig};
use sparsedm_layers::{NmPattern, ParamStore, Policy, SPARSITY_METADATA_KEY, prune, replace_pruned, write_sparse_checkpoint};
use sparsedm_tensor::{Device, load_weights_metadata};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = "Policies: sparsedm-uvit (U-ViT attn.qkv/attn.proj/mlp.fc1/mlp.fc2, as SparseDM), \
asp (Linear/Conv2d with out % 8 == 0 and in % 16 == 0), all (every Linear/Conv2d), or name globs, \
comma-separated, with ! to exclude: '*.attn.*,!mid_block.*'.\n\n\
Example:\n  sparsedm prune --arch uvit --config uvit.json --weights model.safetensors --pattern 2:4 \
--policy sparsedm-uvit --out model_2of4.safetensors")]
pub struct Args {
    /// Model family: uvit or ddpm-unet.
    #[arg(long)]
    pub arch: Arch,
    /// JSON with the constructor's keyword arguments (top level or under "config").
    #[arg(long)]
    pub config: PathBuf,
    /// The dense (or already sparse) checkpoint: safetensors or a PyTorch .pth/.pt/.ckpt.
    #[arg(long)]
    pub weights: PathBuf,
    /// The key of the state dict inside a PyTorch checkpoint (e.g. state_dict; nested: a/b). Default: the only dict of tensors.
    #[arg(long)]
    pub key: Option<String>,
    /// The N:M pattern: keep the N largest |w| of every M consecutive weights along the input dimension.
    #[arg(long, value_name = "N:M")]
    pub pattern: NmPattern,
    /// Which layers to prune: sparsedm-uvit, asp, all, or name globs (see below).
    #[arg(long)]
    pub policy: Policy,
    /// Transposable 2:4 masks (2:4 along both the input and the output dimension); needs --pattern 2:4.
    #[arg(long)]
    pub transposable: bool,
    /// Where to write the pruned checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Replace an existing --out file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.transposable && (args.pattern.n(), args.pattern.m()) != (2, 4) {
        bail!("--transposable needs --pattern 2:4 (transposable masks exist for 2:4 only), got {}", args.pattern);
    }
    crate::output::check_file("--out", &args.out, args.force, &[&args.config, &args.weights])?;
    let cfg = ModelConfig::from_file(args.arch, &args.config)?;
    crate::model_size::check_config_against_weights(&cfg, &args.config, &args.weights)?;
    let store = ParamStore::new(Device::Cpu, 0);
    cfg.build(&store).with_context(|| format!("building the {} model of {}", args.arch, args.config.display()))?;
    // Verified against its own sparsity spec when it has one; NaN/Inf
    // weights are refused by the load (magnitude pruning would keep NaN).
    let original = read_verified_key(&args.weights, args.key.as_deref())?;
    store.load_tensors(&args.weights.display().to_string(), original.clone(), |_| false)?;

    let report = prune(&store, &args.policy, args.pattern, args.transposable)
        .with_context(|| format!("pruning {} to {}", args.weights.display(), args.pattern))?;
    let macs: HashMap<String, u64> =
        cfg.mac_report(1).entries.into_iter().filter(|e| e.kind.is_weight_layer()).map(|e| (e.name, e.dense)).collect();
    let report = report.with_macs(&macs);

    let (tensors, spec) = replace_pruned(original, &store)?;
    let mut meta = load_weights_metadata(&args.weights)?;
    meta.remove(SPARSITY_METADATA_KEY);
    meta.insert("sparsedm.prune.source".into(), args.weights.display().to_string());
    meta.insert("sparsedm.prune.pattern".into(), args.pattern.to_string());
    meta.insert("sparsedm.prune.policy".into(), args.policy.to_string());
    meta.insert("sparsedm.prune.transposable".into(), args.transposable.to_string());
    write_sparse_checkpoint(&args.out, &tensors, &spec, Some(meta))?;

    if args.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{report}");
        println!(
            "pruned {} ({}) to {}{} with policy {}: wrote {}",
            args.weights.display(),
            args.arch,
            args.pattern,
            if args.transposable { " (transposable)" } else { "" },
            args.policy,
            args.out.display()
        );
    }
    Ok(())
}
