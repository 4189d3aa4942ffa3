//! The contract between networks and samplers/trainers: an ε-prediction
//! network evaluated at *model time*.

use crate::error::Result;
use sparsedm_tensor::{Rng, Tensor};

/// A noise-prediction network.
///
/// `t` is the model time of each sample, `[B]` f32: `999·t` for the
/// continuous VP schedules U-ViT was trained with, the integer step index
/// (as f32) for discrete DDPM schedules. The schedule converts its own time
/// to model time, so samplers never need to know which network they drive.
pub trait EpsModel: Send + Sync {
    /// ε̂(x_t, t, y) for `x` `[B, C, H, W]`, `t` `[B]` and optional class
    /// labels `y` `[B]` (i64).
    fn predict_eps(&self, x: &Tensor, t: &Tensor, y: Option<&Tensor>) -> Result<Tensor>;

    /// Installs the generator that dropout layers draw from while the
    /// model's store is in training mode (`None`: no dropout). Trainers set
    /// a stream derived from (seed, step) before each step, so a resumed
    /// run draws the same masks. Models without dropout ignore it.
    fn set_dropout_rng(&self, rng: Option<Rng>) {
        let _ = rng;
    }
}
