//! A sparse checkpoint (the output of `sparsedm prune`, plain or `--compressed`) is loaded for
//! evaluation with its N:M layers deployed: `restore` (what `sample`, `export` and the
//! evaluations use) and `forward` give every layer its spec lists the N:M mode, so forwards
//! without a graph run those layers on the CPU's N:M kernels — not dense products over the
//! stored zeros — and equal the masked dense forward within 1e-5 relative. `sample` and
//! `forward` say how many layers run N:M; `SPARSEDM_NM_PATH` pins the path (bad values are one
//! clear error).
//!
//! Fixture: `tests/fixtures/uvit_tiny_uncond.*` (see `prune_cli.rs` for its provenance: the
//! baofff/U-ViT reference `state_dict()`, img 8, patch 2, D 32, depth 4, 2 heads).

use sparsedm_diffusion::Arch;
use sparsedm_layers::read_sparse_checkpoint;
use sparsedm_tensor::nm_cpu::{NmPath, force_path};
use sparsedm_tensor::{Device, Tensor, load_safetensors, no_grad};
use sparsedm_testkit::Scratch;
use sparsedm_train::restore::{ExternalModel, restore};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::new("nm-eval-cli")
}

fn sparsedm(args: &[&str], nm_path: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sparsedm"));
    c.args(args).env_remove("SPARSEDM_NM_PATH");
    if let Some(p) = nm_path {
        c.env("SPARSEDM_NM_PATH", p);
    }
    c.output().expect("run the sparsedm binary")
}

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Prunes the fixture to `pattern` with the sparsedm-uvit policy into `out` (`extra` flags
/// appended); returns how many layers the spec lists with a grouped (N:M along the inputs) mask.
fn pruned(pattern: &str, extra: &[&str], out: &Path) -> usize {
    let (config, weights) = (fixture("uvit_tiny_uncond.json"), fixture("uvit_tiny_uncond.weights.safetensors"));
    let args = ["prune", "--arch", "uvit", "--device", "cpu", "--force", "--pattern", pattern, "--policy", "sparsedm-uvit"];
    let files = ["--config", config.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "--out", out.to_str().unwrap()];
    ok(sparsedm(&[&args[..], &files[..], extra].concat(), None), "prune");
    let (_, spec) = read_sparse_checkpoint(out).unwrap();
    spec.layers.values().filter(|e| e.masking == "grouped").count()
}

fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

#[test]
fn restored_sparse_checkpoints_run_their_nm_layers_on_the_nm_kernels() {
    let scratch = scratch_dir();
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("uvit_tiny_uncond.json")).unwrap()).unwrap();
    let ext = ExternalModel { arch: Arch::UViT, config: cfg, schedule: None };
    let x =
        Tensor::from_vec((0..4 * 3 * 8 * 8).map(|i| ((i * 29 % 97) as f32 / 48.0) - 1.0).collect(), &[4, 3, 8, 8], &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![3.0, 250.0, 600.0, 999.0], &[4], &Device::Cpu).unwrap();
    // The kernels run whatever this machine's timings would choose.
    force_path(Some(NmPath::Sparse));
    for (pattern, extra) in [("2:4", &[][..]), ("1:8", &[][..]), ("1:4", &["--compressed", "f16"][..])] {
        let path = scratch.join(format!("restore-{}-{}.safetensors", pattern.replace(':', "of"), extra.len()));
        let listed = pruned(pattern, extra, &path);
        assert!(listed >= 10, "{pattern}: only {listed} grouped layers listed");
        let r = restore(&path, true, Some(&ext)).unwrap();
        let slots = r.bundle.store.sparse_slots();
        let deployed: Vec<_> = slots.iter().filter(|(_, s)| s.deployed_pattern().is_some()).collect();
        assert_eq!(deployed.len(), listed, "{pattern}: layers deployed N:M");
        assert!(deployed.iter().all(|(_, s)| s.deployed_pattern().unwrap().to_string() == pattern));
        // The store holds the file's values: deploying changed no weight.
        let stored: std::collections::HashMap<String, Tensor> = load_safetensors(&path).unwrap().into_iter().collect();
        for (name, s) in &deployed {
            let w = format!("{name}.weight");
            assert_eq!(s.deployed_weight().unwrap().to_vec_f32().unwrap(), stored[&w].to_vec_f32().unwrap(), "{pattern} {w}");
        }
        // With a graph (grad mode on): the masked dense forward; without: the N:M kernels.
        let dense = r.bundle.model.predict_eps(&x, &t, None).unwrap().to_vec_f32().unwrap();
        let nm = {
            let _g = no_grad();
            r.bundle.model.predict_eps(&x, &t, None).unwrap().to_vec_f32().unwrap()
        };
        for (name, s) in &deployed {
            assert_eq!(s.deployed_kind(), Some("nm-cpu"), "{pattern} {name}: not run on the N:M kernel");
        }
        let err = max_rel_err(&nm, &dense);
        assert!(err <= 1e-5, "{pattern}: N:M forward differs from the masked dense one by {err} (relative)");
    }
    force_path(None);
}

#[test]
fn forward_and_sample_say_how_many_layers_run_nm_and_nm_path_pins_the_kernels() {
    let scratch = scratch_dir();
    let config = fixture("uvit_tiny_uncond.json");
    let sparse = scratch.join("cli-1of8.safetensors");
    let listed = pruned("1:8", &[], &sparse);
    let inputs = scratch.join("cli-inputs.safetensors");
    let x: Vec<f32> = (0..2 * 3 * 8 * 8).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let tensors = [
        ("input.x".to_string(), Tensor::from_vec(x, &[2, 3, 8, 8], &Device::Cpu).unwrap()),
        ("input.timesteps".to_string(), Tensor::from_vec(vec![10.0, 500.0], &[2], &Device::Cpu).unwrap()),
    ];
    sparsedm_tensor::save_safetensors(&inputs, &tensors, None).unwrap();
    let forward = |weights: &Path, out: &str, nm_path: Option<&str>| {
        let out = scratch.join(out);
        let args = ["forward", "--arch", "uvit", "--device", "cpu", "--force", "--config", config.to_str().unwrap()];
        let files = ["--weights", weights.to_str().unwrap(), "--inputs", inputs.to_str().unwrap(), "--output", out.to_str().unwrap()];
        let o = sparsedm(&[&args[..], &files[..]].concat(), nm_path);
        (o, out)
    };
    let line = format!("N:M layers: {listed} (1:8), run on the CPU's N:M kernels");
    let mut outputs = Vec::new();
    for p in ["sparse", "dense", "auto"] {
        let (o, out) = forward(&sparse, &format!("cli-out-{p}.safetensors"), Some(p));
        let stdout = ok(o, &format!("forward SPARSEDM_NM_PATH={p}"));
        assert!(stdout.contains(&line), "{p}: no '{line}' in {stdout}");
        // After the forward: each listed layer called once, on the pinned path.
        let calls = match p {
            "sparse" => format!("N:M layer calls: {listed} on the N:M kernels, 0 on the dense GEMM"),
            "dense" => format!("N:M layer calls: 0 on the N:M kernels, {listed} on the dense GEMM"),
            _ => "N:M layer calls: ".to_string(),
        };
        assert!(stdout.contains(&calls), "{p}: no '{calls}' in {stdout}");
        // Whatever the paths, the calls add up to the listed layers (the
        // runs that time a shape's paths are not calls).
        let (on_kernels, on_gemm) = layer_calls_printed(&stdout);
        assert_eq!(on_kernels + on_gemm, listed, "{p}: layer calls {on_kernels} + {on_gemm} in {stdout}");
        outputs.push(load_safetensors(&out).unwrap().remove(0).1.to_vec_f32().unwrap());
    }
    for (i, p) in ["dense", "auto"].iter().enumerate() {
        let err = max_rel_err(&outputs[i + 1], &outputs[0]);
        assert!(err <= 1e-5, "forward: SPARSEDM_NM_PATH={p} differs from sparse by {err}");
    }
    // A pinned path gives the same bits in every process.
    let (o, out) = forward(&sparse, "cli-out-sparse-again.safetensors", Some("sparse"));
    ok(o, "forward again");
    assert!(load_safetensors(&out).unwrap().remove(0).1.to_vec_f32().unwrap() == outputs[0], "sparse path: not reproducible");

    // A dense checkpoint says nothing about N:M layers.
    let (o, _) = forward(&fixture("uvit_tiny_uncond.weights.safetensors"), "cli-out-dense-file.safetensors", None);
    let stdout = ok(o, "forward dense file");
    assert!(!stdout.contains("N:M layers") && !stdout.contains("N:M layer calls"), "{stdout}");

    // sample from a compressed checkpoint.
    let comp = scratch.join("cli-1of8-comp.safetensors");
    pruned("1:8", &["--compressed"], &comp);
    let npz = scratch.join("cli-samples.npz");
    let args = ["sample", "--arch", "uvit", "--config", config.to_str().unwrap(), "--n", "2", "--steps", "2", "--device", "cpu", "--force"];
    let stdout =
        ok(sparsedm(&[&args[..], &["--checkpoint", comp.to_str().unwrap(), "--out", npz.to_str().unwrap()]].concat(), None), "sample");
    assert!(stdout.contains(&line), "sample: no '{line}' in {stdout}");
    assert!(stdout.contains("N:M layer calls: "), "sample: no layer-call count in {stdout}");

    // A bad value is one clear error before any work.
    let (o, out) = forward(&sparse, "cli-out-bad.safetensors", Some("fast"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("SPARSEDM_NM_PATH=fast: expected sparse, dense or auto"), "{err}");
    assert!(!out.exists());
}

/// The two counts of the "N:M layer calls: A on the N:M kernels, B on the
/// dense GEMM" line.
fn layer_calls_printed(stdout: &str) -> (usize, usize) {
    let line = stdout.lines().find_map(|l| l.strip_prefix("N:M layer calls: ")).unwrap_or_else(|| panic!("no layer-call line in {stdout}"));
    let nums: Vec<usize> = line.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).map(|w| w.parse().unwrap()).collect();
    assert!(nums.len() >= 2, "layer-call line '{line}'");
    (nums[0], nums[1])
}
