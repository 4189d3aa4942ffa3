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
        None => (sparsest_pattern(v, layout).map_or_else(|| "unstructured".into(), |p| format!("valid {p}")), None),
    }
}

/// The group sizes [`sparsest_pattern`] tries.
const GROUP_SIZES: [usize; 4] = [4, 8, 16, 32];

/// The sparsest N:M pattern the weight holds along its input dimension: for each M of
/// [`GROUP_SIZES`] that divides the input, the smallest N below M with at most N non-zeros in
/// every group (by bisection: a weight that holds N:M holds (N+1):M), then the lowest N/M, the
/// smaller M on a tie (2:4 rather than 4:8). A 5:32 weight shows as 5:32, not as the looser 7:8
/// of a fixed list of candidates.
fn sparsest_pattern(v: &[f32], layout: WeightLayout) -> Option<NmPattern> {
    let holds = |n: usize, m: usize| NmPattern::new(n, m).is_ok_and(|p| check_nm(v, layout, p, NonDivisible::LeaveDense).is_ok());
    let mut best: Option<(usize, usize)> = None;
    for m in GROUP_SIZES {
        if !layout.inp().is_multiple_of(m) || !holds(m - 1, m) {
            continue;
        }
        let (mut lo, mut hi) = (1, m - 1); // the smallest N that holds lies in lo..=hi
        while lo < hi {
            let mid = (lo + hi) / 2;
            if holds(mid, m) { hi = mid } else { lo = mid + 1 }
        }
        // n/m below best's n'/m', compared as n·m' < n'·m.
        if best.is_none_or(|(bn, bm)| lo * bm < bn * m) {
            best = Some((lo, m));
        }
    }
    best.and_then(|(n, m)| NmPattern::new(n, m).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[rows, inp]` weight whose every group of `m` holds exactly `n` non-zeros (placed
    /// differently per row and group, so no tighter pattern of another M holds by accident).
    fn nm_weight(rows: usize, inp: usize, n: usize, m: usize) -> Vec<f32> {
        let mut w = vec![0.0; rows * inp];
        for r in 0..rows {
            for g in 0..inp / m {
                for k in 0..n {
                    w[r * inp + g * m + (k * 3 + r + g) % m] = 1.0 + k as f32;
                }
            }
        }
        w
    }

    fn shown(w: &[f32], shape: &[usize]) -> String {
        let s = w.iter().filter(|x| **x == 0.0).count() as f64 / w.len() as f64;
        nm_verdict(w, WeightLayout::from_shape(shape).unwrap(), None, s).0
    }

    /// Each weight shows as the pattern it was made with, whatever its M (5:32 showed as 7:8,
    /// 3:16 as 3:4); ties go to the smaller M (a 2:4 weight is 4:8 too); an input that only
    /// small M divide is checked at those; no structure is "unstructured", no zeros "dense".
    #[test]
    fn inspect_shows_the_sparsest_pattern_a_weight_holds() {
        for (n, m) in [(2, 4), (1, 4), (1, 8), (3, 8), (3, 16), (5, 32), (1, 32), (31, 32)] {
            let w = nm_weight(6, 64, n, m);
            assert_eq!(shown(&w, &[6, 64]), format!("valid {n}:{m}"), "{n}:{m}");
        }
        // Input 24: M = 4 and 8 divide it, 16 and 32 do not.
        assert_eq!(shown(&nm_weight(2, 24, 1, 8), &[2, 24]), "valid 1:8");
        // A conv weight [out, C, kh, kw]: groups of C at each kernel position.
        let mut conv = vec![0.0f32; 4 * 8 * 3 * 3];
        for o in 0..4 {
            for p in 0..9 {
                conv[(o * 8 + (o + p) % 8) * 9 + p] = 1.0;
            }
        }
        assert_eq!(shown(&conv, &[4, 8, 3, 3]), "valid 1:8");
        let mut dense_row = nm_weight(2, 32, 1, 32);
        dense_row[..32].iter_mut().for_each(|x| *x = 1.0);
        assert_eq!(shown(&dense_row, &[2, 32]), "unstructured");
        assert_eq!(shown(&[1.0; 32], &[2, 16]), "dense");
    }
}
