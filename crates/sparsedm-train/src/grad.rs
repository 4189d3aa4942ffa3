//! Gradient utilities: global-norm clipping (PyTorch's `clip_grad_norm_`)
//! and accumulation over micro-batches.

use crate::error::Result;
use sparsedm_tensor::{GradStore, Tensor};

/// The global L2 norm of the gradients of `params`.
pub fn global_norm(grads: &GradStore, params: &[(String, Tensor)]) -> Result<f32> {
    let mut total = 0f64;
    for (_, p) in params {
        if let Some(g) = grads.get(p) {
            total += g.to_vec_f32()?.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        }
    }
    Ok(total.sqrt() as f32)
}

/// Scales the gradients so their global norm is at most `max_norm`
/// (coefficient max_norm/(norm + 1e-6), clamped to 1, as PyTorch); returns
/// the norm before clipping.
pub fn clip_global_norm(grads: &mut GradStore, params: &[(String, Tensor)], max_norm: f32) -> Result<f32> {
    let norm = global_norm(grads, params)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (_, p) in params {
            if let Some(g) = grads.remove(p) {
                grads.insert(p, g.mul_scalar(coef)?);
            }
        }
    }
    Ok(norm)
}

/// Adds `from`'s gradients of `params` into `into` (micro-batch accumulation).
pub fn accumulate(into: &mut GradStore, from: GradStore, params: &[(String, Tensor)]) -> Result<()> {
    let mut from = from;
    for (_, p) in params {
        if let Some(g) = from.remove(p) {
            let sum = match into.remove(p) {
                Some(acc) => acc.add(&g)?,
                None => g,
            };
            into.insert(p, sum);
        }
    }
    Ok(())
}
