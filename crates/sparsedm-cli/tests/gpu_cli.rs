//! The computing commands on `--device cuda` through the real binary, each
//! against the same command on the CPU (or the reference fixtures):
//!
//! - `forward` reproduces the PyTorch reference outputs of the
//!   sparsedm-diffusion parity fixtures (1e-4 relative to max |reference|,
//!   the fixtures' own tolerance; provenance in
//!   `crates/sparsedm-diffusion/tests/parity.rs`);
//! - `sample` from the shipped demo checkpoint gives the CPU's images within
//!   1/255 (a deterministic and a stochastic sampler, f32 matmuls);
//! - `train --set train.precision=f32` logs the CPU run's losses within 1e-3
//!   relative, and a checkpoint written on either device resumes on the
//!   other with the same losses; a bf16 run refuses to continue on the CPU
//!   until `--set train.precision=f32` says so;
//! - `fid stats` gives the CPU's statistics of the same images;
//! - `--device auto` does what `DeviceArg` documents (the simulator is never
//!   picked as a GPU).
//!
//! In CI this runs on the CUDA simulator (`SPARSEDM_CUDA_SIM=1`), on a GPU
//! machine on the GPU; without either, each test says why it is skipped and
//! passes, unless `SPARSEDM_REQUIRE_GPU=1`. Sizes are tiny so the simulated
//! run stays within seconds per test on 2 cores.
//!
//! The GPU bundle runs this executable on a machine without the build tree:
//! there `SPARSEDM_BIN` names the CLI, `SPARSEDM_REPO` the checkout holding
//! the fixtures and `SPARSEDM_TEST_TMP` a scratch folder (each defaults to
//! the build's own).

use sparsedm_kernels::testing::gpu_or_skip;
use sparsedm_tensor::testing::assert_close;
use sparsedm_tensor::{Tensor, load_safetensors};
use sparsedm_testkit::Scratch;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The CLI under test.
fn bin() -> String {
    std::env::var("SPARSEDM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sparsedm").to_string())
}

/// `rel`, a path inside the checkout.
fn repo(rel: &str) -> PathBuf {
    match std::env::var_os("SPARSEDM_REPO") {
        Some(root) => PathBuf::from(root).join(rel),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel),
    }
}

/// The dense demo model shipped with the binary (provenance in `assets/README.md`).
fn demo() -> String {
    repo("crates/sparsedm-cli/assets/demo_shapes_uvit_dense.safetensors").display().to_string()
}

/// Whether the tests run (a GPU or the simulator); prints why not otherwise.
fn have_gpu(test: &str) -> bool {
    gpu_or_skip(test).is_some()
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::in_dir(
        std::env::var_os("SPARSEDM_TEST_TMP").map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from),
        "gpu-cli",
    )
}

fn sparsedm(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run the sparsedm binary")
}

fn ok(o: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{what} failed:\n{stderr}");
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    repo("crates/sparsedm-diffusion/tests/fixtures").join(name)
}

#[test]
fn gpu_forward_reproduces_the_reference_fixtures() {
    let scratch = scratch_dir();
    if !have_gpu("gpu_forward_reproduces_the_reference_fixtures") {
        return;
    }
    for (arch, name) in [("uvit", "uvit_tiny_uncond"), ("uvit", "uvit_tiny_cond"), ("ddpm-unet", "ddpm_unet_tiny")] {
        let out = scratch.join(format!("{name}.out.safetensors"));
        let io = fixture(&format!("{name}.io.safetensors"));
        let (config, weights) = (fixture(&format!("{name}.json")), fixture(&format!("{name}.weights.safetensors")));
        let run = sparsedm(&[
            "forward",
            "--arch",
            arch,
            "--config",
            s(&config),
            "--weights",
            s(&weights),
            "--inputs",
            s(&io),
            "--output",
            s(&out),
            "--device",
            "cuda",
        ]);
        ok(&run, &format!("forward --device cuda {name}"));
        let got: HashMap<String, Tensor> = load_safetensors(&out).unwrap().into_iter().collect();
        let want: HashMap<String, Tensor> = load_safetensors(&io).unwrap().into_iter().collect();
        assert_eq!(got["output"].shape(), want["output"].shape(), "{name}");
        assert_close(name, &got["output"].to_vec_f32().unwrap(), &want["output"].to_vec_f32().unwrap(), 1e-4);
    }
}

#[test]
fn gpu_sample_gives_the_cpu_images() {
    let scratch = scratch_dir();
    if !have_gpu("gpu_sample_gives_the_cpu_images") {
        return;
    }
    // The default sampler (DPM-Solver-2, deterministic after the starting noise) and
    // Euler–Maruyama (fresh noise drawn on the device at every step); two batches, the last one
    // short. Few steps and images: the simulator runs attention's softmax thread by thread.
    let demo = demo();
    for (sampler, steps) in [(None, "2"), (Some("euler-maruyama"), "2")] {
        let images = |device: &str| {
            let out = scratch.join(format!("sample-{}-{device}.npz", sampler.unwrap_or("default")));
            let mut args = vec!["sample", "--checkpoint", &demo, "--n", "3", "--batch", "2", "--steps", steps, "--seed", "11"];
            if let Some(sm) = sampler {
                args.extend(["--sampler", sm]);
            }
            args.extend(["--out", s(&out), "--device", device]);
            ok(&sparsedm(&args), &format!("sample --device {device}"));
            sparsedm_fid::read_images_npz(&out).unwrap()
        };
        let (cpu, gpu) = (images("cpu"), images("cuda"));
        assert_eq!((gpu.n, gpu.height, gpu.width), (cpu.n, cpu.height, cpu.width));
        let worst = cpu.data.iter().zip(&gpu.data).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(worst <= 1, "sampler {sampler:?}: a pixel differs by {worst}/255 between the CPU and the GPU");
        assert!(cpu.data.iter().any(|&v| v != cpu.data[0]), "the images are blank");
    }
}

/// A tiny U-ViT run on the embedded shapes, one metrics row per step.
const TINY_RUN: &str = r#"
seed = 3
arch = "uvit"
[nnet]
img_size = 16
patch_size = 4
embed_dim = 32
depth = 2
num_heads = 2
mlp_ratio = 2.0
[dataset]
name = "shapes"
resolution = 16
len = 64
[train]
n_steps = 4
batch_size = 8
ema_rate = 0.9
log_interval = 1
save_interval = 2
[optimizer]
lr = 2e-3
weight_decay = 0.03
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 0
"#;

/// The losses of `metrics.jsonl` by step.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v["loss"].as_f64()?)))
        .collect()
}

fn train(config: &Path, out: &Path, device: &str, sets: &[&str]) -> Output {
    let mut args = vec!["train", "--config", s(config), "--out", s(out), "--device", device];
    for set in sets {
        args.extend(["--set", set]);
    }
    sparsedm(&args)
}

fn resume(run: &Path, device: &str, sets: &[&str]) -> Output {
    let mut args = vec!["train", "--resume", s(run), "--device", device];
    for set in sets {
        args.extend(["--set", set]);
    }
    sparsedm(&args)
}

fn same_losses(what: &str, got: &[(u64, f64)], want: &[(u64, f64)]) {
    assert_eq!(got.iter().map(|l| l.0).collect::<Vec<_>>(), want.iter().map(|l| l.0).collect::<Vec<_>>(), "{what}: logged steps");
    for ((step, g), (_, c)) in got.iter().zip(want) {
        let rel = (g - c).abs() / c.abs().max(1e-12);
        assert!(rel <= 1e-3, "{what}: step {step}: loss {g} vs {c} on the CPU (relative difference {rel:.2e} > 1e-3)");
    }
}

#[test]
fn gpu_train_follows_the_cpu_and_checkpoints_resume_across_devices() {
    let scratch = scratch_dir();
    if !have_gpu("gpu_train_follows_the_cpu_and_checkpoints_resume_across_devices") {
        return;
    }
    let config = scratch.join("tiny.toml");
    std::fs::write(&config, TINY_RUN).unwrap();
    let f32 = "train.precision=f32";

    let cpu = scratch.join("run-cpu");
    ok(&train(&config, &cpu, "cpu", &[]), "train --device cpu");
    let want = losses(&cpu);
    assert_eq!(want.len(), 4);

    // Two steps on one device, two more on the other (checkpoint at step 2): between them, every
    // step of the CPU run is also taken on the GPU, at f32, and must log the CPU's loss.
    for (first, then) in [("cuda", "cpu"), ("cpu", "cuda")] {
        let run = scratch.join(format!("run-{first}-then-{then}"));
        let e = ok(&train(&config, &run, first, &[f32, "train.n_steps=2"]), &format!("train --device {first}"));
        assert!(e.contains(&format!("on {} (f32 matmuls)", if first == "cuda" { "cuda:0" } else { "cpu" })), "{e}");
        let e = ok(&resume(&run, then, &["train.n_steps=4"]), &format!("train --resume --device {then}"));
        assert!(e.contains("from step 2"), "{e}");
        same_losses(&format!("{first} then {then}"), &losses(&run), &want);
    }

    // A bf16 run (the GPU default made explicit) cannot silently continue on the CPU.
    let run = scratch.join("run-bf16");
    let e = ok(&train(&config, &run, "cuda", &["train.precision=bf16", "train.n_steps=1"]), "train bf16");
    assert!(e.contains("(bf16 matmuls)"), "{e}");
    let refused = resume(&run, "cpu", &["train.n_steps=2"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.starts_with("error: train.precision bf16: CPU matrix products are f32 only"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    ok(&resume(&run, "cpu", &["train.n_steps=2", f32]), "resume on the CPU with train.precision=f32");
    assert_eq!(losses(&run).last().map(|l| l.0), Some(2));
}

#[test]
fn gpu_fid_stats_equal_the_cpu_statistics() {
    let scratch = scratch_dir();
    if !have_gpu("gpu_fid_stats_equal_the_cpu_statistics") {
        return;
    }
    let weights = formula_inception(&scratch);
    let demo = demo();
    let images = scratch.join("fid-images.npz");
    ok(&sparsedm(&["sample", "--checkpoint", &demo, "--n", "2", "--steps", "2", "--out", s(&images), "--device", "cpu"]), "sample");
    let stats = |device: &str| {
        let out = scratch.join(format!("fid-{device}.npz"));
        let run = sparsedm(&["fid", "stats", "--inception", s(&weights), "--images", s(&images), "--out", s(&out), "--device", device]);
        ok(&run, &format!("fid stats --device {device}"));
        sparsedm_fid::read_stats_npz(&out).unwrap()
    };
    let (cpu, gpu) = (stats("cpu"), stats("cuda"));
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    assert_close("mu", &f(&gpu.mu), &f(&cpu.mu), 1e-4);
    assert_close("sigma", &f(&gpu.sigma), &f(&cpu.sigma), 1e-3);
}

/// pytorch-fid's InceptionV3 with the stand-in weights of the shared fixture's formula
/// (`sparsedm_fid::formula`; the real weights cannot be downloaded here).
fn formula_inception(scratch: &Scratch) -> PathBuf {
    let path = scratch.join("inception-formula.safetensors");
    sparsedm_fid::formula::write_formula_inception(&path).unwrap();
    path
}

#[test]
fn gpu_auto_never_picks_the_simulator() {
    let scratch = scratch_dir();
    let Some(gpu) = gpu_or_skip("gpu_auto_never_picks_the_simulator") else { return };
    let name = "uvit_tiny_uncond";
    let out = scratch.join("auto.out.safetensors");
    let io = fixture(&format!("{name}.io.safetensors"));
    let (config, weights) = (fixture(&format!("{name}.json")), fixture(&format!("{name}.weights.safetensors")));
    let run =
        sparsedm(&["forward", "--arch", "uvit", "--config", s(&config), "--weights", s(&weights), "--inputs", s(&io), "--output", s(&out)]);
    let e = ok(&run, "forward --device auto");
    let note = e.lines().find(|l| l.starts_with("--device auto:")).unwrap_or_else(|| panic!("no --device auto line in {e}"));
    if gpu.is_simulated() {
        assert!(note.starts_with("--device auto: computing on the CPU") && note.contains("simulator"), "{note}");
    } else {
        assert!(note.starts_with("--device auto: computing on cuda:0"), "{note}");
    }
}
