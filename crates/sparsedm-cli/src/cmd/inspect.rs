//! `sparsedm inspect`: what a checkpoint holds — every tensor's name, dtype
//! and shape, the sparsity of each weight, and for weights that look N:M
//! sparse whether every group really satisfies the pattern.
//!
//! A file's own sparsity spec (`sparsedm.sparsity` metadata, written by
//! `sparsedm prune` and sparse exports) is always checked, layer by layer;
//! with `--pattern` every 2-D/4-D weight is checked against it too. Any
//! violation makes the command fail (exit 1) after the table, naming the
//! first offending layer and group, so scripts can rely on the exit code.

use anyhow::{Context, Result, bail};
use sparsedm_layers::{NmPattern, NonDivisible, SPARSITY_METADATA_KEY, SparsitySpec, WeightLayout, check_nm, sparsity};
use sparsedm_tensor::{load_weights, load_weights_metadata};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Patterns tried, densest first, when no pattern is given.
const CANDIDATES: [&str; 9] = ["31:32", "15:16", "7:8", "3:4", "2:4", "1:4", "1:8", "1:16", "1:32"];

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sparsedm inspect demo-output/sparsedm.safetensors   (after `sparsedm demo`: its masked layers are checked against the stored spec)\n  sparsedm inspect model.safetensors --pattern 2:4\n\nExit status 1 when a layer violates the stored spec or --pattern."
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
    let shown = args.checkpoint.display().to_string();
    crate::model_source::checkpoint_file("", &args.checkpoint)?;
    let meta = load_weights_metadata(&args.checkpoint)?;
    let tensors = load_weights(&args.checkpoint, args.key.as_deref())?;
    // Training checkpoints store the dense SR-STE weights under model.*: their spec
    // describes the run's masks, not the stored values, so it is not checked here.
    let is_train_state = meta.get("sparsedm.kind").map(String::as_str) == Some("train-state");
    if let (true, Some(p)) = (is_train_state, args.pattern) {
        bail!(
            "--pattern does not apply to {shown}: a training checkpoint holds the weights as the method trains them (dense for SR-STE and STE) \
             and the optimizer state; check its deployed model: `sparsedm export --checkpoint {shown} --format safetensors --out M.safetensors` \
             then `sparsedm inspect M.safetensors --pattern {p}`"
        );
    }
    let spec = match meta.get(SPARSITY_METADATA_KEY) {
        Some(json) if !is_train_state => Some(SparsitySpec::from_json(json, &shown)?),
        _ => None,
    };
    // Per-layer verdicts of the stored spec: weight name → Ok(pattern) or the violation.
    let mut spec_verdicts: BTreeMap<String, std::result::Result<String, String>> = BTreeMap::new();
    if let Some(spec) = &spec {
        for (layer, entry) in &spec.layers {
            let one = SparsitySpec { format: spec.format, layers: BTreeMap::from([(layer.clone(), entry.clone())]) };
            let verdict = one.verify(&tensors, &shown).map(|()| entry.pattern.clone()).map_err(|e| e.to_string());
            spec_verdicts.insert(format!("{layer}.weight"), verdict);
        }
    }
    let mut failures: Vec<String> = Vec::new();
    // Weights that failed --pattern and are not layers of the stored spec.
    let mut outside_spec = 0usize;
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
                let (verdict, failure) = nm_verdict(&v, layout, args.pattern, s);
                line += &format!("  {verdict}");
                if let Some(f) = failure {
                    failures.push(format!("{name} is not {f}"));
                    outside_spec += usize::from(spec.is_some() && !spec_verdicts.contains_key(name));
                }
            }
            if let Some(v) = v.iter().find(|v| !v.is_finite()) {
                line += &format!("  (holds {v})");
            }
        }
        match spec_verdicts.get(name) {
            Some(Ok(p)) => line += &format!("  [spec {p}: ok]"),
            Some(Err(e)) => {
                line += "  [VIOLATES its stored spec]";
                failures.push(e.clone());
            }
            None => {}
        }
        println!("{line}");
    }
    // Spec entries whose weight is not in the file at all.
    for (weight, verdict) in &spec_verdicts {
        if let Err(e) = verdict
            && !tensors.iter().any(|(n, _)| n == weight)
        {
            failures.push(e.clone());
        }
    }
    println!("{} tensors, {total} values, {:.2}% zeros", tensors.len(), 100.0 * zeros / total.max(1) as f64);
    if let Some(spec) = &spec {
        let mut patterns: Vec<&str> = spec.layers.values().map(|l| l.pattern.as_str()).collect();
        patterns.sort_unstable();
        patterns.dedup();
        let violations = spec_verdicts.values().filter(|v| v.is_err()).count();
        let verdict = if violations == 0 { "each holds its pattern".to_string() } else { format!("{violations} violate it") };
        println!("stored sparsity spec: {} layers ({}), {verdict}", spec.layers.len(), patterns.join(", "));
    }
    if is_train_state {
        println!("{}", train_state_summary(&meta, &tensors, &shown)?);
    }
    match crate::model_source::stored_model(&args.checkpoint, &meta) {
        Ok((Some(model), origin)) => {
            let cfg = model.config();
            println!("model: {} {} ({origin})", cfg.arch(), cfg.to_json());
        }
        Ok((None, _)) => println!("model: not described in the file (its readers need --arch and --config)"),
        Err(e) => failures.push(format!("its model description is unreadable: {e:#}")),
    }
    if sparsedm_tensor::nm_cpu::is_nm_checkpoint_file(&args.checkpoint) {
        // Its N:M layers are stored as kept values + packed positions (read
        // back dense above); the size against the f32 values it holds.
        let bytes = std::fs::metadata(&args.checkpoint).map(|m| m.len()).unwrap_or(0);
        println!(
            "compressed N:M checkpoint: {bytes} bytes = {:.3} of its {total} values in f32 ({} bytes)",
            bytes as f64 / (4 * total).max(1) as f64,
            4 * total
        );
    }
    if let Some(first) = failures.first() {
        // A pruned model keeps some layers dense by its policy (a U-ViT's
        // patch embedding, decoder and long-skip layers under sparsedm-uvit):
        // --pattern checks every weight, the stored spec only its layers.
        let hint = if outside_spec > 0 {
            format!(
                " ({outside_spec} of them in layers the stored spec leaves dense; without --pattern, inspect checks the spec's {} layers)",
                spec.as_ref().map_or(0, |s| s.layers.len())
            )
        } else {
            String::new()
        };
        bail!("{shown}: {} sparsity violation(s){hint}; first: {first}", failures.len());
    }
    Ok(())
}

/// What a training checkpoint is, and for a sparse run whether its
/// trained weights are stored masked (ASP) or dense (SR-STE and STE train
/// the dense weights and mask them when the model runs), and how to get
/// the deployed N:M model.
fn train_state_summary(
    meta: &std::collections::HashMap<String, String>,
    tensors: &[(String, sparsedm_tensor::Tensor)],
    shown: &str,
) -> Result<String> {
    let step = meta.get("sparsedm.step").map_or("?", String::as_str);
    let mut s = format!(
        "training checkpoint at step {step}: model.* the trained weights, ema.* their moving average (what sample and export use), optim.* the optimizer state"
    );
    if let Some(json) = meta.get(SPARSITY_METADATA_KEY) {
        let spec = SparsitySpec::from_json(json, shown)?;
        let mut patterns: Vec<&str> = spec.layers.values().map(|l| l.pattern.as_str()).collect();
        patterns.sort_unstable();
        patterns.dedup();
        // The run's layers whose stored model.* weight is not N:M as it is.
        let unmasked = spec
            .layers
            .iter()
            .filter(|(layer, entry)| {
                let one = SparsitySpec { format: spec.format, layers: BTreeMap::from([(format!("model.{layer}"), (*entry).clone())]) };
                one.verify(tensors, shown).is_err()
            })
            .count();
        let stored = if unmasked == 0 {
            "its model.* weights are stored masked".to_string()
        } else {
            format!(
                "{unmasked} of them stored dense (the method trains the dense weights and masks them when the model runs, so they read dense above)"
            )
        };
        s += &format!(
            "\nsparse run: {} layers at {}; {stored}; `sparsedm export --checkpoint {shown} --format safetensors [--compressed]` writes the deployed N:M model",
            spec.layers.len(),
            patterns.join(", ")
        );
    }
    Ok(s)
}

/// The verdict column, and for a requested pattern that fails, what failed.
fn nm_verdict(v: &[f32], layout: WeightLayout, pattern: Option<NmPattern>, s: f64) -> (String, Option<String>) {
    match pattern {
        Some(p) => match check_nm(v, layout, p, NonDivisible::LeaveDense) {
            Ok(()) => (format!("valid {p}"), None),
            Err(e) => (format!("NOT {p}: {e}"), Some(format!("{p}: {e}"))),
        },
        None if s == 0.0 => ("dense".into(), None),
        None => (
            CANDIDATES
                .iter()
                .rev()
                .filter_map(|c| c.parse::<NmPattern>().ok())
                .find(|p| check_nm(v, layout, *p, NonDivisible::LeaveDense).is_ok())
                .map(|p| format!("valid {p}"))
                .unwrap_or_else(|| "unstructured".into()),
            None,
        ),
    }
}
