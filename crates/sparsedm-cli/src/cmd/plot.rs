//! `sparsedm plot RUN_DIR [RUN_DIR...] --out plot.png`: the training loss
//! of one or several runs (one line each, from their `metrics.jsonl`) and,
//! when any run evaluated FID while training, their FID curves below.

use anyhow::Result;
use sparsedm_train::figures::{curves, png};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
sparsedm plot runs/demo --out loss.png\n  \
sparsedm plot demo-output/runs/sparsedm demo-output/runs/ste demo-output/runs/asp --out curves.png")]
pub struct Args {
    /// Run folders written by `sparsedm train` (each has a metrics.jsonl), or those metrics.jsonl files.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(long, default_value = "plot.png")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> Result<()> {
    // A run given twice (its folder and its metrics.jsonl, or two spellings of one path) would be
    // drawn as two identical lines.
    let mut seen: Vec<(PathBuf, &PathBuf)> = Vec::new();
    for given in &args.runs {
        let metrics = if given.is_dir() { given.join("metrics.jsonl") } else { given.clone() };
        if let Ok(canonical) = metrics.canonicalize() {
            if let Some((_, first)) = seen.iter().find(|(c, _)| *c == canonical) {
                anyhow::bail!("{} and {} are the same run: give each run once", first.display(), given.display());
            }
            seen.push((canonical, given));
        }
    }
    let mut runs = Vec::with_capacity(args.runs.len());
    for dir in &args.runs {
        runs.push(curves::read(dir)?);
    }
    let img = curves::chart(&runs)?;
    png::save_new(&args.out, &img, args.force)?;
    println!("{}", args.out.display());
    Ok(())
}
