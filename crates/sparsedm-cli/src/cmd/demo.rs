//! `sparsedm demo`: the whole method on the embedded shapes dataset, no
//! download. Pre-trains the small dense U-ViT of the `demo_shapes_uvit`
//! preset, fine-tunes it to 2:4 three ways for the same budget — SparseDM
//! (SR-STE + knowledge transfer from the dense model), STE and ASP (fixed
//! one-shot magnitude masks) — samples each with the same seed and prints a
//! table (sparsity, MACs, a pixel-space Fréchet distance) plus `report.md`
//! and one PNG grid per model.
//!
//! The quality score, "FD-px48", is the Fréchet distance between 48-d
//! features — each image 4×4 average-pooled per RGB channel, in [0, 1] —
//! of the generated images and of all the dataset's images. It needs no
//! download; it is *not* FID and is not comparable with published numbers.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sparsedm_fid::{frechet_distance, FeatureStats, StatsAccumulator};
use sparsedm_train::build::Bundle;
use sparsedm_train::data::Dataset;
use sparsedm_train::samples::{generate, write_grid_png, Images, SampleRequest};
use sparsedm_train::{RunConfig, Trainer};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

const PRESET: &str = "demo_shapes_uvit";
/// Pooled cells per side of the FD-px feature (4×4 cells × RGB = 48-d).
const CELLS: usize = 4;

#[derive(Debug, clap::Args)]
#[command(after_help = "The quality score FD-px48 is a Fréchet distance between 4x4 average-pooled RGB pixels \
(48-d) of generated and real images: no download, NOT FID, not comparable with published numbers.\n\n\
Examples:\n  \
sparsedm demo\n  \
sparsedm demo --out /tmp/demo --steps-pretrain 100 --steps-finetune 30 --samples 16")]
pub struct Args {
    /// Folder for checkpoints, sample grids and report.md.
    #[arg(long, default_value = "demo-output")]
    pub out: PathBuf,
    /// Dense pre-training steps (batch 64).
    #[arg(long, default_value_t = 200)]
    pub steps_pretrain: u64,
    /// Fine-tuning steps of each sparse method (the same for all three).
    #[arg(long, default_value_t = 40)]
    pub steps_finetune: u64,
    /// Images sampled from each model (same seed for all).
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    method: &'static str,
    detail: &'static str,
    weights: &'static str,
    sparsity_layers: f64,
    sparsity_model: f64,
    macs: f64,
    macs_dense: f64,
    fd: f64,
    grid: String,
    checkpoint: String,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.steps_pretrain > 0 && args.steps_finetune > 0, "--steps-pretrain and --steps-finetune must be at least 1");
    anyhow::ensure!(args.samples >= 2, "--samples must be at least 2 (the Fréchet distance needs a covariance)");
    let started = Instant::now();
    let out = args.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    // Reference statistics: every image of the embedded dataset.
    let base = RunConfig::load(PRESET, &[])?;
    let data = sparsedm_train::build::dataset(&base)?;
    eprintln!("[demo] reference FD-px statistics from {} real images ({})", data.len(), data.describe());
    let reference = real_stats(data.as_ref(), 0, data.len())?;
    // A floor for the score: N real images (as many as generated) against the reference.
    let floor = {
        let n = args.samples.min(data.len());
        let s = real_stats(data.as_ref(), 0, n)?;
        frechet_distance(&s, &reference)?
    };

    let mut rows = Vec::new();

    // 1. Dense pre-training.
    eprintln!("[demo] 1/4 pre-training the dense U-ViT ({PRESET}) for {} steps", args.steps_pretrain);
    let cfg = RunConfig::load(PRESET, &[format!("train.n_steps={}", args.steps_pretrain), "train.sample_interval=0".into()])?;
    let dense = train(cfg, &out.join("runs").join("dense"))?;
    let teacher = out.join("dense.safetensors");
    let row = evaluate(&dense, "dense", "dense pre-trained U-ViT", &teacher, &out, &args, &reference, true)?;
    rows.push(row);
    drop(dense);

    // 2. The three 2:4 fine-tunings, same budget.
    let init = format!("train.init={:?}", teacher.display().to_string());
    let methods: [(&str, &str, &[&str]); 3] = [
        ("SparseDM", "SR-STE (λ=2e-4) + knowledge transfer from the dense model (w_kt=0.1)", &["sparse.method=\"srste\"", "sparse.lambda=2e-4", "sparse.teacher=\"init\"", "sparse.w_kt=0.1"]),
        ("STE", "straight-through estimator, no teacher", &["sparse.method=\"ste\"", "sparse.teacher=\"none\""]),
        ("ASP", "one-shot magnitude 2:4 masks kept fixed, no teacher", &["sparse.method=\"fixed\"", "sparse.teacher=\"none\""]),
    ];
    for (i, (name, detail, extra)) in methods.iter().enumerate() {
        eprintln!("[demo] {}/4 fine-tuning to 2:4 with {name} for {} steps", i + 2, args.steps_finetune);
        let mut set = vec![
            format!("train.n_steps={}", args.steps_finetune),
            "train.sample_interval=0".into(),
            init.clone(),
            "sparse.pattern=\"2:4\"".into(),
        ];
        set.extend(extra.iter().map(|s| s.to_string()));
        let cfg = RunConfig::load(PRESET, &set)?;
        let slug = name.to_lowercase();
        let t = train(cfg, &out.join("runs").join(&slug))?;
        let row = evaluate(&t, name, detail, &out.join(format!("{slug}.safetensors")), &out, &args, &reference, false)?;
        rows.push(row);
    }

    let table = render_table(&rows, floor, args.samples);
    println!("{table}");
    let elapsed = started.elapsed().as_secs_f64();
    write_report(&out.join("report.md"), &rows, &table, &args, data.len(), elapsed)?;
    eprintln!("[demo] done in {elapsed:.0} s; report, grids and checkpoints in {}", out.display());
    Ok(())
}

/// Runs one training to its end with a progress bar (or a line per log interval off a terminal).
fn train(cfg: RunConfig, dir: &Path) -> Result<Trainer> {
    if dir.exists() {
        // A fresh run each time: stale checkpoints would be resumed otherwise.
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let n_steps = cfg.train.n_steps;
    let log_every = cfg.train.log_interval.max(1);
    let mut trainer = Trainer::new(cfg, dir, false)?;
    let bar = ProgressBar::new(n_steps);
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]").unwrap_or_else(|_| ProgressStyle::default_bar()));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    trainer.run(None, |m, rate| {
        let msg = format!("loss {:.4} {:.2} steps/s", m.loss, rate);
        bar.set_position(m.step);
        bar.set_message(msg.clone());
        if !terminal && (m.step % log_every == 0 || m.step == n_steps) {
            eprintln!("  step {}/{n_steps} {msg}", m.step);
        }
    })?;
    bar.finish_and_clear();
    Ok(trainer)
}

/// Samples the raw weights and, with `try_ema`, the EMA weights too and
/// keeps the better (lower FD-px); exports the kept weights to
/// `checkpoint` and measures sparsity and MACs. (Fine-tuned models use
/// their raw weights: an EMA of rate 0.99 over a short fine-tune is still
/// dominated by the freshly pruned start.)
#[allow(clippy::too_many_arguments)]
fn evaluate(t: &Trainer, method: &'static str, detail: &'static str, checkpoint: &Path, out: &Path, args: &Args, reference: &FeatureStats, try_ema: bool) -> Result<Row> {
    let raw = t.student();
    raw.store.set_training(false);
    let raw_imgs = draw(raw, t, args, &format!("{method} (raw weights)"))?;
    let raw_fd = frechet_distance(&images_stats(&raw_imgs)?, reference)?;
    let ema = if try_ema {
        let b = t.ema_model()?;
        let imgs = draw(&b, t, args, &format!("{method} (EMA weights)"))?;
        let fd = frechet_distance(&images_stats(&imgs)?, reference)?;
        eprintln!("  FD-px48: EMA {fd:.4}, raw {raw_fd:.4}");
        Some((b, imgs, fd)).filter(|e| e.2 < raw_fd)
    } else {
        None
    };
    let use_ema = ema.is_some();
    let (bundle, imgs, fd, weights) = match &ema {
        Some((b, imgs, fd)) => (b, imgs.clone(), *fd, "EMA"),
        None => (raw, raw_imgs, raw_fd, "raw"),
    };
    t.export_model(checkpoint, use_ema)?;
    let grid = format!("samples_{}.png", method.to_lowercase());
    write_grid_png(&out.join(&grid), &imgs, (imgs.n as f64).sqrt().ceil() as usize)?;

    let report = sparsedm_layers::SparsityReport::from_store(&bundle.store)?;
    let slot_weights: std::collections::HashSet<String> = bundle.store.sparse_slots().into_iter().map(|(n, _)| format!("{n}.weight")).collect();
    let (mut zeros, mut total) = (report.totals.zeros, report.totals.params);
    for (name, p) in bundle.store.params() {
        if slot_weights.contains(&name) {
            continue;
        }
        let v = p.to_vec_f32()?;
        total += v.len() as u64;
        zeros += v.iter().filter(|&&x| x == 0.0).count() as u64;
    }
    let mut macs = bundle.config.mac_report(1);
    macs.apply_store(&bundle.store);
    eprintln!("  {method}: FD-px48 {fd:.4} ({weights} weights)");
    Ok(Row {
        method,
        detail,
        weights,
        sparsity_layers: report.totals.sparsity,
        sparsity_model: zeros as f64 / total.max(1) as f64,
        macs: macs.paper_total(),
        macs_dense: macs.linear_conv_dense() as f64 + macs.norms(),
        fd,
        grid,
        checkpoint: checkpoint.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    })
}

fn draw(b: &Bundle, t: &Trainer, args: &Args, what: &str) -> Result<Images> {
    let s = &t.config().sample;
    let req = SampleRequest {
        n: args.samples,
        batch: args.samples.min(64),
        shape: b.config.input_shape(),
        sampler: s.sampler.parse()?,
        steps: s.steps,
        seed: args.seed,
        class: None,
        cfg_scale: None,
        num_classes: None,
    };
    let start = Instant::now();
    let imgs = generate(b.model.as_ref(), t.schedule(), &req, |_| {})?;
    eprintln!("  sampled {} images from {what} ({} {} steps) in {:.1} s", imgs.n, s.sampler, s.steps, start.elapsed().as_secs_f64());
    Ok(imgs)
}

/// The FD-px feature of one HWC image in [0, 1]: mean of each RGB channel
/// over each of CELLS×CELLS equal cells (channel-major).
fn pooled(pixel: impl Fn(usize, usize, usize) -> f64, h: usize, w: usize, out: &mut Vec<f64>) {
    for c in 0..3 {
        for cy in 0..CELLS {
            for cx in 0..CELLS {
                let (y0, y1) = (cy * h / CELLS, (cy + 1) * h / CELLS);
                let (x0, x1) = (cx * w / CELLS, (cx + 1) * w / CELLS);
                let mut s = 0.0;
                for y in y0..y1 {
                    for x in x0..x1 {
                        s += pixel(c, y, x);
                    }
                }
                out.push(s / ((y1 - y0) * (x1 - x0)).max(1) as f64);
            }
        }
    }
}

fn images_stats(imgs: &Images) -> Result<FeatureStats> {
    let mut acc = StatsAccumulator::new(3 * CELLS * CELLS)?;
    let mut feats = Vec::with_capacity(imgs.n * 3 * CELLS * CELLS);
    for i in 0..imgs.n {
        let base = i * imgs.h * imgs.w * 3;
        pooled(|c, y, x| f64::from(imgs.data[base + (y * imgs.w + x) * 3 + c]) / 255.0, imgs.h, imgs.w, &mut feats);
    }
    acc.add_batch_f64(&feats)?;
    Ok(acc.finish()?)
}

fn real_stats(data: &dyn Dataset, from: usize, n: usize) -> Result<FeatureStats> {
    let (h, w) = data.image_size();
    let mut acc = StatsAccumulator::new(3 * CELLS * CELLS)?;
    let mut img = vec![0f32; 3 * h * w];
    let mut feats = Vec::with_capacity(n * 3 * CELLS * CELLS);
    for i in from..from + n {
        data.get(i, &mut img)?;
        pooled(|c, y, x| f64::from(img[(c * h + y) * w + x]), h, w, &mut feats);
    }
    acc.add_batch_f64(&feats)?;
    Ok(acc.finish()?)
}

fn render_table(rows: &[Row], floor: f64, n: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| method   | weights | zeros (linear weights)   | sparsity (whole model) | MACs/image (M) | FD-px48 ↓ |");
    let _ = writeln!(s, "|----------|---------|--------------------------|------------------------|----------------|-----------|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {:<8} | {:<7} | {:>23.1}% | {:>21.1}% | {:>8.2} ({:>3.0}%) | {:>9.4} |",
            r.method,
            r.weights,
            100.0 * r.sparsity_layers,
            100.0 * r.sparsity_model,
            r.macs / 1e6,
            100.0 * r.macs / r.macs_dense.max(1.0),
            r.fd
        );
    }
    let _ = write!(s, "| real data ({n} images) | | | | | {floor:>9.4} |");
    s
}

fn write_report(path: &Path, rows: &[Row], table: &str, args: &Args, n_real: usize, elapsed: f64) -> Result<()> {
    let mut s = String::new();
    let _ = writeln!(s, "# SparseDM demo\n");
    let _ = writeln!(
        s,
        "A small dense U-ViT (preset `{PRESET}`: 16×16 images, patch 2, width 128, depth 6, 4 heads) pre-trained for {} steps \
on the embedded shapes dataset, then fine-tuned to 2:4 sparsity for {} steps with each method. {} images per model, \
sampling seed {}, the preset's sampler. Total time {elapsed:.0} s.\n",
        args.steps_pretrain, args.steps_finetune, args.samples, args.seed
    );
    let _ = writeln!(s, "{table}\n");
    let _ = writeln!(s, "- **zeros (linear weights)**: fraction of exact zeros over all Linear/Conv weights (the `sparsedm-uvit` policy makes most of them 2:4; the rest stay dense); **whole model**: over all parameters.");
    let _ = writeln!(s, "- **MACs/image**: linear + norm multiply–accumulates of one forward pass with 2:4 layers counted at half (the paper's convention), and the share of the dense count.");
    let _ = writeln!(
        s,
        "- **FD-px48**: the Fréchet distance between 48-d features — each image 4×4 average-pooled per RGB channel, values in [0, 1] — \
of the {} generated images and of all {n_real} images of the dataset. It needs no download. **It is not FID** and cannot be compared \
with published numbers; at this sample size it is noisy and biased upwards (see the real-data row: {} real images against the same reference).",
        args.samples, args.samples
    );
    let _ = writeln!(s, "- **weights**: the dense model is sampled with its EMA and its raw weights and the one with the lower FD-px48 is kept, exported (the teacher and starting point of the fine-tunings) and shown; the fine-tuned models use their raw weights (an EMA of rate 0.99 over a short fine-tune is still dominated by the freshly pruned start).\n");
    let _ = writeln!(s, "## Methods\n");
    for r in rows {
        let _ = writeln!(s, "- **{}**: {} — checkpoint `{}`, {} weights", r.method, r.detail, r.checkpoint, r.weights);
    }
    let _ = writeln!(s, "\n## Samples\n");
    for r in rows {
        let _ = writeln!(s, "### {}\n\n![{} samples]({})\n", r.method, r.method, r.grid);
    }
    std::fs::write(path, s).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
