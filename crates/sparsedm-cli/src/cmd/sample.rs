//! `sparsedm sample`: images from a checkpoint (a training run's, whose EMA
//! weights are used by default; an exported or pruned model; or official
//! weights with `--arch` and `--config`), written as PNG files into a
//! folder, as an NHWC uint8 `arr_0` npz for FID tools, or as one labelled
//! PNG grid to look at (`--out FILE.png`, up to [`MAX_GRID`] images).
//!
//! Images are written batch by batch as they are drawn (memory stays one
//! batch whatever `--n` is; a grid holds its at most 1024 images); the output is checked before any work: an
//! existing npz or a non-empty folder needs `--force`, the checkpoint is
//! never an output, the disk must hold at least the images' size, and flags
//! that would be ignored (`--class` or `--cfg-scale` for an unconditional
//! model, `--raw` or `--schedule` where they do not apply, ...) are refused.
//! A class-conditional model samples without `--class` too: each image's
//! label is drawn uniformly from the run's dataset's classes (official
//! weights: from every label but the last, U-ViT's null label of guidance);
//! an npz stores the labels beside the images (`arr_1`, guided-diffusion's
//! layout).
//!
//! `--device cuda[:N]` samples there; the starting noise is drawn on the
//! host (the same on every device). Matrix products are f32 unless
//! `--precision` says otherwise, so a GPU gives the CPU's images (up to
//! rounding, within 1/255); `--precision bf16` is the fast choice.

use super::PrecisionArg;
use crate::{budget, output};
use anyhow::{Context, Result, bail};
use sparsedm_diffusion::{Arch, SamplerKind, ScheduleKind};
use sparsedm_train::precision::MatmulScope;
use sparsedm_train::restore::restore_on;
use sparsedm_train::samples::{Images, Labels, MAX_GRID, SampleRequest, check_request, generate_batches, write_png_images};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
sparsedm sample --checkpoint runs/demo/checkpoints/step_00000600.safetensors --n 64 --out samples/\n  \
sparsedm sample --checkpoint runs/demo/checkpoints/step_00000600.safetensors --n 64 --out grid.png\n  \
sparsedm sample --checkpoint uvit_s2.safetensors --arch uvit --config cifar10_uvit_small.json --n 50000 \\\n    --sampler euler-maruyama --steps 1000 --out samples.npz\n\n\
Samplers: euler-maruyama, pf-ode, dpm-solver-1, dpm-solver-2, dpm-solver-3, dpm-solver-fast, dpm-solver++2m, ddpm, ddim")]
pub struct Args {
    /// The checkpoint (safetensors, or an official PyTorch .pth/.ckpt with --arch and --config).
    #[arg(long, visible_alias = "weights")]
    pub checkpoint: PathBuf,
    /// Number of images.
    #[arg(long)]
    pub n: usize,
    /// Output: a folder (PNG files), a FILE.npz, or a FILE.png (one labelled grid of at most 1024 images).
    #[arg(long)]
    pub out: PathBuf,
    /// Sampler (default: the run's `sample.sampler`, else dpm-solver-2).
    #[arg(long)]
    pub sampler: Option<SamplerKind>,
    /// Number of sampler steps (default: the run's, else 50).
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Class label for every image (class-conditional models; without it each image's label is drawn uniformly from the run's dataset's classes, or for official weights from every label but the last, the null one). An npz stores the labels as arr_1.
    #[arg(long)]
    pub class: Option<i64>,
    /// Classifier-free guidance scale (class-conditional models whose last label is the null one).
    #[arg(long)]
    pub cfg_scale: Option<f32>,
    /// Images per forward batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Clip x̂₀ to [−1, 1] in samplers that form it: ddpm, ddim, dpm-solver++2m (default: the run's
    /// `sample.clip_denoised`, else each sampler's reference default).
    #[arg(long)]
    pub clip_denoised: Option<bool>,
    /// Use the raw (non-EMA) weights of a training checkpoint.
    #[arg(long)]
    pub raw: bool,
    /// Architecture of a checkpoint that does not describe its model (official weights; a file written by prune, export or convert --arch records it).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Model constructor arguments (JSON) for --arch.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Noise schedule of a checkpoint without a run config (default: vp-linear for uvit, ddpm-linear for ddpm-unet; a run's checkpoint carries its own).
    #[arg(long)]
    pub schedule: Option<ScheduleKind>,
    /// Replace an existing npz, or write into a non-empty folder (its numbered PNGs from an earlier run are removed first).
    #[arg(long)]
    pub force: bool,
    /// Load weights holding NaN/Inf anyway (forensics; sampling still refuses non-finite images).
    #[arg(long)]
    pub allow_non_finite: bool,
    #[command(flatten)]
    pub device: super::DeviceArg,
    #[command(flatten)]
    pub precision: PrecisionArg,
}

/// What `--out` names, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// `FILE.npz`: NHWC uint8 `arr_0`, streamed batch by batch.
    Npz,
    /// `FILE.png`: one labelled grid of every image.
    Grid,
    /// Anything else: a folder of `NNNNNN.png` files.
    Folder,
}

/// The kind of `out`; an existing folder is a folder whatever its name, and an image file format
/// other than PNG is refused (it would have become a folder of that name).
fn out_kind(out: &Path) -> Result<Out> {
    if out.is_dir() {
        return Ok(Out::Folder);
    }
    let ext = out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npz") => Ok(Out::Npz),
        Some("png") => Ok(Out::Grid),
        Some(e @ ("jpg" | "jpeg" | "gif" | "bmp" | "webp" | "tif" | "tiff" | "npy")) => {
            bail!("--out {}: sample writes a folder of PNG files, a FILE.npz or one grid FILE.png, not .{e}", out.display())
        }
        _ => Ok(Out::Folder),
    }
}

/// The flag checks that need no file: every flag given must apply.
fn check_flags(a: &Args) -> Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if a.steps == Some(0) {
        bail!("--steps must be at least 1");
    }
    if out_kind(&a.out)? == Out::Grid && a.n > MAX_GRID {
        bail!("--n {}: one grid --out {} holds at most {MAX_GRID} images; write them to a folder or a FILE.npz", a.n, a.out.display());
    }
    if let Some(s) = a.cfg_scale
        && !s.is_finite()
    {
        bail!("--cfg-scale {s} is not a finite number");
    }
    if let (Some(_), Some(s)) = (a.clip_denoised, a.sampler)
        && !matches!(s, SamplerKind::Ddpm | SamplerKind::Ddim | SamplerKind::DpmSolverPp2M)
    {
        bail!("--clip-denoised does not apply to sampler {s} (only ddpm, ddim and dpm-solver++2m form x̂₀)");
    }
    Ok(())
}

/// The images' labels: none for an unconditional model (where `--class` and `--cfg-scale` are
/// refused); `--class K` for every image; else, for a training run's class-conditional model,
/// labels drawn uniformly from its dataset's classes (U-ViT's FID sampling), for official
/// weights from all labels but the last. Guidance needs the null label: a run's model must have
/// trained it (`dataset.p_uncond` > 0); official weights are taken to follow U-ViT's convention
/// (the last label is the null one).
fn labels(a: &Args, num_classes: Option<usize>, run: Option<&sparsedm_train::RunConfig>) -> Result<Labels> {
    let Some(nc) = num_classes else {
        if let Some(k) = a.class {
            bail!("--class {k}: the model is unconditional (it has no class labels)");
        }
        if let Some(g) = a.cfg_scale {
            bail!("--cfg-scale {g}: the model is unconditional (classifier-free guidance steers towards a class label)");
        }
        return Ok(Labels::None);
    };
    if let (Some(g), Some(run)) = (a.cfg_scale, run)
        && run.dataset.p_uncond == 0.0
    {
        bail!(
            "--cfg-scale {g}: {} was trained without the null label of classifier-free guidance (its run has dataset.p_uncond = 0), so guidance would steer away from label {}, a real class",
            a.checkpoint.display(),
            nc - 1
        );
    }
    if let Some(k) = a.class {
        return Ok(Labels::Fixed(k));
    }
    let classes = match run {
        Some(r) => Some((
            r.dataset.name,
            r.dataset
                .label_classes()
                .with_context(|| format!("the classes of {}'s dataset (or give --class K)", a.checkpoint.display()))?,
        )),
        None => None,
    };
    match classes {
        Some((_, classes)) if classes > 0 => Ok(Labels::Uniform { classes }),
        Some((name, _)) => {
            bail!("the model is class-conditional ({nc} labels) but its run's dataset ({name}) has no labels to draw from: give --class K")
        }
        // Official weights: U-ViT's convention, the last label is the null one of guidance
        // (its ImageNet models have 1001 labels for 1000 classes).
        None if nc >= 2 => Ok(Labels::Uniform { classes: nc - 1 }),
        None => bail!(
            "the model is class-conditional with a single label, {} (U-ViT's null label of guidance; no class to draw): give --class 0",
            a.checkpoint.display()
        ),
    }
}

// The batch sinks return the trainer's error type, as `generate_batches` does.
#[allow(clippy::result_large_err)]
pub fn run(a: Args) -> Result<()> {
    let device = a.device.resolve()?;
    let precision = a.precision.resolve(device)?;
    check_flags(&a)?;
    let mut inputs: Vec<&Path> = vec![&a.checkpoint];
    if let Some(c) = &a.config {
        inputs.push(c);
    }
    let out = out_kind(&a.out)?;
    if out != Out::Folder {
        output::check_file("--out", &a.out, a.force, &inputs)?;
    } else {
        output::check_dir("--out", &a.out, a.force, &inputs, "the sampled images")?;
    }
    sparsedm_layers::allow_non_finite_weights(a.allow_non_finite);
    crate::model_source::checkpoint_file("--checkpoint", &a.checkpoint)?;
    crate::model_source::check_raw(&a.checkpoint, a.raw)?;
    let external = crate::model_source::model_source(&a.checkpoint, a.arch, a.config.as_deref(), a.schedule)?;
    let r = restore_on(&a.checkpoint, !a.raw, external.as_ref(), device)?;
    let run_sample = r.run.as_ref().map(|c| c.sample.clone());
    let sampler = match (a.sampler, &run_sample) {
        (Some(s), _) => s,
        (None, Some(s)) => s.sampler,
        (None, None) => SamplerKind::DpmSolver2,
    };
    let steps = a.steps.or(run_sample.map(|s| s.steps)).unwrap_or(50);
    sampler.check_use(steps, r.schedule.discrete().is_some()).map_err(|e| {
        anyhow::anyhow!(
            "sampler {sampler} with {steps} steps on {}'s {} schedule: {e} (--sampler, --steps)",
            a.checkpoint.display(),
            r.schedule.name()
        )
    })?;
    let labels = labels(&a, r.bundle.config.num_classes(), r.run.as_ref())?;
    let req = SampleRequest {
        n: a.n,
        batch: a.batch,
        shape: r.bundle.config.input_shape(),
        sampler,
        steps,
        seed: a.seed,
        labels,
        cfg_scale: a.cfg_scale,
        num_classes: r.bundle.config.num_classes(),
        clip_denoised: a.clip_denoised.or(r.run.as_ref().and_then(|c| c.sample.clip_denoised)),
        device,
    };
    check_request(&req)?;
    let [c, h, w] = req.shape;
    // One batch of noise and images must fit; the whole set must fit on disk
    // (an npz exactly, PNGs at their smallest: a tiny header per image).
    let per_image = budget::product("one image", &[c as u64, h as u64, w as u64])?;
    budget::ensure_memory(&format!("--batch {}", a.batch), budget::product("a batch", &[a.batch.min(a.n) as u64, per_image, 4 * 8])?)?;
    let min_file = if out == Out::Folder { per_image / 64 + 64 } else { per_image };
    budget::ensure_disk(&format!("--n {}", a.n), &a.out, budget::product("the images", &[a.n as u64, min_file])?)?;

    a.device.announce();
    if labels != Labels::None {
        println!("class-conditional model: {labels}{}", a.cfg_scale.map(|g| format!(", guidance scale {g}")).unwrap_or_default());
    }
    if let Some(note) = null_label_note(a.class, r.bundle.config.num_classes(), r.run.as_ref()) {
        println!("{note}");
    }
    if let Some(line) = super::nm_layers_line(&r.bundle.store, device) {
        println!("{line}");
    }
    let _p = MatmulScope::enter(precision);
    let calls = sparsedm_tensor::nm_cpu::layer_calls();
    // From here Ctrl-C stops after the batch in progress (an unfinished npz is removed).
    crate::interrupt::install();
    let stop = |done: usize| {
        if done < a.n && crate::interrupt::requested() { Err(sparsedm_train::TrainError::Stopped { done, total: a.n }) } else { Ok(()) }
    };
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(a.n as u64);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if out == Out::Grid {
        // At most MAX_GRID images: kept in memory, drawn into one grid at the end.
        let mut all = Images { data: Vec::with_capacity(a.n * per_image as usize), n: 0, h, w };
        generate_batches(r.bundle.model.as_ref(), r.schedule.as_ref(), &req, |imgs: &Images, done| {
            all.data.extend_from_slice(&imgs.data);
            all.n += imgs.n;
            bar.set_position(done as u64);
            stop(done)
        })
        .map_err(|e| stopped(e, "no grid written"))?;
        let title = a.checkpoint.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let cols = all.n.isqrt() + usize::from(all.n.isqrt().pow(2) < all.n); // ⌈√n⌉: a little wider than tall
        match sparsedm_train::samples::drawn_labels(&req)? {
            // A class-conditional model's grid shows each sample's class.
            Some(classes) => sparsedm_train::samples::write_class_grid_png(&a.out, &all, cols, &title, &classes)?,
            None => sparsedm_train::samples::write_labelled_grid_png(&a.out, &all, cols, &title)?,
        }
    } else if out == Out::Npz {
        for stale in sparsedm_fid::remove_stale_temporaries(&a.out) {
            eprintln!("removed {}: the unfinished npz of an earlier sample that was killed", stale.display());
        }
        let mut writer = sparsedm_fid::NpzImageWriter::create(&a.out, a.n, h, w, 3)?;
        generate_batches(r.bundle.model.as_ref(), r.schedule.as_ref(), &req, |imgs, done| {
            writer.push(&imgs.data)?;
            bar.set_position(done as u64);
            stop(done)
        })
        .map_err(|e| stopped(e, "the unfinished npz is removed"))?;
        match sparsedm_train::samples::drawn_labels(&req)? {
            // Beside the images, as guided-diffusion saves class-conditional samples.
            Some(labels) => {
                writer.finish_with_labels(&labels)?;
                println!("the images' class labels are stored beside them as arr_1 (int64)");
            }
            None => writer.finish()?,
        }
    } else {
        if a.force {
            remove_numbered_pngs(&a.out)?;
        }
        // A class-conditional model's labels, `labels.csv` beside the images (`file,label`),
        // rewritten after each batch so that it lists exactly the images written so far.
        let drawn = sparsedm_train::samples::drawn_labels(&req)?;
        generate_batches(r.bundle.model.as_ref(), r.schedule.as_ref(), &req, |imgs: &Images, done| {
            write_png_images(&a.out, imgs, done - imgs.n)?;
            if let Some(labels) = &drawn {
                write_labels_csv(&a.out, &labels[..done])?;
            }
            bar.set_position(done as u64);
            stop(done)
        })
        .map_err(|e| stopped(e, "the PNG files written so far are kept"))?;
        if drawn.is_some() {
            println!("the images' class labels are listed in {}", a.out.join(LABELS_CSV).display());
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {} images ({w}x{h}, {sampler}, {steps} steps) to {} in {secs:.1} s ({:.2} images/s)",
        a.n,
        a.out.display(),
        a.n as f64 / secs.max(1e-9)
    );
    if let Some(line) = super::nm_calls_line(calls) {
        println!("{line}");
    }
    Ok(())
}

/// A sampling loop's error as the command's: a stop on Ctrl-C becomes [`crate::interrupt::Interrupted`]
/// (saying how far it got and what became of the output), anything else stays as it is.
fn stopped(e: sparsedm_train::TrainError, output: &str) -> anyhow::Error {
    match e {
        sparsedm_train::TrainError::Stopped { done, total } => {
            crate::interrupt::Interrupted(format!("stopped after {done} of {total} images; {output}")).into()
        }
        e => e.into(),
    }
}

/// A line saying that `--class K` names the model's null label of classifier-free guidance (the
/// last one, when its run trained it with `dataset.p_uncond`, or for official weights by U-ViT's
/// convention): such images are the model's unconditional samples, not a class's.
fn null_label_note(class: Option<i64>, num_classes: Option<usize>, run: Option<&sparsedm_train::RunConfig>) -> Option<String> {
    let (k, nc) = (class?, num_classes?);
    let null = nc >= 2 && k == nc as i64 - 1 && run.is_none_or(|r| r.dataset.p_uncond > 0.0);
    null.then(|| {
        format!(
            "class {k} is the null label of classifier-free guidance ({}): these are the model's unconditional samples, not a class's",
            if run.is_some() { "trained with dataset.p_uncond" } else { "U-ViT's last label" }
        )
    })
}

/// The file of a PNG folder that lists each image's class label.
const LABELS_CSV: &str = "labels.csv";

/// Writes `dir/labels.csv` (atomically): a `file,label` header, then one
/// `NNNNNN.png,label` line per image, in order.
#[allow(clippy::result_large_err)] // the sampling sink's error type
fn write_labels_csv(dir: &Path, labels: &[i64]) -> sparsedm_train::Result<()> {
    let mut text = String::with_capacity(16 + labels.len() * 16);
    text.push_str("file,label\n");
    for (i, l) in labels.iter().enumerate() {
        text.push_str(&format!("{i:06}.png,{l}\n"));
    }
    sparsedm_tensor::io::write_atomic(dir.join(LABELS_CSV), text.as_bytes())?;
    Ok(())
}

/// Removes the `NNNNNN.png` files (and `labels.csv`) an earlier `sample`
/// wrote into `dir` (with `--force`), so stale images never mix with new ones.
fn remove_numbered_pngs(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == LABELS_CSV || name.strip_suffix(".png").is_some_and(|stem| stem.len() >= 6 && stem.bytes().all(|b| b.is_ascii_digit())) {
            std::fs::remove_file(e.path()).with_context(|| format!("--force: cannot remove the stale {}", e.path().display()))?;
        }
    }
    Ok(())
}
