//! SparseDM's knowledge-transfer loss (MODELS_AND_METHOD §7.3,
//! `train_c10_lsm3.py`):
//!
//! ```text
//! L = w_diff · mean((ε − ε̂)²) + w_kt · mean((ε_teacher − ε̂)²)
//! ```
//!
//! ε is the noise that made x_t, ε̂ the sparse student's prediction and
//! ε_teacher the prediction of a frozen teacher on the **same** x_t and t
//! (the dense pre-trained model, or an earlier sparse checkpoint when
//! chaining toward high sparsity). The paper's code weighs the terms 1.0
//! and 0.1 ([`KtLoss::default`]); its commented-out alternatives (0.01 and
//! 1.0, or 1.0 and 1.0) are one [`KtLoss::new`] away. Both means run over
//! every element, which for equal-sized samples is the reference's mean
//! over C·H·W then over the batch.
//!
//! The teacher's output is detached here, so no gradient ever reaches the
//! teacher (the reference did not detach it; it only kept the teacher out
//! of the optimizer, so its gradients piled up unused). The student's
//! gradient is the same either way.

use crate::LayersError;
use sparsedm_tensor::Tensor;

type Result<T> = std::result::Result<T, LayersError>;

/// The loss weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KtLoss {
    /// Weight of the diffusion term mean((ε − ε̂)²).
    pub w_diff: f32,
    /// Weight of the knowledge-transfer term mean((ε_teacher − ε̂)²).
    pub w_kt: f32,
}

impl Default for KtLoss {
    /// The paper's code: 1.0 and 0.1.
    fn default() -> Self {
        KtLoss { w_diff: 1.0, w_kt: 0.1 }
    }
}

/// The loss of one batch: the differentiable total and, for logging, both
/// unweighted terms.
#[derive(Debug, Clone)]
pub struct KtLossValue {
    /// `w_diff · diffusion + w_kt · transfer`, a scalar to call `backward` on.
    pub total: Tensor,
    /// mean((ε − ε̂)²), unweighted.
    pub diffusion: f32,
    /// mean((ε_teacher − ε̂)²), unweighted; `None` without a teacher.
    pub transfer: Option<f32>,
}

impl KtLoss {
    /// Weights checked to be finite and non-negative.
    ///
    /// # Errors
    /// [`LayersError::InvalidArgument`] otherwise, or when both are zero.
    pub fn new(w_diff: f32, w_kt: f32) -> Result<Self> {
        for (name, w) in [("w_diff", w_diff), ("w_kt", w_kt)] {
            if !w.is_finite() || w < 0.0 {
                return Err(LayersError::InvalidArgument {
                    what: "knowledge-transfer loss".into(),
                    msg: format!("{name} must be finite and >= 0, got {w}"),
                });
            }
        }
        if w_diff == 0.0 && w_kt == 0.0 {
            return Err(LayersError::InvalidArgument {
                what: "knowledge-transfer loss".into(),
                msg: "w_diff and w_kt are both 0: the loss would be constant".into(),
            });
        }
        Ok(KtLoss { w_diff, w_kt })
    }

    /// The loss for noise `eps`, student prediction `eps_hat` and teacher
    /// prediction `eps_teacher` (all of one shape). The teacher prediction
    /// is detached. Without a teacher the loss is the plain diffusion loss
    /// `w_diff · mean((ε − ε̂)²)`, which needs `w_kt == 0`.
    ///
    /// # Errors
    /// [`LayersError::InvalidArgument`] for tensors of different shapes
    /// (broadcasting would silently change the loss), an empty batch, or a
    /// missing teacher with `w_kt > 0`; tensor errors.
    pub fn compute(&self, eps: &Tensor, eps_hat: &Tensor, eps_teacher: Option<&Tensor>) -> Result<KtLossValue> {
        let bad = |msg: String| LayersError::InvalidArgument { what: "knowledge-transfer loss".into(), msg };
        if eps.shape() != eps_hat.shape() {
            return Err(bad(format!("noise {:?} and prediction {:?} differ in shape", eps.shape(), eps_hat.shape())));
        }
        if eps_hat.elem_count() == 0 {
            return Err(bad("empty batch".into()));
        }
        let diffusion = eps.sub(eps_hat)?.sqr()?.mean_all()?;
        let diffusion_value = diffusion.to_vec_f32()?.first().copied().unwrap_or(f32::NAN);
        let mut total = diffusion.mul_scalar(self.w_diff)?;
        let transfer = match eps_teacher {
            Some(teacher) => {
                if teacher.shape() != eps_hat.shape() {
                    return Err(bad(format!(
                        "teacher prediction {:?} and student prediction {:?} differ in shape",
                        teacher.shape(),
                        eps_hat.shape()
                    )));
                }
                let kt = teacher.detach().sub(eps_hat)?.sqr()?.mean_all()?;
                let value = kt.to_vec_f32()?.first().copied().unwrap_or(f32::NAN);
                total = total.add(&kt.mul_scalar(self.w_kt)?)?;
                Some(value)
            }
            None if self.w_kt != 0.0 => {
                return Err(bad(format!("w_kt = {} needs a teacher prediction", self.w_kt)));
            }
            None => None,
        };
        Ok(KtLossValue { total, diffusion: diffusion_value, transfer })
    }
}
