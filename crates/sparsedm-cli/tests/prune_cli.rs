//! `sparsedm prune` on a reference checkpoint: exactly the policy's layers get the magnitude N:M
//! masks of the rule (compared with `sparsedm_layers::compute_mask` / `transposable_mask` on the
//! original weights, with the layer selection re-derived here from the policies' definitions in
//! MODELS_AND_METHOD §5 and §7.2), every other tensor is bit-identical, and bad arguments fail
//! with a clear message and a non-zero exit code.
//!
//! Fixtures: `tests/fixtures/uvit_tiny_uncond.json` and `uvit_tiny_uncond.weights.safetensors`
//! are copied unchanged from the project's shared reference fixtures (`uvit_tiny_uncond.*`):
//! the `state_dict()` of `UViT(**config)` from baofff/U-ViT `libs/uvit.py` (img 8, patch 2,
//! D 32, depth 4, 2 heads), produced with PyTorch 2.11 on CPU in float32 with a fixed seed, all
//! parameters perturbed away from their init. The DDPM UNet case uses the sparsedm-diffusion
//! parity fixture `ddpm_unet_tiny.*` (pesser/pytorch_diffusion `model.py`, same provenance).

use sparsedm_layers::{
    NmPattern, NonDivisible, SPARSITY_METADATA_KEY, TransposableMethod, WeightLayout, compute_mask, read_sparse_checkpoint,
    transposable_mask,
};
use sparsedm_tensor::{Tensor, load_safetensors, load_safetensors_metadata};
use sparsedm_testkit::Scratch;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn unet_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sparsedm-diffusion/tests/fixtures").join(name)
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::new("prune-cli")
}

/// `prune` of `weights` to `pattern`; an empty `policy` leaves `--policy` out.
fn prune(arch: &str, config: &PathBuf, weights: &PathBuf, pattern: &str, policy: &str, extra: &[&str], out: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["prune", "--arch", arch, "--config"])
        .arg(config)
        .arg("--weights")
        .arg(weights)
        .args(["--pattern", pattern])
        .args(if policy.is_empty() { vec![] } else { vec!["--policy", policy] })
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run the sparsedm binary")
}

/// How the rule treats one tensor: `None` = untouched.
type Rule = fn(&str, &[usize], NmPattern) -> Option<NonDivisible>;

fn is_weight_layer(name: &str, shape: &[usize]) -> bool {
    name.ends_with(".weight") && (shape.len() == 2 || shape.len() == 4)
}

/// SparseDM's U-ViT: attn.qkv, attn.proj, mlp.fc1, mlp.fc2 of in/mid/out blocks (§7.2).
fn rule_sparsedm_uvit(name: &str, _: &[usize], _: NmPattern) -> Option<NonDivisible> {
    let parts: Vec<&str> = name.split('.').collect();
    let block = match parts.as_slice() {
        ["in_blocks" | "out_blocks", i, rest @ ..] if i.parse::<usize>().is_ok() => rest,
        ["mid_block", rest @ ..] => rest,
        _ => return None,
    };
    matches!(block, ["attn", "qkv", "weight"] | ["attn", "proj", "weight"] | ["mlp", "fc1", "weight"] | ["mlp", "fc2", "weight"])
        .then_some(NonDivisible::LeaveDense)
}

/// apex ASP: Linear/Conv2d weights with size(0) % 8 == 0 and size(1) % 16 == 0 (§5).
fn rule_asp(name: &str, shape: &[usize], _: NmPattern) -> Option<NonDivisible> {
    (is_weight_layer(name, shape) && shape[0].is_multiple_of(8) && shape[1].is_multiple_of(16)).then_some(NonDivisible::LeaveDense)
}

/// Every Linear/Conv2d; SparseDM's flat-index groups where the input dim does not divide (§7.2).
fn rule_all(name: &str, shape: &[usize], p: NmPattern) -> Option<NonDivisible> {
    if !is_weight_layer(name, shape) {
        return None;
    }
    let numel: usize = shape.iter().product();
    Some(if !shape[1].is_multiple_of(p.m()) && numel.is_multiple_of(p.m()) { NonDivisible::FlatIndex } else { NonDivisible::LeaveDense })
}

/// `*.attn.*,!mid_block.*`.
fn rule_attn_not_mid(name: &str, shape: &[usize], _: NmPattern) -> Option<NonDivisible> {
    (is_weight_layer(name, shape) && name.contains(".attn.") && !name.starts_with("mid_block.")).then_some(NonDivisible::LeaveDense)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Runs the command and checks the output file against `rule`; returns stdout. `expect_pruned`
/// is the number of tensors the rule must actually change (guards against a vacuous pass).
fn check(
    arch: &str,
    config: PathBuf,
    weights: PathBuf,
    pattern: &str,
    policy: &str,
    transposable: bool,
    rule: Rule,
    expect_pruned: usize,
) -> String {
    let scratch = scratch_dir();
    let p: NmPattern = pattern.parse().unwrap();
    let out = scratch.join(format!(
        "{arch}-{}-{}-{transposable}.safetensors",
        policy.replace(['*', '!', ',', '.'], "_"),
        pattern.replace(':', "of")
    ));
    let extra: &[&str] = if transposable { &["--transposable"] } else { &[] };
    let run = prune(arch, &config, &weights, pattern, policy, extra, &out);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{policy} {pattern}: {}\n{stdout}", String::from_utf8_lossy(&run.stderr));

    let original: HashMap<String, Tensor> = load_safetensors(&weights).unwrap().into_iter().collect();
    let pruned: HashMap<String, Tensor> = load_safetensors(&out).unwrap().into_iter().collect();
    let mut names: Vec<&String> = original.keys().collect();
    names.sort();
    assert_eq!(
        names,
        {
            let mut n: Vec<&String> = pruned.keys().collect();
            n.sort();
            n
        },
        "same tensor names"
    );
    let mut changed = 0;
    for name in names {
        let (o, q) = (&original[name], &pruned[name]);
        assert_eq!((o.shape(), o.dtype()), (q.shape(), q.dtype()), "{name}");
        match rule(name, o.shape(), p) {
            None => assert_eq!(bits(o), bits(q), "{name} must be untouched"),
            Some(nd) => {
                let w = o.to_vec_f32().unwrap();
                let layout = WeightLayout::from_shape(o.shape()).unwrap();
                let tileable = layout.out().is_multiple_of(4) && layout.inp().is_multiple_of(4);
                let mask = if transposable && tileable {
                    transposable_mask(&w, layout, TransposableMethod::Exact).unwrap()
                } else if transposable && layout.inp().is_multiple_of(4) {
                    vec![1.0; w.len()] // cannot tile 4×4: left dense
                } else {
                    compute_mask(&w, layout, p, nd).unwrap().0
                };
                let expected: Vec<u32> = w.iter().zip(&mask).map(|(w, m)| (w * m).to_bits()).collect();
                assert_eq!(bits(q), expected, "{name}: the rule's {pattern} mask");
                if mask.contains(&0.0) {
                    changed += 1;
                    assert!(stdout.contains(name.trim_end_matches(".weight")), "report lists {name}:\n{stdout}");
                }
            }
        }
    }
    assert_eq!(changed, expect_pruned, "{policy} {pattern}: pruned tensors\n{stdout}");
    // A sparse checkpoint: the spec is in the metadata and verifies.
    assert!(load_safetensors_metadata(&out).unwrap().contains_key(SPARSITY_METADATA_KEY));
    let (_, spec) = read_sparse_checkpoint(&out).unwrap();
    assert_eq!(spec.layers.values().filter(|l| l.masking != "left-dense").count(), expect_pruned);
    assert!(stdout.contains("total:") && stdout.contains("MACs"), "{stdout}");
    stdout
}

fn uvit(pattern: &str, policy: &str, transposable: bool, rule: Rule, expect_pruned: usize) -> String {
    check(
        "uvit",
        fixture("uvit_tiny_uncond.json"),
        fixture("uvit_tiny_uncond.weights.safetensors"),
        pattern,
        policy,
        transposable,
        rule,
        expect_pruned,
    )
}

#[test]
fn sparsedm_uvit_policy() {
    // 5 blocks × (qkv, proj, fc1, fc2).
    let stdout = uvit("2:4", "sparsedm-uvit", false, rule_sparsedm_uvit, 20);
    assert!(stdout.contains("pruned") && stdout.contains("with policy sparsedm-uvit"), "{stdout}");
    uvit("1:8", "sparsedm-uvit", false, rule_sparsedm_uvit, 20);
    // Without --policy: the paper's layers for a U-ViT, and the line says so.
    let stdout = uvit("2:4", "", false, rule_sparsedm_uvit, 20);
    assert!(stdout.contains("with policy sparsedm-uvit (the paper's layers for a uvit; --policy chooses others)"), "{stdout}");
}

#[test]
fn asp_policy_with_and_without_transposable_masks() {
    // + 2 skip_linears; patch_embed (C_in 3), decoder_pred (out 12) and final_layer skipped.
    uvit("2:4", "asp", false, rule_asp, 22);
    uvit("2:4", "asp", true, rule_asp, 22);
}

#[test]
fn all_policy_uses_flat_index_groups_for_the_patch_embedding() {
    // Every Linear/Conv2d but final_layer (81 weights: no groups of 4 at all).
    let stdout = uvit("2:4", "all", false, rule_all, 24);
    assert!(stdout.contains("flat-index"), "{stdout}");
}

#[test]
fn glob_policy() {
    uvit("2:4", "*.attn.*,!mid_block.*", false, rule_attn_not_mid, 8);
}

#[test]
fn ddpm_unet_all_policy() {
    let n = load_safetensors(unet_fixture("ddpm_unet_tiny.weights.safetensors"))
        .unwrap()
        .iter()
        .filter(|(name, t)| is_weight_layer(name, t.shape()))
        .count();
    for policy in ["all", ""] {
        let stdout = check(
            "ddpm-unet",
            unet_fixture("ddpm_unet_tiny.json"),
            unet_fixture("ddpm_unet_tiny.weights.safetensors"),
            "2:4",
            policy,
            false,
            rule_all,
            n,
        );
        // Without --policy: the paper's layers for a UNet, all of them.
        assert_eq!(policy.is_empty(), stdout.contains("with policy all (the paper's layers for a ddpm-unet"), "{stdout}");
    }
}

fn fails(pattern: &str, policy: &str, extra: &[&str]) -> String {
    let scratch = scratch_dir();
    let out = scratch.join(format!("never-{}.safetensors", pattern.replace(':', "of")));
    let _ = std::fs::remove_file(&out);
    let run =
        prune("uvit", &fixture("uvit_tiny_uncond.json"), &fixture("uvit_tiny_uncond.weights.safetensors"), pattern, policy, extra, &out);
    assert!(!run.status.success(), "{pattern} {policy} {extra:?} must fail");
    assert_ne!(run.status.code(), Some(0));
    assert!(!out.exists(), "nothing written on error");
    String::from_utf8_lossy(&run.stderr).into_owned()
}

#[test]
fn impossible_pattern_is_a_clear_error() {
    let e = fails("5:4", "sparsedm-uvit", &[]);
    assert!(e.contains("impossible N:M pattern 5:4") && e.contains("1 <= N <= M <= 32"), "{e}");
    let e = fails("2-4", "sparsedm-uvit", &[]);
    assert!(e.contains("cannot parse N:M pattern"), "{e}");
    // A valid pattern that groups none of the selected layers (inputs 32 and 128, M = 7) used to
    // write the dense model back, called 3:7; N = M prunes nothing at all.
    let e = fails("3:7", "sparsedm-uvit", &[]);
    assert!(e.contains("--pattern 3:7 with policy sparsedm-uvit masks no layer (20 selected, all left dense"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    let e = fails("4:4", "sparsedm-uvit", &[]);
    assert!(e.contains("--pattern 4:4 keeps every weight"), "{e}");
}

#[test]
fn other_bad_arguments_are_clear_errors() {
    let e = fails("2:4", "*.atn.*", &[]);
    assert!(e.contains("selects none") && e.trim_end().lines().count() == 1, "{e}");
    let e = fails("1:4", "asp", &["--transposable"]);
    assert!(e.contains("--transposable needs --pattern 2:4"), "{e}");
    let e = fails("2:4", "!all", &[]);
    assert!(e.contains("named policies cannot be excluded"), "{e}");
    let e = fails("2:4", "sparsedm-uvit", &["--compressed", "f8"]);
    assert!(e.contains("f8") && e.contains("f32") && e.contains("f16"), "{e}");
}

/// `--compressed`: the N:M layers stored as kept values + packed positions. Every reader gets the
/// same tensors as from the plain sparse checkpoint (the same values at f32; rounded to f16 at f16),
/// with the same sparsity spec and no storage keys in the model metadata; `inspect`, `forward`,
/// `sample` and the model loader of `train.init` take the file (forward and sample give the plain
/// file's output to the bit), a compressed file can be pruned again, and the size ratio is
/// printed. Conv layers (the DDPM UNet) compress too.
#[test]
fn compressed_output_reads_back_as_the_plain_sparse_checkpoint() {
    let scratch = scratch_dir();
    use sparsedm_tensor::nm_cpu::{NM_CHECKPOINT_KEY, is_nm_checkpoint_file};
    // The N:M path pinned, so that the two files' deployed layers run the same kernels.
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
            .args(args)
            .env("SPARSEDM_NM_PATH", "sparse")
            .output()
            .expect("run the sparsedm binary");
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let cases = [
        ("uvit", fixture("uvit_tiny_uncond.json"), fixture("uvit_tiny_uncond.weights.safetensors"), "sparsedm-uvit"),
        ("ddpm-unet", unet_fixture("ddpm_unet_tiny.json"), unet_fixture("ddpm_unet_tiny.weights.safetensors"), "all"),
    ];
    for (arch, config, weights, policy) in cases {
        let plain = scratch.join(format!("{arch}-plain.safetensors"));
        let comp = scratch.join(format!("{arch}-comp.safetensors"));
        let half = scratch.join(format!("{arch}-comp16.safetensors"));
        for p in [&plain, &comp, &half] {
            let _ = std::fs::remove_file(p);
        }
        let out = prune(arch, &config, &weights, "2:4", policy, &[], &plain);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = prune(arch, &config, &weights, "2:4", policy, &["--compressed"], &comp);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        // An existing output is replaced only with --force.
        let before = std::fs::read(&comp).unwrap();
        let again = prune(arch, &config, &weights, "1:4", policy, &["--compressed"], &comp);
        assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force"));
        assert_eq!(std::fs::read(&comp).unwrap(), before, "{arch}: overwritten without --force");
        let line = stdout.lines().find(|l| l.starts_with("compressed: ")).unwrap_or_else(|| panic!("no size line: {stdout}"));
        let ratio: f64 = line.split(" = ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
        let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len() as f64;
        assert!((ratio - size(&comp) / size(&plain)).abs() < 2e-3, "{arch}: printed {ratio}, files {} / {}", size(&comp), size(&plain));
        assert!(ratio < 0.8, "{arch}: {line}");
        assert!(is_nm_checkpoint_file(&comp) && !is_nm_checkpoint_file(&plain));

        let (a, b) = (load_safetensors(&plain).unwrap(), load_safetensors(&comp).unwrap());
        let a: HashMap<String, Tensor> = a.into_iter().collect();
        assert_eq!(a.len(), b.len(), "{arch}: tensor count");
        for (name, t) in &b {
            assert_eq!(t.shape(), a[name].shape(), "{arch} {name}");
            // Equal values; a pruned position reads +0 where the plain file holds the masked
            // weight's signed zero (−w·0 = −0).
            assert_eq!(t.to_vec_f32().unwrap(), a[name].to_vec_f32().unwrap(), "{arch} {name}: not the plain file's values");
        }
        let (_, spec_plain) = read_sparse_checkpoint(&plain).unwrap();
        let (_, spec_comp) = read_sparse_checkpoint(&comp).unwrap();
        assert_eq!(spec_comp, spec_plain);
        let meta = load_safetensors_metadata(&comp).unwrap();
        assert!(meta.contains_key(SPARSITY_METADATA_KEY));
        assert!(!meta.contains_key(NM_CHECKPOINT_KEY) && !meta.keys().any(|k| k.starts_with("nm:")), "{meta:?}");

        // f16 values: the plain file's values rounded to f16.
        let out = prune(arch, &config, &weights, "2:4", policy, &["--compressed", "f16"], &half);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(size(&half) < size(&comp));
        for (name, t) in load_safetensors(&half).unwrap() {
            let want: Vec<f32> = a[&name].to_vec_f32().unwrap().iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
            assert_eq!(t.to_vec_f32().unwrap(), want, "{arch} {name} at f16");
        }

        // inspect verifies the spec on the expanded weights and says what the file is.
        let report = run(&["inspect", comp.to_str().unwrap()]);
        assert!(report.contains("compressed N:M checkpoint:") && report.contains("[spec 2:4: ok]"), "{report}");
        // A compressed file is pruned again like any sparse checkpoint; its output is plain.
        let again = scratch.join(format!("{arch}-again.safetensors"));
        let _ = std::fs::remove_file(&again);
        let out = prune(arch, &config, &comp, "1:4", policy, &["--force"], &again);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!is_nm_checkpoint_file(&again));
        read_sparse_checkpoint(&again).unwrap();
    }

    // forward: the same output from the plain and the compressed file.
    let config = fixture("uvit_tiny_uncond.json");
    let inputs = scratch.join("forward-inputs.safetensors");
    let x: Vec<f32> = (0..2 * 3 * 8 * 8).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let tensors = [
        ("input.x".to_string(), Tensor::from_vec(x, &[2, 3, 8, 8], &sparsedm_tensor::Device::Cpu).unwrap()),
        ("input.timesteps".to_string(), Tensor::from_vec(vec![10.0, 500.0], &[2], &sparsedm_tensor::Device::Cpu).unwrap()),
    ];
    sparsedm_tensor::save_safetensors(&inputs, &tensors, None).unwrap();
    let mut outputs = Vec::new();
    for w in ["uvit-plain.safetensors", "uvit-comp.safetensors"] {
        let out = scratch.join(format!("forward-{w}"));
        let args = ["forward", "--arch", "uvit", "--device", "cpu", "--force", "--config", config.to_str().unwrap()];
        let (w, i, o) = (scratch.join(w), inputs.to_str().unwrap().to_string(), out.to_str().unwrap().to_string());
        run(&[&args[..], &["--weights", w.to_str().unwrap(), "--inputs", &i, "--output", &o]].concat());
        outputs.push(bits(&load_safetensors(&out).unwrap().remove(0).1));
    }
    assert_eq!(outputs[0], outputs[1], "forward: compressed and plain files differ");

    // sample: the same images.
    let mut images = Vec::new();
    for w in ["uvit-plain.safetensors", "uvit-comp.safetensors"] {
        let out = scratch.join(format!("samples-{w}.npz"));
        let (w, o) = (scratch.join(w), out.to_str().unwrap().to_string());
        let args = ["sample", "--arch", "uvit", "--config", config.to_str().unwrap(), "--n", "2", "--steps", "3", "--device", "cpu"];
        run(&[&args[..], &["--force", "--checkpoint", w.to_str().unwrap(), "--out", &o]].concat());
        images.push(std::fs::read(&out).unwrap());
    }
    assert!(images[0] == images[1], "sample: compressed and plain files differ");

    // train.init and every other model load (`load_checkpoint`): the same parameters.
    let cfg = sparsedm_diffusion::ModelConfig::from_file(sparsedm_diffusion::Arch::UViT, &config).unwrap();
    let params = |w: &str| {
        let store = sparsedm_layers::ParamStore::new(sparsedm_tensor::Device::Cpu, 0);
        cfg.build(&store).unwrap();
        sparsedm_diffusion::load_checkpoint(&store, scratch.join(w)).unwrap();
        store.state_dict().into_iter().map(|(n, t)| (n, t.to_vec_f32().unwrap())).collect::<Vec<_>>()
    };
    assert_eq!(params("uvit-comp.safetensors"), params("uvit-plain.safetensors"));
}

/// `--compressed` on a checkpoint stored in f16 (the demo's embedded UNet):
/// the default keeps its values in f16, exact (the file was 1.99× the plain
/// one when they went to f32) and ≤ 0.6× it at 2:4; `--compressed f32`
/// still writes f32. A pattern whose groups are flat-index on every layer
/// (5:9 on 32- and 64-channel convs) compresses none, and the size line
/// says why; sampling says those layers run dense, and a dense run started
/// from the compressed file says it trains dense.
#[test]
fn compressed_f16_checkpoint_stays_f16_and_exact() {
    let scratch = scratch_dir();
    let weights = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo_shapes_unet_dense.safetensors");
    let config = scratch.join("demo-unet.json");
    std::fs::write(
        &config,
        r#"{"resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
            "attn_resolutions": [8], "dropout": 0.0, "num_groups": 8, "resamp_with_conv": true}"#,
    )
    .unwrap();
    let [plain, comp, comp32, flat] = ["plain", "comp", "comp32", "flat"].map(|n| scratch.join(format!("demo-unet-{n}.safetensors")));
    let written = |extra: &[&str], pattern: &str, out: &PathBuf| {
        let o = prune("ddpm-unet", &config, &weights, pattern, "all", &[extra, &["--force"]].concat(), out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().find(|l| l.starts_with("compressed: ")).map(str::to_string)
    };
    written(&[], "2:4", &plain);
    let line = written(&["--compressed"], "2:4", &comp).unwrap();
    written(&["--compressed", "f32"], "2:4", &comp32);
    let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len() as f64;
    assert!(size(&comp) <= 0.6 * size(&plain), "{line}");
    assert!(size(&comp32) > size(&plain), "f32 values double an f16 model's");
    let a: HashMap<String, Tensor> = load_safetensors(&plain).unwrap().into_iter().collect();
    for path in [&comp, &comp32] {
        for (name, t) in load_safetensors(path).unwrap() {
            assert_eq!(t.to_vec_f32().unwrap(), a[&name].to_vec_f32().unwrap(), "{name}: not the plain file's values");
        }
    }
    // The f16-compressed file reads back as the f16 tensors it stores, and compressing it again at
    // the exact precision keeps it f16 (it doubled to f32 before): export and prune alike.
    let stored = load_safetensors(&comp).unwrap();
    assert!(stored.iter().all(|(_, t)| t.dtype() == sparsedm_tensor::DType::F16), "an f16-compressed file reads back as f16");
    let again = scratch.join("demo-unet-again.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["export", "--format", "safetensors", "--compressed", "--force", "--checkpoint"])
        .arg(&comp)
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same tensors; the metadata (the export's source) differs by a few bytes.
    assert!((size(&again) - size(&comp)).abs() < 4096.0, "{} against {}", String::from_utf8_lossy(&o.stdout), size(&comp));
    let again_tensors = load_safetensors(&again).unwrap();
    assert_eq!(again_tensors.len(), stored.len());
    for ((n1, t1), (n2, t2)) in stored.iter().zip(&again_tensors) {
        assert_eq!((n1, t1.dtype(), t1.to_vec_f32().unwrap()), (n2, t2.dtype(), t2.to_vec_f32().unwrap()));
    }
    let repruned = scratch.join("demo-unet-repruned.safetensors");
    let o = prune("ddpm-unet", &config, &comp, "2:4", "all", &["--compressed", "--force"], &repruned);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!((size(&repruned) - size(&comp)).abs() < 4096.0, "{} against {}", size(&repruned), size(&comp));
    let line = written(&["--compressed"], "5:9", &flat).unwrap();
    assert!(line.starts_with("compressed: 0 of 20 N:M layers") && line.contains("(20 flat-index"), "{line}");
    // Sampling says which masked layers run dense, rather than nothing.
    let npz = scratch.join("demo-unet-flat.npz");
    let o = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["sample", "--n", "2", "--steps", "2", "--device", "cpu", "--force", "--checkpoint"])
        .arg(&flat)
        .arg("--out")
        .arg(&npz)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("N:M layers: 0; 20 masked with flat-index groups (not N:M along their inputs) run dense"), "{stdout}");
    // A run without [sparse] started from the sparse file says that it trains dense.
    let run_dir = scratch.join("demo-unet-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let init = format!("train.init={:?}", comp.display().to_string());
    let o = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["train", "--config", "demo_shapes_unet", "--device", "cpu", "--set", &init])
        .args(["--set", "train.n_steps=1", "--set", "train.batch_size=4", "--set", "train.save_interval=1", "--out"])
        .arg(&run_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("is a sparse checkpoint, but this run has no [sparse] section"), "{stderr}");
    let _ = std::fs::remove_dir_all(&run_dir);
}

/// Official weights carry no run config, so `prune` records the model (arch and constructor
/// arguments, `sparsedm.model`) in its output, and `export` in its own: `forward`, `macs`,
/// `export`, `sample` and `prune` then read those files without `--arch/--config`, with the
/// same results as with them; `--arch/--config` that describe another model are refused naming
/// the argument that differs, and weights that describe nothing still ask for them.
#[test]
fn pruned_and_exported_official_weights_describe_their_model() {
    use sparsedm_diffusion::{Arch, MODEL_METADATA_KEY, ModelConfig};
    let sparsedm = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sparsedm")).args(args).env("SPARSEDM_NM_PATH", "sparse").output().expect("run the sparsedm binary")
    };
    let ok = |args: &[&str]| {
        let o = sparsedm(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let refused = |args: &[&str]| {
        let o = sparsedm(args);
        assert_eq!(o.status.code(), Some(1), "{args:?} must fail: {}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let scratch = scratch_dir();
    let (config, weights) = (unet_fixture("ddpm_unet_tiny.json"), unet_fixture("ddpm_unet_tiny.weights.safetensors"));
    let cfg = ModelConfig::from_file(Arch::DdpmUNet, &config).unwrap();
    let recorded = |p: &PathBuf| {
        let meta = load_safetensors_metadata(p).unwrap();
        ModelConfig::from_metadata(meta.get(MODEL_METADATA_KEY).unwrap_or_else(|| panic!("{} records no model", p.display())), "t").unwrap()
    };
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let [pruned, exported, again, inputs, other, out_a, out_b] = [
        "rec-pruned.safetensors",
        "rec-exported.safetensors",
        "rec-again.safetensors",
        "rec-in.safetensors",
        "rec-other.json",
        "rec-a",
        "rec-b",
    ]
    .map(|name| scratch.join(name));
    let c = s(&config);
    let with_model = ["--arch", "ddpm-unet", "--config", c.as_str()];

    let out = prune("ddpm-unet", &config, &weights, "2:4", "all", &[], &pruned);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(recorded(&pruned), cfg);
    assert!(ok(&["inspect", &s(&pruned)]).contains("model: ddpm-unet {"), "inspect names the recorded model");

    // forward: the same bits with and without --arch/--config.
    let x: Vec<f32> = (0..2 * 3 * 16 * 16).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let cpu = sparsedm_tensor::Device::Cpu;
    let tensors = [
        ("input.x".to_string(), Tensor::from_vec(x, &[2, 3, 16, 16], &cpu).unwrap()),
        ("input.t".to_string(), Tensor::from_vec(vec![10.0, 500.0], &[2], &cpu).unwrap()),
    ];
    sparsedm_tensor::save_safetensors(&inputs, &tensors, None).unwrap();
    let forward = |w: &PathBuf, model: &[&str], out: &PathBuf| {
        ok(&[&["forward", "--device", "cpu", "--force", "--weights", &s(w), "--inputs", &s(&inputs), "--output", &s(out)], model].concat());
        bits(&load_safetensors(out).unwrap().remove(0).1)
    };
    let given = forward(&pruned, &with_model, &out_a);
    assert_eq!(forward(&pruned, &[], &out_b), given, "forward of the recorded model");

    // macs: the same table.
    let macs = |model: &[&str]| ok(&[&["macs", "--checkpoint", &s(&pruned)], model].concat());
    assert_eq!(macs(&[]), macs(&with_model));

    // export records it too (compressed here), and its model computes the same output.
    ok(&["export", "--checkpoint", &s(&pruned), "--format", "safetensors", "--compressed", "--out", &s(&exported)]);
    assert_eq!(recorded(&exported), cfg);
    assert_eq!(forward(&exported, &[], &out_b), given, "forward of the exported file");

    // sample: the same images.
    let sample = |w: &PathBuf, model: &[&str], out: &PathBuf| {
        ok(&[&["sample", "--device", "cpu", "--force", "--checkpoint", &s(w), "--n", "2", "--steps", "2", "--out", &s(out)], model]
            .concat());
        std::fs::read(out).unwrap()
    };
    let (npz_a, npz_b) = (out_a.with_extension("npz"), out_b.with_extension("npz"));
    assert!(sample(&pruned, &with_model, &npz_a) == sample(&exported, &[], &npz_b), "sample of the recorded model");

    // prune again without --arch/--config; the output still records the model.
    ok(&["prune", "--weights", &s(&exported), "--pattern", "1:4", "--policy", "all", "--out", &s(&again)]);
    assert_eq!(recorded(&again), cfg);

    // Another model given for a file that records one: refused, naming the difference.
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    doc["config"]["ch_mult"] = serde_json::json!([1, 1]);
    std::fs::write(&other, doc.to_string()).unwrap();
    let o = s(&other);
    let e = refused(&[
        "forward",
        "--force",
        "--arch",
        "ddpm-unet",
        "--config",
        &o,
        "--weights",
        &s(&pruned),
        "--inputs",
        &s(&inputs),
        "--output",
        &s(&out_a),
    ]);
    assert!(e.contains("ch_mult = [1,1] there, [1,2] in the file") && e.contains("another model"), "{e}");
    let e = refused(&[
        "sample",
        "--arch",
        "ddpm-unet",
        "--config",
        &o,
        "--checkpoint",
        &s(&exported),
        "--n",
        "1",
        "--force",
        "--out",
        &s(&npz_a),
    ]);
    assert!(e.contains("ch_mult"), "{e}");
    // The official file describes nothing: its readers still ask for --arch/--config.
    let e = refused(&["forward", "--force", "--weights", &s(&weights), "--inputs", &s(&inputs), "--output", &s(&out_a)]);
    assert!(e.contains("give --arch and --config"), "{e}");
    let e = refused(&["prune", "--weights", &s(&weights), "--pattern", "2:4", "--policy", "all", "--force", "--out", &s(&again)]);
    assert!(e.contains("give --arch and --config"), "{e}");
}
