//! `sparsedm forward` on the reference fixtures reproduces their `output`,
//! and bad inputs give one clear error line and a non-zero exit code.
//!
//! The fixture files are those of the sparsedm-diffusion parity tests
//! (`crates/sparsedm-diffusion/tests/fixtures/`, produced by the reference
//! PyTorch code; provenance in `crates/sparsedm-diffusion/tests/parity.rs`).

use sparsedm_tensor::testing::assert_close;
use sparsedm_tensor::{Tensor, load_safetensors, save_safetensors};
use sparsedm_testkit::Scratch;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sparsedm-diffusion/tests/fixtures").join(name)
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::new("forward-cli")
}

fn forward(arch: &str, fixture_name: &str, inputs: &PathBuf, output: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["forward", "--arch", arch, "--config"])
        .arg(fixture(&format!("{fixture_name}.json")))
        .arg("--weights")
        .arg(fixture(&format!("{fixture_name}.weights.safetensors")))
        .arg("--inputs")
        .arg(inputs)
        .arg("--output")
        .arg(output)
        .output()
        .expect("run the sparsedm binary")
}

fn reproduces(arch: &str, name: &str) {
    let scratch = scratch_dir();
    let out_path = scratch.join(format!("{name}.out.safetensors"));
    let io = fixture(&format!("{name}.io.safetensors"));
    let run = forward(arch, name, &io, &out_path);
    assert!(run.status.success(), "{name}: sparsedm forward failed: {}", String::from_utf8_lossy(&run.stderr));
    let got: HashMap<String, Tensor> = load_safetensors(&out_path).unwrap().into_iter().collect();
    let want: HashMap<String, Tensor> = load_safetensors(&io).unwrap().into_iter().collect();
    assert_eq!(got.len(), 1, "only `output` is written");
    assert_eq!(got["output"].shape(), want["output"].shape());
    assert_close(name, &got["output"].to_vec_f32().unwrap(), &want["output"].to_vec_f32().unwrap(), 1e-4);
}

#[test]
fn reproduces_uvit_uncond() {
    reproduces("uvit", "uvit_tiny_uncond");
}

#[test]
fn reproduces_uvit_cond() {
    reproduces("uvit", "uvit_tiny_cond");
}

#[test]
fn reproduces_ddpm_unet() {
    reproduces("ddpm-unet", "ddpm_unet_tiny");
}

/// Writes the fixture's inputs without `drop`, runs, returns stderr.
fn fails_without(arch: &str, name: &str, drop: &str, extra: Option<(&str, Tensor)>) -> String {
    let scratch = scratch_dir();
    let io = load_safetensors(fixture(&format!("{name}.io.safetensors"))).unwrap();
    let mut kept: Vec<(String, Tensor)> = io.into_iter().filter(|(k, _)| k.starts_with("input.") && k != drop).collect();
    if let Some((k, t)) = extra {
        kept.retain(|(n, _)| n != k);
        kept.push((k.to_string(), t));
    }
    let inputs = scratch.join(format!("{name}.without-{drop}.safetensors"));
    save_safetensors(&inputs, &kept, None).unwrap();
    let run = forward(arch, name, &inputs, &scratch.join("never-written.safetensors"));
    assert!(!run.status.success(), "{name} without {drop} must fail");
    assert_ne!(run.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one error line, got:\n{stderr}");
    stderr
}

#[test]
fn missing_key_is_one_clear_error() {
    let e = fails_without("uvit", "uvit_tiny_uncond", "input.timesteps", None);
    assert!(e.starts_with("error: ") && e.contains("missing tensor \"input.timesteps\""), "{e}");
    let e = fails_without("ddpm-unet", "ddpm_unet_tiny", "input.t", None);
    assert!(e.contains("\"input.t\""), "{e}");
    let e = fails_without("uvit", "uvit_tiny_cond", "input.y", None);
    assert!(e.contains("\"input.y\"") && e.contains("5 classes"), "{e}");
}

#[test]
fn wrong_shape_is_one_clear_error() {
    let x = Tensor::zeros(&[3, 3, 16, 16], &sparsedm_tensor::Device::Cpu).unwrap();
    let e = fails_without("uvit", "uvit_tiny_uncond", "none", Some(("input.x", x)));
    assert!(e.contains("input.x has shape [3, 3, 16, 16], the model expects [B, 3, 8, 8]"), "{e}");
}

#[test]
fn bad_files_are_errors() {
    let scratch = scratch_dir();
    let garbage = scratch.join("garbage.safetensors");
    std::fs::write(&garbage, b"\x05\x00\x00\x00\x00\x00\x00\x00hello").unwrap();
    let run = forward("uvit", "uvit_tiny_uncond", &garbage, &scratch.join("x.safetensors"));
    assert!(!run.status.success());
    let e = String::from_utf8_lossy(&run.stderr);
    assert!(e.contains("garbage.safetensors"), "{e}");
    // Weights of another model: one error listing the mismatches.
    let run = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["forward", "--arch", "uvit", "--config"])
        .arg(fixture("uvit_tiny_cond.json"))
        .arg("--weights")
        .arg(fixture("uvit_tiny_uncond.weights.safetensors"))
        .arg("--inputs")
        .arg(fixture("uvit_tiny_cond.io.safetensors"))
        .arg("--output")
        .arg(scratch.join("y.safetensors"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let e = String::from_utf8_lossy(&run.stderr);
    assert!(e.contains("missing tensor label_emb.weight") && e.contains("has shape"), "{e}");
}

#[test]
fn macs_command_prints_the_paper_numbers() {
    let run = Command::new(env!("CARGO_BIN_EXE_sparsedm")).args(["macs", "--preset", "cifar10_uvit_small"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("in_blocks.0.attn.qkv"), "{out}");
    assert!(out.contains("11.3216 G") && out.contains("11.3393 G") && out.contains("0.8792 G"), "{out}");
    let run = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["macs", "--arch", "ddpm-unet", "--config"])
        .arg(fixture("ddpm_unet_tiny.json"))
        .args(["--pattern", "2:4", "--policy", "all"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("2:4"));
    let run = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["macs", "--preset", "cifar10_uvit_small", "--pattern", "2:4", "--policy", "sparsedm-uvit"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("6.0666 G (dense 11.3216 G)"), "{out}");
}

/// `macs --checkpoint` on official weights (with --arch/--config) counts
/// what `macs --config` counts for a dense model, and on a pruned 2:4
/// checkpoint what `--pattern 2:4 --policy all` predicts; flags that do not
/// apply to a checkpoint are refused.
#[test]
fn macs_of_a_checkpoint_counts_its_nm_layers() {
    let scratch = scratch_dir();
    let bin = env!("CARGO_BIN_EXE_sparsedm");
    let run = |args: &[&str]| {
        let o = Command::new(bin).args(args).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (cfg, weights) = (fixture("ddpm_unet_tiny.json"), fixture("ddpm_unet_tiny.weights.safetensors"));
    let (cfg, weights) = (cfg.to_str().unwrap(), weights.to_str().unwrap());
    // The table after the first line (which names the file).
    let table = |out: &str| out.lines().skip(1).collect::<Vec<_>>().join("\n");
    let (ok, analytic, e) = run(&["macs", "--arch", "ddpm-unet", "--config", cfg]);
    assert!(ok, "{e}");
    let (ok, of_file, e) = run(&["macs", "--arch", "ddpm-unet", "--config", cfg, "--checkpoint", weights]);
    assert!(ok, "{e}");
    assert!(of_file.contains("(0 N:M layers)"), "{of_file}");
    assert_eq!(table(&of_file), table(&analytic));

    let pruned = scratch.join("macs-2of4.safetensors");
    let (ok, _, e) = run(&[
        "prune",
        "--arch",
        "ddpm-unet",
        "--config",
        cfg,
        "--weights",
        weights,
        "--pattern",
        "2:4",
        "--policy",
        "all",
        "--force",
        "--out",
        pruned.to_str().unwrap(),
    ]);
    assert!(ok, "prune: {e}");
    let (ok, predicted, e) = run(&["macs", "--arch", "ddpm-unet", "--config", cfg, "--pattern", "2:4", "--policy", "all"]);
    assert!(ok, "{e}");
    let (ok, of_pruned, e) = run(&["macs", "--arch", "ddpm-unet", "--config", cfg, "--checkpoint", pruned.to_str().unwrap()]);
    assert!(ok, "{e}");
    let nm = of_pruned.lines().filter(|l| l.split_whitespace().nth(3) == Some("2:4")).count();
    assert!(nm > 0 && of_pruned.contains(&format!("({nm} N:M layers)")), "{of_pruned}");
    assert_eq!(table(&of_pruned), table(&predicted));

    let (ok, _, e) = run(&["macs", "--checkpoint", weights, "--pattern", "2:4"]);
    assert!(!ok && e.contains("--pattern"), "{e}");
    let (ok, _, e) = run(&["macs", "--checkpoint", weights, "--preset", "cifar10_ddpm"]);
    assert!(!ok && e.contains("--preset"), "{e}");
    let (ok, _, e) = run(&["macs", "--checkpoint", weights]);
    assert!(!ok && e.contains("--arch and --config"), "{e}");
}
