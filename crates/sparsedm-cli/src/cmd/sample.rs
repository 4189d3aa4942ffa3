//! `sparsedm sample`: images from a checkpoint (a training run's, whose EMA
//! weights are used by default; an exported model; or a converted official
//! checkpoint with `--arch` and `--config`), written as PNG files into a
//! folder or as an NHWC uint8 `arr_0` npz for FID tools.

use anyhow::{Context, Result};
use sparsedm_diffusion::{Arch, SamplerKind, ScheduleKind};
use sparsedm_train::restore::{ExternalModel, restore};
use sparsedm_train::samples::{SampleRequest, generate, write_npz, write_png_folder};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
sparsedm sample --checkpoint runs/demo/checkpoints/step_00000600.safetensors --n 64 --out samples/\n  \
sparsedm sample --checkpoint uvit_s2.safetensors --arch uvit --config cifar10_uvit_small.json --n 50000 \\\n    --sampler euler-maruyama --steps 1000 --out samples.npz\n\n\
Samplers: euler-maruyama, pf-ode, dpm-solver-1, dpm-solver-2, dpm-solver-3, dpm-solver-fast, dpm-solver++2m, ddpm, ddim")]
pub struct Args {
    /// The checkpoint (safetensors, or an official PyTorch .pth/.ckpt with --arch and --config).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Number of images.
    #[arg(long)]
    pub n: usize,
    /// Output: a folder (PNG files) or a FILE.npz.
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
    /// Class label for every image (class-conditional models).
    #[arg(long)]
    pub class: Option<i64>,
    /// Classifier-free guidance scale (with --class).
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
    /// Architecture of a checkpoint without a run config (converted official weights).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Model constructor arguments (JSON) for --arch.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Noise schedule for --arch checkpoints (default: vp-linear for uvit, ddpm-linear for ddpm-unet).
    #[arg(long)]
    pub schedule: Option<ScheduleKind>,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

pub fn run(a: Args) -> Result<()> {
    a.device.resolve()?;
    let external = match (&a.arch, &a.config) {
        (Some(arch), Some(cfg)) => {
            let text = std::fs::read_to_string(cfg).with_context(|| format!("reading {}", cfg.display()))?;
            let config: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", cfg.display()))?;
            Some(ExternalModel { arch: *arch, config, schedule: a.schedule })
        }
        (Some(_), None) | (None, Some(_)) => anyhow::bail!("--arch and --config go together"),
        _ => None,
    };
    let r = restore(&a.checkpoint, !a.raw, external.as_ref())?;
    let run_sample = r.run.as_ref().map(|c| c.sample.clone());
    let sampler = match (a.sampler, &run_sample) {
        (Some(s), _) => s,
        (None, Some(s)) => s.sampler.parse()?,
        (None, None) => SamplerKind::DpmSolver2,
    };
    let steps = a.steps.or(run_sample.map(|s| s.steps)).unwrap_or(50);
    let req = SampleRequest {
        n: a.n,
        batch: a.batch,
        shape: r.bundle.config.input_shape(),
        sampler,
        steps,
        seed: a.seed,
        class: a.class,
        cfg_scale: a.cfg_scale,
        num_classes: r.bundle.config.num_classes(),
        clip_denoised: a.clip_denoised.or(r.run.as_ref().and_then(|c| c.sample.clip_denoised)),
    };
    let bar = indicatif::ProgressBar::new(a.n as u64);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let imgs = generate(r.bundle.model.as_ref(), r.schedule.as_ref(), &req, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    if a.out.extension().and_then(|e| e.to_str()) == Some("npz") {
        write_npz(&a.out, &imgs)?;
    } else {
        write_png_folder(&a.out, &imgs)?;
    }
    println!("wrote {} images ({}x{}, {sampler}, {steps} steps) to {}", imgs.n, imgs.w, imgs.h, a.out.display());
    Ok(())
}
