//! The tiny-scale setup that `sparsedm demo` and `sparsedm repro --scale
//! tiny` share — the dense model's preset, its shipped checkpoint and the
//! fine-tuning schedule — kept here so neither command imports the other.

use anyhow::Result;
use sparsedm_train::RunConfig;

/// The dense model's preset.
pub const DEMO_PRESET: &str = "demo_shapes_uvit";
/// The shipped dense checkpoint of [`DEMO_PRESET`] (EMA weights, f16; provenance in assets/README.md).
pub const DEMO_DENSE_CHECKPOINT: &[u8] = include_bytes!("../assets/demo_shapes_uvit_dense.safetensors");
/// The tiny DDPM UNet's preset (the UNet family of `repro --scale tiny`).
pub const DEMO_UNET_PRESET: &str = "demo_shapes_unet";
/// The shipped dense checkpoint of [`DEMO_UNET_PRESET`] (EMA weights, f16; provenance in assets/README.md).
pub const DEMO_UNET_DENSE_CHECKPOINT: &[u8] = include_bytes!("../assets/demo_shapes_unet_dense.safetensors");
/// A command's `--help` epilogue: its examples, then every built-in preset (from the presets
/// themselves, so a new preset cannot be missing from the list).
pub fn help_with_presets(examples: &str) -> String {
    format!("{examples}\n\nPresets: {}", sparsedm_train::config::preset_names())
}

/// Fine-tuning learning rate (the preset's pre-training rate is higher).
pub const FINETUNE_LR: f32 = 2e-4;
/// Fine-tuning warm-up steps (short: fine-tuning starts from trained weights).
pub const FINETUNE_WARMUP_STEPS: u64 = 10;

/// [`DEMO_PRESET`] with the fine-tuning rate and warm-up: the base of every
/// tiny-scale row.
pub fn demo_finetune_base() -> Result<RunConfig> {
    finetune_base(DEMO_PRESET)
}

/// `preset` with the fine-tuning rate and warm-up (see [`demo_finetune_base`]).
pub fn finetune_base(preset: &str) -> Result<RunConfig> {
    let mut cfg = RunConfig::load(preset, &[])?;
    cfg.optimizer.lr = FINETUNE_LR;
    cfg.lr_scheduler.warmup_steps = FINETUNE_WARMUP_STEPS;
    cfg.validate()?;
    Ok(cfg)
}
