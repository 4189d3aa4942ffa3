//! `Linear` (y = x Wᵀ + b, PyTorch layout `[out, in]`) with an optional N:M
//! sparsity on its weight through a [`SparseSlot`].
//!
//! The slot is the one owner of the weight: the layer keeps no copy of its
//! own, so there is a single handle to reason about when a mode prunes the
//! weight in place or a checkpoint overwrites it (the [`ParamStore`] entry
//! `weight` is the same variable, registered under its state-dict name).

use crate::nn::deployed;
use crate::nn::init::Init;
use crate::nn::norm::LayerNorm;
use crate::nn::sparse::SparseSlot;
use crate::{LayersError, ParamStore};
use sparsedm_tensor::Tensor;

/// A fully connected layer.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Owns the weight `[out, in]` and its sparsity.
    slot: SparseSlot,
    bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default init (U(±1/√in) for weight and bias).
    pub fn new(store: &ParamStore, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self, LayersError> {
        Self::with_init(store, in_dim, out_dim, bias, Init::DefaultFanIn(in_dim), Init::DefaultFanIn(in_dim))
    }

    /// With explicit initialisers (e.g. U-ViT's trunc-normal(0.02) and zero bias).
    pub fn with_init(store: &ParamStore, in_dim: usize, out_dim: usize, bias: bool, w: Init, b: Init) -> Result<Self, LayersError> {
        let weight = store.param("weight", &[out_dim, in_dim], w)?;
        let bias = if bias { Some(store.param("bias", &[out_dim], b)?) } else { None };
        let slot = SparseSlot::new(weight, store.training_flag())?;
        store.register_sparse(slot.clone());
        Ok(Linear { slot, bias })
    }

    /// `x` of shape `[..., in]` to `[..., out]`. Without grad mode and with
    /// an N:M deployed weight this runs the N:M kernels on the weight
    /// compressed once (see `nn/deployed.rs`); otherwise the dense product
    /// with the mode's effective weight.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayersError> {
        if let Some(y) = deployed::linear_forward(&self.slot, x, self.bias.as_ref())? {
            return Ok(y);
        }
        let w = self.slot.effective_weight()?;
        Ok(x.linear(&w, self.bias.as_ref())?)
    }

    /// `self(cat(parts, -1))`, e.g. U-ViT's long-skip Linear on `[x,
    /// skip]`: one product per part added into the output
    /// ([`Tensor::linear_cat`]), so the concatenation is never copied (nor
    /// its gradient split), except for a deployed layer, whose kernels read
    /// one input.
    pub fn forward_cat(&self, parts: &[&Tensor]) -> Result<Tensor, LayersError> {
        if let Some(y) = deployed::linear_forward_cat(&self.slot, parts, self.bias.as_ref())? {
            return Ok(y);
        }
        let w = self.slot.effective_weight()?;
        Ok(Tensor::linear_cat(parts, &w, self.bias.as_ref())?)
    }

    /// `fc2(gelu(self(x)))`, timm's `Mlp` with `self` as `fc1`. When both
    /// layers deploy N:M weights on the CPU (no grad mode) this is one
    /// call of the N:M MLP, which fuses the layers and the GELU tile by
    /// tile where that is faster (see `nn/deployed.rs`); otherwise the
    /// three ops in turn.
    pub fn gelu_mlp(&self, fc2: &Linear, x: &Tensor) -> Result<Tensor, LayersError> {
        if let Some(y) = deployed::gelu_mlp_forward(&self.slot, self.bias.as_ref(), &fc2.slot, fc2.bias.as_ref(), x, None, None)? {
            return Ok(y);
        }
        fc2.forward(&self.forward(x)?.gelu()?)
    }

    /// `residual + self(norm(x))`, a pre-norm block's layer (either part
    /// optional). When the layer deploys an N:M weight on the CPU (no grad
    /// mode) the norm and the residual go into the N:M call, which fuses
    /// them where its kernel can (`sparsedm_tensor::nm_cpu::NmFuse`);
    /// otherwise the ops run in turn. Same values either way.
    pub fn forward_fused(&self, x: &Tensor, norm: Option<&LayerNorm>, residual: Option<&Tensor>) -> Result<Tensor, LayersError> {
        if let Some(y) = deployed::linear_forward_fused(&self.slot, x, self.bias.as_ref(), norm.map(LayerNorm::params), residual)? {
            return Ok(y);
        }
        in_turn(x, norm, residual, |h| self.forward(h))
    }

    /// `residual + fc2(gelu(self(norm(x))))`: [`Linear::gelu_mlp`] in a
    /// pre-norm block (either part optional), fused into the N:M MLP call
    /// where both layers deploy N:M weights on the CPU.
    pub fn gelu_mlp_fused(
        &self,
        fc2: &Linear,
        x: &Tensor,
        norm: Option<&LayerNorm>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor, LayersError> {
        let params = norm.map(LayerNorm::params);
        if let Some(y) = deployed::gelu_mlp_forward(&self.slot, self.bias.as_ref(), &fc2.slot, fc2.bias.as_ref(), x, params, residual)? {
            return Ok(y);
        }
        in_turn(x, norm, residual, |h| self.gelu_mlp(fc2, h))
    }

    /// The dense weight variable (held by the slot).
    pub fn weight(&self) -> &Tensor {
        self.slot.weight()
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    pub fn slot(&self) -> &SparseSlot {
        &self.slot
    }
    pub fn in_dim(&self) -> usize {
        self.slot.layout().inp()
    }
    pub fn out_dim(&self) -> usize {
        self.slot.layout().out()
    }
}

/// `residual + f(norm(x))` as separate ops (either part optional): what the
/// fused calls compute when nothing is deployed N:M on the CPU.
fn in_turn(
    x: &Tensor,
    norm: Option<&LayerNorm>,
    residual: Option<&Tensor>,
    f: impl FnOnce(&Tensor) -> Result<Tensor, LayersError>,
) -> Result<Tensor, LayersError> {
    let y = match norm {
        Some(n) => f(&n.forward(x)?)?,
        None => f(x)?,
    };
    Ok(match residual {
        Some(r) => r.add(&y)?,
        None => y,
    })
}
