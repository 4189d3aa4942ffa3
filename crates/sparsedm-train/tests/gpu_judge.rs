//! The judge of `demo`/`repro` with InceptionV3 on a GPU: `Judge::new_on`
//! extracts the reference's and the scored images' Inception features on the
//! device (as `fid --device` does), and must score like the same judge on
//! the CPU. InceptionV3 carries the stand-in weights of the shared fixture's
//! formula (`sparsedm_fid::formula`; the real ones cannot be downloaded
//! here), so the FID values mean nothing but must agree: the device's
//! features equal the CPU's to f32 rounding (checked to 1e-4 by
//! `sparsedm-cli`'s `gpu_fid_stats_equal_the_cpu_statistics`), and the
//! Fréchet distance of the same images amplifies that a little, hence
//! 1e-5 relative (observed on the simulator: 1e-9). FD-px does not use the
//! network: equal to rounding.
//!
//! Runs on a GPU, or on the CUDA simulator in CI (`SPARSEDM_CUDA_SIM=1`),
//! with two reference and two scored images (Inception at 299×299 is slow
//! simulated: about 40 s on 2 cores);
//! skipped without either unless `SPARSEDM_REQUIRE_GPU=1`.

use sparsedm_kernels::testing::gpu_or_skip;
use sparsedm_tensor::Device;
use sparsedm_train::RunConfig;
use sparsedm_train::data::DatasetImages;
use sparsedm_train::experiment::Judge;

#[test]
fn gpu_judge_scores_like_the_cpu_judge() {
    let Some(gpu) = gpu_or_skip("gpu_judge_scores_like_the_cpu_judge") else { return };
    // The GPU bundle runs this executable without the build tree: SPARSEDM_TEST_TMP names its scratch folder.
    let root = std::env::var_os("SPARSEDM_TEST_TMP").map_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")), Into::into);
    let dir = sparsedm_testkit::Scratch::in_dir(root, "gpu-judge");
    let weights = dir.join("inception-formula.safetensors");
    sparsedm_fid::formula::write_formula_inception(&weights).unwrap();
    let data = sparsedm_train::build::dataset(&RunConfig::load("demo_shapes_uvit", &[]).unwrap()).unwrap();
    let score = |device: Device| {
        let judge = Judge::new_on(data.as_ref(), 2, Some(&weights), device).unwrap();
        assert!(judge.has_fid());
        judge.score(&DatasetImages::range(data.as_ref(), 2, 2)).unwrap()
    };
    let (cpu, dev) = (score(Device::Cpu), score(Device::Cuda(gpu.ordinal())));
    let (fc, fg) = (cpu.fid.unwrap(), dev.fid.unwrap());
    eprintln!("FID {fg} on the device, {fc} on the CPU; FD-px {} and {}", dev.fd_px, cpu.fd_px);
    assert!(fc.is_finite() && fc > 0.0, "FID of other images than the reference: {fc}");
    assert!((fg - fc).abs() <= 1e-5 * fc, "FID {fg} on the device, {fc} on the CPU");
    assert!((dev.fd_px - cpu.fd_px).abs() <= 1e-9 * cpu.fd_px.max(1.0), "FD-px {} vs {}", dev.fd_px, cpu.fd_px);
}
