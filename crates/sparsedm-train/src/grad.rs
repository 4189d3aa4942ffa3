//! Gradient utilities: global-norm clipping (PyTorch's `clip_grad_norm_`)
//! and accumulation over micro-batches.

use crate::error::Result;
use sparsedm_tensor::{GradStore, Tensor, no_grad};

/// The global L2 norm of the gradients of `params`. The sum of squares is
/// formed by tensor ops on the gradients' device and only the total comes
/// back to the host, so a GPU run moves one number per step, not every
/// gradient.
pub fn global_norm(grads: &GradStore, params: &[(String, Tensor)]) -> Result<f32> {
    let _g = no_grad();
    let mut total: Option<Tensor> = None;
    for (_, p) in params {
        if let Some(g) = grads.get(p) {
            let sq = g.sum_sq_all()?;
            total = Some(match total {
                Some(t) => t.add(&sq)?,
                None => sq,
            });
        }
    }
    Ok(match total {
        Some(t) => t.to_scalar()?.sqrt(),
        None => 0.0,
    })
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
