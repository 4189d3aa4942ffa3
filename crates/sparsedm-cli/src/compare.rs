//! The comparison figure of the demo and `repro` reports: the first samples
//! of each row's model, all drawn from the same noise, one labelled column
//! per model (dense first), written next to the report that embeds it.

use crate::lab::Row;
use anyhow::Result;
use sparsedm_train::figures::{compare, png};
use std::path::Path;

/// Writes `out/file` from `rows` and returns `file` (for the report's link).
pub fn write(out: &Path, file: &str, rows: &[&Row]) -> Result<String> {
    let columns: Vec<compare::Column<'_>> = rows.iter().map(|r| compare::Column { label: &r.label, images: &r.preview }).collect();
    let n = rows.iter().map(|r| r.preview.n).min().unwrap_or(0).min(compare::ROWS);
    let title = format!("The same {n} noise samples through each model");
    png::save(&out.join(file), &compare::render(&columns, n, &title)?)?;
    Ok(file.to_string())
}
