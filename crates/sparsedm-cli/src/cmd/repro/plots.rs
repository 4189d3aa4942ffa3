//! The `repro` plots, drawn from the measured rows: quality against the
//! sparsity ratio, one line per mask type (the paper's Fig. 3 ablation), and
//! quality against MACs, one point per model (Table 2). Quality is FID when
//! every row has one, FD-px48 otherwise; lower is better in both.

use crate::lab::Row;
use anyhow::Result;
use sparsedm_train::figures::chart::{self, Chart, Series};
use sparsedm_train::figures::png;
use std::path::Path;

/// Size of a plot in pixels.
const SIZE: (u32, u32) = (900, 560);

/// The quality score the plots show, its axis name, and the value of a row.
fn quality(rows: &[Row]) -> (&'static str, fn(&Row) -> f64) {
    if !rows.is_empty() && rows.iter().all(|r| r.quality.fid.is_some()) {
        ("FID (lower is better)", |r| r.quality.fid.unwrap_or(f64::NAN))
    } else {
        ("FD-px48 (lower is better; not FID)", |r| r.quality.fd_px)
    }
}

/// The ablation: x is the position of each row's N:M ratio in `ratios`
/// (densest first; the dense row sits at `dense_ratio`), one line for each
/// of `lines` (method labels), other sparse methods as single points.
pub fn ablation(out: &Path, file: &str, rows: &[Row], ratios: &[&str], dense_ratio: &str, lines: &[&str]) -> Result<String> {
    let (y_label, score) = quality(rows);
    let position = |r: &Row| {
        let p = if r.pattern == "dense" { dense_ratio } else { r.pattern.as_str() };
        ratios.iter().position(|q| *q == p).map(|i| i as f64)
    };
    let dense: Vec<(f64, f64)> = rows.iter().filter(|r| r.pattern == "dense").filter_map(|r| Some((position(r)?, score(r)))).collect();
    let mut series = Vec::new();
    for method in lines {
        let mut points = dense.clone();
        points.extend(rows.iter().filter(|r| r.method == *method).filter_map(|r| Some((position(r)?, score(r)))));
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series::line(*method, points));
    }
    for r in rows.iter().filter(|r| r.pattern != "dense" && !lines.contains(&r.method.as_str())) {
        if let Some(x) = position(r) {
            series.push(Series::points(r.label.clone(), vec![(x, score(r))]));
        }
    }
    let c = Chart {
        title: "Quality against sparsity ratio N:M, by mask training".into(),
        x_label: "N:M (sparser to the right)".into(),
        y_label: y_label.into(),
        series,
        x_names: ratios.iter().map(|s| s.to_string()).collect(),
    };
    png::save(&out.join(file), &chart::render(&c, SIZE.0, SIZE.1)?)?;
    Ok(file.to_string())
}

/// Quality against multiply–accumulates per image, one labelled point per row.
pub fn quality_vs_macs(out: &Path, file: &str, rows: &[Row]) -> Result<String> {
    let (y_label, score) = quality(rows);
    let c = Chart {
        title: "Quality against compute (MACs per image, N:M layers at N/M)".into(),
        x_label: "MACs per image (millions)".into(),
        y_label: y_label.into(),
        series: rows.iter().map(|r| Series::points(r.label.clone(), vec![(r.footprint.macs / 1e6, score(r))])).collect(),
        x_names: Vec::new(),
    };
    png::save(&out.join(file), &chart::render(&c, SIZE.0, SIZE.1)?)?;
    Ok(file.to_string())
}
