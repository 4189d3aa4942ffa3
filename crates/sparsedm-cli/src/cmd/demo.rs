//! `sparsedm demo`: the whole method on the embedded shapes dataset, no
//! download. Starts from the small dense U-ViT shipped in the binary
//! (trained by this project's own trainer, see `assets/README.md`) — or
//! pre-trains one with `--pretrain-steps N` — fine-tunes it to 2:4 three
//! ways for the same budget — SparseDM (SR-STE + knowledge transfer from the
//! dense model), STE and ASP — samples each from the same noise and prints a
//! table (sparsity, MACs, FD-px48, and FID with `--inception`), writing
//! `report.md`, one labelled PNG grid per model, `compare.png` (the same
//! noise through each model, side by side) and the checkpoints.
//!
//! `--device cuda[:N]` trains, samples and runs InceptionV3 there (training
//! at the presets' precision: bf16 on a GPU).

use super::DeviceArg;
use crate::lab::{self, Lab, Method, Row};
use crate::presets::{DEMO_DENSE_CHECKPOINT, DEMO_PRESET as PRESET, FINETUNE_LR, FINETUNE_WARMUP_STEPS, demo_finetune_base};
use anyhow::{Context, Result};
use sparsedm_layers::NmPattern;
use sparsedm_train::RunConfig;
use sparsedm_train::data::Dataset;
use sparsedm_train::experiment::{DrawSpec, Judge, Quality};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, clap::Args)]
#[command(after_help = "The quality score FD-px48 is a Fréchet distance between 4x4 average-pooled RGB pixels \
(48-d) of generated and real images: no download, NOT FID, not comparable with published numbers. \
With --inception (pytorch-fid's weights converted to safetensors) the table adds real FID.\n\n\
Examples:\n  \
sparsedm demo\n  \
sparsedm demo --out /tmp/demo --steps-finetune 20 --samples 16")]
pub struct Args {
    /// Folder for checkpoints, sample grids and report.md.
    #[arg(long, default_value = "demo-output")]
    pub out: PathBuf,
    /// Fine-tuning steps of each sparse method (batch 64; the same for all three).
    #[arg(long, default_value_t = 100)]
    pub steps_finetune: u64,
    /// Pre-train the dense model from scratch for this many steps instead of using the shipped checkpoint.
    #[arg(long)]
    pub pretrain_steps: Option<u64>,
    /// Images sampled from each model (same noise for all).
    #[arg(long, default_value_t = 128)]
    pub samples: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write into a non-empty --out folder (files of an earlier demo there are replaced).
    #[arg(long)]
    pub force: bool,
    /// pytorch-fid InceptionV3 weights (safetensors) for real FID besides FD-px48.
    #[arg(long, value_name = "FILE")]
    pub inception: Option<PathBuf>,
    /// Real images the FID reference statistics use (Inception costs ~0.1-0.2 s per image on 2 CPU cores).
    #[arg(long, default_value_t = 1000)]
    pub fid_reference: usize,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(args: Args) -> Result<()> {
    let device = args.device.resolve()?;
    anyhow::ensure!(args.steps_finetune > 0, "--steps-finetune must be at least 1");
    anyhow::ensure!(args.samples >= 2, "--samples must be at least 2 (the Fréchet distance needs a covariance)");
    let started = Instant::now();
    let out = args.out.clone();
    let inputs: Vec<&Path> = args.inception.iter().map(PathBuf::as_path).collect();
    crate::output::check_dir("--out", &out, args.force, &inputs, "the demo's checkpoints, grids and report")?;
    // Another demo or repro writing this folder refuses this one before
    // `--force` removes its runs (held until the demo ends).
    let held = sparsedm_train::run_lock::hold_existing(&out)?;
    if args.force {
        // An earlier demo's training runs would mix with this one's checkpoints.
        crate::run_folder::remove_lab_runs(&out)?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let _held = match held {
        Some(held) => held,
        None => sparsedm_train::run_lock::hold(&out)?,
    };
    args.device.announce();

    let base = RunConfig::load(PRESET, &[])?;
    let data = sparsedm_train::build::dataset(&base)?;
    // The reference leaves the last `samples` images out: they give the real-data floor row.
    let held_out = args.samples.min(data.len() / 2);
    let n_ref = if args.inception.is_some() { args.fid_reference } else { data.len() }.min(data.len() - held_out);
    eprintln!(
        "[demo] reference statistics from {n_ref} real images ({}){}",
        data.describe(),
        if args.inception.is_some() { ", with InceptionV3" } else { "" }
    );
    let judge = Judge::new_on(data.as_ref(), n_ref, args.inception.as_deref(), device)?;
    let floor = judge.real_floor(data.as_ref(), data.len() - held_out, held_out)?;

    // 1. The dense model: shipped, or pre-trained here.
    let dense = out.join("dense.safetensors");
    let pretrained = match args.pretrain_steps {
        Some(steps) => {
            eprintln!("[demo] 1/4 pre-training the dense U-ViT ({PRESET}) for {steps} steps");
            let cfg = RunConfig::load(PRESET, &[format!("train.n_steps={steps}"), "train.sample_interval=0".into()])?;
            let t = lab::train_with_progress(cfg, &out.join("runs").join("pretrain"), "pretrain: ", device, false)?;
            t.export_model(&dense, true)?;
            Some(steps)
        }
        None => {
            eprintln!("[demo] 1/4 the dense U-ViT ({PRESET}) shipped with sparsedm");
            sparsedm_tensor::write_atomic(&dense, DEMO_DENSE_CHECKPOINT).with_context(|| format!("cannot write {}", dense.display()))?;
            None
        }
    };
    let lab = Lab {
        out: out.clone(),
        base: demo_finetune_base()?,
        dense: dense.clone(),
        device,
        judge,
        draw: DrawSpec {
            n: args.samples,
            sampler: base.sample.sampler,
            steps: base.sample.steps,
            seed: args.seed,
            clip_denoised: base.sample.clip_denoised,
        },
        resume: false,
    };
    let mut rows = vec![lab.row("dense", &Method::Dense, None, 0)?];
    // 2. The three 2:4 fine-tunings, same budget.
    for (i, (slug, method)) in [("sparsedm", Method::SparseDm), ("ste", Method::Ste), ("asp", Method::Asp)].into_iter().enumerate() {
        eprintln!("[demo] {}/4 fine-tuning to 2:4 with {} for {} steps", i + 2, method.label(), args.steps_finetune);
        rows.push(lab.row(slug, &method, Some(NmPattern::TWO_FOUR), args.steps_finetune)?);
    }

    let table = render_table(&rows, &floor, args.samples, lab.judge.has_fid());
    println!("{table}");
    let side_by_side = crate::compare::write(&out, "compare.png", &rows.iter().collect::<Vec<_>>())?;
    let elapsed = started.elapsed().as_secs_f64();
    write_report(&out.join("report.md"), &rows, &table, &side_by_side, &args, pretrained, data.as_ref(), elapsed)?;
    eprintln!("[demo] done in {elapsed:.0} s; report, grids and checkpoints in {}", out.display());
    Ok(())
}

fn render_table(rows: &[Row], floor: &Quality, n: usize, fid: bool) -> String {
    let mut s = String::new();
    let fid_h = if fid { " FID ↓ |" } else { "" };
    let fid_l = if fid { "-------|" } else { "" };
    let _ = writeln!(
        s,
        "| method   | zeros (Linear/Conv weights) | sparsity (whole model) | MACs/image (M) | FD-px48 ↓ |{fid_h} sampling (s) |"
    );
    let _ = writeln!(
        s,
        "|----------|-----------------------------|------------------------|----------------|-----------|{fid_l}--------------|"
    );
    // Sampling time against the dense row's (the speed-up the N:M layers give).
    let dense_sampling = rows.iter().find(|r| r.pattern == "dense").map(|r| r.sampling_seconds);
    let sampling_cell = |r: &Row| match dense_sampling {
        Some(d) if r.sampling_seconds > 0.0 => format!(" {:>5.2} ({:.2}x) |", r.sampling_seconds, d / r.sampling_seconds),
        _ => format!(" {:>12.2} |", r.sampling_seconds),
    };
    let fid_cell =
        |q: &Quality| if fid { q.fid.map(|f| format!(" {f:>5.2} |")).unwrap_or_else(|| "   –   |".into()) } else { String::new() };
    for r in rows {
        let f = &r.footprint;
        let _ = writeln!(
            s,
            "| {:<8} | {:>26.1}% | {:>21.1}% | {:>7.2} ({:>3.0}%) | {:>9.4} |{}{}",
            r.method,
            100.0 * f.sparsity_layers,
            100.0 * f.sparsity_model,
            f.macs / 1e6,
            100.0 * f.macs / f.macs_dense.max(1.0),
            r.quality.fd_px,
            fid_cell(&r.quality),
            sampling_cell(r)
        );
    }
    let _ = write!(s, "| real images ({n}) | | | | {:>9.4} |{} |", floor.fd_px, fid_cell(floor));
    s
}

fn write_report(
    path: &Path,
    rows: &[Row],
    table: &str,
    side_by_side: &str,
    args: &Args,
    pretrained: Option<u64>,
    data: &dyn Dataset,
    elapsed: f64,
) -> Result<()> {
    let mut s = String::new();
    let _ = writeln!(s, "# SparseDM demo\n");
    let start = match pretrained {
        Some(steps) => format!("pre-trained here for {steps} steps"),
        None => "the checkpoint shipped with sparsedm (trained by `sparsedm train`, see crates/sparsedm-cli/assets/README.md)".into(),
    };
    let _ = writeln!(
        s,
        "A small dense U-ViT (preset `{PRESET}`: 16×16 images, patch 2, width 128, depth 6, 4 heads, 1.50 M parameters) — {start} — \
fine-tuned to 2:4 sparsity on the {} for {} steps (batch 64, lr {FINETUNE_LR:e} after {FINETUNE_WARMUP_STEPS} warm-up steps) with each method. {} images per model \
from the same noise (seed {}), DPM-Solver++(2M) with 25 steps and x̂₀ clipped to [−1, 1]. Total time {elapsed:.0} s.\n",
        data.describe(),
        args.steps_finetune,
        args.samples,
        args.seed
    );
    let _ = writeln!(s, "{table}\n");
    let _ = writeln!(
        s,
        "- **zeros**: exact zeros over all Linear/Conv weights (SparseDM and STE prune the `sparsedm-uvit` layers — qkv, proj, fc1, fc2 — to 2:4; ASP prunes every layer ASP accepts); **whole model**: over all parameters."
    );
    let _ = writeln!(
        s,
        "- **weights**: each fine-tuned model is sampled, scored and exported with its EMA weights (the preset's EMA rate; the EMA model derives its 2:4 masks from its own weights), as the paper scores its models; the dense row uses the shipped checkpoint (EMA weights)."
    );
    let _ = writeln!(
        s,
        "- **MACs/image**: Linear + Conv + LayerNorm multiply–accumulates of one forward pass, N:M layers counted at N/M (the paper's convention), and the share of the dense count."
    );
    let _ = writeln!(
        s,
        "- **FD-px48**: the Fréchet distance between 48-d features — each image 4×4 average-pooled per RGB channel, values in [0, 1] — \
of the generated images and of the dataset's images. It needs no download. **It is not FID** and cannot be compared \
with published numbers; with {} images it is biased upwards (the last row: that many real images the reference did not use, i.e. what a perfect model would score).",
        args.samples
    );
    let _ = writeln!(
        s,
        "- **sampling**: wall-clock seconds to draw the {} images (batches of up to 64, 25 steps) on this machine in this run, and the \
speed-up over the dense row. A sparse model's N:M layers run on sparsedm's N:M kernels where those time faster than the dense \
product at the layer's shape (once per shape), so the MACs it saves make it sample faster; the layers it keeps dense, attention \
and the norms cost what they cost in the dense model. One measurement on a possibly shared machine: expect some spread; \
`sparsedm bench --pattern 2:4` times the forward alone.",
        args.samples
    );
    if args.inception.is_some() {
        let _ = writeln!(
            s,
            "- **FID**: pytorch-fid's InceptionV3 (pool3, 2048-d) against {} real images; with {} samples it is far above the 50k-sample values papers report.",
            args.fid_reference, args.samples
        );
    }
    let _ = writeln!(s, "\n## Methods\n");
    for r in rows {
        let _ = writeln!(s, "- **{}**: {} — checkpoint `{}`", r.method, r.detail, r.checkpoint);
    }
    let _ = writeln!(s, "\n## Samples\n");
    let _ =
        writeln!(s, "The same noise through each model, one column per model:\n\n![the same noise through each model]({side_by_side})\n");
    for r in rows {
        let _ = writeln!(s, "### {}\n\n![{} samples]({})\n", r.method, r.method, r.grid);
    }
    sparsedm_tensor::write_atomic(path, s.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
