//! `sparsedm repro table3` on a GPU: before timing anything it runs the model's own U-ViT block
//! (`uvit.rs`) with 2:4 qkv, proj, fc1 and fc2 deployed through cuSPARSELt against the dense
//! masked block, and fails if they differ. On the CUDA simulator (`SPARSEDM_CUDA_SIM=1`, CI) that
//! check is the whole run — timing is refused there — and the published grid is written with the
//! reason; on a real GPU the full grid is timed by the GPU bundle's `repro-table3` step instead
//! (minutes), so this test only runs on the simulator.

use sparsedm_kernels::testing::gpu_or_skip;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sparsedm");

#[test]
fn gpu_table3_checks_the_model_block_and_refuses_simulated_timing() {
    let Some(gpu) = gpu_or_skip("gpu_table3_checks_the_model_block_and_refuses_simulated_timing") else { return };
    if !gpu.is_simulated() {
        eprintln!("skipped on a real GPU: the GPU bundle times the whole grid (repro-table3)");
        return;
    }
    let scratch = sparsedm_testkit::Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), "gpu-table3");
    let out = scratch.join("out");
    let o = Command::new(BIN)
        .args(["repro", "table3", "--device", "cuda", "--out", &out.display().to_string()])
        .env("SPARSEDM_CUDA_SIM", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("table3 block check") && stderr.contains("(4 layers, 4 compressions) matches the dense masked block"),
        "{stderr}"
    );
    let md = std::fs::read_to_string(out.join("table3.md")).unwrap();
    assert!(md.contains("**Ours: not measured**") && md.contains("refuses timing"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("table3.json")).unwrap()).unwrap();
    assert!(json["ours"].is_null());
}
