//! Normalisation layers with PyTorch's parameter names (`weight`, `bias`,
//! `running_mean`, `running_var`).

use crate::nn::init::Init;
use crate::{LayersError, ParamStore};
use sparsedm_tensor::Tensor;
use sparsedm_tensor::nm_cpu::NormParams;

/// `torch.nn.LayerNorm(dim, eps, elementwise_affine)`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    eps: f32,
}

impl LayerNorm {
    pub fn new(store: &ParamStore, dim: usize, eps: f32, affine: bool) -> Result<Self, LayersError> {
        let (weight, bias) = if affine {
            (Some(store.param("weight", &[dim], Init::Ones)?), Some(store.param("bias", &[dim], Init::Zeros)?))
        } else {
            (None, None)
        };
        Ok(LayerNorm { weight, bias, eps })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayersError> {
        Ok(x.layer_norm(self.weight.as_ref(), self.bias.as_ref(), self.eps)?)
    }
    /// The parameters, for a kernel that applies the norm itself (the N:M
    /// layers of a pre-norm block, `nn/deployed.rs`).
    pub fn params(&self) -> NormParams<'_> {
        NormParams { weight: self.weight.as_ref(), bias: self.bias.as_ref(), eps: self.eps }
    }
}

/// `torch.nn.GroupNorm(groups, channels, eps)` (affine).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    groups: usize,
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl GroupNorm {
    pub fn new(store: &ParamStore, groups: usize, channels: usize, eps: f32) -> Result<Self, LayersError> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(LayersError::Param {
                name: store.path("weight"),
                msg: format!("{channels} channels do not split into {groups} groups"),
            });
        }
        Ok(GroupNorm {
            groups,
            weight: store.param("weight", &[channels], Init::Ones)?,
            bias: store.param("bias", &[channels], Init::Zeros)?,
            eps,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayersError> {
        Ok(x.group_norm(self.groups, Some(&self.weight), Some(&self.bias), self.eps)?)
    }
}

/// `torch.nn.BatchNorm2d` in evaluation mode (running statistics), as the
/// FID Inception network uses it.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: f32,
}

impl BatchNorm2d {
    pub fn new(store: &ParamStore, channels: usize, eps: f32) -> Result<Self, LayersError> {
        Ok(BatchNorm2d {
            weight: store.param("weight", &[channels], Init::Ones)?,
            bias: store.param("bias", &[channels], Init::Zeros)?,
            running_mean: store.buffer("running_mean", &[channels], Init::Zeros)?,
            running_var: store.buffer("running_var", &[channels], Init::Ones)?,
            eps,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayersError> {
        Ok(x.batch_norm_inference(&self.running_mean, &self.running_var, Some(&self.weight), Some(&self.bias), self.eps)?)
    }
}

/// `torch.nn.Embedding(num, dim)` (init N(0, 1), as PyTorch).
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
}

impl Embedding {
    pub fn new(store: &ParamStore, num: usize, dim: usize) -> Result<Self, LayersError> {
        Ok(Embedding { weight: store.param("weight", &[num, dim], Init::Normal(1.0))? })
    }
    /// Rows for i64 `ids` of any shape.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor, LayersError> {
        Ok(self.weight.embedding(ids)?)
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}
