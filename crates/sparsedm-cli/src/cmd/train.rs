//! `sparsedm train`: one training run from a TOML config or a preset —
//! dense pre-training or SparseDM fine-tuning — with a progress bar, a JSONL
//! metrics log, sample grids and atomic checkpoints; `--resume DIR`
//! continues a run exactly where its last checkpoint left it.
//!
//! A folder that already holds a run needs `--resume` (continue it) or
//! `--force` (replace it); with `--resume`, flags that would be ignored
//! (`--config`, `--out`, `--set` of anything but `train.n_steps` and
//! `train.precision`: the checkpoint's config wins) are refused.
//!
//! `--device cuda[:N]` trains there (model, teacher, optimizer state, EMA,
//! batches, noise, sample grids and FID), at `train.precision` (unset: bf16
//! on a GPU, f32 on the CPU). Checkpoints hold host tensors, so a run
//! resumes on either device (`--set train.precision=f32` when a bf16 run
//! continues on the CPU).

use anyhow::{Context, Result, bail};
use sparsedm_train::{RunConfig, Trainer};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = crate::presets::help_with_presets("Examples:\n  \
sparsedm train --config demo_shapes_uvit --out runs/demo\n  \
sparsedm train --config cifar10_uvit_small_sparsedm_2of4 --set dataset.path=data/cifar10 --set train.init=uvit_s2.safetensors\n  \
sparsedm train --resume runs/demo --set train.n_steps=2000\n  \
sparsedm train --config demo_shapes_uvit --device cuda --set train.precision=bf16"))]
pub struct Args {
    /// A run config (TOML file) or the name of a preset.
    #[arg(long)]
    pub config: Option<String>,
    /// Override a config field: `--set train.n_steps=1000` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue the run in DIR from its newest checkpoint.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// The run folder (default runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the run an existing --out folder holds (its checkpoints, metrics and samples are removed).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

pub fn run(args: Args) -> Result<()> {
    let device = args.device.resolve()?;
    if args.resume.is_some() {
        if args.config.is_some() {
            bail!("--config does not apply with --resume: the run continues with the config stored in its checkpoint");
        }
        if args.out.is_some() {
            bail!("--out does not apply with --resume: the run continues in its own folder");
        }
        if args.force {
            bail!("--force does not apply with --resume (nothing is replaced)");
        }
        let resumable = |s: &String| s.split_once('=').is_some_and(|(k, _)| matches!(k.trim(), "train.n_steps" | "train.precision"));
        if let Some(s) = args.set.iter().find(|s| !resumable(s)) {
            bail!(
                "--set {s} does not apply with --resume: only train.n_steps and train.precision may change (the checkpoint's config wins)"
            );
        }
    }
    let (cfg, dir, resume) = match (&args.resume, &args.config) {
        (Some(dir), _) => {
            let text = std::fs::read_to_string(dir.join("config.toml"))
                .with_context(|| format!("--resume {}: no config.toml there", dir.display()))?;
            let cfg = RunConfig::parse(&text, &dir.join("config.toml").display().to_string(), &args.set)?;
            (cfg, dir.clone(), true)
        }
        (None, Some(c)) => {
            let cfg = RunConfig::load(c, &args.set)?;
            let name = std::path::Path::new(c).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            (cfg, args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(name)), false)
        }
        (None, None) => bail!("give --config RUN.toml (or a preset name), or --resume DIR"),
    };
    // Another process training in this folder refuses this one before
    // `--force` removes anything or a resume reads a checkpoint (held for
    // the whole run; the trainer shares it).
    let _held = sparsedm_train::run_lock::hold_existing(&dir)?;
    if !resume {
        crate::run_folder::prepare_new_run(&dir, args.force)?;
    }
    let model = sparsedm_diffusion::ModelConfig::from_json(sparsedm_train::build::arch(&cfg)?, &cfg.nnet_json()?)?;
    crate::model_size::check_fits(&model, "the run config")?;
    let [c, h, w] = model.input_shape();
    let batch_bytes = crate::budget::product("train.batch_size", &[cfg.train.batch_size as u64, c as u64, h as u64, w as u64, 4])?;
    crate::budget::ensure_memory(&format!("train.batch_size {}", cfg.train.batch_size), batch_bytes)?;
    let n_steps = cfg.train.n_steps;
    let log_every = cfg.train.log_interval.max(1);
    let mut trainer = Trainer::new(cfg, &dir, resume, device)?;
    for note in trainer.resume_notes() {
        eprintln!("{note}");
    }
    args.device.announce();
    eprintln!(
        "run {}: {} parameters, {} on {}, from step {}, on {} ({} matmuls)",
        dir.display(),
        trainer.student().store.num_params(),
        trainer.config().arch,
        trainer.dataset().describe(),
        trainer.step(),
        trainer.device(),
        trainer.precision()
    );
    if let Some(r) = trainer.sparsity_report() {
        eprintln!("{r}");
    }
    if let Some(r) = trainer.permutation_report() {
        eprint!("{r}");
    }
    let (bar, terminal) = crate::lab::step_bar(n_steps, trainer.step(), "");
    // From here Ctrl-C stops after the step in progress, with a checkpoint of it.
    crate::interrupt::install();
    let last = trainer.run_until(None, &crate::interrupt::requested, |m, rate| {
        let msg = format!("loss {:.4} lr {:.2e} {:.2} steps/s", m.loss, m.lr, rate);
        bar.set_position(m.step);
        bar.set_message(msg.clone());
        if !terminal && (m.step % log_every == 0 || m.step == n_steps) {
            eprintln!("step {}/{n_steps} {msg}", m.step);
        }
    })?;
    bar.finish();
    if crate::interrupt::requested()
        && let Some(m) = &last
        && m.step < n_steps
    {
        return Err(crate::interrupt::Interrupted(format!(
            "stopped at step {} of {n_steps}, saved as {}; `sparsedm train --resume {}` continues",
            m.step,
            sparsedm_train::checkpoint::checkpoint_path(&dir, m.step).display(),
            dir.display()
        ))
        .into());
    }
    match last {
        Some(m) => eprintln!("done at step {} (loss {:.4}); checkpoints in {}", m.step, m.loss, dir.join("checkpoints").display()),
        None => eprintln!("nothing to do: the run is already at step {} of {n_steps}", trainer.step()),
    }
    Ok(())
}
