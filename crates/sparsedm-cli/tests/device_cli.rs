//! `--device` on a machine without a usable GPU (and without the CUDA
//! simulator): every computing command refuses `--device cuda` with one clear
//! line and exit code 1 before any work, and `--device auto` (the default)
//! computes on the CPU, saying so and why in one stderr line. The GPU runs of
//! the same commands are `gpu_cli.rs`.

use sparsedm_testkit::Scratch;
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sparsedm");
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo_shapes_uvit_dense.safetensors");

/// The binary with the simulator switched off, whatever this process's environment says.
fn sparsedm(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("SPARSEDM_CUDA_SIM").output().expect("run the sparsedm binary")
}

/// Why these checks do not apply here: a usable GPU, or the simulator asked for
/// in this process's environment (whose in-process probe would see it).
fn not_applicable() -> Option<&'static str> {
    if std::env::var_os("SPARSEDM_CUDA_SIM").is_some() {
        return Some("SPARSEDM_CUDA_SIM is set (gpu_cli.rs covers the simulator)");
    }
    sparsedm_kernels::is_available().then_some("this machine has a usable GPU (gpu_cli.rs covers it)")
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), "device-cli")
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sparsedm-diffusion/tests/fixtures").join(name).display().to_string()
}

#[test]
fn cuda_without_a_gpu_is_one_clear_error_in_every_computing_command() {
    let scratch = scratch_dir();
    if let Some(why) = not_applicable() {
        eprintln!("skipped: {why}");
        return;
    }
    let out = scratch.join("never");
    let o = out.display().to_string();
    let (cfg, w, io) =
        (fixture("uvit_tiny_uncond.json"), fixture("uvit_tiny_uncond.weights.safetensors"), fixture("uvit_tiny_uncond.io.safetensors"));
    let commands: Vec<Vec<&str>> = vec![
        vec!["train", "--config", "demo_shapes_uvit", "--out", &o],
        vec!["sample", "--checkpoint", DEMO, "--n", "2", "--out", &o],
        vec!["forward", "--arch", "uvit", "--config", &cfg, "--weights", &w, "--inputs", &io, "--output", &o],
        vec!["fid", "stats", "--inception", &w, "--images", &o, "--out", &o],
        vec!["fid", "score", &io, &io],
        vec!["demo", "--out", &o],
        vec!["repro", "table1", "--out", &o],
        vec!["bench", "--iters", "1"],
        vec!["prune", "--arch", "uvit", "--config", &cfg, "--weights", &w, "--pattern", "2:4", "--policy", "all", "--out", &o],
        vec!["prune", "--method", "diff-pruning", "--macs", "0.5", "--config", "demo_shapes_uvit", "--weights", DEMO, "--out", &o],
    ];
    for mut args in commands {
        args.extend(["--device", "cuda"]);
        let run = sparsedm(&args);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: --device cuda: CUDA device 0 is not available"), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!out.exists(), "nothing may be written before the device is refused");
}

#[test]
fn auto_computes_on_the_cpu_and_says_why() {
    let scratch = scratch_dir();
    if let Some(why) = not_applicable() {
        eprintln!("skipped: {why}");
        return;
    }
    let out = scratch.join("auto.out.safetensors");
    let _ = std::fs::remove_file(&out);
    let o = out.display().to_string();
    let (cfg, w, io) =
        (fixture("uvit_tiny_uncond.json"), fixture("uvit_tiny_uncond.weights.safetensors"), fixture("uvit_tiny_uncond.io.safetensors"));
    for device in [None, Some("auto")] {
        let mut args = vec!["forward", "--arch", "uvit", "--config", &cfg, "--weights", &w, "--inputs", &io, "--output", &o, "--force"];
        if let Some(d) = device {
            args.extend(["--device", d]);
        }
        let run = sparsedm(&args);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{err}");
        let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("--device auto:")).collect();
        assert_eq!(notes.len(), 1, "one line on the device: {err}");
        assert!(notes[0].starts_with("--device auto: computing on the CPU: no usable GPU (") && notes[0].contains("CUDA"), "{}", notes[0]);
        assert!(out.exists());
    }
    // prune too (its masks or importance pass then run on the host).
    let pruned = scratch.join("auto.pruned.safetensors");
    let _ = std::fs::remove_file(&pruned);
    let p = pruned.display().to_string();
    let run = sparsedm(&[
        "prune",
        "--arch",
        "uvit",
        "--config",
        &cfg,
        "--weights",
        &w,
        "--pattern",
        "2:4",
        "--policy",
        "all",
        "--out",
        &p,
        "--device",
        "auto",
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("--device auto:")).collect();
    assert_eq!(notes.len(), 1, "prune: one line on the device: {err}");
    assert!(notes[0].starts_with("--device auto: computing on the CPU: no usable GPU ("), "{}", notes[0]);
    assert!(pruned.exists());
    // Reduced precision is refused on the CPU before any work, naming the accepted choice.
    let run = sparsedm(&[
        "sample",
        "--checkpoint",
        DEMO,
        "--n",
        "2",
        "--out",
        &scratch.join("p.npz").display().to_string(),
        "--precision",
        "bf16",
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: --precision bf16: CPU matrix products are f32 only"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let run = sparsedm(&["sample", "--checkpoint", DEMO, "--n", "2", "--out", "x.npz", "--precision", "fp8"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "an unknown precision is refused: {err}");
    assert!(err.contains("f32, tf32 or bf16"), "{err}");
}
