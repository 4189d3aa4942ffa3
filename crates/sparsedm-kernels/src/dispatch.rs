//! Dense-or-2:4 dispatch: for each GEMM problem (device, M, N, K, dtype, bias) the dense cuBLAS
//! path and the cuSPARSELt path are timed once and the faster one is used from then on, so a
//! sparse model is never slower than its dense twin. Decisions persist in a small text file
//! (one line per problem) so later runs skip the timing.
//!
//! File: `$SPARSEDM_CACHE_DIR/spmm_dispatch.tsv`, else `$XDG_CACHE_HOME/sparsedm/…`, else
//! `$HOME/.cache/sparsedm/…`; written atomically (temp file + rename). An unreadable or corrupt
//! file is ignored line by line (a stale cache can only cost a re-measurement, never a wrong
//! result).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::GpuDType;
use crate::error::{KernelsError, Result};

/// Which implementation a problem uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Dense,
    Sparse,
}

/// One GEMM problem `Y[m, n] = X[m, k]·Wᵀ (+ bias)` on one kind of device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// The device's name ("NVIDIA H200"): decisions do not carry across GPU models.
    pub device: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dtype: GpuDType,
    pub bias: bool,
}

/// A measured decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub choice: Choice,
    pub dense_ms: f64,
    pub sparse_ms: f64,
}

impl Decision {
    /// Sparse only when it is strictly faster: ties and noise go to dense.
    pub fn from_times(dense_ms: f64, sparse_ms: f64) -> Decision {
        let choice = if sparse_ms < dense_ms { Choice::Sparse } else { Choice::Dense };
        Decision { choice, dense_ms, sparse_ms }
    }
}

/// The decisions of this process, backed by the cache file.
#[derive(Debug)]
pub struct Dispatch {
    path: Option<PathBuf>,
    decisions: Mutex<HashMap<Problem, Decision>>,
}

/// The default cache file (see the module docs), if a home or cache directory is known.
pub fn default_cache_path() -> Option<PathBuf> {
    let dir = std::env::var_os("SPARSEDM_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sparsedm")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sparsedm")))?;
    Some(dir.join("spmm_dispatch.tsv"))
}

fn dtype_name(d: GpuDType) -> &'static str {
    d.suffix()
}

fn parse_dtype(s: &str) -> Option<GpuDType> {
    match s {
        "f32" => Some(GpuDType::F32),
        "f16" => Some(GpuDType::F16),
        "bf16" => Some(GpuDType::BF16),
        _ => None,
    }
}

/// `device \t m \t n \t k \t dtype \t bias \t choice \t dense_ms \t sparse_ms`.
fn format_line(p: &Problem, d: &Decision) -> String {
    let choice = match d.choice {
        Choice::Dense => "dense",
        Choice::Sparse => "sparse",
    };
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.6}\t{:.6}",
        p.device.replace('\t', " "),
        p.m,
        p.n,
        p.k,
        dtype_name(p.dtype),
        u8::from(p.bias),
        choice,
        d.dense_ms,
        d.sparse_ms
    )
}

fn parse_line(line: &str) -> Option<(Problem, Decision)> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 9 {
        return None;
    }
    let problem = Problem {
        device: f[0].to_string(),
        m: f[1].parse().ok()?,
        n: f[2].parse().ok()?,
        k: f[3].parse().ok()?,
        dtype: parse_dtype(f[4])?,
        bias: match f[5] {
            "0" => false,
            "1" => true,
            _ => return None,
        },
    };
    let choice = match f[6] {
        "dense" => Choice::Dense,
        "sparse" => Choice::Sparse,
        _ => return None,
    };
    let (dense_ms, sparse_ms) = (f[7].parse().ok()?, f[8].parse().ok()?);
    Some((problem, Decision { choice, dense_ms, sparse_ms }))
}

impl Dispatch {
    /// Decisions backed by `path` (read now, if it exists); `None` keeps them in memory only.
    pub fn open(path: Option<PathBuf>) -> Dispatch {
        let mut decisions = HashMap::new();
        if let Some(text) = path.as_deref().and_then(|p| std::fs::read_to_string(p).ok()) {
            decisions.extend(text.lines().filter_map(parse_line));
        }
        Dispatch { path, decisions: Mutex::new(decisions) }
    }

    /// The cached decision, if this problem was measured before.
    pub fn cached(&self, p: &Problem) -> Option<Decision> {
        self.decisions.lock().unwrap_or_else(|e| e.into_inner()).get(p).copied()
    }

    /// The decision for `p`: cached, or measured now with `time_dense` / `time_sparse`
    /// (milliseconds per call) and saved.
    pub fn decide(
        &self,
        p: &Problem,
        time_dense: impl FnOnce() -> Result<f64>,
        time_sparse: impl FnOnce() -> Result<f64>,
    ) -> Result<Decision> {
        if let Some(d) = self.cached(p) {
            return Ok(d);
        }
        let d = Decision::from_times(time_dense()?, time_sparse()?);
        self.decisions.lock().unwrap_or_else(|e| e.into_inner()).insert(p.clone(), d);
        self.save()?;
        Ok(d)
    }

    /// Writes every decision to the cache file atomically (sorted, so the file is stable).
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut lines: Vec<String> =
            self.decisions.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(p, d)| format_line(p, d)).collect();
        lines.sort();
        write_atomic(path, &(lines.join("\n") + "\n"))
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let io = |e: std::io::Error| KernelsError::invalid("dispatch cache", format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(m: usize) -> Problem {
        Problem { device: "NVIDIA H200".into(), m, n: 1536, k: 512, dtype: GpuDType::F16, bias: true }
    }

    #[test]
    fn faster_path_wins_and_ties_go_to_dense() {
        assert_eq!(Decision::from_times(1.0, 0.8).choice, Choice::Sparse);
        assert_eq!(Decision::from_times(0.8, 1.0).choice, Choice::Dense);
        assert_eq!(Decision::from_times(1.0, 1.0).choice, Choice::Dense);
    }

    #[test]
    fn decisions_are_measured_once_and_survive_a_restart() {
        let dir = sparsedm_testkit::Scratch::new("dispatch-test");
        let path = dir.join("spmm_dispatch.tsv");
        let d = Dispatch::open(Some(path.clone()));
        let first = d.decide(&problem(32896), || Ok(0.080), || Ok(0.062)).unwrap();
        assert_eq!(first.choice, Choice::Sparse);
        // Cached: the timers must not run again.
        let again = d.decide(&problem(32896), || panic!("re-timed dense"), || panic!("re-timed sparse")).unwrap();
        assert_eq!(again, first);
        d.decide(&problem(8), || Ok(0.010), || Ok(0.020)).unwrap();
        let reopened = Dispatch::open(Some(path.clone()));
        assert_eq!(reopened.cached(&problem(32896)).map(|d| d.choice), Some(Choice::Sparse));
        assert_eq!(reopened.cached(&problem(8)).map(|d| d.choice), Some(Choice::Dense));
        assert_eq!(reopened.cached(&problem(9)), None);
        // Corrupt lines are skipped, good ones kept.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{text}\tx\tbroken\n")).unwrap();
        let tolerant = Dispatch::open(Some(path.clone()));
        assert_eq!(tolerant.cached(&problem(8)).map(|d| d.choice), Some(Choice::Dense));
    }

    #[test]
    fn a_line_round_trips() {
        let (p, d) = (problem(77), Decision { choice: Choice::Sparse, dense_ms: 0.5, sparse_ms: 0.25 });
        assert_eq!(parse_line(&format_line(&p, &d)), Some((p, d)));
        assert_eq!(parse_line("a\tb"), None);
    }
}
