//! `sparsedm demo` through the real binary with tiny budgets: the table has
//! the four methods, the report, the readable grids and the side-by-side
//! figure are written, and the three sparse checkpoints are valid 2:4
//! (checked on read); `--pretrain-steps`
//! trains the dense model instead of using the shipped one; `--device cuda`
//! in a CPU-only build is one clear error.

use sparsedm_testkit::Scratch;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sparsedm");

#[test]
fn demo_with_tiny_budgets_writes_table_report_grids_and_valid_2of4_checkpoints() {
    let scratch = Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), "demo");
    let out = scratch.join("out");
    let o =
        Command::new(BIN).args(["demo", "--out", &out.display().to_string(), "--steps-finetune", "2", "--samples", "8"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for method in ["dense", "SparseDM", "STE", "ASP"] {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("| {method} "))), "no table row for {method}:\n{stdout}");
    }
    assert!(stdout.contains("FD-px48"), "{stdout}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("not FID"), "{report}");
    for grid in ["samples_dense.png", "samples_sparsedm.png", "samples_ste.png", "samples_asp.png"] {
        let bytes = std::fs::read(out.join(grid)).unwrap_or_else(|e| panic!("{grid}: {e}"));
        assert!(bytes.starts_with(b"\x89PNG"), "{grid} is not a PNG");
        assert!(report.contains(grid), "report.md does not link {grid}");
        // 8 samples of 16 px in 3 columns, each shown at 64 px.
        let (w, h) = png_size(&out.join(grid));
        assert!(w >= 3 * 64 && h >= 3 * 64, "{grid} is {w}x{h}");
    }
    // The same noise through the four models, side by side.
    let (w, h) = png_size(&out.join("compare.png"));
    assert!(w >= 4 * 64 && h >= 6 * 64, "compare.png is {w}x{h}");
    assert!(report.contains("](compare.png)"), "report.md does not embed compare.png");
    assert!(out.join("dense.safetensors").is_file());
    for ckpt in ["sparsedm.safetensors", "ste.safetensors", "asp.safetensors"] {
        let (_, spec) = sparsedm_layers::read_sparse_checkpoint(out.join(ckpt)).unwrap_or_else(|e| panic!("{ckpt}: {e}"));
        assert!(!spec.layers.is_empty(), "{ckpt}: no sparse layers");
        assert!(spec.layers.values().all(|l| l.pattern == "2:4"), "{ckpt}: {:?}", spec.layers);
    }
    // Every checkpoint carries its run config: `macs` reads each without
    // --arch/--config and counts the MACs of its table row, and the dense
    // one samples like the others.
    for (ckpt, method) in [("dense", "dense"), ("sparsedm", "SparseDM"), ("ste", "STE"), ("asp", "ASP")] {
        let o = Command::new(BIN).args(["macs", "--checkpoint"]).arg(out.join(format!("{ckpt}.safetensors"))).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "macs {ckpt}: {}", String::from_utf8_lossy(&o.stderr));
        let total = text.lines().find_map(|l| l.split("(paper total):").nth(1)).unwrap_or_else(|| panic!("macs {ckpt}: {text}"));
        let giga: f64 = total.trim().trim_end_matches('G').trim().parse().unwrap();
        let row = stdout.lines().find(|l| l.starts_with(&format!("| {method} "))).unwrap();
        let mega: f64 = row.split('|').nth(4).unwrap().split('(').next().unwrap().trim().parse().unwrap();
        assert!((giga * 1e3 - mega).abs() <= 0.06, "{ckpt}: macs says {giga} G, the demo's table {mega} M\n{text}");
    }
    let npz = out.join("dense-samples.npz");
    let o = Command::new(BIN)
        .args(["sample", "--checkpoint"])
        .arg(out.join("dense.safetensors"))
        .args(["--n", "2", "--steps", "2", "--out"])
        .arg(&npz)
        .output()
        .unwrap();
    assert!(o.status.success() && npz.is_file(), "sample dense.safetensors: {}", String::from_utf8_lossy(&o.stderr));
    // It says how long the sampling took.
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.lines().any(|l| l.starts_with("wrote 2 images") && l.ends_with(" images/s)")), "{said}");
    // The sampling column: each row's time and its speed-up over the dense row
    // (1.00x for the dense row itself); the N:M layers' calls while sampling
    // (one forward per DPM-Solver++(2M) step, 25 in all, one batch of 8):
    // 28 layers for SparseDM and STE, ASP's 31, on the kernels or the GEMM.
    assert!(stdout.lines().any(|l| l.starts_with("| method ") && l.trim_end().ends_with("| sampling (s) |")), "{stdout}");
    let ratio = |method: &str| -> f64 {
        let row = stdout.lines().find(|l| l.starts_with(&format!("| {method} "))).unwrap();
        let cell = row.trim_end().trim_end_matches('|').rsplit('|').next().unwrap();
        cell.trim().split('(').nth(1).and_then(|r| r.strip_suffix("x)")).unwrap_or_else(|| panic!("{row}")).parse().unwrap()
    };
    assert_eq!(ratio("dense"), 1.0);
    for m in ["SparseDM", "STE", "ASP"] {
        assert!(ratio(m) > 0.0, "{m}");
    }
    for (label, layers) in [("SparseDM 2:4", 28), ("STE 2:4", 28), ("ASP 2:4", 31)] {
        let line = stderr.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("no {label} line:\n{stderr}"));
        let calls = line.split(" N:M layer calls on the N:M kernels, ").collect::<Vec<_>>();
        let kernels: u64 = calls[0].rsplit('(').next().unwrap().parse().unwrap_or_else(|_| panic!("{line}"));
        let gemm: u64 = calls[1].split(' ').next().unwrap().parse().unwrap();
        assert_eq!(kernels + gemm, layers * 25, "{line}");
    }
    let dense = stderr.lines().find(|l| l.trim_start().starts_with("dense ")).unwrap();
    assert!(!dense.contains("N:M layer calls"), "{dense}");
    // The dense row has no zeros; the sparse rows have many.
    let dense = stdout.lines().find(|l| l.starts_with("| dense ")).unwrap();
    assert!(dense.contains(" 0.0%"), "{dense}");
    let row = stdout.lines().find(|l| l.starts_with("| SparseDM ")).unwrap();
    assert!(!row.contains(" 0.0%"), "{row}");
}

/// Width and height of a PNG file (from its IHDR chunk).
fn png_size(path: &std::path::Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.starts_with(b"\x89PNG\r\n\x1a\n") && &b[12..16] == b"IHDR", "{} is not a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

#[test]
fn demo_can_pretrain_its_own_dense_model() {
    let scratch = Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), "demo-pretrain");
    let out = scratch.join("out");
    let o = Command::new(BIN)
        .args(["demo", "--out", &out.display().to_string(), "--pretrain-steps", "3", "--steps-finetune", "1", "--samples", "4"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "demo failed\n{stderr}");
    assert!(stderr.contains("pre-training the dense U-ViT"), "{stderr}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("pre-trained here for 3 steps"), "{report}");
    // The exported dense model differs from the shipped one.
    let dense = std::fs::read(out.join("dense.safetensors")).unwrap();
    let shipped = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo_shapes_uvit_dense.safetensors")).unwrap();
    assert_ne!(dense, shipped);
}

#[test]
fn demo_on_cuda_without_a_gpu_backend_is_one_clear_error() {
    let scratch = Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), "demo-cuda");
    let out = scratch.join("out");
    let o = Command::new(BIN).args(["demo", "--out", &out.display().to_string(), "--device", "cuda"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: --device cuda:") && stderr.contains("CUDA"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
