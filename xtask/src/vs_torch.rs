//! `cargo xtask bench vs-torch`: our CPU sampling forward and training step
//! beside PyTorch's for the same models, measured in the same minutes.
//!
//! The peer is `scripts/bench_torch.py`, run by the Python named in
//! `SPARSEDM_TORCH_PYTHON` (a venv of the user's, outside the repo; torch is
//! never a dependency of the build or the tests). Rounds alternate between
//! the two programs (ours, theirs, ours, theirs, …) so that both see the
//! same machine load, and the table reports each side's median over rounds
//! and the ratio ours/theirs (below 1: we are faster). Without a usable
//! torch it says why and still times our side.

use std::path::Path;
use std::process::Command;

/// The models compared by default: (sparsedm preset, batch), as in the
/// CPU-speed issue. `--model` names others (U-ViT or DDPM UNet presets).
const MODELS: &[(&str, usize)] = &[("demo_shapes_uvit", 64), ("cifar10_uvit_small", 8)];

const USAGE: &str = "usage: cargo xtask bench vs-torch [--rounds R] [--iters N] [--threads T] [--model PRESET:BATCH]...
  --threads T   CPU threads of both programs (default 2, the issue's machine class)
  SPARSEDM_TORCH_PYTHON=/path/to/venv/bin/python   a Python with torch (and safetensors for the
                                                   fixture check); without it only our side runs";

#[derive(Debug, Clone, Copy, Default)]
struct Times {
    forward_ms: f64,
    train_step_ms: f64,
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut rounds = 3usize;
    let mut iters = 5usize;
    // Both sides on the same number of threads (ours took one per CPU before, the peer 2).
    let mut threads = 2usize;
    let mut models: Vec<(String, usize)> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match a.as_str() {
            "--rounds" => rounds = parse_count("--rounds", &value("--rounds")?)?,
            "--iters" => iters = parse_count("--iters", &value("--iters")?)?,
            "--threads" => threads = parse_count("--threads", &value("--threads")?)?,
            "--model" => {
                let v = value("--model")?;
                let (p, b) = v.split_once(':').ok_or_else(|| format!("--model {v:?}: expected PRESET:BATCH"))?;
                models.push((p.to_string(), parse_count("--model batch", b)?));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if models.is_empty() {
        models = MODELS.iter().map(|(p, b)| (p.to_string(), *b)).collect();
    }
    let root = crate::project_root();
    crate::run_cmd("cargo", &["build", "--release", "-p", "sparsedm-cli"])?;
    let ours_bin = root.join("target/release/sparsedm");
    let torch = torch_python(&root);
    if let Err(why) = &torch {
        eprintln!("PyTorch peer: not run ({why})");
    }
    let mut rows = Vec::new();
    for (preset, batch) in &models {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut peer_name = String::new();
        for r in 0..rounds {
            eprintln!("{preset} batch {batch}: round {}/{rounds}", r + 1);
            ours.push(run_ours(&ours_bin, preset, *batch, iters, threads)?);
            if let Ok(py) = &torch {
                let (t, name) = run_torch(py, &root, preset, *batch, iters, threads)?;
                theirs.push(t);
                peer_name = name;
            }
        }
        rows.push((preset.clone(), *batch, median(&ours), (!theirs.is_empty()).then(|| median(&theirs)), peer_name));
    }
    println!("\n| model | batch | ours forward ms | peer forward ms | ratio | ours train ms | peer train ms | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for (preset, batch, o, t, _) in &rows {
        let (tf, tt, rf, rt) = match t {
            Some(t) => (
                format!("{:.1}", t.forward_ms),
                format!("{:.1}", t.train_step_ms),
                format!("{:.2}", o.forward_ms / t.forward_ms),
                format!("{:.2}", o.train_step_ms / t.train_step_ms),
            ),
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        println!("| {preset} | {batch} | {:.1} | {tf} | {rf} | {:.1} | {tt} | {rt} |", o.forward_ms, o.train_step_ms);
    }
    let peer = rows.iter().map(|r| r.4.as_str()).find(|s| !s.is_empty()).unwrap_or("none");
    println!(
        "\nmedians of {rounds} interleaved rounds, {iters} timed iterations each, {threads} CPU thread{} each side; peer: {peer}; ratio = ours / peer (below 1: faster)",
        if threads == 1 { "" } else { "s" }
    );
    Ok(())
}

fn parse_count(flag: &str, s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} {s:?}: expected a positive integer")),
    }
}

/// The Python with torch, checked with one import and the model check
/// against the reference U-ViT and UNet fixtures (when ../shared/fixtures
/// exists).
fn torch_python(root: &Path) -> Result<String, String> {
    let py = std::env::var("SPARSEDM_TORCH_PYTHON").map_err(|_| "SPARSEDM_TORCH_PYTHON is not set".to_string())?;
    let out =
        Command::new(&py).args(["-c", "import torch; print(torch.__version__)"]).output().map_err(|e| format!("cannot run {py}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{py} cannot import torch: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")));
    }
    let fixtures = root.join("../shared/fixtures");
    if fixtures.join("uvit_tiny_uncond.json").exists() {
        let script = root.join("scripts/bench_torch.py");
        let s = Command::new(&py)
            .arg(&script)
            .args(["--check", &fixtures.to_string_lossy(), "--batch", "1", "--iters", "1"])
            .status()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !s.success() {
            return Err("the PyTorch U-ViT or UNet failed its check against the reference fixtures".into());
        }
    }
    Ok(py)
}

fn run_ours(bin: &Path, preset: &str, batch: usize, iters: usize, threads: usize) -> Result<Times, String> {
    let out = Command::new(bin)
        .args(["--threads", &threads.to_string()])
        .args(["bench", "--config", preset, "--batch", &batch.to_string(), "--iters", &iters.to_string(), "--json"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!("sparsedm bench failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let ran = json_number(&s, "threads")?;
    if ran != threads as f64 {
        return Err(format!("sparsedm bench ran on {ran} threads, not the {threads} asked for"));
    }
    Ok(Times { forward_ms: json_number(&s, "forward_ms")?, train_step_ms: json_number(&s, "train_step_ms")? })
}

fn run_torch(py: &str, root: &Path, preset: &str, batch: usize, iters: usize, threads: usize) -> Result<(Times, String), String> {
    let out = Command::new(py)
        .arg(root.join("scripts/bench_torch.py"))
        .args(["--preset", preset, "--batch", &batch.to_string(), "--iters", &iters.to_string(), "--threads", &threads.to_string()])
        .output()
        .map_err(|e| format!("cannot run {py}: {e}"))?;
    if !out.status.success() {
        return Err(format!("bench_torch.py failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let peer = json_string(&s, "peer").unwrap_or_default();
    Ok((Times { forward_ms: json_number(&s, "forward_ms")?, train_step_ms: json_number(&s, "train_step_ms")? }, peer))
}

/// The number after `"key":` in a flat JSON text (xtask stays free of dependencies).
fn json_number(s: &str, key: &str) -> Result<f64, String> {
    let pat = format!("\"{key}\":");
    let i = s.find(&pat).ok_or_else(|| format!("no {key} in {s:?}"))? + pat.len();
    let rest = s[i..].trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c))).unwrap_or(rest.len());
    rest[..end].parse().map_err(|_| format!("{key}: not a number in {s:?}"))
}

fn json_string(s: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":");
    let rest = s[s.find(&pat)? + pat.len()..].trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

fn median(v: &[Times]) -> Times {
    let pick = |f: fn(&Times) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    Times { forward_ms: pick(|t| t.forward_ms), train_step_ms: pick(|t| t.train_step_ms) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_and_strings_from_flat_json() {
        let s = "{\n  \"forward_ms\": 12.5,\n  \"train_step_ms\": 3.0e2, \"peer\": \"PyTorch 2.15 CPU\"}";
        assert_eq!(json_number(s, "forward_ms").unwrap(), 12.5);
        assert_eq!(json_number(s, "train_step_ms").unwrap(), 300.0);
        assert_eq!(json_string(s, "peer").unwrap(), "PyTorch 2.15 CPU");
        assert!(json_number(s, "missing").is_err());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let t = |f| Times { forward_ms: f, train_step_ms: 2.0 * f };
        assert_eq!(median(&[t(3.0), t(1.0), t(2.0)]).forward_ms, 2.0);
        assert_eq!(median(&[t(4.0), t(1.0)]).train_step_ms, 8.0);
    }

    #[test]
    fn counts_must_be_positive() {
        assert!(parse_count("--rounds", "0").is_err());
        assert!(parse_count("--rounds", "x").is_err());
        assert_eq!(parse_count("--rounds", "4").unwrap(), 4);
    }
}
