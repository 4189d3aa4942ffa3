//! `sparsedm bench`'s device and precision flags without a GPU: CUDA is
//! refused in one line where no GPU is usable (as in every computing
//! command), `--precision` other than f32 is refused on the CPU, and the JSON
//! report says where and at what precision it ran. (The CUDA run itself is
//! checked on a GPU machine with the bundle's `bin/sparsedm bench --device cuda`.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sparsedm");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn bench_reports_device_and_precision_on_the_cpu() {
    let (code, out, err) = run(&["bench", "--batch", "2", "--iters", "1", "--json", "--precision", "f32"]);
    assert_eq!(code, Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["precision"], "f32");
    assert!(r["peak_device_memory_bytes"].is_null());
}

/// `--threads N` (a global flag) sets the CPU threads: the report says so, in its JSON and its
/// table, and the 2-thread PyTorch reference is shown only for a 2-thread run.
#[test]
fn bench_runs_on_the_threads_asked_for() {
    for n in [1u64, 2, 3] {
        let (code, out, err) = run(&["bench", "--threads", &n.to_string(), "--batch", "64", "--iters", "1", "--forward-only", "--json"]);
        assert_eq!(code, Some(0), "{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["threads"].as_u64(), Some(n), "{r}");
        // The demo U-ViT at batch 64 has a reference measurement, taken with 2 threads.
        assert_eq!(r["peer"].is_object(), n == 2, "the 2-thread reference beside a {n}-thread run: {r}");
    }
    let (code, out, err) = run(&["--threads", "2", "bench", "--batch", "64", "--iters", "1", "--forward-only"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("batch 64, 2 threads") && out.contains("reference: PyTorch"), "{out}");
    let (code, out, err) = run(&["bench", "--threads", "1", "--batch", "1", "--iters", "1", "--forward-only"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("batch 1, 1 thread,"), "{out}");
    let (code, _, err) = run(&["bench", "--threads", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--threads") && err.contains("0"), "{err}");
}

/// A class-conditional model is timed with labels (its forward and training step need them).
#[test]
fn bench_times_a_class_conditional_model() {
    let (code, out, err) =
        run(&["bench", "--batch", "2", "--iters", "1", "--json", "--device", "cpu", "--set", "nnet.num_classes=4", "--pattern", "2:4"]);
    assert_eq!(code, Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in ["forward_ms", "forward_nm_ms", "train_step_ms", "train_step_srste_ms"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {}", r[key]);
    }
}

#[test]
fn bench_refuses_reduced_precision_on_the_cpu_and_unknown_precisions() {
    let (code, _, err) = run(&["bench", "--iters", "1", "--precision", "bf16"]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: --precision bf16: CPU matrix products are f32 only"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (code, _, err) = run(&["bench", "--iters", "1", "--device", "cpu", "--precision", "fp8"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("expected f32, tf32 or bf16"), "{err}");
}

#[test]
fn bench_without_a_usable_gpu_is_one_line() {
    if sparsedm_tensor::cuda::is_available() {
        eprintln!("skipped: this machine has a GPU (the bench would run)");
        return;
    }
    let (code, _, err) = run(&["bench", "--iters", "1", "--device", "cuda"]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: --device cuda: CUDA device 0 is not available"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn other_commands_still_refuse_a_gpu() {
    // Every command now runs on a usable GPU (gpu_cli.rs); on a machine
    // without one, `train --device cuda` is refused by the availability check.
    let (code, _, err) = run(&["train", "--device", "cuda"]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: --device cuda"), "{err}");
}
