//! `sparsedm-diffusion`: the two model families of the SparseDM paper
//! (U-ViT and the DDPM UNet), built from `sparsedm-layers` so that every
//! Linear/Conv2d can carry an N:M sparsity; the noise schedules and
//! samplers they were trained and evaluated with; and MAC counting.

pub mod error;
pub mod model;

pub use error::{DiffusionError, Result};
pub use model::EpsModel;
