//! The tiny DDPM UNet shipped for `repro --scale tiny`'s UNet family
//! (assets/demo_shapes_unet_dense.safetensors): it loads strictly into the
//! `demo_shapes_unet` preset's UNet, and its samples are close to the
//! shapes dataset — far closer than an untrained model's (the negative
//! control), and within a small factor of what the same number of real
//! images scores. The grid of its samples is written beside the test's
//! temporary files for a look.

use sparsedm_train::experiment::{DrawSpec, Judge, draw};
use sparsedm_train::samples::write_labelled_grid_png;
use sparsedm_train::{RunConfig, build};

const ASSET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo_shapes_unet_dense.safetensors");

#[test]
fn shipped_unet_loads_and_draws_the_dataset() {
    let cfg = RunConfig::load("demo_shapes_unet", &[]).unwrap();
    assert_eq!(cfg.arch, "ddpm-unet");
    let meta = sparsedm_tensor::load_safetensors_metadata(ASSET).unwrap();
    assert_eq!(meta.get("sparsedm.kind").map(String::as_str), Some("model"));
    let step: u64 = meta["sparsedm.step"].parse().unwrap();
    assert!(step >= 500, "shipped UNet trained only {step} steps");
    assert!(std::fs::metadata(ASSET).unwrap().len() < 3_000_000, "the asset should stay small");

    let trained = build::frozen_model(&cfg, ASSET).unwrap();
    let untrained = build::new_model(&cfg, 7).unwrap();
    let data = build::dataset(&cfg).unwrap();
    let n = 64;
    let judge = Judge::new(data.as_ref(), data.len() - n, None).unwrap();
    let floor = judge.real_floor(data.as_ref(), data.len() - n, n).unwrap().fd_px;
    let schedule = build::schedule(&cfg).unwrap();
    let spec = DrawSpec { n, sampler: cfg.sample.sampler, steps: cfg.sample.steps, seed: 3, clip_denoised: cfg.sample.clip_denoised };
    let imgs = draw(&trained, schedule.as_ref(), &spec).unwrap();
    let grid = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shipped_unet_samples.png");
    write_labelled_grid_png(&grid, &imgs, 8, "shipped tiny UNet").unwrap();
    let good = judge.score(&imgs).unwrap().fd_px;
    let bad = judge.score(&draw(&untrained, schedule.as_ref(), &spec).unwrap()).unwrap().fd_px;
    eprintln!("FD-px48: shipped UNet {good:.4}, untrained {bad:.4}, {n} held-out real images {floor:.4}; samples in {}", grid.display());
    assert!(bad > 5.0 * good, "the untrained control ({bad}) should be far worse than the shipped model ({good})");
    assert!(good < 4.0 * floor.max(0.05), "shipped UNet {good} vs real-data floor {floor}");
}
