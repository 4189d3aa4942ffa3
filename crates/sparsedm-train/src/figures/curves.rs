//! Training curves from run folders: each `metrics.jsonl` line the trainer
//! writes carries `step` and either the training `loss` (every log
//! interval) or an `fid` (every FID evaluation). [`read`] collects them,
//! [`chart`] draws the loss of one or several runs, and their FID below
//! when any run logged one.

use super::chart::{self, Chart, Series};
use crate::error::{Result, TrainError};
use image::RgbImage;
use std::path::Path;

/// The curves of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurves {
    /// The run folder as given (the legend's name for it).
    pub name: String,
    /// `(step, loss)`, by step.
    pub loss: Vec<(f64, f64)>,
    /// `(step, FID)`, by step; empty when the run did not evaluate FID.
    pub fid: Vec<(f64, f64)>,
}

/// Sorts by step and keeps the last value logged for each step (a resumed
/// run logs again the steps after its checkpoint).
fn by_step(mut points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.reverse();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points.dedup_by(|later, earlier| later.0 == earlier.0);
    points
}

/// Reads `dir/metrics.jsonl`, or `dir` itself when it is a file (a run's
/// `metrics.jsonl` given directly; the run is then named by its folder).
///
/// # Errors
/// [`TrainError::Data`] naming the file when it is missing, empty, holds a
/// line that is not a JSON object with a `step`, or no loss or FID at all.
pub fn read(dir: &Path) -> Result<RunCurves> {
    let (dir, path) = if dir.is_file() {
        (dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")), dir.to_path_buf())
    } else {
        (dir, dir.join("metrics.jsonl"))
    };
    let bad = |msg: String| TrainError::Data { path: path.clone(), msg };
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            bad("no such file: a run folder is one that `sparsedm train` wrote (it logs metrics.jsonl there)".into())
        }
        _ => bad(e.to_string()),
    })?;
    if text.trim().is_empty() {
        return Err(bad("is empty: the run has not logged a step yet".into()));
    }
    let (mut loss, mut fid) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(format!("line {} is not JSON: {e}", i + 1)))?;
        let step = v.get("step").and_then(|s| s.as_f64()).ok_or_else(|| bad(format!("line {} has no \"step\"", i + 1)))?;
        if let Some(l) = v.get("loss").and_then(|l| l.as_f64()) {
            loss.push((step, l));
        }
        if let Some(f) = v.get("fid").and_then(|f| f.as_f64()) {
            fid.push((step, f));
        }
    }
    if loss.is_empty() && fid.is_empty() {
        return Err(bad("has no \"loss\" or \"fid\" value to plot".into()));
    }
    Ok(RunCurves { name: dir.display().to_string(), loss: by_step(loss), fid: by_step(fid) })
}

/// Width of a curves picture.
pub const WIDTH: u32 = 900;
/// Height of each of its panels.
pub const PANEL_HEIGHT: u32 = 480;

/// The loss curves of `runs` (one line each), and below them their FID
/// curves when any run logged FID.
///
/// # Errors
/// No runs, or a drawing failure.
pub fn chart(runs: &[RunCurves]) -> Result<RgbImage> {
    let panel = |title: &str, y: &str, pick: fn(&RunCurves) -> &Vec<(f64, f64)>| Chart {
        title: title.into(),
        x_label: "step".into(),
        y_label: y.into(),
        series: runs.iter().filter(|r| !pick(r).is_empty()).map(|r| Series::line(r.name.clone(), pick(r).clone())).collect(),
        x_names: Vec::new(),
    };
    let mut charts = Vec::new();
    if runs.iter().any(|r| !r.loss.is_empty()) {
        charts.push(panel("Training loss", "loss", |r| &r.loss));
    }
    if runs.iter().any(|r| !r.fid.is_empty()) {
        charts.push(panel("FID during training (EMA model)", "FID", |r| &r.fid));
    }
    chart::render_panels(&charts, WIDTH, PANEL_HEIGHT)
}
