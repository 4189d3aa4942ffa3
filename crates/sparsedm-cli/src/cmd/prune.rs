//! `sparsedm prune`: pruning of a trained checkpoint, by one of two methods.
//!
//! **`--method magnitude`** (the default): one-shot magnitude pruning to
//! an N:M pattern (ASP's `prune_trained_model`, at any N:M, on the layers a
//! policy selects), written as a sparse checkpoint, with the per-layer
//! report printed.
//! The model is built from `--arch/--config`, or from the description the
//! weights carry (a run's export; an earlier `prune` or `export` output),
//! only to know its layers; the checkpoint is loaded strictly (its own sparsity spec
//! verified, NaN/Inf weights refused: pruning would keep NaN as the largest).
//! An existing `--out` needs `--force`, and never may be the input.
//! The output holds the input's tensors under the same names and dtypes: pruned weights with
//! zeros where pruned, every other tensor bit for bit as it was, plus the
//! sparsity spec in the safetensors metadata (`sparsedm.sparsity`), so
//! `sparsedm inspect` and the loaders can verify it, and the model's
//! description (the input's run config, else `sparsedm.model`: arch and
//! constructor arguments), so its readers need no `--arch/--config`. With `--compressed`
//! the N:M layers are stored as kept values + packed positions instead
//! (`sparsedm_layers::write_compressed_sparse_checkpoint`), every value in
//! the chosen dtype; the readers expand them to the same tensors.
//!
//! **`--method diff-pruning`**: Diff-Pruning (Fang et al., NeurIPS 2023),
//! structural pruning to a MAC target (`--macs 0.5`) with Taylor importance
//! over the informative timesteps (see `crate::diffprune` and
//! `sparsedm_diffusion::diffprune`). `--config` is then a run config (a
//! TOML file or a preset name) whose dataset gives the importance batch.
//! The output is a smaller dense model whose metadata carries its run
//! config; a run config for fine-tuning it (`train.init` = the output) is
//! written beside it with the extension `.toml`.
//!
//! **`--device`** (both methods): where the masks (magnitude) or the
//! Taylor-importance pass's forwards and backwards (diff-pruning) are
//! computed, through the same model code as on the CPU; the written file
//! is the same as the CPU's within float tolerance (masks are computed by
//! the one N:M rule on either device; ties between equal magnitudes are
//! broken the same way). The file is written from host copies.

use anyhow::{Context, Result, bail};
use sparsedm_diffusion::checkpoint::read_verified_key;
use sparsedm_diffusion::registry::Arch;
use sparsedm_layers::{
    CompressedReport, NmPattern, ParamStore, Policy, SPARSITY_METADATA_KEY, prune, replace_pruned, write_compressed_sparse_checkpoint,
    write_sparse_checkpoint,
};
use sparsedm_tensor::nm_cpu::NmValueDtype;
use sparsedm_tensor::{DType, Device, Tensor, load_weights_metadata};
use sparsedm_train::RunConfig;
use std::collections::HashMap;
use std::path::PathBuf;

/// The value dtype of a compressed N:M checkpoint (`--compressed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressedValues {
    /// The precision the tensors have: f16 for a state dict stored all in f16, else f32 (exact either way).
    Exact,
    /// 4 bytes a value: exact for an f32 (or f16, bf16) model.
    F32,
    /// 2 bytes a value, every tensor of the file (lossy: a deployment file).
    F16,
}

impl CompressedValues {
    /// The value dtype of the compressed file of `tensors`: `Exact` keeps
    /// an all-f16 state dict (an f16 release, the demo's embedded models)
    /// in f16 rather than doubling it to f32.
    pub fn dtype(self, tensors: &[(String, Tensor)]) -> NmValueDtype {
        match self {
            CompressedValues::Exact if all_f16(tensors) => NmValueDtype::F16,
            CompressedValues::Exact | CompressedValues::F32 => NmValueDtype::F32,
            CompressedValues::F16 => NmValueDtype::F16,
        }
    }
}

/// Whether a state dict is stored all in f16 (and is not empty).
pub fn all_f16(tensors: &[(String, Tensor)]) -> bool {
    !tensors.is_empty() && tensors.iter().all(|(_, t)| t.dtype() == DType::F16)
}

/// The line `prune` and `export` print after writing a compressed N:M
/// checkpoint: how many layers went compressed and the file's size against
/// the same state dict written uncompressed.
pub fn compressed_line(c: &CompressedReport) -> String {
    let rest = match c.listed - c.compressed.min(c.listed) {
        0 => String::new(),
        k => format!(" ({k} flat-index, not N:M along their inputs: stored dense)"),
    };
    format!(
        "compressed: {} of {} N:M layers stored as kept values + positions{rest}; {} bytes = {:.3} of the uncompressed file ({} bytes)",
        c.compressed,
        c.listed,
        c.bytes,
        c.bytes as f64 / c.dense_bytes.max(1) as f64,
        c.dense_bytes
    )
}

/// The pruning methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// N:M magnitude masks on the layers a policy selects (a sparse checkpoint).
    Magnitude,
    /// Diff-Pruning: Taylor-importance channel pruning to a MAC target (a smaller dense model).
    DiffPruning,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Policies: sparsedm-uvit (U-ViT attn.qkv/attn.proj/mlp.fc1/mlp.fc2, as SparseDM), \
asp (Linear/Conv2d with out % 8 == 0 and in % 16 == 0), all (every Linear/Conv2d), or name globs, \
comma-separated, with ! to exclude: '*.attn.*,!mid_block.*'.\n\n\
Examples:\n  sparsedm prune --arch uvit --config uvit.json --weights model.safetensors --pattern 2:4 \
--policy sparsedm-uvit --out model_2of4.safetensors\n  \
sparsedm prune --method diff-pruning --macs 0.5 --config demo_shapes_uvit --weights dense.safetensors \
--out pruned.safetensors   (then: sparsedm train --config pruned.toml)")]
pub struct Args {
    /// magnitude (N:M masks, needs --pattern, and --arch/--config unless the weights describe their model) or diff-pruning (structural, needs --macs and --config).
    #[arg(long, value_enum, default_value = "magnitude")]
    pub method: Method,
    /// Model family: uvit or ddpm-unet (magnitude, with --config; not needed for weights that describe their model; diff-pruning takes it from the run config).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// magnitude: JSON with the constructor's keyword arguments (top level or under "config");
    /// diff-pruning: a run config (TOML file or preset name) whose dataset gives the importance batch.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The dense (or already sparse) checkpoint: safetensors or a PyTorch .pth/.pt/.ckpt.
    #[arg(long, visible_alias = "checkpoint")]
    pub weights: PathBuf,
    /// The key of the state dict inside a PyTorch checkpoint (e.g. state_dict; nested: a/b). Default: the only dict of tensors.
    #[arg(long)]
    pub key: Option<String>,
    /// The N:M pattern: keep the N largest |w| of every M consecutive weights along the input dimension.
    #[arg(long, value_name = "N:M")]
    pub pattern: Option<NmPattern>,
    /// Which layers to prune: sparsedm-uvit, asp, all, or name globs (see below). Default: the paper's layers for the model (sparsedm-uvit for a U-ViT, all for a UNet).
    #[arg(long)]
    pub policy: Option<Policy>,
    /// Transposable 2:4 masks (2:4 along both the input and the output dimension); needs --pattern 2:4.
    #[arg(long)]
    pub transposable: bool,
    /// Where to write the pruned checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Replace an existing --out file (and, for diff-pruning, its .toml).
    #[arg(long)]
    pub force: bool,
    /// magnitude: store the N:M layers compressed (kept values + packed positions; a 2:4 layer takes
    /// ~53 % of its f32 bytes), values exact (the default: f16 for a checkpoint stored all in f16,
    /// else f32), f32, or f16 (every tensor, lossy). Every reader (sample, forward, inspect, prune,
    /// train.init) takes the file; the size ratio is printed.
    #[arg(long, value_enum, value_name = "DTYPE", num_args = 0..=1, default_missing_value = "exact")]
    pub compressed: Option<CompressedValues>,
    /// diff-pruning: the pruned model's MACs as a fraction of the dense model's, in (0, 1).
    #[arg(long)]
    pub macs: Option<f64>,
    /// diff-pruning: at most this many timesteps in the importance pass (default and the reference's maximum: 1000).
    #[arg(long)]
    pub steps: Option<usize>,
    /// diff-pruning: stop the importance pass at the first timestep whose loss is below this × the largest so far (default 0.05).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// diff-pruning: visit every STRIDE-th timestep of the importance pass (default 1: each, as the reference).
    #[arg(long)]
    pub stride: Option<usize>,
    /// diff-pruning: images in the importance batch (default 64).
    #[arg(long)]
    pub batch: Option<usize>,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

pub fn run(args: Args) -> Result<()> {
    match args.method {
        Method::Magnitude => run_magnitude(args),
        Method::DiffPruning => run_diff_pruning(args),
    }
}

fn run_diff_pruning(args: Args) -> Result<()> {
    let nm_only = [
        ("--pattern", args.pattern.is_some()),
        ("--policy", args.policy.is_some()),
        ("--transposable", args.transposable),
        ("--key", args.key.is_some()),
        ("--compressed", args.compressed.is_some()),
    ];
    if let Some((flag, _)) = nm_only.iter().find(|(_, given)| *given) {
        bail!("{flag} belongs to --method magnitude; diff-pruning prunes channels to --macs");
    }
    let Some(macs) = args.macs else { bail!("--method diff-pruning needs --macs (the target fraction of the dense MACs, e.g. 0.5)") };
    sparsedm_diffusion::diffprune::check_mac_target(macs)?;
    let Some(config) = &args.config else {
        bail!("--method diff-pruning needs --config: a run config (a TOML file or a preset name) whose dataset gives the importance batch")
    };
    let toml_out = args.out.with_extension("toml");
    crate::output::check_file("--out", &args.out, args.force, &[config, &args.weights])?;
    crate::output::check_file("--out (its run config)", &toml_out, args.force, &[config, &args.weights])?;
    if config.extension().is_some_and(|e| e == "json") {
        bail!(
            "--method diff-pruning takes a run config (a TOML file or a preset name) for its dataset and noise schedule, not the model's JSON kwargs {}",
            config.display()
        );
    }
    let run = RunConfig::load(&config.display().to_string(), &[])?;
    if let Some(arch) = args.arch.filter(|a| a.name() != run.arch) {
        bail!("--arch {arch} does not match the run config's arch {:?}", run.arch);
    }
    crate::model_source::model_file("--weights", &args.weights)?;
    let device = args.device.resolve()?;
    let opts = crate::diffprune::Options {
        macs,
        batch: args.batch.unwrap_or(crate::diffprune::DEFAULT_BATCH),
        pass: sparsedm_diffusion::diffprune::ImportanceOptions {
            max_steps: args.steps.unwrap_or(sparsedm_diffusion::diffprune::TIMESTEPS),
            threshold: args.threshold.unwrap_or(sparsedm_layers::InformativeSteps::DEFAULT_THRESHOLD),
            stride: args.stride.unwrap_or(1),
        },
    };
    let pruned = crate::diffprune::diff_prune(&run, &args.weights, &opts, device, || args.device.announce())?;
    pruned.write(&args.out, &args.weights, &opts)?;
    let mut finetune = pruned.run.clone();
    finetune.train.init = Some(args.out.display().to_string());
    sparsedm_tensor::write_atomic(&toml_out, finetune.to_toml()?.as_bytes())?;
    if args.json {
        let doc = serde_json::json!({
            "method": "diff-pruning",
            "macs_target": macs,
            "macs_before": pruned.pruned.plan.macs_before,
            "macs_after": pruned.pruned.plan.macs_after,
            "ratio": pruned.pruned.plan.ratio,
            "params_before": pruned.params_before,
            "params_after": pruned.params_after,
            "timesteps": pruned.pass.losses.len(),
            "groups": pruned.pruned.groups,
            "config": pruned.pruned.config.to_json(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", pruned.summary());
        println!(
            "diff-pruned {} ({}) to {:.1}% of its MACs: wrote {} and {} (fine-tune: sparsedm train --config {})",
            args.weights.display(),
            run.arch,
            100.0 * pruned.pruned.plan.fraction(),
            args.out.display(),
            toml_out.display(),
            toml_out.display()
        );
    }
    Ok(())
}

fn run_magnitude(args: Args) -> Result<()> {
    let diff_only = [
        ("--macs", args.macs.is_some()),
        ("--steps", args.steps.is_some()),
        ("--threshold", args.threshold.is_some()),
        ("--stride", args.stride.is_some()),
        ("--batch", args.batch.is_some()),
    ];
    if let Some((flag, _)) = diff_only.iter().find(|(_, given)| *given) {
        bail!("{flag} belongs to --method diff-pruning; magnitude pruning takes --pattern (and --policy)");
    }
    let Some(pattern) = args.pattern else { bail!("--method magnitude needs --pattern (e.g. 2:4)") };
    if pattern.is_dense() {
        bail!("--pattern {pattern} keeps every weight (N = M): nothing to prune; N must be below M (e.g. 2:4)");
    }
    if args.transposable && (pattern.n(), pattern.m()) != (2, 4) {
        bail!("--transposable needs --pattern 2:4 (transposable masks exist for 2:4 only), got {pattern}");
    }
    let mut inputs: Vec<&std::path::Path> = vec![&args.weights];
    inputs.extend(args.config.as_deref());
    crate::output::check_file("--out", &args.out, args.force, &inputs)?;
    let device = args.device.resolve()?;
    // The weights' own description (a run's export, an earlier prune or
    // export output) or --arch/--config, checked against the weights' shapes.
    crate::model_source::model_file("--weights", &args.weights)?;
    let cfg = crate::model_source::describe(&args.weights, args.arch, args.config.as_deref())?.config().clone();
    crate::model_source::refuse_training_checkpoint(&args.weights, "prune")?;
    let arch = cfg.arch();
    // Without --policy, the paper's layers for this model.
    let policy = args.policy.clone().unwrap_or_else(|| sparsedm_train::config::paper_policy(arch.name()));
    // The model lives on `device`, so the masks are computed there (the
    // `nm_mask` kernel on a GPU; transposable masks on the host, as always).
    let store = ParamStore::new(device, 0);
    cfg.build(&store).with_context(|| format!("building the {arch} model of {}", args.weights.display()))?;
    // Verified against its own sparsity spec when it has one; NaN/Inf
    // weights are refused by the load (magnitude pruning would keep NaN).
    let original = read_verified_key(&args.weights, args.key.as_deref())?;
    store.load_tensors(&args.weights.display().to_string(), original.clone(), |_| false)?;

    let report =
        prune(&store, &policy, pattern, args.transposable).with_context(|| format!("pruning {} to {pattern}", args.weights.display()))?;
    // A pattern whose M divides none of the selected layers' inputs (3:7 on
    // 64- and 128-wide layers) would write the dense model back, called N:M.
    sparsedm_train::validate::ensure_some_layer_masked(
        &report,
        "--pattern",
        &pattern.to_string(),
        &policy.to_string(),
        "the pruned file would be the dense model",
    )?;
    // After the policy's own checks (a policy selecting no layer is one line),
    // the line saying where the masks were computed.
    args.device.announce();
    let macs: HashMap<String, u64> =
        cfg.mac_report(1).entries.into_iter().filter(|e| e.kind.is_weight_layer()).map(|e| (e.name, e.dense)).collect();
    let report = report.with_macs(&macs);

    let (tensors, spec) = replace_pruned(original, &store)?;
    // Written from host copies, whatever device computed the masks.
    let tensors = tensors.into_iter().map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?))).collect::<Result<Vec<_>>>()?;
    let mut meta = load_weights_metadata(&args.weights)?;
    meta.remove(SPARSITY_METADATA_KEY);
    meta.insert("sparsedm.prune.source".into(), args.weights.display().to_string());
    meta.insert("sparsedm.prune.pattern".into(), pattern.to_string());
    meta.insert("sparsedm.prune.policy".into(), policy.to_string());
    meta.insert("sparsedm.prune.transposable".into(), args.transposable.to_string());
    // Official weights have no run config: the output records their model,
    // so sample, forward, export and macs need no --arch/--config for it.
    crate::model_source::record_model(&mut meta, &cfg);
    let compressed = match args.compressed {
        None => {
            write_sparse_checkpoint(&args.out, &tensors, &spec, Some(meta))?;
            None
        }
        Some(values) => Some(write_compressed_sparse_checkpoint(&args.out, &tensors, &spec, Some(meta), values.dtype(&tensors))?),
    };

    if args.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{report}");
        println!(
            "pruned {} ({}) to {}{} with policy {}{}: wrote {}",
            args.weights.display(),
            arch,
            pattern,
            if args.transposable { " (transposable)" } else { "" },
            policy,
            if args.policy.is_none() { format!(" (the paper's layers for a {arch}; --policy chooses others)") } else { String::new() },
            args.out.display()
        );
    }
    if let Some(c) = compressed {
        // On stderr with --json, so that stdout stays one JSON document.
        let line = compressed_line(&c);
        if args.json { eprintln!("{line}") } else { println!("{line}") }
    }
    Ok(())
}
