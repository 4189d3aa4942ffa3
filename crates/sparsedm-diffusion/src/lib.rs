//! `sparsedm-diffusion`: the two model families of the SparseDM paper
//! (U-ViT and the DDPM UNet), built from `sparsedm-layers` so that every
//! Linear/Conv2d can carry an N:M sparsity; the noise schedules and
//! samplers they were trained and evaluated with; and MAC counting.
//!
//! - [`uvit`]: U-ViT (baofff/U-ViT `libs/uvit.py`) and its presets.
//! - [`unet`]: Ho et al.'s DDPM UNet (pesser/pytorch_diffusion `model.py`).
//! - [`registry`]: [`Arch`] and [`build_model`], building either from the
//!   reference constructor's kwargs as JSON.
//! - [`checkpoint`]: strict safetensors loading by state-dict name.
//! - [`macs`]: per-layer multiply–accumulate counts, N:M-aware.
//! - [`diffprune`]: Diff-Pruning, structural pruning of either family to a
//!   MAC target (a smaller dense model whose config carries its widths).
//! - [`permutable`]: which input channels apex ASP's channel permutations may reorder.

pub mod cfg;
pub mod checkpoint;
pub mod diffprune;
pub mod error;
pub mod macs;
pub mod model;
pub mod onnx;
pub mod permutable;
pub mod registry;
pub mod sampler;
pub mod schedule;
pub mod unet;
pub mod uvit;

pub use cfg::ClassifierFreeGuidance;
pub use checkpoint::{load_checkpoint, load_checkpoint_for_eval, save_checkpoint};
pub use error::{DiffusionError, Result};
pub use macs::{MacEntry, MacKind, MacReport};
pub use model::EpsModel;
pub use permutable::channel_plan;
pub use registry::{Arch, MODEL_METADATA_KEY, ModelConfig, build_model};
pub use sampler::{SamplerKind, SamplerOptions, sample};
pub use schedule::{DiscreteSchedule, NoiseSchedule, ScheduleKind, VpCosine, VpLinear};
pub use unet::{UNet, UNetConfig};
pub use uvit::{UViT, UViTConfig};
