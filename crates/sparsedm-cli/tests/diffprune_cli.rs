//! `sparsedm prune --method diff-pruning` through the real binary: the
//! shipped demo U-ViT (assets/demo_shapes_uvit_dense.safetensors, provenance
//! in assets/README.md) and a UNet pruned to half their MACs; the written
//! smaller dense model loads strictly into the config stored with it, counts
//! its MACs with `sparsedm macs`, samples, and fine-tunes from the run
//! config written beside it; bad arguments are one clear error and exit 1.

use sparsedm_diffusion::ModelConfig;
use sparsedm_layers::ParamStore;
use sparsedm_tensor::{Device, load_safetensors_metadata};
use sparsedm_testkit::Scratch;
use sparsedm_train::RunConfig;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sparsedm");

/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn tmp(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), &format!("diffprune-{name}"))
}

fn demo_dense() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo_shapes_uvit_dense.safetensors")
}

fn sparsedm(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run the sparsedm binary")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The one error line of a failed run (exit code 1).
fn fails(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout:\n{}", String::from_utf8_lossy(&o.stdout));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(e.starts_with("error: "), "{e}");
    e
}

fn diff_prune(config: &str, weights: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["prune", "--method", "diff-pruning", "--config", config, "--weights"];
    let w = weights.display().to_string();
    let o = out.display().to_string();
    args.push(&w);
    args.extend(["--out", &o]);
    args.extend(extra);
    sparsedm(&args)
}

/// The "+ norms … (paper total)" line of `sparsedm macs`, in G.
fn paper_total(table: &str) -> f64 {
    let line = table.lines().find(|l| l.contains("paper total")).expect("a paper-total line");
    line.split_whitespace().rev().nth(1).unwrap().parse().unwrap()
}

/// Checks a pruned model file: strict load into its stored config, MACs as
/// `sparsedm macs` counts them, sampling, and a short fine-tuning run.
fn check_pruned(dir: &Path, out: &Path, report: &serde_json::Value, arch: &str) {
    let (before, after) = (report["macs_before"].as_f64().unwrap(), report["macs_after"].as_f64().unwrap());
    assert!((after / before - 0.5).abs() <= sparsedm_diffusion::diffprune::MAC_TOLERANCE, "{report}");
    // The stored run config builds the smaller model; the file loads into it strictly.
    let meta = load_safetensors_metadata(out).unwrap();
    let run = RunConfig::parse(&meta["sparsedm.config"], "stored config", &[]).unwrap();
    let cfg = ModelConfig::from_json(run.arch.parse().unwrap(), &run.nnet_json().unwrap()).unwrap();
    assert_eq!(cfg.to_json(), report["config"]);
    let store = ParamStore::new(Device::Cpu, 0);
    cfg.build(&store).unwrap();
    sparsedm_diffusion::load_checkpoint(&store, out).unwrap();
    assert_eq!(store.num_params() as u64, report["params_after"].as_u64().unwrap());
    assert!(report["params_after"].as_u64() < report["params_before"].as_u64());
    // `sparsedm macs` on the pruned config counts what prune reported.
    let cfg_json = dir.join("pruned_config.json");
    std::fs::write(&cfg_json, report["config"].to_string()).unwrap();
    let table = ok(&sparsedm(&["macs", "--arch", arch, "--config", &cfg_json.display().to_string()]));
    assert!((paper_total(&table) - after / 1e9).abs() < 1e-4, "{table}");
    // It samples, and fine-tunes from the run config written beside it.
    let samples = dir.join("samples");
    ok(&sparsedm(&[
        "sample",
        "--checkpoint",
        &out.display().to_string(),
        "--n",
        "2",
        "--steps",
        "3",
        "--out",
        &samples.display().to_string(),
    ]));
    assert_eq!(std::fs::read_dir(&samples).unwrap().count(), 2);
    let toml = out.with_extension("toml");
    let run_dir = dir.join("finetune");
    ok(&sparsedm(&[
        "train",
        "--config",
        &toml.display().to_string(),
        "--set",
        "train.n_steps=2",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.save_interval=2",
        "--set",
        "train.log_interval=1",
        "--out",
        &run_dir.display().to_string(),
    ]));
    assert!(run_dir.join("checkpoints").join("step_00000002.safetensors").exists());
}

#[test]
fn demo_uvit_to_half_the_macs() {
    let dir = tmp("uvit");
    let out = dir.join("pruned.safetensors");
    let o = diff_prune("demo_shapes_uvit", &demo_dense(), &out, &["--macs", "0.5", "--steps", "4", "--batch", "8", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(report["timesteps"], 4);
    // Heads and MLP widths of every block went down; the token width did not.
    for g in report["groups"].as_array().unwrap() {
        assert!(g["kept"].as_u64() < g["units"].as_u64(), "{g}");
    }
    assert_eq!(report["config"]["embed_dim"], 128);
    check_pruned(&dir, &out, &report, "uvit");
    // No overwrite without --force; the table output names the widths.
    let e = fails(&diff_prune("demo_shapes_uvit", &demo_dense(), &out, &["--macs", "0.5", "--steps", "2", "--batch", "4"]));
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    let text = ok(&diff_prune("demo_shapes_uvit", &demo_dense(), &out, &["--macs", "0.5", "--steps", "2", "--batch", "4", "--force"]));
    assert!(text.contains("MACs") && text.contains("in_blocks.0.mlp") && text.contains("heads of 32"), "{text}");
}

const UNET_RUN: &str = r#"
seed = 3
arch = "ddpm-unet"
[nnet]
resolution = 16
in_channels = 3
out_ch = 3
ch = 64
ch_mult = [1, 2]
num_res_blocks = 1
attn_resolutions = [8]
dropout = 0.1
[dataset]
name = "shapes"
resolution = 16
len = 64
[train]
n_steps = 10
batch_size = 4
schedule = "ddpm-linear"
[optimizer]
lr = 2e-4
weight_decay = 0.0
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 2
[sample]
sampler = "ddim"
steps = 3
"#;

/// A run config file and a randomly initialised checkpoint of its model.
fn unet_setup(dir: &Path, run_text: &str) -> (PathBuf, PathBuf) {
    let run_path = dir.join("unet.toml");
    std::fs::write(&run_path, run_text).unwrap();
    let run = RunConfig::parse(run_text, "unet", &[]).unwrap();
    let store = ParamStore::new(Device::Cpu, 9);
    ModelConfig::from_json(run.arch.parse().unwrap(), &run.nnet_json().unwrap()).unwrap().build(&store).unwrap();
    let weights = dir.join("unet.safetensors");
    store.save_safetensors(&weights, None).unwrap();
    (run_path, weights)
}

#[test]
fn unet_to_half_the_macs() {
    let dir = tmp("unet");
    let (run, weights) = unet_setup(&dir, UNET_RUN);
    let out = dir.join("pruned.safetensors");
    let o = diff_prune(&run.display().to_string(), &weights, &out, &["--macs", "0.5", "--steps", "3", "--batch", "4", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    // Inner widths stay whole GroupNorm groups.
    for w in report["config"]["widths"].as_object().unwrap().values() {
        assert_eq!(w.as_u64().unwrap() % 32, 0, "{report}");
    }
    check_pruned(&dir, &out, &report, "ddpm-unet");
}

#[test]
fn bad_arguments_are_one_clear_error() {
    let dir = tmp("bad");
    let out = dir.join("p.safetensors");
    let d = demo_dense();
    for macs in ["0", "1", "1.5", "-0.2", "NaN"] {
        let e = fails(&diff_prune("demo_shapes_uvit", &d, &out, &[&format!("--macs={macs}")]));
        assert!(e.contains("strictly between 0 and 1"), "{macs}: {e}");
    }
    let e = fails(&diff_prune("demo_shapes_uvit", &d, &out, &[]));
    assert!(e.contains("needs --macs"), "{e}");
    let e = fails(&diff_prune("demo_shapes_uvit", &d, &out, &["--macs", "0.5", "--pattern", "2:4"]));
    assert!(e.contains("--pattern belongs to --method magnitude"), "{e}");
    let e = fails(&diff_prune("demo_shapes_uvit", &d, &out, &["--macs", "0.5", "--compressed"]));
    assert!(e.contains("--compressed belongs to --method magnitude"), "{e}");
    let e = fails(&diff_prune("demo_shapes_uvit", &d, &out, &["--macs", "0.5", "--steps", "0"]));
    assert!(e.contains("timesteps"), "{e}");
    let e = fails(&diff_prune("demo_shapes_uvit", &d, &out, &["--macs", "0.5", "--steps", "4", "--stride", "0"]));
    assert!(e.contains("stride must be in 1..=4, got 0"), "{e}");
    // The magnitude method keeps needing its own arguments.
    let e = fails(&sparsedm(&["prune", "--config", "x.json", "--weights", "w.safetensors", "--out", &out.display().to_string()]));
    assert!(e.contains("needs --pattern"), "{e}");
    let o = out.display().to_string();
    let e = fails(&sparsedm(&[
        "prune",
        "--config",
        "x.json",
        "--weights",
        "w.safetensors",
        "--pattern",
        "2:4",
        "--policy",
        "all",
        "--out",
        &o,
    ]));
    assert!(e.contains("--arch and --config go together"), "{e}");
    let e = fails(&sparsedm(&["prune", "--method", "diff-pruning", "--macs", "0.5", "--weights", "w.safetensors", "--out", &o]));
    assert!(e.contains("diff-pruning needs --config"), "{e}");
    // Diff-Pruning's own flags are refused by the magnitude method, not ignored.
    for (flag, value) in [("--macs", "0.5"), ("--steps", "10"), ("--threshold", "0.1"), ("--stride", "2"), ("--batch", "8")] {
        let o = out.display().to_string();
        let args = [
            "prune",
            "--arch",
            "uvit",
            "--pattern",
            "2:4",
            "--policy",
            "all",
            "--config",
            "x.json",
            "--weights",
            "w.safetensors",
            "--out",
            &o,
            flag,
            value,
        ];
        let e = fails(&sparsedm(&args));
        assert!(e.contains(&format!("{flag} belongs to --method diff-pruning")), "{flag}: {e}");
    }
    // A model whose channels cannot be pruned: every ResNet block has 32 inner channels.
    let narrow = UNET_RUN
        .replace("ch = 64", "ch = 32")
        .replace("ch_mult = [1, 2]", "ch_mult = [1]")
        .replace("attn_resolutions = [8]", "attn_resolutions = []");
    let (run, weights) = unet_setup(&dir, &narrow);
    let e = fails(&diff_prune(&run.display().to_string(), &weights, &out, &["--macs", "0.5", "--steps", "2", "--batch", "2"]));
    assert!(e.contains("no prunable channels"), "{e}");
    assert!(!out.exists(), "nothing is written on error");
    // A JSON kwargs file is the magnitude method's config, not a run config.
    let e = fails(&diff_prune("uvit.json", &d, &out, &["--macs", "0.5"]));
    assert!(e.contains("takes a run config"), "{e}");
}

/// Exports the pruned model `out` to ONNX and runs it in tract like our forward.
fn onnx_matches_our_forward(dir: &Path, out: &Path) {
    use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, TValue, Tensor as TractTensor};
    let onnx = dir.join("pruned.onnx");
    ok(&sparsedm(&["export", "--checkpoint", &out.display().to_string(), "--out", &onnx.display().to_string(), "--force"]));
    let r = sparsedm_train::restore::restore(out, true, None).unwrap();
    let [c, h, w] = r.bundle.config.input_shape();
    let x = sparsedm_tensor::Tensor::randn(&[2, c, h, w], &mut sparsedm_tensor::Rng::new(3), &Device::Cpu).unwrap();
    let times = vec![20.0f32, 600.0];
    let t = sparsedm_tensor::Tensor::from_vec(times.clone(), &[2], &Device::Cpu).unwrap();
    let want = {
        let _g = sparsedm_tensor::no_grad();
        r.bundle.model.predict_eps(&x, &t, None).unwrap().to_vec_f32().unwrap()
    };
    let model = tract_onnx::onnx().model_for_path(&onnx).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let inputs: Vec<TValue> = vec![
        TractTensor::from_shape(&[2, c, h, w], &x.to_vec_f32().unwrap()).unwrap().into(),
        TractTensor::from_shape(&[2], &times).unwrap().into(),
    ];
    let got: Vec<f32> = model.run(inputs.into_iter().collect()).unwrap()[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
    sparsedm_tensor::testing::assert_close(&format!("pruned {} in tract", r.bundle.config.arch()), &got, &want, 1e-4);
}

/// The pruned U-ViT's ONNX graph (per-block heads and MLP widths) runs in
/// tract like our forward; so does the pruned UNet's (inner widths).
#[test]
fn pruned_models_export_to_onnx_like_our_forward() {
    let dir = tmp("onnx");
    let out = dir.join("pruned.safetensors");
    ok(&diff_prune("demo_shapes_uvit", &demo_dense(), &out, &["--macs", "0.5", "--steps", "2", "--batch", "4"]));
    onnx_matches_our_forward(&dir, &out);
    let (run, weights) = unet_setup(&dir, UNET_RUN);
    ok(&diff_prune(&run.display().to_string(), &weights, &out, &["--macs", "0.5", "--steps", "2", "--batch", "4", "--force"]));
    onnx_matches_our_forward(&dir, &out);
}

/// A training checkpoint is pruned from its EMA weights; one of another
/// model than the run config's is refused.
#[test]
fn training_checkpoints_are_pruned_from_their_ema() {
    let dir = tmp("trainstate");
    let runs = dir.join("run");
    ok(&sparsedm(&[
        "train",
        "--config",
        "demo_shapes_uvit",
        "--set",
        "train.n_steps=1",
        "--set",
        "train.batch_size=4",
        "--out",
        &runs.display().to_string(),
    ]));
    let ckpt = runs.join("checkpoints").join("step_00000001.safetensors");
    let out = dir.join("pruned.safetensors");
    let report: serde_json::Value = serde_json::from_str(&ok(&diff_prune(
        "demo_shapes_uvit",
        &ckpt,
        &out,
        &["--macs", "0.5", "--steps", "2", "--batch", "4", "--json"],
    )))
    .unwrap();
    assert!((report["macs_after"].as_f64().unwrap() / report["macs_before"].as_f64().unwrap() - 0.5).abs() <= 0.05);
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        sparsedm_train::config::PRESETS.iter().find(|p| p.0 == "demo_shapes_uvit").unwrap().1.replace("embed_dim = 128", "embed_dim = 64"),
    )
    .unwrap();
    let e = fails(&diff_prune(&other.display().to_string(), &ckpt, &dir.join("x.safetensors"), &["--macs", "0.5", "--steps", "2"]));
    assert!(e.contains("different uvit model"), "{e}");
    // An N:M sparse checkpoint is refused: Diff-Pruning starts from a dense model.
    let nm = dir.join("nm.safetensors");
    let cfg_json = dir.join("uvit.json");
    let dense_cfg = RunConfig::load("demo_shapes_uvit", &[]).unwrap().nnet_json().unwrap();
    std::fs::write(&cfg_json, dense_cfg.to_string()).unwrap();
    ok(&sparsedm(&[
        "prune",
        "--arch",
        "uvit",
        "--config",
        &cfg_json.display().to_string(),
        "--weights",
        &demo_dense().display().to_string(),
        "--pattern",
        "2:4",
        "--policy",
        "sparsedm-uvit",
        "--out",
        &nm.display().to_string(),
    ]));
    let e = fails(&diff_prune("demo_shapes_uvit", &nm, &dir.join("y.safetensors"), &["--macs", "0.5", "--steps", "2"]));
    assert!(e.contains("N:M sparse checkpoint"), "{e}");
}
