//! `sparsedm repro` (what `cargo xtask repro` runs) and `sparsedm bench`
//! through the real binary, with tiny budgets: tables are written in
//! Markdown and JSON with the paper's numbers beside ours and embed their
//! figures, the paper scale
//! names every missing input, and Table 3 says why it is not measured here.

use sparsedm_testkit::Scratch;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sparsedm");

/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn tmp(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), name)
}

#[test]
fn table2_tiny_writes_markdown_and_json_with_the_papers_numbers() {
    let scratch = tmp("repro-table2");
    let out = scratch.join("out");
    let o = Command::new(BIN)
        .args(["repro", "table2", "--steps", "2", "--samples", "4", "--out", &out.display().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "repro failed\n{stderr}");
    let md = std::fs::read_to_string(out.join("table2.md")).unwrap();
    for row in ["| dense |", "| Diff-Pruning |", "| ASP 2:4 |", "| STE 2:4 |", "| SparseDM 2:4 |"] {
        assert!(md.contains(row), "no row {row}:\n{md}");
    }
    // The paper's CIFAR-10 U-ViT numbers are beside ours.
    assert!(md.contains("| SparseDM | 3.81 | 5.67 |") && md.contains("| ASP | 319.87 | 5.76 |"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("table2.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    // Both model families (issue 17): dense, Diff-Pruning, ASP, STE, SparseDM for U-ViT, then for the UNet.
    assert_eq!(rows.len(), 10);
    assert!(rows[..5].iter().all(|r| r["model"] == "U-ViT") && rows[5..].iter().all(|r| r["model"] == "DDPM UNet"), "{rows:?}");
    assert!(md.contains("| DDPM UNet | SparseDM | 3.12 | 4.87 |"), "{md}");
    assert_eq!(json["paper"].as_array().unwrap().len(), 30);
    for r in rows {
        assert!(r["quality"]["fd_px"].as_f64().unwrap().is_finite(), "{r}");
        // Each row's sampling is timed; the N:M rows' N:M layers are counted
        // while sampling (on the kernels or the dense GEMM), a dense model has none.
        assert!(r["sampling_seconds"].as_f64().unwrap() > 0.0, "{r}");
        let calls = r["nm_kernel_calls"].as_u64().unwrap() + r["nm_dense_calls"].as_u64().unwrap();
        assert_eq!(calls > 0, r["pattern"] == "2:4", "{r}");
    }
    assert!(md.contains("| sampling (s) |") && md.contains("(1.00x) |"), "{md}");
    for family in rows.chunks(5) {
        // 2:4 rows: about half of the pruned layers' weights are zero; the dense row has almost none
        // (its f16-stored weights may round a few tiny values to exactly 0).
        assert!(family[0]["footprint"]["sparsity_layers"].as_f64().unwrap() < 1e-4, "{}", family[0]);
        // Diff-Pruning: a smaller dense model near half of the dense MACs.
        let dense_macs = family[0]["footprint"]["macs"].as_f64().unwrap();
        let dp = &family[1];
        assert_eq!(dp["method"], "Diff-Pruning", "{dp}");
        let ratio = dp["footprint"]["macs"].as_f64().unwrap() / dense_macs;
        assert!((0.4..0.6).contains(&ratio), "Diff-Pruning at {ratio} of the dense MACs: {dp}");
        assert!(dp["footprint"]["sparsity_layers"].as_f64().unwrap() < 1e-4, "{dp}");
        for r in &family[2..] {
            let s = r["footprint"]["sparsity_layers"].as_f64().unwrap();
            assert!(s > 0.3 && s <= 0.5, "{r}");
            assert!(r["footprint"]["macs"].as_f64().unwrap() < family[0]["footprint"]["macs"].as_f64().unwrap());
        }
        // Trained rows are scored and exported on their EMA weights (issue 17), the dense row on the checkpoint's.
        assert_eq!(family[0]["weights"], "checkpoint", "{}", family[0]);
        for r in &family[1..] {
            assert_eq!(r["weights"], "ema", "{r}");
        }
        // ASP's channel permutations: reported, never keeping less.
        let p = &family[2]["permutation"];
        assert!(p["kept_with"].as_f64().unwrap() >= p["kept_without"].as_f64().unwrap(), "{p}");
    }
    assert!(md.contains("channel permutations before pruning"), "{md}");
    // The layer-set ablation runs for exactly the families where ASP beats SparseDM,
    // and a note reads it against both rows.
    let ablations = json["ablations"].as_array().unwrap();
    for family in rows.chunks(5) {
        let fd = |r: &serde_json::Value| r["quality"]["fd_px"].as_f64().unwrap();
        let model = &family[0]["model"];
        let ab: Vec<_> = ablations.iter().filter(|a| &a["model"] == model).collect();
        assert_eq!(ab.len(), usize::from(fd(&family[2]) < fd(&family[4])), "{model}: {ablations:?}");
        for a in ab {
            assert_eq!(
                (a["method"].as_str(), a["pattern"].as_str(), a["weights"].as_str()),
                (Some("SparseDM on ASP's layers"), Some("2:4"), Some("ema"))
            );
            assert!(md.contains(&format!("{}: ASP (", model.as_str().unwrap())) && md.contains("## Ablation"), "{md}");
        }
    }
    assert_exported_ema(&out, "sparsedm");
    // The side-by-side figure (four 64-px columns, six rows of the four samples: all four)
    // and the quality-against-MACs plot are written and embedded.
    let (w, h) = png_size(&out.join("table2_compare.png"));
    assert!(w >= 4 * 64 && h >= 4 * 64, "{w}x{h}");
    assert_eq!(png_size(&out.join("table2_quality_macs.png")), (900, 560));
    for file in ["table2_compare.png", "table2_quality_macs.png"] {
        assert!(md.contains(&format!("]({file})")), "table2.md does not embed {file}");
    }
}

/// `<slug>.safetensors` holds the run's EMA weights (the dense-mode tensors
/// equal the last training checkpoint's `ema.*`), not its raw `model.*`.
fn assert_exported_ema(out: &Path, slug: &str) {
    let exported: HashMap<String, Vec<f32>> = sparsedm_tensor::load_safetensors(out.join(format!("{slug}.safetensors")))
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.to_vec_f32().unwrap()))
        .collect();
    let ckpts = out.join("runs").join(slug).join("checkpoints");
    let last = std::fs::read_dir(&ckpts).unwrap().map(|e| e.unwrap().path()).max().expect("a training checkpoint");
    let state: HashMap<String, Vec<f32>> =
        sparsedm_tensor::load_safetensors(&last).unwrap().into_iter().map(|(n, t)| (n, t.to_vec_f32().unwrap())).collect();
    let (mut same, mut differs_from_raw) = (0, 0);
    for (name, v) in &exported {
        // Biases, norms and embeddings: the masked weights are the EMA model's own deployed ones.
        if name.ends_with(".weight") && (name.contains(".attn.") || name.contains(".mlp.")) {
            continue;
        }
        let Some(ema) = state.get(&format!("ema.{name}")) else { continue };
        assert_eq!(v, ema, "{name}: the export is not the EMA");
        same += 1;
        differs_from_raw += usize::from(state[&format!("model.{name}")] != *v);
    }
    assert!(same > 10 && differs_from_raw > 0, "{same} tensors compared, {differs_from_raw} differ from the raw weights");
}

/// Width and height of a PNG file (from its IHDR chunk).
fn png_size(path: &std::path::Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.starts_with(b"\x89PNG\r\n\x1a\n") && &b[12..16] == b"IHDR", "{} is not a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

#[test]
fn paper_scale_names_every_missing_input() {
    let scratch = tmp("repro-paper");
    let out = scratch.join("out");
    let o = Command::new(BIN)
        .args(["repro", "table2", "--scale", "paper", "--data", "/nonexistent/cifar", "--out", &out.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for flag in ["--data DIR /nonexistent/cifar: no such file", "--checkpoint FILE", "--inception FILE", "--fid-stats FILE"] {
        assert!(stderr.contains(flag), "missing {flag:?} in {stderr}");
    }

    // Inputs that are there but wrong are refused before anything is read at length: statistics
    // that are not Inception's 2048-d ones (else an error at the first row's scoring, after its
    // 50,000 samples) and a checkpoint of another model (else every differing tensor listed).
    let (data, inception) = (scratch.join("cifar"), scratch.join("inception.safetensors"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(&inception, b"not read before the checks").unwrap();
    let small = scratch.join("small.safetensors");
    let t = sparsedm_tensor::Tensor::zeros(&[4, 3, 2, 2], &sparsedm_tensor::Device::Cpu).unwrap();
    sparsedm_tensor::save_safetensors(&small, &[("patch_embed.proj.weight".into(), t)], None).unwrap();
    let stats = |d: usize| {
        let path = scratch.join(format!("stats{d}.npz"));
        let eye: Vec<f64> = (0..d * d).map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 }).collect();
        sparsedm_fid::write_stats_npz(&path, &sparsedm_fid::FeatureStats::new(vec![0.0; d], eye, 10).unwrap()).unwrap();
        path
    };
    let refused = |stats: &Path, needle: &str| {
        let o = Command::new(BIN)
            .args(["repro", "table1", "--scale", "paper", "--steps", "2", "--samples", "4"])
            .args(["--data", &s(&data), "--checkpoint", &s(&small), "--inception", &s(&inception), "--fid-stats", &s(stats)])
            .args(["--out", &s(&scratch.join("out2"))])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
        assert!(!scratch.join("out2").exists(), "a refused repro leaves no output folder");
    };
    refused(&stats(64), "holds 64-d statistics, but FID compares InceptionV3's 2048-d pool3 features");
    refused(
        &stats(2048),
        "is not the official U-ViT-S/2 CIFAR-10 model: the config of U-ViT-S/2 (preset cifar10_uvit_small) describes at least 44052561 weight values",
    );
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn table3_without_a_gpu_writes_the_published_grid_and_says_why() {
    let scratch = tmp("repro-table3");
    let out = scratch.join("out");
    let o = Command::new(BIN).args(["repro", "table3", "--out", &out.display().to_string()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("table3.md")).unwrap();
    assert!(md.contains("**Ours: not measured**"), "{md}");
    assert!(md.contains("| 4 | 1.23 | 1.10 | 0.98 | 0.85 | 0.99 | 1.08 |"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("table3.json")).unwrap()).unwrap();
    assert!(json["ours"].is_null());
    assert_eq!(json["paper_speedup"][3][0].as_f64(), Some(1.22));
}

#[test]
fn bench_pattern_times_the_nm_forward_beside_the_dense_one() {
    let o = Command::new(BIN).args(["bench", "--batch", "2", "--iters", "1", "--pattern", "1:8", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["pattern"].as_str(), Some("1:8"));
    let nm = r["forward_nm_ms"].as_f64().unwrap();
    assert!(nm > 0.0 && nm.is_finite(), "forward_nm_ms = {nm}");
    // The demo U-ViT's SparseDM layers: qkv, proj, fc1, fc2 of its 7 blocks.
    assert_eq!(r["nm_layers"].as_u64(), Some(28), "{r}");
    // A pattern that masks no layer (the demo's inputs are 128 and 512
    // wide) is refused before any timing: the N:M forward would be dense.
    let o = Command::new(BIN).args(["bench", "--batch", "2", "--iters", "1", "--pattern", "3:7", "--forward-only"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--pattern 3:7 with policy sparsedm-uvit masks no layer (28 selected, all left dense"), "{e}");
    // A pattern that masks layers (flat-index groups across a small DDPM
    // UNet's 32- and 64-channel convs) but that no N:M kernel takes: said
    // on stderr, no per-layer times (no 0/0 ratio in the table).
    let args = ["bench", "--config", "cifar10_ddpm", "--batch", "1", "--iters", "1", "--pattern", "5:9", "--forward-only"];
    let small =
        ["--set", "nnet.ch=32", "--set", "nnet.ch_mult=[1,2]", "--set", "nnet.num_res_blocks=1", "--set", "nnet.attn_resolutions=[]"];
    let o = Command::new(BIN).args(args).args(small).arg("--json").output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && e.contains("no layer runs on N:M kernels at 5:9 on cpu"), "{e}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["nm_layers"].as_u64(), Some(0), "{r}");
    assert!(r["nm_layers_ms"].is_null() && r["nm_layers_dense_ms"].is_null() && r["forward_nm_ms"].as_f64().unwrap() > 0.0, "{r}");
    let o = Command::new(BIN).args(args).args(small).output().unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && table.contains("0 layers on N:M kernels") && !table.contains("NaN"), "{table}");
    // Without --pattern there is no N:M forward.
    let o = Command::new(BIN).args(["bench", "--batch", "1", "--iters", "1", "--json"]).output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["forward_nm_ms"].is_null() && r["pattern"].is_null());
    // Bad patterns, and patterns a GPU has no kernel for, are one-line errors.
    let o = Command::new(BIN).args(["bench", "--pattern", "5:4"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--pattern \"5:4\""));
    let o = Command::new(BIN).args(["bench", "--pattern", "1:4", "--device", "cuda"]).env("SPARSEDM_CUDA_SIM", "1").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--pattern 1:4 on cuda:0: GPUs run N:M only as 2:4"), "{e}");
}

#[test]
fn bench_times_forward_and_training_steps() {
    let o = Command::new(BIN).args(["bench", "--batch", "2", "--iters", "1", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["forward_ms", "train_step_ms", "train_step_srste_ms"] {
        let v = r[k].as_f64().unwrap();
        assert!(v > 0.0 && v.is_finite(), "{k} = {v}");
    }
    assert_eq!(r["params"].as_u64(), Some(1_495_776));
    // PyTorch's numbers were measured at batch 64 only.
    assert!(r["peer"].is_null());
    // --forward-only: the forwards, no training steps.
    let o =
        Command::new(BIN).args(["bench", "--batch", "2", "--iters", "1", "--pattern", "1:4", "--forward-only", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["forward_ms"].as_f64().unwrap() > 0.0 && r["forward_nm_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["train_step_ms"].is_null() && r["train_step_srste_ms"].is_null(), "{r}");
    let o = Command::new(BIN).args(["bench", "--batch", "2", "--iters", "1", "--forward-only"]).output().unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && table.contains("forward ") && !table.contains("train step"), "{table}");
    let o = Command::new(BIN).args(["bench", "--iters", "1", "--device", "cuda:1"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: --device cuda:1"));
}

/// Budgets that cannot make a table and flags the table or scale would ignore are one error each,
/// before anything is written.
#[test]
fn budgets_and_flags_that_do_not_apply_are_refused() {
    let scratch = tmp("repro-flags");
    let out = scratch.join("out");
    for (args, needle) in [
        (&["table2", "--steps", "0"][..], "--steps must be at least 1"),
        (&["ablation", "--samples", "1"], "--samples 1: must be at least 2"),
        (&["ablation", "--steps", "3"], "--steps 3: the ablation's progressive row needs at least 4"),
        (&["table3", "--steps", "5"], "--steps does not apply to table3"),
        (&["table3", "--inception", "pt.safetensors"], "--inception does not apply to table3"),
        (&["table2", "--data", "data/cifar10"], "--data applies to --scale paper"),
        (&["table1", "--allow-cpu"], "--allow-cpu applies to --scale paper"),
        (&["table3", "--resume"], "--resume does not apply to table3"),
        (&["table1", "--resume"], "--resume: "),
    ] {
        let o = Command::new(BIN).arg("repro").args(args).args(["--out", &out.display().to_string()]).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with(&format!("error: {needle}")) && stderr.lines().count() == 1, "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

/// The rows of a table's JSON with what a run measures of its models (the timings left out).
fn measured_rows(out: &Path, table: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join(format!("{table}.json"))).unwrap()).unwrap();
    v["rows"].as_array().unwrap().iter().map(|r| serde_json::json!([r["label"], r["steps"], r["quality"], r["footprint"]])).collect()
}

/// Ctrl-C in `repro` stops the row in training after its step in progress, saves it and says how
/// to continue (exit 130); `--resume` continues that run and trains the rows not started, and the
/// table is the one an uninterrupted run writes, to the bit. Finished rows are kept: resumed again,
/// nothing is made anew unless what a row depends on changed (here the sampling seed). A run
/// folder of another configuration is refused on `--resume`, naming what differs.
#[cfg(unix)]
#[test]
fn an_interrupted_repro_resumes_to_the_uninterrupted_table() {
    use sparsedm_testkit::process::{ctrl_c, ended, wait_for};
    let scratch = tmp("repro-resume");
    let (a, b) = (scratch.join("a"), scratch.join("b"));
    let s = |p: &Path| p.display().to_string();
    let child = Command::new(BIN)
        .args(["repro", "table1", "--device", "cpu", "--steps", "100000", "--samples", "4", "--out", &s(&a)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The half-size row trains first; its first logged step is a sign it is under way.
    let metrics = a.join("runs").join("half").join("metrics.jsonl");
    wait_for("the half-size row's first logged step", || std::fs::read_to_string(&metrics).is_ok_and(|t| !t.is_empty()));
    ctrl_c(child.id());
    let o = ended(child);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let said = err.lines().last().unwrap();
    let step: u64 = said
        .strip_prefix("interrupted: half stopped at step ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(said.contains("of 100000") && said.contains("--resume"), "{said}");
    assert!(a.join("runs").join("half").join("checkpoints").join(format!("step_{step:08}.safetensors")).is_file(), "{said}");
    assert!(!a.join("runs").join("asp").exists(), "the ASP row had not started");

    let total = (step + 2).to_string();
    let run = |out: &Path, extra: &[&str]| {
        Command::new(BIN)
            .args(["repro", "table1", "--device", "cpu", "--steps", &total, "--samples", "4", "--out", &s(out)])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&a, &["--resume"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("half: resuming {} at step {step} of {total}", s(&a.join("runs").join("half")))), "{err}");
    assert!(!err.contains("asp: resuming"), "the ASP row starts anew: {err}");
    let o = run(&b, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(measured_rows(&a, "table1"), measured_rows(&b, "table1"), "the resumed table is the uninterrupted one");

    // Resumed once more, every finished row is kept: nothing is trained, sampled or scored
    // again, and the table is the same, its timings included.
    let rows = |out: &Path| {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("table1.json")).unwrap()).unwrap();
        v["rows"].clone()
    };
    let before = rows(&a);
    let leftovers: Vec<String> = std::fs::read_dir(a.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".samples."))
        .collect();
    assert!(leftovers.is_empty(), "a kept row's sampling progress is removed: {leftovers:?}");
    let o = run(&a, &["--resume"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.matches("kept from the earlier run (trained, sampled and scored then)").count(),
        before.as_array().unwrap().len(),
        "{err}"
    );
    assert!(!err.contains("resuming") && !err.contains("FD-px48"), "nothing is trained or scored again: {err}");
    assert_eq!(rows(&a), before);
    // Another sampling seed: every row is sampled and scored again (its training is not).
    let o = run(&a, &["--resume", "--seed", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains("kept from the earlier run (trained")
            && err.contains("half: the result kept from the earlier run is not used (it was made with other settings)"),
        "{err}"
    );
    assert!(err.contains(&format!("half: resuming {} at step {total} of {total}", s(&a.join("runs").join("half")))), "{err}");
    assert_ne!(measured_rows(&a, "table1"), measured_rows(&b, "table1"), "other noise, other scores");

    // A run folder made with another configuration is not continued.
    let stored = b.join("runs").join("asp").join("config.toml");
    let text = std::fs::read_to_string(&stored).unwrap();
    let changed = text.replace("weight_decay = 0.03", "weight_decay = 0.5");
    assert_ne!(text, changed, "the test changes the stored config");
    std::fs::write(&stored, changed).unwrap();
    let o = run(&b, &["--resume"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is a run of another configuration") && err.contains("[optimizer]"), "{err}");
}
