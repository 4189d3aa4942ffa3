//! `sparsedm repro TABLE` (what `cargo xtask repro TABLE` runs): one
//! command per table of the paper, writing `TABLE.md` and `TABLE.json`
//! with the paper's numbers beside ours, and the figures they embed (the
//! same noise through every model; quality against sparsity or MACs).
//!
//! - `--scale tiny` (default): the same comparisons on the embedded shapes
//!   data with the demo's small U-ViT (and, in Table 2, the tiny DDPM UNet
//!   too: both model families), starting from the dense checkpoints shipped
//!   in the binary; minutes on a CPU. Quality is FD-px48 (plus FID
//!   with `--inception`).
//! - `--scale paper`: the paper's CIFAR-10 U-ViT-S/2 configuration — the
//!   official checkpoint, the U-ViT recipe, 500k steps, FID on 50k samples
//!   from the 1000-step Euler–Maruyama sampler. It names every file it needs
//!   and refuses clearly when one is missing.
//!
//! Table 3 (2:4 GPU speed) needs the CUDA backend with cuSPARSELt; without
//! one it writes the published numbers and says why ours are missing.

mod paper;
mod plots;
mod suites;
mod table3;

use super::DeviceArg;
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Table {
    /// Dense vs a half-size U-ViT vs ASP (the paper's Table 1).
    Table1,
    /// Dense, ASP, STE and SparseDM at 2:4 (Table 2).
    Table2,
    /// 2:4 end-to-end speed-up on the GPU (Table 3).
    Table3,
    /// Ten N:M ratios with untrained, STE and SparseDM masks, and progressive sparsity (Section 4.3).
    Ablation,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Table1 => "table1",
            Table::Table2 => "table2",
            Table::Table3 => "table3",
            Table::Ablation => "ablation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// Embedded data, small U-ViT, CPU minutes.
    Tiny,
    /// The paper's configuration (CIFAR-10 U-ViT-S/2, official checkpoint, FID on 50k samples).
    Paper,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
sparsedm repro table2\n  \
sparsedm repro ablation --steps 20 --samples 32 --out /tmp/repro\n  \
sparsedm repro table2 --scale paper --data data/cifar10 --checkpoint uvit_s2.safetensors \\\n    \
--inception pt_inception.safetensors --fid-stats fid_stats_cifar10_train_pytorch.npz\n\n\
Also as `cargo xtask repro TABLE [--scale tiny|paper] ...`.")]
pub struct Args {
    /// Which table.
    #[arg(value_enum)]
    pub table: Table,
    #[arg(long, value_enum, default_value = "tiny")]
    pub scale: Scale,
    /// Output folder (TABLE.md, TABLE.json, grids, checkpoints).
    #[arg(long, default_value = "repro-output")]
    pub out: PathBuf,
    /// Training steps per fine-tuning (default: tiny 100, ablation 40; paper 500000).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images sampled per model (default: tiny 64; paper 50000).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Sampling seed (the same noise for every row).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// pytorch-fid InceptionV3 weights (safetensors): real FID (required at paper scale).
    #[arg(long, value_name = "FILE")]
    pub inception: Option<PathBuf>,
    /// Paper scale: the CIFAR-10 folder (cifar-10-batches-bin).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Paper scale: the official U-ViT-S/2 CIFAR-10 checkpoint converted to safetensors (cifar10_uvit_small.pth).
    #[arg(long, value_name = "FILE", visible_alias = "weights")]
    pub checkpoint: Option<PathBuf>,
    /// Paper scale: FID reference statistics (mu, sigma) of the CIFAR-10 training set (pytorch-fid npz).
    #[arg(long, value_name = "FILE")]
    pub fid_stats: Option<PathBuf>,
    /// Paper scale: run on the CPU even with the paper's budgets (weeks).
    #[arg(long)]
    pub allow_cpu: bool,
    /// Write into a non-empty --out folder (files of an earlier run there are replaced).
    #[arg(long)]
    pub force: bool,
    /// Continue an interrupted repro in --out (the same command otherwise): each fine-tuning
    /// resumes from the newest checkpoint of its run in OUT/runs (one that finished is not trained
    /// again; a run of another configuration is refused), then every row is sampled and scored
    /// and the table written anew. Ctrl-C stops a training after its step in progress and saves it.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// The flag checks that need no file: budgets that can make a table, and no flag the table or
/// scale would ignore (a silently unused `--data` or `--steps` would misdescribe the run).
fn check_flags(a: &Args) -> Result<()> {
    if a.steps == Some(0) {
        bail!("--steps must be at least 1 (with 0 every fine-tuned row would be its untrained starting point)");
    }
    if a.table == Table::Ablation
        && let Some(n) = a.steps.filter(|&n| n < 4)
    {
        bail!(
            "--steps {n}: the ablation's progressive row needs at least 4 (its four stages 15:16, 7:8, 3:4 and 2:4 each train a quarter)"
        );
    }
    if let Some(n) = a.samples.filter(|&n| n < 2) {
        bail!("--samples {n}: must be at least 2 (the Fréchet distance needs a covariance)");
    }
    let paper_only = [
        ("--data", a.data.is_some()),
        ("--checkpoint", a.checkpoint.is_some()),
        ("--fid-stats", a.fid_stats.is_some()),
        ("--allow-cpu", a.allow_cpu),
    ];
    if a.table == Table::Table3 {
        let given = [
            ("--steps", a.steps.is_some()),
            ("--samples", a.samples.is_some()),
            ("--inception", a.inception.is_some()),
            ("--resume", a.resume),
        ];
        if let Some((flag, _)) = given.iter().chain(&paper_only).find(|(_, g)| *g) {
            bail!("{flag} does not apply to table3 (a GPU speed grid of the model's block: nothing is trained, sampled or scored)");
        }
    } else if a.scale == Scale::Tiny
        && let Some((flag, _)) = paper_only.iter().find(|(_, g)| *g)
    {
        bail!("{flag} applies to --scale paper; --scale tiny uses the embedded data and the shipped dense model");
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    check_flags(&a)?;
    let inputs: Vec<&std::path::Path> =
        [&a.inception, &a.data, &a.checkpoint, &a.fid_stats].into_iter().flatten().map(PathBuf::as_path).collect();
    if a.resume {
        // What is there is this command's own earlier output: it is continued and rewritten.
        if !a.out.join("runs").is_dir() {
            bail!("--resume: {} holds no runs/ folder of an interrupted repro to continue (start it without --resume)", a.out.display());
        }
        crate::output::check_dir("--out", &a.out, true, &inputs, "the reproduced table and its files")?;
    } else {
        crate::output::check_dir("--out", &a.out, a.force, &inputs, "the reproduced table and its files")?;
    }
    // Another repro or demo writing this folder refuses this one before
    // `--force` removes its runs or `--resume` continues them (held until the
    // command ends; each row's training run holds its own folder too).
    let _held = sparsedm_train::run_lock::hold_existing(&a.out)?;
    if a.force {
        crate::run_folder::remove_lab_runs(&a.out)?;
    }
    if a.table == Table::Table3 {
        return suites::table3(&a);
    }
    let device = a.device.resolve()?;
    // The output folder is made by the setup once its inputs are checked: a refused command
    // leaves none behind.
    let setup = match a.scale {
        Scale::Tiny => suites::Setup::tiny(&a, device)?,
        Scale::Paper => {
            let missing = missing_paper_inputs(&a);
            if !missing.is_empty() {
                bail!("--scale paper needs {}", missing.join("; "));
            }
            if device == sparsedm_tensor::Device::Cpu && !a.allow_cpu && (a.steps.is_none() || a.samples.is_none()) {
                bail!(
                    "--scale paper with the paper's budgets (500,000 steps of batch 128 per method, 50,000 samples of 1000 sampler steps per row) \
                     takes weeks on a CPU and this build has no GPU backend; pass --steps and --samples to shorten it, or --allow-cpu"
                );
            }
            suites::Setup::paper(&a, device)?
        }
    };
    a.device.announce();
    // From here Ctrl-C stops a row's training after its step in progress, with a checkpoint
    // that `--resume` continues from.
    crate::interrupt::install();
    match a.table {
        Table::Table1 => suites::table1(&a, &setup),
        Table::Table2 => suites::table2(&a, &setup),
        Table::Ablation => suites::ablation(&a, &setup),
        Table::Table3 => unreachable!("handled above"),
    }
}

/// Every paper-scale input that is not given or not there, each named with what it is.
fn missing_paper_inputs(a: &Args) -> Vec<String> {
    let mut missing = Vec::new();
    let mut need = |what: Option<&PathBuf>, flag: &str, desc: &str| match what {
        None => missing.push(format!("{flag} ({desc})")),
        Some(p) if !p.exists() => missing.push(format!("{flag} {}: no such file or folder ({desc})", p.display())),
        Some(_) => {}
    };
    need(a.data.as_ref(), "--data DIR", "CIFAR-10 binary version, cifar-10-batches-bin");
    need(
        a.checkpoint.as_ref(),
        "--checkpoint FILE",
        "official U-ViT-S/2 CIFAR-10 weights: cifar10_uvit_small.pth or its safetensors conversion",
    );
    need(a.inception.as_ref(), "--inception FILE", "pytorch-fid's pt_inception-2015-12-05 weights: the .pth or its safetensors conversion");
    need(a.fid_stats.as_ref(), "--fid-stats FILE", "FID statistics of the CIFAR-10 training images, from `sparsedm fid stats`");
    missing
}
