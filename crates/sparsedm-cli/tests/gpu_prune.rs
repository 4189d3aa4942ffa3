//! `sparsedm prune --device cuda` through the real binary, against the same
//! command on the CPU:
//!
//! - magnitude pruning (U-ViT and UNet reference fixtures, plain and
//!   transposable 2:4): the masks are computed where the model lives (the
//!   `nm_mask` kernel on the device; transposable masks on the host), so the
//!   written file must hold exactly the CPU's tensors and sparsity spec;
//! - Diff-Pruning of the shipped demo model: the Taylor-importance pass's
//!   forwards and backwards run on the device (f32 matmuls), so its losses
//!   agree with the CPU's to rounding and the same channels are kept: the
//!   pruned tensors are slices of the same weights, equal within 1e-6
//!   relative (exactly, unless a Taylor score were a near tie), with the
//!   same pruned widths in the written run config. Two timesteps (so the
//!   gradients accumulate) of two images: a simulated step takes seconds.
//!
//! In CI this runs on the CUDA simulator (`SPARSEDM_CUDA_SIM=1`), on a GPU
//! machine on the GPU; without either, each test says why it is skipped and
//! passes, unless `SPARSEDM_REQUIRE_GPU=1`. The GPU bundle runs it with
//! `SPARSEDM_BIN`, `SPARSEDM_REPO` and `SPARSEDM_TEST_TMP` set (see
//! `gpu_cli.rs`).

use sparsedm_kernels::testing::gpu_or_skip;
use sparsedm_tensor::testing::max_rel_diff;
use sparsedm_tensor::{load_safetensors, load_weights_metadata};
use sparsedm_testkit::Scratch;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> String {
    std::env::var("SPARSEDM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sparsedm").to_string())
}

fn repo(rel: &str) -> PathBuf {
    match std::env::var_os("SPARSEDM_REPO") {
        Some(root) => PathBuf::from(root).join(rel),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel),
    }
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::in_dir(
        std::env::var_os("SPARSEDM_TEST_TMP").map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from),
        "gpu-prune",
    )
}

fn sparsedm(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run the sparsedm binary")
}

fn ok(o: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{what} failed:\n{stderr}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> String {
    repo("crates/sparsedm-diffusion/tests/fixtures").join(name).display().to_string()
}

/// The two files hold the same tensor names, shapes and dtypes, and values
/// within `tol` relative to max |CPU value|, tensor by tensor.
fn same_tensors(what: &str, gpu: &Path, cpu: &Path, tol: f32) {
    let (g, c) = (load_safetensors(gpu).unwrap(), load_safetensors(cpu).unwrap());
    let names = |v: &[(String, sparsedm_tensor::Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&g), names(&c), "{what}: tensor names");
    for ((name, a), (_, b)) in g.iter().zip(&c) {
        assert_eq!(a.shape(), b.shape(), "{what}: {name} shape");
        assert_eq!(a.dtype(), b.dtype(), "{what}: {name} dtype");
        let d = max_rel_diff(&a.to_vec_f32().unwrap(), &b.to_vec_f32().unwrap());
        assert!(d <= tol, "{what}: {name} differs by {d:.2e} > {tol:.0e} (relative)");
    }
}

#[test]
fn gpu_magnitude_prune_writes_the_cpu_file() {
    let scratch = scratch_dir();
    if gpu_or_skip("gpu_magnitude_prune_writes_the_cpu_file").is_none() {
        return;
    }
    let cases = [("uvit", "uvit_tiny_uncond", false), ("uvit", "uvit_tiny_uncond", true), ("ddpm-unet", "ddpm_unet_tiny", false)];
    for (arch, name, transposable) in cases {
        let (cfg, w) = (fixture(&format!("{name}.json")), fixture(&format!("{name}.weights.safetensors")));
        let mut outs = Vec::new();
        for device in ["cpu", "cuda"] {
            let out = scratch.join(format!("{name}-{transposable}-{device}.safetensors"));
            let mut args = vec![
                "prune",
                "--arch",
                arch,
                "--config",
                &cfg,
                "--weights",
                &w,
                "--pattern",
                "2:4",
                "--policy",
                "all",
                "--json",
                "--out",
                s(&out),
                "--device",
                device,
            ];
            if transposable {
                args.push("--transposable");
            }
            let report = ok(&sparsedm(&args), &format!("prune {name} --device {device}"));
            assert!(report.contains("\"layers\"") || report.contains('{'), "a JSON report: {report}");
            outs.push(out);
        }
        let what = format!("{name} (transposable {transposable})");
        // Masks from the same rule on both devices: the same file, bit for bit in values.
        same_tensors(&what, &outs[1], &outs[0], 0.0);
        let (mg, mc) = (load_weights_metadata(&outs[1]).unwrap(), load_weights_metadata(&outs[0]).unwrap());
        assert_eq!(mg.get("sparsedm.sparsity"), mc.get("sparsedm.sparsity"), "{what}: sparsity spec");
        assert!(mg.get("sparsedm.sparsity").is_some_and(|s| s.contains("2:4")), "{what}: a 2:4 spec was written");
    }
}

#[test]
fn gpu_diff_pruning_writes_the_cpu_file() {
    let scratch = scratch_dir();
    if gpu_or_skip("gpu_diff_pruning_writes_the_cpu_file").is_none() {
        return;
    }
    let dense = repo("crates/sparsedm-cli/assets/demo_shapes_uvit_dense.safetensors");
    let mut outs = Vec::new();
    let mut reports = Vec::new();
    for device in ["cpu", "cuda"] {
        let out = scratch.join(format!("diffprune-{device}.safetensors"));
        let args = [
            "prune",
            "--method",
            "diff-pruning",
            "--macs",
            "0.5",
            "--config",
            "demo_shapes_uvit",
            "--weights",
            s(&dense),
            "--steps",
            "2",
            "--batch",
            "2",
            "--json",
            "--out",
            s(&out),
            "--device",
            device,
        ];
        let report: serde_json::Value = serde_json::from_str(&ok(&sparsedm(&args), &format!("diff-pruning --device {device}"))).unwrap();
        reports.push(report);
        outs.push(out);
    }
    let (cpu, gpu) = (&reports[0], &reports[1]);
    assert_eq!(gpu["groups"], cpu["groups"], "the same channels and heads kept per group");
    assert_eq!(gpu["config"], cpu["config"], "the same pruned widths");
    assert_eq!(gpu["timesteps"], cpu["timesteps"], "the same importance timesteps");
    assert!(cpu["macs_after"].as_f64().unwrap() < cpu["macs_before"].as_f64().unwrap(), "pruned: {cpu}");
    same_tensors("diff-pruning", &outs[1], &outs[0], 1e-6);
    let (tg, tc) = (
        std::fs::read_to_string(outs[1].with_extension("toml")).unwrap(),
        std::fs::read_to_string(outs[0].with_extension("toml")).unwrap(),
    );
    assert_eq!(tg.replace("-cuda.", "-cpu."), tc, "the fine-tuning run configs (but for the file named in train.init)");
}
