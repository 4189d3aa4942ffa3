//! Protected run folders for `sparsedm train --out`: a folder that already
//! holds a run (its config, checkpoints, metrics or samples) is never reused
//! silently — continuing it needs `--resume`, replacing it `--force` (which
//! removes that run's files, so the two runs' checkpoints and metrics
//! never mix). Other files a user keeps there are left alone.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// The entries of a run folder that belong to the run.
const RUN_ENTRIES: [&str; 5] = ["config.toml", "metrics.jsonl", "checkpoints", "samples", "best.safetensors"];

/// Checks `dir` for a new run (see the module doc); with `force`, removes
/// the files of the run it holds. Also checks the folder is writable.
pub fn prepare_new_run(dir: &Path, force: bool) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("--out {} is a file, expected a run folder", dir.display());
    }
    let present: Vec<&str> = RUN_ENTRIES.iter().copied().filter(|e| dir.join(e).exists()).collect();
    if !present.is_empty() {
        if !force {
            bail!(
                "{} already holds a run ({}): continue it with --resume {}, or pass --force to replace it",
                dir.display(),
                present.join(", "),
                dir.display()
            );
        }
        for e in present {
            let p = dir.join(e);
            let removed = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            removed.with_context(|| format!("--force: cannot remove {} of the previous run", p.display()))?;
        }
    }
    crate::output::check_writable("--out", dir)
}

/// With `--force` on `demo`/`repro`: removes the `runs/` folder of an
/// earlier invocation in `out` (the training runs of [`crate::lab`]), so
/// the new runs start clean instead of mixing checkpoints.
pub fn remove_lab_runs(out: &Path) -> Result<()> {
    let runs = out.join("runs");
    if runs.is_dir() {
        std::fs::remove_dir_all(&runs).with_context(|| format!("--force: cannot remove {} of an earlier run", runs.display()))?;
    }
    Ok(())
}
