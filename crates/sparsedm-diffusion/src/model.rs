//! The contract between networks and samplers/trainers: an ε-prediction
//! network evaluated at *model time*.

use crate::error::Result;
use sparsedm_tensor::Tensor;

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
}
