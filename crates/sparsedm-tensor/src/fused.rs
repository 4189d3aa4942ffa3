//! Fused, in-place training updates and the N:M magnitude mask for tensors
//! on a GPU.
//!
//! A training step on a GPU must not move parameters through host memory:
//! [`Tensor::update_f32`] runs a host closure, so on a CUDA tensor it
//! downloads and uploads every parameter and both AdamW moments each step.
//! The methods here run the fused kernels of `sparsedm-kernels` instead
//! (one kernel per parameter, buffers rewritten in place). They reproduce
//! the CPU arithmetic of `sparsedm-train`'s AdamW and EMA operation by
//! operation (see `kernels/optim.cu`), so a GPU update equals the CPU's for
//! the same inputs.
//!
//! They accept CUDA tensors only: the CPU updates stay where they are
//! (parallel loops over host slices in `sparsedm-train`, masks in
//! `sparsedm-layers`' `mask.rs`), and a CPU tensor here is an
//! [`Error::InvalidArgument`] saying so. Builds without the `cuda` feature
//! have no CUDA tensors, so every call is that error.

use crate::{Error, Result, Tensor};

/// The per-step scalars of one AdamW update (PyTorch's `torch.optim.AdamW`,
/// amsgrad off): `p ← p·decay; m ← m + (1−β₁)(g − m); v ← β₂v + (1−β₂)g²;
/// p ← p − step_size·m / (√v / bc2_sqrt + ε)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    /// Learning rate of this step (already folded into `decay` and `step_size`).
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 − lr·weight_decay` (decoupled weight decay).
    pub decay: f32,
    /// `lr / (1 − β₁ᵗ)`, computed in f64 and rounded to f32.
    pub step_size: f32,
    /// `√(1 − β₂ᵗ)`, computed in f64 and rounded to f32.
    pub bc2_sqrt: f32,
}

impl AdamWScalars {
    /// The scalars of step `t` (1-based), with the CPU optimizer's arithmetic.
    pub fn new(lr: f32, betas: (f32, f32), eps: f32, weight_decay: f32, t: u64) -> Self {
        let t = t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (betas.0 as f64).powi(t);
        let bc2_sqrt = (1.0 - (betas.1 as f64).powi(t)).sqrt();
        AdamWScalars {
            lr,
            beta1: betas.0,
            beta2: betas.1,
            eps,
            decay: 1.0 - lr * weight_decay,
            step_size: (lr as f64 / bc1) as f32,
            bc2_sqrt: bc2_sqrt as f32,
        }
    }
}

fn cpu_refused(op: &'static str, what: &str) -> Error {
    Error::invalid(op, format!("CUDA tensors only (a fused device kernel); {what}"))
}

impl Tensor {
    /// One AdamW step on this parameter, in place on its GPU: `self`, the
    /// first moment `exp_avg` and the second moment `exp_avg_sq` are
    /// rewritten from `grad` by one fused kernel. Not recorded in the graph.
    ///
    /// `self`, `exp_avg` and `exp_avg_sq` must be f32, contiguous from the
    /// start of their own (distinct) buffers; `grad` may be any f32 view of
    /// the same shape. All four must be on the same GPU.
    ///
    /// # Errors
    /// A CPU tensor (the CPU update is `sparsedm-train`'s AdamW), mismatched
    /// devices, shapes or dtypes, a non-contiguous target, or a failed launch.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn adamw_step_(&self, grad: &Tensor, exp_avg: &Tensor, exp_avg_sq: &Tensor, scalars: &AdamWScalars) -> Result<()> {
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            return crate::cuda::fused::adamw_step(self, grad, exp_avg, exp_avg_sq, scalars);
        }
        Err(cpu_refused("adamw_step_", "CPU parameters are updated by sparsedm-train's AdamW"))
    }

    /// `self ← decay·self + (1 − decay)·value`, in place on this tensor's GPU
    /// (one fused kernel): the EMA of model weights. `self` must be f32 and
    /// contiguous from the start of its buffer; `value` any f32 view of the
    /// same shape on the same GPU. Not recorded in the graph.
    ///
    /// # Errors
    /// A CPU tensor (the CPU update is `sparsedm-train`'s `Ema`), mismatched
    /// devices, shapes or dtypes, a non-contiguous target, or a failed launch.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn ema_update_(&self, value: &Tensor, decay: f32) -> Result<()> {
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            return crate::cuda::fused::ema_update(self, value, decay);
        }
        Err(cpu_refused("ema_update_", "CPU averages are updated by sparsedm-train's Ema"))
    }

    /// The grouped `n:m` magnitude mask of this weight `[out, in, …]`
    /// (Linear `[out, in]`, Conv2d `[out, in, kh, kw]`), computed on its
    /// GPU: 1.0 for the `n` largest `|w|` of every `m` consecutive input
    /// channels at each output and kernel position, 0.0 elsewhere; ties go
    /// to the earlier channel, NaN counts as largest. This is exactly the
    /// grouped rule of `sparsedm-layers`' `mask.rs`; the other groupings
    /// (flat-index, transposable) are computed there. The result is an
    /// untracked f32 tensor of the weight's shape on the same GPU.
    ///
    /// # Errors
    /// A CPU tensor (use `sparsedm_layers::compute_mask`), a rank below 2,
    /// a pattern outside `1 ≤ n ≤ m ≤ 32`, an input dimension that is not
    /// a multiple of `m`, or a failed launch.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn nm_mask(&self, n: usize, m: usize) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            return crate::cuda::fused::nm_mask(self, n, m);
        }
        Err(cpu_refused("nm_mask", "CPU masks are computed by sparsedm-layers' mask.rs"))
    }
}
