//! Finished rows of `demo`/`repro` kept on disk, so that `repro --resume` does not make them
//! again. At paper scale a row is days of training, then hours of sampling (50,000 images of
//! 1000 sampler steps) and of Inception scoring; resuming a table interrupted in its fifth row
//! used to re-sample and re-score the four finished ones (their trainings were kept, their
//! results were not).
//!
//! Each finished row is written as `runs/<slug>.row.json` (the row and the [`RowKey`] it was made
//! with) and `runs/<slug>.preview.npz` (its first samples, for the comparison figure), beside
//! the row's run folder; `--force` removes them with `runs/`. A kept row is used only when its key
//! equals the one the command would make it with, its grid and model files are still in the
//! output folder, and its training run's stored config is unchanged; otherwise the row is made
//! anew (its training still resumes from its checkpoints).

use crate::lab::Row;
use anyhow::{Context, Result};
use sparsedm_train::samples::Images;
use std::path::{Path, PathBuf};

/// Everything a row's result depends on, as the command spells it: the row (slug, method,
/// pattern, training steps), the recipe every row shares (the base run config, the dense
/// checkpoint's path), how samples are drawn and what they are judged against.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RowKey {
    pub slug: String,
    /// The method with its parameters (`Debug` of [`crate::lab::Method`]).
    pub method: String,
    pub pattern: Option<String>,
    pub steps: u64,
    /// The shared run config, as TOML.
    pub base: String,
    pub dense: String,
    /// Sample count, sampler, steps, seed, clipping (`Debug` of the draw spec).
    pub draw: String,
    /// [`sparsedm_train::experiment::Judge::fingerprint`].
    pub judge: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    key: RowKey,
    /// The row's training run's `config.toml` when the row was made (trained rows).
    run_config: Option<String>,
    row: Row,
}

fn json_path(runs: &Path, slug: &str) -> PathBuf {
    runs.join(format!("{slug}.row.json"))
}

fn preview_path(runs: &Path, slug: &str) -> PathBuf {
    runs.join(format!("{slug}.preview.npz"))
}

fn run_config(runs: &Path, slug: &str) -> Option<String> {
    std::fs::read_to_string(runs.join(slug).join("config.toml")).ok()
}

/// Writes a finished row (atomically: a crash leaves the previous file or none).
pub fn keep(out: &Path, key: &RowKey, row: &Row) -> Result<()> {
    let runs = out.join("runs");
    std::fs::create_dir_all(&runs).with_context(|| format!("cannot create {}", runs.display()))?;
    let p = &row.preview;
    let preview = sparsedm_fid::U8Images { data: p.data.clone(), n: p.n, height: p.h, width: p.w, channels: 3 };
    sparsedm_fid::write_images_npz(preview_path(&runs, &key.slug), &preview)?;
    let kept = Kept { key: key.clone(), run_config: run_config(&runs, &key.slug), row: row.clone() };
    let json = serde_json::to_vec_pretty(&kept)?;
    sparsedm_tensor::write_atomic(json_path(&runs, &key.slug), &json)?;
    Ok(())
}

/// The row kept for `key` by an earlier invocation in `out`, if it is still valid (see the
/// module's documentation); `None` otherwise, with a line saying why when a kept row is there
/// but cannot be used.
pub fn kept(out: &Path, key: &RowKey) -> Option<Row> {
    let runs = out.join("runs");
    let text = std::fs::read_to_string(json_path(&runs, &key.slug)).ok()?;
    let why_not = |why: &str| {
        eprintln!("  {}: the result kept from the earlier run is not used ({why}); making the row again", key.slug);
        None
    };
    let Ok(kept) = serde_json::from_str::<Kept>(&text) else { return why_not("its file cannot be read") };
    if kept.key != *key {
        return why_not("it was made with other settings");
    }
    if kept.run_config != run_config(&runs, &key.slug) {
        return why_not("its training run's config.toml changed since");
    }
    let row = kept.row;
    if !out.join(&row.grid).is_file() || !out.join(&row.checkpoint).is_file() {
        return why_not(&format!("{} or {} is missing", row.grid, row.checkpoint));
    }
    let Ok(p) = sparsedm_fid::read_images_npz(preview_path(&runs, &key.slug)) else { return why_not("its preview images cannot be read") };
    Some(Row { preview: Images { data: p.data, n: p.n, h: p.height, w: p.width }, ..row })
}
