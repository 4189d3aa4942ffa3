//! What each table runs, at either scale, and how its results are written.

use super::paper::{self, PaperRow};
use super::plots;
use super::{Args, Scale, Table};
use crate::compare;
use crate::lab::{Lab, Method, Row};
use crate::presets::{
    DEMO_DENSE_CHECKPOINT, DEMO_PRESET, DEMO_UNET_DENSE_CHECKPOINT, DEMO_UNET_PRESET, FINETUNE_LR, FINETUNE_WARMUP_STEPS,
    demo_finetune_base, finetune_base,
};
use anyhow::{Context, Result};
use sparsedm_layers::{NmPattern, ProgressiveSchedule, Stage};
use sparsedm_tensor::Device;
use sparsedm_train::RunConfig;
use sparsedm_train::experiment::{DrawSpec, Judge, Quality};
use std::fmt::Write as _;
use std::path::Path;

/// One scale's models, data, judge and budgets.
pub struct Setup {
    pub lab: Lab,
    /// The UNet family's bench (same data, judge setup and sampler), where
    /// the scale has a dense UNet: Table 2 runs every method on both.
    pub unet: Option<Lab>,
    /// Default fine-tuning steps (tables 1–2; the ablation's default is smaller at tiny scale).
    steps: u64,
    ablation_steps: u64,
    /// The half-size U-ViT's run (about half the MACs) and how it differs.
    half: (String, RunConfig),
    /// What the setup is, for the report.
    describe: String,
    /// The paper's dataset whose rows are printed beside ours.
    paper_dataset: &'static str,
    /// The score of as many held-out real images as each row samples (what a perfect model gets).
    floor: Option<Quality>,
}

impl Setup {
    pub fn tiny(a: &Args, device: Device) -> Result<Setup> {
        let base = RunConfig::load(DEMO_PRESET, &[])?;
        let data = sparsedm_train::build::dataset(&base)?;
        let samples = a.samples.unwrap_or(64);
        // The reference leaves the last `samples` images out for the real-data floor row.
        let held_out = samples.min(data.len() / 2);
        let n_ref = if a.inception.is_some() { 1000 } else { data.len() }.min(data.len() - held_out);
        eprintln!("[repro] reference statistics from {n_ref} real images ({})", data.describe());
        // InceptionV3 (with --inception) extracts on the command's device, as `fid --device` does.
        let judge = Judge::new_on(data.as_ref(), n_ref, a.inception.as_deref(), device)?;
        let floor = judge.real_floor(data.as_ref(), data.len() - held_out, held_out)?;
        std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
        let dense = a.out.join("dense.safetensors");
        sparsedm_tensor::write_atomic(&dense, DEMO_DENSE_CHECKPOINT).with_context(|| format!("cannot write {}", dense.display()))?;
        let describe = format!(
            "Tiny scale: the demo's dense U-ViT (`{}`: 16×16, patch 2, width 128, depth 6, 1.50 M parameters; the checkpoint shipped with sparsedm) \
on the {}; fine-tuning batch 64, AdamW lr {FINETUNE_LR:e} after {FINETUNE_WARMUP_STEPS} warm-up steps; {samples} samples per model from the same noise, \
{} with {} steps{}. Table 2 also runs every method on the shipped tiny DDPM UNet (`{}`: ch 32, ch_mult (1, 2), one ResNet block per level, \
attention at 8×8; 0.70 M parameters) on the same data, with the same fine-tuning recipe, sampler and judge. \
Quality is FD-px48 (a Fréchet distance on 4×4-pooled pixels: no download, not FID){}.",
            DEMO_PRESET,
            data.describe(),
            base.sample.sampler,
            base.sample.steps,
            if base.sample.clip_denoised == Some(true) { ", x̂₀ clipped to [−1, 1]" } else { "" },
            DEMO_UNET_PRESET,
            if a.inception.is_some() { " and FID against 1000 real images" } else { "" }
        );
        let finetune = demo_finetune_base()?;
        let unet = unet_lab(a, device, &data.describe(), n_ref, samples)?;
        // Width 92 (4 heads of 23): (92/128)² ≈ 0.52 of the MACs, like the paper's 5.83 G vs 11.34 G;
        // trained at the preset's (pre-training) rate.
        let half = half_size(&finetune, 92, Some(base.optimizer.lr))?;
        Ok(Setup {
            lab: Lab {
                out: a.out.clone(),
                base: finetune,
                dense,
                device,
                judge,
                draw: DrawSpec {
                    n: samples,
                    sampler: base.sample.sampler,
                    steps: base.sample.steps,
                    seed: a.seed,
                    clip_denoised: base.sample.clip_denoised,
                },
                resume: a.resume,
            },
            unet: Some(unet),
            steps: a.steps.unwrap_or(100),
            ablation_steps: a.steps.unwrap_or(40),
            half,
            describe,
            paper_dataset: "CIFAR10 32x32",
            floor: Some(floor),
        })
    }

    pub fn paper(a: &Args, device: Device) -> Result<Setup> {
        let (Some(data_dir), Some(checkpoint), Some(inception), Some(stats)) = (&a.data, &a.checkpoint, &a.inception, &a.fid_stats) else {
            anyhow::bail!("--scale paper needs --data, --checkpoint, --inception and --fid-stats");
        };
        let mut base = RunConfig::load("cifar10_uvit_small", &[])?;
        base.dataset.path = Some(data_dir.display().to_string());
        // The inputs that would otherwise fail late — the reference statistics at the first row's
        // scoring (after its 50,000 samples), a checkpoint of another model as a many-line list
        // of every tensor that differs — are checked first.
        let reference = sparsedm_fid::read_stats_npz(stats).with_context(|| format!("--fid-stats {}", stats.display()))?;
        if reference.dim() != sparsedm_fid::POOL3_DIM {
            anyhow::bail!(
                "--fid-stats {} holds {}-d statistics, but FID compares InceptionV3's {}-d pool3 features (write them with `sparsedm fid stats`)",
                stats.display(),
                reference.dim(),
                sparsedm_fid::POOL3_DIM
            );
        }
        let model = sparsedm_diffusion::ModelConfig::from_json(sparsedm_train::build::arch(&base)?, &base.nnet_json()?)?;
        crate::model_size::check_config_against_weights(&model, Path::new("of U-ViT-S/2 (preset cifar10_uvit_small)"), checkpoint)
            .with_context(|| format!("--checkpoint {} is not the official U-ViT-S/2 CIFAR-10 model", checkpoint.display()))?;
        let data = sparsedm_train::build::dataset(&base)?;
        eprintln!("[repro] CIFAR-10: {}; FID reference {}", data.describe(), stats.display());
        let judge = Judge::with_fid_reference_on(data.as_ref(), 10_000, inception, reference, device)?;
        let samples = a.samples.unwrap_or(50_000);
        let describe = format!(
            "Paper scale: U-ViT-S/2 on CIFAR-10 from the official checkpoint `{}`, the U-ViT recipe (batch 128, AdamW 2e-4, betas 0.99/0.999, \
wd 0.03, EMA 0.9999), {} fine-tuning steps per method; FID of {samples} samples (Euler–Maruyama, 1000 steps) against `{}`.",
            checkpoint.display(),
            a.steps.unwrap_or(500_000),
            stats.display()
        );
        // Width 368 (8 heads of 46): (368/512)² ≈ 0.52 of the MACs (the paper: 5.83 G of 11.34 G).
        let half = half_size(&base, 368, None)?;
        std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
        Ok(Setup {
            lab: Lab {
                out: a.out.clone(),
                base,
                dense: checkpoint.clone(),
                device,
                judge,
                draw: DrawSpec { n: samples, sampler: "euler-maruyama".parse()?, steps: 1000, seed: a.seed, clip_denoised: None },
                resume: a.resume,
            },
            // The official DDPM CIFAR-10 UNet is not one of --scale paper's inputs yet.
            unet: None,
            steps: a.steps.unwrap_or(500_000),
            ablation_steps: a.steps.unwrap_or(500_000),
            half,
            describe,
            paper_dataset: "CIFAR10 32x32",
            floor: None,
        })
    }
}

/// The tiny UNet's bench: its shipped dense checkpoint written to the
/// output folder, a judge of the same real images as the U-ViT's (the two
/// presets draw the same shapes dataset; checked), the preset's sampler.
fn unet_lab(a: &Args, device: Device, data_described: &str, n_ref: usize, samples: usize) -> Result<Lab> {
    let base = RunConfig::load(DEMO_UNET_PRESET, &[])?;
    let data = sparsedm_train::build::dataset(&base)?;
    if data.describe() != data_described {
        anyhow::bail!("the UNet preset's data ({}) is not the U-ViT's ({data_described})", data.describe());
    }
    let dense = a.out.join("dense_unet.safetensors");
    sparsedm_tensor::write_atomic(&dense, DEMO_UNET_DENSE_CHECKPOINT).with_context(|| format!("cannot write {}", dense.display()))?;
    Ok(Lab {
        out: a.out.clone(),
        base: finetune_base(DEMO_UNET_PRESET)?,
        dense,
        device,
        judge: Judge::new_on(data.as_ref(), n_ref, a.inception.as_deref(), device)?,
        draw: DrawSpec {
            n: samples,
            sampler: base.sample.sampler,
            steps: base.sample.steps,
            seed: a.seed,
            clip_denoised: base.sample.clip_denoised,
        },
        resume: a.resume,
    })
}

/// `base` at U-ViT width `embed_dim` (and learning rate `lr` if given): the
/// half-size model of Table 1, and the line saying how it differs.
fn half_size(base: &RunConfig, embed_dim: i64, lr: Option<f32>) -> Result<(String, RunConfig)> {
    let mut c = base.clone();
    c.nnet.insert("embed_dim".into(), embed_dim.into());
    let mut what = format!("nnet.embed_dim = {embed_dim}");
    if let Some(lr) = lr {
        c.optimizer.lr = lr;
        what += &format!(", optimizer.lr = {lr}");
    }
    c.validate()?;
    Ok((what, c))
}

pub fn table1(a: &Args, s: &Setup) -> Result<()> {
    eprintln!("[repro] table 1: dense vs half-size U-ViT (from scratch, {} steps) vs ASP 2:4 ({} steps)", s.steps, s.steps);
    let rows = vec![
        s.lab.row("dense", &Method::Dense, None, 0)?,
        s.lab.row(
            "half",
            &Method::Scratch { label: "half-size U-ViT", what: s.half.0.clone(), config: Box::new(s.half.1.clone()) },
            None,
            s.steps,
        )?,
        s.lab.row("asp", &Method::Asp, Some(NmPattern::TWO_FOUR), s.steps)?,
    ];
    let notes = [
        "The half-size U-ViT has the dense model's depth and about half its width (about half the MACs) and is trained from random init for the same number of steps the pruned model is fine-tuned — the paper's point: shrinking the model loses what pre-training learned.",
        "ASP: one-shot magnitude 2:4 masks on every layer ASP accepts, kept fixed while fine-tuning (apex's recipe).",
    ];
    write_outputs(a, s, Table::Table1, "Table 1: a half-size model and ASP against the dense model", &rows, paper::TABLE1, &notes, &[], &[])
}

/// Table 2's rows of one model family: the dense model, then each method at
/// 2:4 for `steps`; slugs get `prefix` (file names of the second family).
fn table2_family(lab: &Lab, prefix: &str, steps: u64) -> Result<Vec<Row>> {
    let mut rows = vec![lab.row(&format!("{prefix}dense"), &Method::Dense, None, 0)?];
    // As in the paper's table: Diff-Pruning (a smaller dense model at half the MACs, fine-tuned for
    // the same steps), then the 2:4 methods.
    rows.push(lab.row(&format!("{prefix}diffpruning"), &Method::DiffPruning { macs: TABLE2_DIFF_PRUNING_MACS }, None, steps)?);
    for (slug, m) in [("asp", Method::Asp), ("ste", Method::Ste), ("sparsedm", Method::SparseDm)] {
        rows.push(lab.row(&format!("{prefix}{slug}"), &m, Some(NmPattern::TWO_FOUR), steps)?);
    }
    Ok(rows)
}

/// A layer-set ablation: the row, and the layers SparseDM's set masks
/// that ASP's leaves dense.
struct LayerSetAblation {
    row: Row,
    only_sparsedm: Vec<String>,
}

/// When ASP beats SparseDM in a family's rows, one more row measures why:
/// SparseDM's training on ASP's layer set. The two methods differ in two
/// ways — the layers they mask (the paper's code's set against apex's size
/// rule, which leaves thin layers such as a UNet's 3-channel first and last
/// convs dense) and how the masks are trained — and this row holds the
/// first fixed. Returns nothing when SparseDM is ahead.
fn layer_set_ablation(lab: &Lab, prefix: &str, family_rows: &[Row], steps: u64) -> Result<Option<LayerSetAblation>> {
    let fd = |method: &str| family_rows.iter().find(|r| r.method == method && r.pattern == "2:4").map(|r| r.quality.fd_px);
    match (fd(Method::Asp.label()), fd(Method::SparseDm.label())) {
        (Some(asp), Some(sdm)) if asp < sdm => {
            eprintln!("[repro] ASP ({asp:.4}) beats SparseDM ({sdm:.4}): one more row, SparseDM's training on ASP's layers");
            let only_sparsedm = lab.layers_only_in(&Method::SparseDm, &Method::Asp, NmPattern::TWO_FOUR)?;
            let row = lab.row(&format!("{prefix}sparsedm_asp_layers"), &Method::SparseDmAspLayers, Some(NmPattern::TWO_FOUR), steps)?;
            Ok(Some(LayerSetAblation { row, only_sparsedm }))
        }
        _ => Ok(None),
    }
}

/// The note that reads a layer-set ablation row against its family's ASP
/// and SparseDM rows.
fn layer_set_note(rows: &[Row], ab: &LayerSetAblation) -> Option<String> {
    let r = &ab.row;
    let find = |method: &str| rows.iter().find(|x| x.model == r.model && x.method == method && x.pattern == r.pattern);
    let (asp, sdm) = (find(Method::Asp.label())?, find(Method::SparseDm.label())?);
    let verdict = if r.quality.fd_px <= asp.quality.fd_px {
        "on the same layers SparseDM's training beats ASP's, so the layer set, not the method, puts ASP ahead"
    } else if r.quality.fd_px < sdm.quality.fd_px {
        "on ASP's layers SparseDM gains but still trails ASP, so the layer set explains part of the gap and the mask training \
         (fixed permuted masks against SR-STE's recomputed ones over these few steps) the rest"
    } else {
        "ASP's layer set does not help SparseDM, so the gap comes from the mask training (ASP's fixed, permuted masks against \
         SR-STE's recomputed ones over these few steps), not from the layers"
    };
    let only = if ab.only_sparsedm.is_empty() { "none".to_string() } else { ab.only_sparsedm.join(", ") };
    Some(format!(
        "{}: ASP ({:.4}, {:.1}% zeros, {:.2} M MACs) beats SparseDM ({:.4}, {:.1}% zeros, {:.2} M MACs). Ablation (`ablations` in the JSON): \
         SparseDM's training on ASP's layers scores {:.4} ({:.1}% zeros, {:.2} M MACs) — {verdict}. Layers SparseDM's set masks and ASP's \
         leaves dense: {only}.",
        r.model,
        asp.quality.fd_px,
        100.0 * asp.footprint.sparsity_layers,
        asp.footprint.macs / 1e6,
        sdm.quality.fd_px,
        100.0 * sdm.footprint.sparsity_layers,
        sdm.footprint.macs / 1e6,
        r.quality.fd_px,
        100.0 * r.footprint.sparsity_layers,
        r.footprint.macs / 1e6,
    ))
}

/// Diff-Pruning's MAC target in Table 2: the paper's Diff-Pruning rows are at about half of the
/// dense MACs (5.32 G of U-ViT-S/2's 11.34 G).
const TABLE2_DIFF_PRUNING_MACS: f64 = 0.5;

pub fn table2(a: &Args, s: &Setup) -> Result<()> {
    let families = if s.unet.is_some() { "U-ViT and DDPM UNet" } else { "U-ViT" };
    eprintln!(
        "[repro] table 2 ({families}): dense, Diff-Pruning at {:.0}% of the MACs, and ASP, STE and SparseDM at 2:4 ({} steps each)",
        100.0 * TABLE2_DIFF_PRUNING_MACS,
        s.steps
    );
    let started = std::time::Instant::now();
    let mut rows = table2_family(&s.lab, "", s.steps)?;
    let mut ablations: Vec<LayerSetAblation> = layer_set_ablation(&s.lab, "", &rows, s.steps)?.into_iter().collect();
    if let Some(unet) = &s.unet {
        let unet_rows = table2_family(unet, "unet_", s.steps)?;
        ablations.extend(layer_set_ablation(unet, "unet_", &unet_rows, s.steps)?);
        rows.extend(unet_rows);
    }
    let mut notes = vec![
        format!(
            "Diff-Pruning (Fang et al. 2023, as `sparsedm prune --method diff-pruning --macs {TABLE2_DIFF_PRUNING_MACS}`): Taylor importance over the informative timesteps (every {}th timestep, batch {}; the reference visits each), channels pruned to {:.0}% of the MACs (U-ViT: MLP hidden width and attention heads; UNet: ResNet inner channels, whole GroupNorm groups), then the smaller dense model fine-tuned with plain ε-MSE for the same steps as the 2:4 rows and scored on its EMA weights.",
            crate::lab::DIFF_PRUNING_STRIDE,
            crate::lab::DIFF_PRUNING_BATCH,
            100.0 * TABLE2_DIFF_PRUNING_MACS
        ),
        "The paper's sparse MACs (5.67 G) are the dense count halved; sparsedm counts layer by layer (2:4 layers at half, the rest dense), which gives 6.08 G for U-ViT-S/2 with the sparsedm-uvit layers.".to_string(),
        "Masked layers: SparseDM and STE use the paper's code's sets (U-ViT: qkv, proj, fc1, fc2 of every block; UNet: every Conv2d and Linear, the 3-channel first conv in flat-index groups); ASP uses apex's size rule (out % 8 = 0, in % 16 = 0) on both. SparseDM's U-ViT has the paper's code's zero-initialised, trainable qkv bias (`nnet.sparsedm_qkv_bias`).".to_string(),
    ];
    notes.extend(rows.iter().filter_map(permutation_note));
    notes.extend(ablations.iter().filter_map(|ab| layer_set_note(&rows, ab)));
    let ablation_rows: Vec<Row> = ablations.into_iter().map(|a| a.row).collect();
    notes.push(format!("Wall time of the whole table: {:.0} s.", started.elapsed().as_secs_f64()));
    let plot = plots::quality_vs_macs(&a.out, "table2_quality_macs.png", &rows)?;
    let figures = [("Quality against MACs per image (lower left is better)", plot)];
    let notes: Vec<&str> = notes.iter().map(String::as_str).collect();
    write_outputs(a, s, Table::Table2, "Table 2: 2:4 sparse fine-tuning methods", &rows, paper::TABLE2, &notes, &figures, &ablation_rows)
}

/// The line on an ASP row's channel permutations: kept magnitude with and without.
fn permutation_note(r: &Row) -> Option<String> {
    let p = r.permutation.as_ref()?;
    let pct = |v: f64| 100.0 * v / p.total_magnitude.max(f64::MIN_POSITIVE);
    Some(format!(
        "{} {}: apex's channel permutations before pruning — the 2:4 masks keep {:.3}% of the pruned layers' |w| with them, {:.3}% without \
({} of {} permutable groups improved; {} sparse layers cannot be permuted consistently — residual streams, GroupNorm inputs, heads — and were left as they are).",
        r.model,
        r.label,
        pct(p.kept_with),
        pct(p.kept_without),
        p.applied(),
        p.groups.len(),
        p.unpermuted.len()
    ))
}

pub fn ablation(a: &Args, s: &Setup) -> Result<()> {
    let steps = s.ablation_steps;
    eprintln!(
        "[repro] ablation: {} ratios × untrained / STE / SparseDM masks ({steps} steps each), plus progressive sparsity",
        paper::ABLATION_RATIOS.len()
    );
    let mut rows = Vec::new();
    for ratio in paper::ABLATION_RATIOS {
        let slug = ratio.replace(':', "of");
        let pattern: NmPattern = ratio.parse()?;
        if pattern.is_dense() {
            // N = M keeps every weight: the dense point of the curve.
            rows.push(s.lab.row("dense", &Method::Dense, None, 0)?);
            continue;
        }
        rows.push(s.lab.row(&format!("untrained_{slug}"), &Method::Untrained, Some(pattern), 0)?);
        rows.push(s.lab.row(&format!("ste_{slug}"), &Method::Ste, Some(pattern), steps)?);
        rows.push(s.lab.row(&format!("sparsedm_{slug}"), &Method::SparseDm, Some(pattern), steps)?);
    }
    // Traditional progressive sparsity to 2:4 over the same budget (four equal stages).
    let q = (steps / 4).max(1);
    let stage = |spec: &str, start: u64| -> Result<Stage> { Ok(Stage { pattern: spec.parse()?, start }) };
    let stages = ProgressiveSchedule::new(vec![stage("15:16", 0)?, stage("7:8", q)?, stage("3:4", 2 * q)?, stage("2:4", 3 * q)?])?;
    rows.push(s.lab.row("progressive_2of4", &Method::Progressive(stages), Some(NmPattern::TWO_FOUR), steps)?);
    let notes = [
        "32:32 is the dense model (N = M keeps every weight).",
        "untrained mask: magnitude N:M masks applied to the dense weights, no training; STE: masks recomputed every step, plain ε-MSE; SparseDM: SR-STE + knowledge transfer.",
        "progressive: the traditional schedule 15:16 → 7:8 → 3:4 → 2:4 in four equal stages over the same budget, SR-STE masks, no teacher (the paper switches every 100k steps).",
        "The paper reports these curves only as figures (Fig. 3), so there are no published numbers to print beside them.",
    ];
    let lines = [Method::Untrained.label(), Method::Ste.label(), Method::SparseDm.label()];
    let plot = plots::ablation(&a.out, "ablation.png", &rows, &paper::ABLATION_RATIOS, "32:32", &lines)?;
    let figures = [("Quality against the sparsity ratio, one line per mask type (the paper's Fig. 3)", plot)];
    write_outputs(a, s, Table::Ablation, "Ablation: sparsity ratio × mask training", &rows, &[], &notes, &figures, &[])
}

/// Table 3: measured on a GPU (`table3.rs`); without one, the published grid and why ours is
/// missing.
pub fn table3(a: &Args) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let gpu = match super::table3::gpu_for(&a.device.device)? {
        Ok(gpu) => gpu,
        Err(reason) => return table3_unmeasured(a, &reason),
    };
    // The model's block, dense against 2:4 through cuSPARSELt, must agree before anything is timed.
    let check = super::table3::check_block(&gpu).context("Table 3 block check")?;
    eprintln!(
        "[repro] table3 block check on {}: the U-ViT block with 2:4 qkv, proj, fc1, fc2 through cuSPARSELt ({} layers, {} compressions) matches the dense masked block (relative error {:.1e})",
        gpu.name(),
        check.layers_24,
        check.compressions,
        check.rel_error
    );
    if gpu.is_simulated() {
        return table3_unmeasured(
            a,
            &format!("{} refuses timing (its times would not be a GPU's); the block check above passed", gpu.name()),
        );
    }
    let grid = super::table3::measure(&gpu)?;
    let (md, json) = super::table3::report(&gpu, &grid, scale_name(a.scale));
    write_files(&a.out, "table3", &md, &json)?;
    eprintln!("[repro] wrote {}", a.out.join("table3.md").display());
    Ok(())
}

fn table3_unmeasured(a: &Args, reason: &str) -> Result<()> {
    let mut md = String::new();
    let _ = writeln!(md, "# Table 3: end-to-end 2:4 speed-up on the GPU\n");
    let _ =
        writeln!(md, "One U-ViT block of width 8192 (8 heads × 1024), batch 64, fp16, 32×32 inputs; speed-up = dense time / 2:4 time.\n");
    let _ = writeln!(md, "**Ours: not measured** — {reason}.\n");
    let _ = writeln!(md, "| mlp_ratio | paper p=1 | p=2 | p=4 | PyTorch 2.11 on H200 p=1 | p=2 | p=4 |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for (i, r) in paper::TABLE3_MLP_RATIOS.iter().enumerate() {
        let p = paper::TABLE3_PAPER[i];
        let h = paper::TABLE3_PYTORCH_H200[i];
        let _ = writeln!(md, "| {r} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |", p[0], p[1], p[2], h[0], h[1], h[2]);
    }
    let _ = writeln!(
        md,
        "\nPaper: A40, PyTorch 2.2 CUTLASS semi-structured kernels. Peer: PyTorch 2.11 + cuSPARSELt 0.8 on an H200 (../shared/GPU.md §6)."
    );
    let json = serde_json::json!({
        "table": "table3",
        "scale": scale_name(a.scale),
        "ours": serde_json::Value::Null,
        "not_measured_because": reason,
        "mlp_ratios": paper::TABLE3_MLP_RATIOS,
        "patch_sizes": paper::TABLE3_PATCHES,
        "paper_speedup": paper::TABLE3_PAPER,
        "pytorch_h200_speedup": paper::TABLE3_PYTORCH_H200,
    });
    write_files(&a.out, "table3", &md, &json)?;
    eprintln!("[repro] table 3 not measured: {reason}");
    eprintln!("[repro] wrote the published grid to {}", a.out.join("table3.md").display());
    Ok(())
}

fn scale_name(s: Scale) -> &'static str {
    match s {
        Scale::Tiny => "tiny",
        Scale::Paper => "paper",
    }
}

/// Writes `TABLE.md` and `TABLE.json`: our rows, the comparison figure of the
/// dense and 2:4 rows, the table's own `figures` (caption, file), the
/// paper's rows and the notes.
fn write_outputs(
    a: &Args,
    s: &Setup,
    table: Table,
    title: &str,
    rows: &[Row],
    published: &[PaperRow],
    notes: &[&str],
    figures: &[(&str, String)],
    ablations: &[Row],
) -> Result<()> {
    let fid = s.lab.judge.has_fid();
    let mut md = String::new();
    let _ = writeln!(md, "# {title} ({} scale)\n", scale_name(a.scale));
    let _ = writeln!(md, "{}\n", s.describe);
    let _ = writeln!(md, "## sparsedm\n");
    let _ = writeln!(
        md,
        "| family | model | steps | zeros (Linear/Conv weights) | MACs/image (M) | FD-px48 ↓ |{} sampling (s) |",
        if fid { " FID ↓ |" } else { "" }
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|{}---|", if fid { "---|" } else { "" });
    for r in rows {
        table_line(&mut md, r, rows, fid);
    }
    if let Some(f) = &s.floor {
        let _ = writeln!(
            md,
            "| – | real images ({} held out) | – | – | – | {:.4} |{} – |",
            s.lab.draw.n,
            f.fd_px,
            if fid { f.fid.map(|v| format!(" {v:.2} |")).unwrap_or_else(|| " – |".into()) } else { String::new() }
        );
    }
    if !ablations.is_empty() {
        let _ = writeln!(md, "\n## Ablation (see the notes)\n");
        let _ = writeln!(
            md,
            "| family | model | steps | zeros (Linear/Conv weights) | MACs/image (M) | FD-px48 ↓ |{} sampling (s) |",
            if fid { " FID ↓ |" } else { "" }
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|{}---|", if fid { "---|" } else { "" });
        for r in ablations {
            table_line(&mut md, r, rows, fid);
        }
    }
    let shown: Vec<&Row> = rows.iter().filter(|r| r.pattern == "dense" || r.pattern == "2:4").collect();
    let side_by_side = compare::write(&a.out, &format!("{}_compare.png", table.name()), &shown)?;
    let mut all_figures = vec![("The same noise through each model (dense and 2:4 rows), one column per model", side_by_side)];
    all_figures.extend(figures.iter().map(|(caption, file)| (*caption, file.clone())));
    let _ = writeln!(md, "\n## Figures\n");
    for (caption, file) in &all_figures {
        let _ = writeln!(md, "{caption}:\n\n![{caption}]({file})\n");
    }
    // The paper's rows for the families measured here, on the dataset this scale stands for (pixel space).
    let has = |family: &str| rows.iter().any(|r| r.model == family);
    let mine: Vec<&PaperRow> = published
        .iter()
        .filter(|p| p.dataset == s.paper_dataset)
        .filter(|p| {
            (p.model.starts_with("U-ViT") && !p.model.contains("LDM") && has("U-ViT")) || (p.model == "DDPM UNet" && has("DDPM UNet"))
        })
        .collect();
    if !mine.is_empty() {
        let _ = writeln!(md, "\n## The paper ({}; FID on 50k samples; all datasets in {}.json)\n", s.paper_dataset, table.name());
        let _ = writeln!(md, "| family | method | FID | MACs (G) |");
        let _ = writeln!(md, "|---|---|---|---|");
        for p in mine {
            let _ = writeln!(md, "| {} | {} | {:.2} | {:.2} |", p.model, p.method, p.fid, p.macs_g);
        }
    }
    let _ = writeln!(md, "\n## Notes\n");
    for n in notes {
        let _ = writeln!(md, "- {n}");
    }
    let _ =
        writeln!(md, "- Each row's samples: `samples_<model>.png`; its weights: `<model>.safetensors` (sparse ones verified N:M on load).");
    let _ = writeln!(
        md,
        "- sampling: wall-clock seconds to draw the row's samples on this machine in this run (N:M layers on the N:M kernels where those \
are faster at the layer's shape), and the speed-up over the family's dense row; one measurement, with the machine's spread."
    );
    let _ = writeln!(
        md,
        "- Trained rows are sampled, scored and exported with their EMA weights (`\"weights\": \"ema\"` in the JSON; the EMA model derives its masks from its own weights); the dense and untrained-mask rows use the dense checkpoint's weights as given (`\"checkpoint\"`)."
    );
    let json = serde_json::json!({
        "table": table.name(),
        "scale": scale_name(a.scale),
        "setup": s.describe,
        "rows": rows,
        "ablations": ablations,
        "real_floor": s.floor,
        "paper": published,
        "notes": notes,
        "figures": all_figures.iter().map(|(_, file)| file).collect::<Vec<_>>(),
    });
    write_files(&a.out, table.name(), &md, &json)?;
    println!("{md}");
    eprintln!(
        "[repro] wrote {} and {}",
        a.out.join(format!("{}.md", table.name())).display(),
        a.out.join(format!("{}.json", table.name())).display()
    );
    Ok(())
}

/// One measured row as a line of the markdown table; MAC shares are
/// relative to the family's first row in `rows`, its dense model (the
/// half-size model has fewer dense MACs).
fn table_line(md: &mut String, r: &Row, rows: &[Row], fid: bool) {
    let dense_macs = rows.iter().find(|d| d.model == r.model).map_or(1.0, |d| d.footprint.macs_dense.max(1.0));
    // Sampling time and the speed-up over the family's dense row.
    let sampling = match rows.iter().find(|d| d.model == r.model && d.pattern == "dense" && d.method == Method::Dense.label()) {
        Some(d) if r.sampling_seconds > 0.0 => format!("{:.2} ({:.2}x)", r.sampling_seconds, d.sampling_seconds / r.sampling_seconds),
        _ => format!("{:.2}", r.sampling_seconds),
    };
    let _ = writeln!(
        md,
        "| {} | {} | {} | {:.1}% | {:.2} ({:.0}%) | {:.4} |{} {sampling} |",
        r.model,
        r.label,
        r.steps,
        100.0 * r.footprint.sparsity_layers,
        r.footprint.macs / 1e6,
        100.0 * r.footprint.macs / dense_macs,
        r.quality.fd_px,
        if fid { r.quality.fid.map(|f| format!(" {f:.2} |")).unwrap_or_else(|| " – |".into()) } else { String::new() }
    );
}

pub(super) fn write_files(out: &Path, name: &str, md: &str, json: &serde_json::Value) -> Result<()> {
    let md_path = out.join(format!("{name}.md"));
    sparsedm_tensor::write_atomic(&md_path, md.as_bytes()).with_context(|| format!("cannot write {}", md_path.display()))?;
    let json_path = out.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(json)?;
    sparsedm_tensor::write_atomic(&json_path, text.as_bytes()).with_context(|| format!("cannot write {}", json_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsedm_train::experiment::{Footprint, Quality};
    use sparsedm_train::samples::Images;

    fn row(method: &Method, fd_px: f64, zeros: f64) -> Row {
        Row {
            model: "DDPM UNet".into(),
            label: method.label().into(),
            method: method.label().into(),
            detail: String::new(),
            pattern: "2:4".into(),
            steps: 100,
            footprint: Footprint { sparsity_layers: zeros, sparsity_model: zeros, macs: 1e6, macs_dense: 2e6 },
            quality: Quality { fd_px, fid: None },
            grid: String::new(),
            checkpoint: String::new(),
            weights: "ema".into(),
            permutation: None,
            seconds: 1.0,
            sampling_seconds: 1.0,
            nm_kernel_calls: 0,
            nm_dense_calls: 0,
            preview: Images { data: Vec::new(), n: 0, h: 0, w: 0 },
        }
    }

    /// The ablation note reads the measured scores: which of the three
    /// outcomes it states follows from where the ablation row lands
    /// between ASP's and SparseDM's rows, and it cites all three numbers.
    #[test]
    fn layer_set_note_follows_the_measured_scores() {
        let rows = vec![row(&Method::Asp, 0.70, 0.45), row(&Method::SparseDm, 1.58, 0.50)];
        let ablation = |fd: f64| LayerSetAblation {
            row: row(&Method::SparseDmAspLayers, fd, 0.45),
            only_sparsedm: vec!["conv_in (Conv2d [32, 3, 3, 3])".into()],
        };
        let note = |fd: f64| layer_set_note(&rows, &ablation(fd)).unwrap();
        let beats = note(0.65);
        assert!(beats.contains("the layer set, not the method, puts ASP ahead"), "{beats}");
        assert!(beats.contains("0.7000") && beats.contains("1.5800") && beats.contains("0.6500"), "{beats}");
        assert!(beats.contains("leaves dense: conv_in (Conv2d [32, 3, 3, 3])."), "{beats}");
        assert!(note(1.0).contains("explains part of the gap"));
        assert!(note(1.6).contains("does not help SparseDM"));
        // No ASP row in the ablation's family: no note.
        let mut other = ablation(0.5);
        other.row.model = "U-ViT".into();
        assert!(layer_set_note(&rows, &other).is_none());
    }
}
