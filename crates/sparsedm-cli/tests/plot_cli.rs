//! `sparsedm plot` through the real binary: the loss curves of runs made by
//! a short `sparsedm train` are drawn to a PNG; an existing output needs
//! `--force`; a folder without `metrics.jsonl`, or with an empty one, is one
//! clear error line and exit code 1.

use sparsedm_testkit::Scratch;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sparsedm");

const TINY: &str = r#"
seed = 3
arch = "uvit"
[nnet]
img_size = 16
patch_size = 4
embed_dim = 32
depth = 1
num_heads = 2
mlp_ratio = 2.0
[dataset]
name = "shapes"
resolution = 16
len = 64
[train]
n_steps = 6
batch_size = 4
log_interval = 1
save_interval = 6
sample_interval = 0
[optimizer]
lr = 1e-3
weight_decay = 0.03
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 2
[sample]
sampler = "dpm-solver-2"
steps = 2
"#;

/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn tmp(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), name)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.starts_with(b"\x89PNG\r\n\x1a\n") && &b[12..16] == b"IHDR", "{} is not a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

fn fails_with(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
}

#[test]
fn plot_draws_the_loss_of_trained_runs() {
    let root = tmp("plot");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let (a, b) = (root.join("a"), root.join("b"));
    for (dir, seed) in [(&a, "1"), (&b, "2")] {
        let o = run(&["train", "--config", &s(&cfg), "--out", &s(dir), "--set", &format!("seed={seed}")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let out = root.join("loss.png");
    let o = run(&["plot", &s(&a), &s(&b), "--out", &s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(png_size(&out), (900, 480), "one loss panel (no FID logged)");

    // The output exists now: refused without --force, replaced with it.
    fails_with(&run(&["plot", &s(&a), "--out", &s(&out)]), "--force");
    let o = run(&["plot", &s(&a), "--out", &s(&out), "--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The run's metrics.jsonl given instead of its folder: the same picture (named by the folder).
    let from_file = root.join("from-file.png");
    let o = run(&["plot", &s(&a.join("metrics.jsonl")), "--out", &s(&from_file)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&from_file).unwrap(), std::fs::read(&out).unwrap());
    // One run given twice (its folder and its metrics.jsonl) is refused, not drawn twice.
    fails_with(&run(&["plot", &s(&a), &s(&b), &s(&a.join("metrics.jsonl")), "--out", &s(&root.join("x.png"))]), "are the same run");

    // Bad run folders.
    let empty_dir = root.join("not-a-run");
    std::fs::create_dir_all(&empty_dir).unwrap();
    fails_with(&run(&["plot", &s(&empty_dir), "--out", &s(&root.join("x.png"))]), "metrics.jsonl: no such file");
    std::fs::write(empty_dir.join("metrics.jsonl"), "").unwrap();
    fails_with(&run(&["plot", &s(&a), &s(&empty_dir), "--out", &s(&root.join("x.png"))]), "is empty");
    assert!(!root.join("x.png").exists());
}
