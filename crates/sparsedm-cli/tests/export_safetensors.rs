//! `sparsedm export --format safetensors [--compressed [f32|f16]]`: a sparse run's training
//! checkpoint becomes a deployment file — a sparse checkpoint holding the deployed (masked) EMA
//! weights and the run's spec, optionally compressed (the N:M layers as kept values + positions,
//! the size ratio printed) — that loads back to the same model; a dense model exports dense;
//! `--compressed` where it does not apply, and an existing output without `--force`, are one
//! clear error each.

use sparsedm_layers::{read_sparse_checkpoint, sparse_state_dict};
use sparsedm_tensor::nm_cpu::is_nm_checkpoint_file;
use sparsedm_tensor::{Tensor, load_safetensors};
use sparsedm_testkit::Scratch;
use sparsedm_train::restore::restore;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A tiny U-ViT fine-tuned sparse (SR-STE 1:4, no teacher) for four steps.
const SPARSE_RUN: &str = r#"
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
save_interval = 4
ema_rate = 0.9
[optimizer]
lr = 1e-3
weight_decay = 0.03
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 2
[sample]
sampler = "dpm-solver-2"
steps = 2
[sparse]
pattern = "1:4"
method = "srste"
policy = "sparsedm-uvit"
teacher = "none"
"#;

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), "export-safetensors")
}

fn sparsedm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsedm")).args(args).output().expect("run the sparsedm binary")
}

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(needle), "expected an error with {needle:?}, got: {err}");
}

fn export(ckpt: &Path, out: &Path, extra: &[&str]) -> Output {
    let args = ["export", "--format", "safetensors", "--checkpoint", ckpt.to_str().unwrap(), "--out", out.to_str().unwrap()];
    sparsedm(&[&args[..], extra].concat())
}

fn values(path: &Path) -> HashMap<String, Vec<f32>> {
    load_safetensors(path).unwrap().into_iter().map(|(n, t)| (n, t.to_vec_f32().unwrap())).collect()
}

#[test]
fn a_sparse_runs_checkpoint_exports_as_a_compressed_sparse_checkpoint() {
    let scratch = scratch_dir();
    let config = scratch.join("sparse_run.toml");
    std::fs::write(&config, SPARSE_RUN).unwrap();
    let run = scratch.join("run");
    let _ = std::fs::remove_dir_all(&run);
    ok(sparsedm(&["train", "--config", config.to_str().unwrap(), "--out", run.to_str().unwrap(), "--device", "cpu"]), "train");
    let ckpt = run.join("checkpoints/step_00000004.safetensors");

    // `inspect` says what the training checkpoint is: SR-STE keeps the dense
    // weights (they read dense), and export gives the deployed model.
    let report = ok(sparsedm(&["inspect", ckpt.to_str().unwrap()]), "inspect");
    assert!(report.contains("training checkpoint at step 4"), "{report}");
    let line = report.lines().find(|l| l.starts_with("sparse run: ")).unwrap_or_else(|| panic!("{report}"));
    let layers: usize = line["sparse run: ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(layers >= 8, "{line}");
    assert!(line.contains(&format!("{layers} layers at 1:4; {layers} of them stored dense")) && line.contains("sparsedm export"), "{line}");
    // --pattern checks stored weights: refused for a training checkpoint,
    // pointing at its deployed model.
    let o = sparsedm(&["inspect", ckpt.to_str().unwrap(), "--pattern", "1:4"]);
    fails(o, "--pattern does not apply to");
    // ASP's fixed masks are applied to the stored weights.
    let fixed = scratch.join("run-fixed");
    let _ = std::fs::remove_dir_all(&fixed);
    let args = ["train", "--config", config.to_str().unwrap(), "--out", fixed.to_str().unwrap(), "--device", "cpu"];
    ok(sparsedm(&[&args[..], &["--set", "sparse.method=fixed"]].concat()), "train (fixed masks)");
    let report = ok(sparsedm(&["inspect", fixed.join("checkpoints/step_00000004.safetensors").to_str().unwrap()]), "inspect (fixed)");
    assert!(report.contains(&format!("sparse run: {layers} layers at 1:4; its model.* weights are stored masked")), "{report}");

    // Plain: the deployed EMA weights (what `sample` runs) and the run's spec.
    let plain = scratch.join("plain.safetensors");
    let stdout = ok(export(&ckpt, &plain, &["--force"]), "export");
    let (tensors, spec) = read_sparse_checkpoint(&plain).unwrap();
    assert!(spec.layers.len() >= 8 && spec.layers.values().all(|l| l.pattern == "1:4" && l.mode.starts_with("srste")), "{spec:?}");
    assert!(stdout.contains(&format!("a sparse checkpoint, {} N:M layers (1:4)", spec.layers.len())), "{stdout}");
    let restored = restore(&ckpt, true, None).unwrap();
    let (want, want_spec) = sparse_state_dict(&restored.bundle.store).unwrap();
    assert_eq!(spec, want_spec);
    let want: HashMap<String, Tensor> = want.into_iter().collect();
    assert_eq!(tensors.len(), want.len());
    for (name, t) in &tensors {
        assert_eq!(t.to_vec_f32().unwrap(), want[name].to_vec_f32().unwrap(), "{name}: not the deployed EMA weight");
    }
    // It carries the run config: it samples without --arch/--config, on the N:M kernels.
    let npz = scratch.join("samples.npz");
    let stdout = ok(
        sparsedm(&[
            "sample",
            "--checkpoint",
            plain.to_str().unwrap(),
            "--n",
            "2",
            "--device",
            "cpu",
            "--force",
            "--out",
            npz.to_str().unwrap(),
        ]),
        "sample",
    );
    assert!(stdout.contains(&format!("N:M layers: {} (1:4)", spec.layers.len())), "{stdout}");

    // Compressed, f32 and f16: smaller, the plain values (rounded to f16), the ratio printed.
    let plain_values = values(&plain);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    for (dtype, round) in [("f32", false), ("f16", true)] {
        let out = scratch.join(format!("compressed-{dtype}.safetensors"));
        let stdout = ok(export(&ckpt, &out, &["--force", "--compressed", dtype]), "export --compressed");
        assert!(is_nm_checkpoint_file(&out));
        let line = stdout.lines().find(|l| l.starts_with("compressed: ")).unwrap_or_else(|| panic!("no size line: {stdout}"));
        let ratio: f64 = line.split(" = ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
        assert!((ratio - size(&out) / size(&plain)).abs() < 2e-3 && ratio < 0.7, "{dtype}: {line}");
        let (_, got_spec) = read_sparse_checkpoint(&out).unwrap();
        assert_eq!(got_spec, spec);
        for (name, v) in values(&out) {
            let want: Vec<f32> = plain_values[&name].iter().map(|&x| if round { half::f16::from_f32(x).to_f32() } else { x }).collect();
            assert_eq!(v, want, "{dtype} {name}");
        }
    }

    // Bad input: --compressed for ONNX, for a dense model; an existing output without --force.
    let onnx = scratch.join("model.onnx");
    let o =
        sparsedm(&["export", "--format", "onnx", "--compressed", "--checkpoint", ckpt.to_str().unwrap(), "--out", onnx.to_str().unwrap()]);
    fails(o, "--compressed applies to --format safetensors");
    assert!(!onnx.exists());
    let dense = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo_shapes_uvit_dense.safetensors");
    fails(export(&dense, &scratch.join("dense-c.safetensors"), &["--compressed"]), "has no N:M layers");
    // --raw (raw vs EMA weights) where there is only one set of weights.
    let raw_out = scratch.join("raw.safetensors");
    fails(export(&plain, &raw_out, &["--raw", "--force"]), "--raw applies to training checkpoints");
    assert!(!raw_out.exists());
    let before = std::fs::read(&plain).unwrap();
    fails(export(&ckpt, &plain, &["--compressed"]), "--force");
    assert_eq!(std::fs::read(&plain).unwrap(), before, "overwritten without --force");

    // A dense model exports dense, with its config.
    let out = scratch.join("dense.safetensors");
    let stdout = ok(export(&dense, &out, &["--force"]), "export dense");
    assert!(stdout.contains("the dense model"), "{stdout}");
    let a = values(&out);
    let b = values(&dense);
    assert_eq!(a.len(), b.len());
    for (name, v) in &a {
        assert_eq!(v, &b[name], "{name}");
    }
    restore(&out, true, None).unwrap();
}
