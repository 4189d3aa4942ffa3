//! Hostile and careless inputs through the real binary (issue 18): every
//! case must exit non-zero with one clear `error:` line naming the
//! offending file, tensor, flag or value — never a panic — and must leave
//! every file already on disk exactly as it was (hashed before and after).
//! The inputs are generated at test time from the small fixtures and a
//! two-step training run; the whole suite runs in well under a minute.
//!
//! One test per class of the issue (strict loading, numeric validation,
//! protected outputs, bounded memory), plus resume hygiene, which must
//! *work* (and say what it did) rather than fail.

use sparsedm_tensor::{Device, Tensor, load_safetensors, load_safetensors_metadata, save_safetensors};
use sparsedm_testkit::Scratch;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_sparsedm");

/// A tiny U-ViT run: 2 steps, a checkpoint after each.
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
n_steps = 2
batch_size = 4
save_interval = 1
keep_last = 5
ema_rate = 0.9
[optimizer]
lr = 1e-3
weight_decay = 0.03
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 1
[sample]
steps = 2
"#;

fn diffusion_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sparsedm-diffusion/tests/fixtures").join(name)
}

/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn scratch(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), &format!("hostile-{name}"))
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Hash of every file under `dir` (recursively), by path; folders too (as 0), so that a refused
/// command that leaves an empty folder behind is caught.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.insert(p.clone(), 0);
                stack.push(p);
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&p).unwrap().hash(&mut h);
                out.insert(p, h.finish());
            }
        }
    }
    out
}

/// Runs `args`, which must fail: non-zero exit, exactly one `error:` line
/// on stderr that mentions every one of `needles`, no panic, and no file
/// under `dir` created, changed or removed.
fn refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let before = snapshot(dir);
    let o = run(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded; stderr:\n{stderr}");
    assert_eq!(o.status.code(), Some(1), "{args:?}: want exit 1 (a clear error), got {:?}\n{stderr}", o.status);
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: want one error line, got:\n{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: the error does not mention {n:?}:\n{stderr}");
    }
    assert_eq!(snapshot(dir), before, "{args:?} changed files on disk although it was refused");
}

fn succeeds(args: &[&str]) -> String {
    let o = run(args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?} failed:\n{stderr}");
    stderr + &String::from_utf8_lossy(&o.stdout)
}

/// A two-step training run shared by the tests (its folder is never written after). It outlives
/// every test, so it has a fixed folder, replaced by the next run of this file, rather than a
/// `Scratch` (a static is never dropped: a per-process folder would pile up, one per run).
fn trained() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sparsedm-hostile-trained");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("tiny.toml"), TINY_RUN).unwrap();
        succeeds(&["train", "--config", s(&d.join("tiny.toml")), "--out", s(&d.join("run"))]);
        d.join("run")
    })
}

fn checkpoint(step: u64) -> PathBuf {
    trained().join("checkpoints").join(format!("step_{step:08}.safetensors"))
}

/// Rewrites `src` into `dst` with `edit` applied to its tensors (metadata kept).
fn edited(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let mut tensors = load_safetensors(src).unwrap();
    let meta: HashMap<String, String> = load_safetensors_metadata(src).unwrap();
    edit(&mut tensors);
    save_safetensors(dst, &tensors, Some(meta)).unwrap();
}

fn set_tensor(tensors: &mut [(String, Tensor)], name: &str, f: impl Fn(&mut Vec<f32>)) {
    let (_, t) = tensors.iter_mut().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}"));
    let mut v = t.to_vec_f32().unwrap();
    f(&mut v);
    *t = Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap();
}

/// The uvit_tiny_uncond fixture copied into `dir`: (config, weights, inputs).
fn uvit_fixture(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let names = ["uvit_tiny_uncond.json", "uvit_tiny_uncond.weights.safetensors"];
    for n in names {
        std::fs::copy(diffusion_fixture(n), dir.join(n)).unwrap();
    }
    let io = load_safetensors(diffusion_fixture("uvit_tiny_uncond.io.safetensors")).unwrap();
    let inputs: Vec<_> = io.into_iter().filter(|(n, _)| n == "input.x" || n == "input.timesteps").collect();
    save_safetensors(dir.join("in.safetensors"), &inputs, None).unwrap();
    (dir.join(names[0]), dir.join(names[1]), dir.join("in.safetensors"))
}

#[test]
fn strict_loading() {
    let d = scratch("strict");
    // A training checkpoint without any ema.* tensor, and one missing a single one.
    let no_ema = d.join("no_ema.safetensors");
    edited(&checkpoint(2), &no_ema, |t| t.retain(|(n, _)| !n.starts_with("ema.")));
    let one_missing = d.join("one_missing.safetensors");
    edited(&checkpoint(2), &one_missing, |t| t.retain(|(n, _)| n != "ema.mid_block.mlp.fc1.weight"));
    let out = d.join("samples");
    refused(
        &d,
        &["sample", "--checkpoint", s(&no_ema), "--n", "1", "--steps", "1", "--out", s(&out)],
        &["no_ema.safetensors", "ema.*", "--raw"],
    );
    refused(&d, &["sample", "--checkpoint", s(&one_missing), "--n", "1", "--steps", "1", "--out", s(&out)], &["mid_block.mlp.fc1.weight"]);

    // A pruned 2:4 checkpoint whose layer was made dense again.
    let (cfg, weights, inputs) = uvit_fixture(&d);
    let pruned = d.join("pruned.safetensors");
    succeeds(&[
        "prune",
        "--arch",
        "uvit",
        "--config",
        s(&cfg),
        "--weights",
        s(&weights),
        "--pattern",
        "2:4",
        "--policy",
        "sparsedm-uvit",
        "--out",
        s(&pruned),
    ]);
    let report = succeeds(&["inspect", s(&pruned)]);
    assert!(report.contains("layers (2:4), each holds its pattern"), "{report}");
    // --pattern checks every weight: the layers the policy left dense fail,
    // and the error says so.
    refused(&d, &["inspect", s(&pruned), "--pattern", "2:4"], &["in layers the stored spec leaves dense", "decoder_pred"]);
    let densified = d.join("densified.safetensors");
    edited(&pruned, &densified, |t| set_tensor(t, "mid_block.attn.qkv.weight", |v| v.iter_mut().for_each(|x| *x = 0.5)));
    refused(&d, &["inspect", s(&densified)], &["mid_block.attn.qkv", "group"]);
    let y = d.join("y.safetensors");
    refused(
        &d,
        &["forward", "--arch", "uvit", "--config", s(&cfg), "--weights", s(&densified), "--inputs", s(&inputs), "--output", s(&y)],
        &["mid_block.attn.qkv"],
    );
    refused(
        &d,
        &["sample", "--checkpoint", s(&densified), "--arch", "uvit", "--config", s(&cfg), "--n", "1", "--steps", "1", "--out", s(&out)],
        &["mid_block.attn.qkv"],
    );
    // A requested pattern that the (dense) weights violate.
    refused(&d, &["inspect", s(&weights), "--pattern", "2:4"], &["2:4"]);
    // The model a pruned file records (`sparsedm.model`), corrupted: one clear
    // error naming the file, before any model is built.
    let with_model = |name: &str, text: &str| {
        let p = d.join(name);
        let mut meta: HashMap<String, String> = load_safetensors_metadata(&pruned).unwrap();
        assert!(meta.contains_key("sparsedm.model"), "prune records the model");
        meta.insert("sparsedm.model".into(), text.into());
        save_safetensors(&p, &load_safetensors(&pruned).unwrap(), Some(meta)).unwrap();
        p
    };
    let garbled = with_model("garbled.safetensors", r#"{"arch": "uvit""#);
    refused(
        &d,
        &["forward", "--weights", s(&garbled), "--inputs", s(&inputs), "--output", s(&y)],
        &["garbled.safetensors", "sparsedm.model", "JSON"],
    );
    refused(&d, &["inspect", s(&garbled)], &["garbled.safetensors", "sparsedm.model"]);
    let huge = with_model(
        "huge_model.safetensors",
        r#"{"arch": "uvit", "config": {"img_size": 8, "patch_size": 2, "embed_dim": 1000000000, "depth": 4, "num_heads": 2}}"#,
    );
    refused(
        &d,
        &["sample", "--checkpoint", s(&huge), "--n", "1", "--steps", "1", "--out", s(&out)],
        &["sparsedm.model", "embed_dim", "huge_model"],
    );
    let wider = with_model(
        "wider_model.safetensors",
        r#"{"arch": "uvit", "config": {"img_size": 8, "patch_size": 2, "embed_dim": 64, "depth": 4, "num_heads": 2}}"#,
    );
    refused(&d, &["macs", "--checkpoint", s(&wider)], &["recorded in the checkpoint", "wider_model", "does not describe these weights"]);
}

#[test]
fn numeric_validation() {
    let d = scratch("numeric");
    let (cfg, weights, inputs) = uvit_fixture(&d);
    let nan_weights = d.join("nan.safetensors");
    edited(&weights, &nan_weights, |t| set_tensor(t, "in_blocks.1.mlp.fc2.weight", |v| v[7] = f32::NAN));
    let y = d.join("y.safetensors");
    let fwd = |w: &Path, i: &Path| -> Vec<String> {
        ["forward", "--arch", "uvit", "--config", s(&cfg), "--weights", s(w), "--inputs", s(i), "--output", s(&y)]
            .map(String::from)
            .to_vec()
    };
    let args = fwd(&nan_weights, &inputs);
    refused(&d, &args.iter().map(String::as_str).collect::<Vec<_>>(), &["in_blocks.1.mlp.fc2.weight", "NaN", "--allow-non-finite"]);
    let pruned = d.join("pruned.safetensors");
    refused(
        &d,
        &[
            "prune",
            "--arch",
            "uvit",
            "--config",
            s(&cfg),
            "--weights",
            s(&nan_weights),
            "--pattern",
            "2:4",
            "--policy",
            "all",
            "--out",
            s(&pruned),
        ],
        &["in_blocks.1.mlp.fc2.weight", "NaN"],
    );
    // Non-finite and out-of-range inputs and times.
    for (key, value, needle) in [
        ("input.x", f32::INFINITY, "input.x"),
        ("input.timesteps", -3.0, "input.timesteps"),
        ("input.timesteps", f32::NAN, "input.timesteps"),
    ] {
        let bad = d.join("bad_in.safetensors");
        edited(&inputs, &bad, |t| set_tensor(t, key, |v| v[0] = value));
        let args = fwd(&weights, &bad);
        refused(&d, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[needle]);
        std::fs::remove_file(&bad).unwrap();
    }
    // Hyper-parameters out of range, and a sparse run that masks nothing.
    let run_dir = d.join("run");
    for (set, needle) in
        [("optimizer.lr=-1", "optimizer.lr"), ("train.ema_rate=1.5", "train.ema_rate"), ("optimizer.betas=[0.9, 1.0]", "optimizer.betas")]
    {
        refused(&d, &["train", "--config", "demo_shapes_uvit", "--set", set, "--out", s(&run_dir)], &[needle]);
    }
    refused(
        &d,
        &[
            "train",
            "--config",
            "demo_shapes_uvit",
            "--set",
            "sparse.pattern=\"3:7\"",
            "--set",
            "sparse.teacher=\"none\"",
            "--out",
            s(&run_dir),
        ],
        &["masks no layer"],
    );
    // A train.init that cannot be read is refused without a run folder left behind (the
    // trainer made the folder first, then failed on the init).
    let missing = d.join("no-such-init.safetensors");
    refused(
        &d,
        &["train", "--config", "demo_shapes_uvit", "--set", &format!("train.init={}", s(&missing)), "--out", s(&run_dir)],
        &["no-such-init.safetensors"],
    );
    // A run's folder where a checkpoint file is meant names the checkpoints to pick from.
    let newest = checkpoint(2);
    for args in [
        vec!["sample", "--checkpoint", s(trained()), "--n", "1", "--out", s(&d.join("o.npz"))],
        vec!["export", "--checkpoint", s(trained()), "--format", "onnx", "--out", s(&d.join("o.onnx"))],
        vec!["inspect", s(trained())],
        vec!["macs", "--checkpoint", s(trained())],
    ] {
        refused(&d, &args, &["is a training run's folder, not a checkpoint file", s(&newest), "(the newest)"]);
    }
    refused(&d, &["inspect", s(&d)], &["is a folder, not a checkpoint file"]);
    // forward and prune take a model, which a run's checkpoints are not: the export that writes one is named.
    let export = format!("`sparsedm export --checkpoint {} --format safetensors --out M.safetensors`", s(&newest));
    refused(
        &d,
        &["forward", "--weights", s(trained()), "--inputs", s(&newest), "--output", s(&d.join("o.safetensors"))],
        &["is a training run's folder, not a model file", &export],
    );
    refused(
        &d,
        &["prune", "--weights", s(trained()), "--pattern", "2:4", "--policy", "all", "--out", s(&d.join("p.safetensors"))],
        &["not a model file", &export],
    );
    // Sample outputs that are neither a folder, an npz nor a grid PNG it can hold.
    let ck = checkpoint(2);
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "2", "--out", s(&d.join("grid.jpg"))], &["grid.jpg", "not .jpg"]);
    // An existing grid PNG is not replaced without --force.
    let grid = d.join("existing-grid.png");
    std::fs::write(&grid, b"an earlier grid").unwrap();
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "2", "--out", s(&grid)], &["existing-grid.png", "--force"]);
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "1025", "--out", s(&d.join("grid.png"))], &["--n 1025", "at most 1024"]);
    // Covariances that are not covariances.
    let good = sparsedm_fid::FeatureStats::new(vec![0.0, 0.0], vec![1.0, 0.0, 0.0, 1.0], 10).unwrap();
    let negative = sparsedm_fid::FeatureStats::new(vec![0.0, 0.0], vec![-1.0, 0.0, 0.0, -4.0], 10).unwrap();
    let skew = sparsedm_fid::FeatureStats::new(vec![0.0, 0.0], vec![1.0, 0.9, -0.9, 1.0], 10).unwrap();
    for (name, st) in [("good.npz", &good), ("negative.npz", &negative), ("skew.npz", &skew)] {
        sparsedm_fid::write_stats_npz(d.join(name), st).unwrap();
    }
    refused(&d, &["fid", "score", s(&d.join("good.npz")), s(&d.join("negative.npz"))], &["positive semi-definite"]);
    refused(&d, &["fid", "score", s(&d.join("skew.npz")), s(&d.join("good.npz"))], &["not symmetric"]);
    // Checked arithmetic, and flags that do not apply.
    refused(&d, &["macs", "--preset", "cifar10_uvit_small", "--batch", "18446744073709551615"], &["overflows"]);
    let ck = checkpoint(2);
    refused(
        &d,
        &["sample", "--checkpoint", s(&ck), "--n", "1", "--cfg-scale", "3", "--out", s(&d.join("o"))],
        &["--cfg-scale 3", "unconditional"],
    );
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "1", "--class", "2", "--out", s(&d.join("o"))], &["class 2", "unconditional"]);
    // An exported ONNX model or a run's config where a checkpoint belongs is named for what it is.
    let onnx = d.join("model.onnx");
    std::fs::write(&onnx, [&[0x08u8, 0x08, 0x12, 0x08][..], b"sparsedm"].concat()).unwrap();
    refused(
        &d,
        &["sample", "--checkpoint", s(&onnx), "--n", "1", "--out", s(&d.join("o"))],
        &["model.onnx", "an ONNX model", "checkpoint it was exported from"],
    );
    let toml = d.join("config.toml");
    std::fs::write(&toml, "seed = 0\n").unwrap();
    refused(&d, &["export", "--checkpoint", s(&toml), "--format", "onnx", "--out", s(&d.join("m.onnx"))], &["config.toml", "a TOML file"]);
    refused(
        &d,
        &["sample", "--checkpoint", s(&ck), "--n", "1", "--steps", "100000000000", "--out", s(&d.join("o"))],
        &["100000000000 steps"],
    );
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "1", "--schedule", "vp-linear", "--out", s(&d.join("o"))], &["--schedule"]);
    // A sampler that cannot run on the model's schedule or with so few steps, before any sampling.
    refused(
        &d,
        &["sample", "--checkpoint", s(&ck), "--n", "1", "--sampler", "ddpm", "--out", s(&d.join("o"))],
        &["sampler ddpm with", "ddpm needs a discrete noise schedule"],
    );
    refused(
        &d,
        &["sample", "--checkpoint", s(&ck), "--n", "1", "--sampler", "dpm-solver-3", "--steps", "2", "--out", s(&d.join("o"))],
        &["dpm-solver-3 needs at least 3 steps, got 2"],
    );
    // forward and prune take a model's state dict; a training checkpoint's is written by export.
    refused(
        &d,
        &["forward", "--weights", s(&ck), "--inputs", s(&inputs), "--output", s(&d.join("y.safetensors"))],
        &["training checkpoint", "export"],
    );
    refused(
        &d,
        &["prune", "--weights", s(&ck), "--pattern", "2:4", "--policy", "all", "--out", s(&d.join("p.safetensors"))],
        &["training checkpoint", "export"],
    );
    refused(&d, &["train", "--resume", s(trained()), "--set", "optimizer.lr=1e-2"], &["optimizer.lr", "--resume"]);
    refused(
        &d,
        &["sample", "--checkpoint", s(&ck), "--arch", "uvit", "--config", s(&cfg), "--n", "1", "--out", s(&d.join("o"))],
        &["--arch", "run config"],
    );
    refused(&d, &["sample", "--checkpoint", s(&weights), "--raw", "--n", "1", "--out", s(&d.join("o"))], &["--raw"]);
}

#[test]
fn protected_outputs() {
    let d = scratch("outputs");
    let (cfg, weights, _) = uvit_fixture(&d);
    let ck = checkpoint(2);
    let existing = d.join("existing.npz");
    std::fs::write(&existing, b"precious").unwrap();
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "1", "--steps", "1", "--out", s(&existing)], &["existing.npz", "--force"]);
    let existing_st = d.join("existing.safetensors");
    std::fs::write(&existing_st, b"precious").unwrap();
    refused(
        &d,
        &[
            "prune",
            "--arch",
            "uvit",
            "--config",
            s(&cfg),
            "--weights",
            s(&weights),
            "--pattern",
            "2:4",
            "--policy",
            "all",
            "--out",
            s(&existing_st),
        ],
        &["existing.safetensors", "--force"],
    );
    refused(
        &d,
        &[
            "prune",
            "--arch",
            "uvit",
            "--config",
            s(&cfg),
            "--weights",
            s(&weights),
            "--pattern",
            "2:4",
            "--policy",
            "all",
            "--force",
            "--out",
            s(&weights),
        ],
        &["also an input"],
    );
    let images = d.join("images.npz");
    let u8s = sparsedm_fid::U8Images { data: vec![7; 2 * 4 * 4 * 3], n: 2, height: 4, width: 4, channels: 3 };
    sparsedm_fid::write_images_npz(&images, &u8s).unwrap();
    let inception = d.join("no-inception.safetensors");
    refused(
        &d,
        &["fid", "stats", "--inception", s(&inception), "--images", s(&images), "--out", s(&existing)],
        &["existing.npz", "--force"],
    );
    refused(
        &d,
        &["fid", "stats", "--inception", s(&inception), "--images", s(&images), "--out", s(&images), "--force"],
        &["also an input"],
    );
    // An image folder with files in it, and a run folder holding a run.
    let folder = d.join("pngs");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("000000.png"), b"stale").unwrap();
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "1", "--steps", "1", "--out", s(&folder)], &["pngs", "not empty", "--force"]);
    refused(&d, &["demo", "--out", s(&folder)], &["pngs", "not empty", "--force"]);
    refused(&d, &["repro", "table2", "--out", s(&folder)], &["pngs", "not empty", "--force"]);
    let run_copy = d.join("run");
    std::fs::create_dir_all(run_copy.join("checkpoints")).unwrap();
    std::fs::write(run_copy.join("config.toml"), TINY_RUN).unwrap();
    refused(&d, &["train", "--config", "demo_shapes_uvit", "--out", s(&run_copy)], &["already holds a run", "--resume", "--force"]);
    // A folder another process writes (its lock held here, as a running train, demo or repro
    // holds it): --force and --resume remove and continue nothing in it.
    #[cfg(unix)]
    {
        let busy = std::fs::File::open(&run_copy).unwrap();
        busy.lock().unwrap();
        std::fs::create_dir_all(run_copy.join("runs").join("row")).unwrap();
        let in_use = "in use by another sparsedm process";
        refused(&d, &["train", "--config", "demo_shapes_uvit", "--out", s(&run_copy), "--force"], &["run", in_use]);
        refused(&d, &["train", "--resume", s(&run_copy)], &["run", in_use]);
        refused(&d, &["demo", "--out", s(&run_copy), "--force"], &["run", in_use]);
        refused(&d, &["repro", "table2", "--out", s(&run_copy), "--force"], &["run", in_use]);
        refused(&d, &["repro", "table2", "--out", s(&run_copy), "--resume"], &["run", in_use]);
        drop(busy);
        std::fs::remove_dir_all(run_copy.join("runs")).unwrap();
    }
    // Output paths that cannot be written are refused before any work.
    let blocker = d.join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "1", "--steps", "1", "--out", s(&blocker.join("x.npz"))], &["a-file"]);
    refused(
        &d,
        &[
            "forward",
            "--arch",
            "uvit",
            "--config",
            s(&cfg),
            "--weights",
            s(&weights),
            "--inputs",
            s(&weights),
            "--output",
            s(&blocker.join("y")),
        ],
        &["a-file"],
    );
}

#[test]
fn bounded_memory() {
    let d = scratch("memory");
    let (_, weights, inputs) = uvit_fixture(&d);
    let ck = checkpoint(2);
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "100000000000", "--out", s(&d.join("many.npz"))], &["100000000000"]);
    refused(&d, &["sample", "--checkpoint", s(&ck), "--n", "100000000000", "--out", s(&d.join("many"))], &["100000000000"]);
    refused(
        &d,
        &["sample", "--checkpoint", s(&ck), "--n", "1000000000", "--batch", "1000000000", "--out", s(&d.join("big"))],
        &["--batch"],
    );
    // Configs with a huge width: beyond any model, or not what the weights hold.
    let huge = d.join("huge.json");
    std::fs::write(&huge, r#"{"img_size": 8, "patch_size": 2, "embed_dim": 1000000000, "depth": 4, "num_heads": 2}"#).unwrap();
    let y = d.join("y.safetensors");
    let fwd = |c: &Path| {
        ["forward", "--arch", "uvit", "--config", s(c), "--weights", s(&weights), "--inputs", s(&inputs), "--output", s(&y)]
            .map(String::from)
    };
    refused(&d, &fwd(&huge).iter().map(String::as_str).collect::<Vec<_>>(), &["embed_dim"]);
    let wide = d.join("wide.json");
    std::fs::write(&wide, r#"{"img_size": 8, "patch_size": 2, "embed_dim": 262144, "depth": 4, "num_heads": 2, "conv": true, "skip": true, "mlp_time_embed": false, "qkv_bias": false}"#).unwrap();
    refused(&d, &fwd(&wide).iter().map(String::as_str).collect::<Vec<_>>(), &["patch_embed.proj.weight", "wide.json", "weight values"]);
    refused(
        &d,
        &[
            "train",
            "--config",
            "demo_shapes_uvit",
            "--set",
            "nnet.embed_dim=1048576",
            "--set",
            "nnet.num_heads=1",
            "--out",
            s(&d.join("r")),
        ],
        &["memory"],
    );
    refused(
        &d,
        &["train", "--config", "demo_shapes_uvit", "--set", "train.batch_size=1000000000000", "--out", s(&d.join("r"))],
        &["train.batch_size"],
    );
}

#[test]
fn resume_hygiene() {
    let d = scratch("resume");
    // A copy of the two-step run, then what a kill and a torn disk leave behind.
    let run_dir = d.join("run");
    std::fs::create_dir_all(run_dir.join("checkpoints")).unwrap();
    for f in ["config.toml", "metrics.jsonl"] {
        std::fs::copy(trained().join(f), run_dir.join(f)).unwrap();
    }
    for step in [1, 2] {
        std::fs::copy(checkpoint(step), run_dir.join("checkpoints").join(format!("step_{step:08}.safetensors"))).unwrap();
    }
    let newest = run_dir.join("checkpoints/step_00000002.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let orphan = run_dir.join("checkpoints/.step_00000003.safetensors.tmp999");
    std::fs::write(&orphan, b"half a checkpoint").unwrap();
    let mut metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    metrics.push_str("{\"step\":3,\"loss\":1.0}\n");
    std::fs::write(run_dir.join("metrics.jsonl"), metrics).unwrap();

    let said = succeeds(&["train", "--resume", s(&run_dir)]);
    assert!(said.contains("skipped") && said.contains("step_00000002.safetensors"), "{said}");
    assert!(said.contains("step_00000001.safetensors"), "{said}");
    assert!(!orphan.exists(), "the orphan temporary checkpoint was not removed");
    let steps: Vec<u64> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("step")?.as_u64())
        .collect();
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(steps, unique, "metrics.jsonl repeats steps: {steps:?}");
    assert_eq!(steps.last(), Some(&2), "{steps:?}");
    // The step-2 checkpoint was written again, whole.
    load_safetensors(&newest).unwrap();
}

#[test]
fn forensics_flag_loads_non_finite_weights_and_force_replaces() {
    let d = scratch("forensics");
    let (cfg, weights, inputs) = uvit_fixture(&d);
    let nan_weights = d.join("nan.safetensors");
    edited(&weights, &nan_weights, |t| set_tensor(t, "decoder_pred.weight", |v| v[0] = f32::INFINITY));
    let y = d.join("y.safetensors");
    let args = ["forward", "--arch", "uvit", "--config", s(&cfg), "--weights", s(&nan_weights), "--inputs", s(&inputs), "--output", s(&y)];
    succeeds(&[&args[..], &["--allow-non-finite"]].concat());
    assert!(y.exists());
    refused(&d, &args, &["y.safetensors", "--force"]);
    succeeds(&[&args[..], &["--allow-non-finite", "--force"]].concat());
}
