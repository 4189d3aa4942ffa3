//! `Conv2d` (NCHW, weight `[out, in, kh, kw]`) with an optional N:M
//! sparsity on its weight, groups along input channels.
//!
//! As for [`crate::Linear`], the [`SparseSlot`] is the one owner of the
//! weight; the layer keeps only the bias and the geometry.

use crate::nn::deployed;
use crate::nn::init::Init;
use crate::nn::sparse::SparseSlot;
use crate::{LayersError, ParamStore};
use sparsedm_tensor::Tensor;

/// Geometry of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub bias: bool,
}

impl Conv2dConfig {
    /// Square kernel `k`, stride `s`, padding `p`, with bias.
    pub fn square(k: usize, s: usize, p: usize) -> Self {
        Conv2dConfig { kernel: (k, k), stride: (s, s), padding: (p, p), bias: true }
    }
    pub fn no_bias(self) -> Self {
        Conv2dConfig { bias: false, ..self }
    }
}

/// A 2-D convolution layer.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Owns the weight `[out, in, kh, kw]` and its sparsity.
    slot: SparseSlot,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
}

impl Conv2d {
    /// PyTorch's default init (U(±1/√(in·kh·kw))).
    pub fn new(store: &ParamStore, in_ch: usize, out_ch: usize, cfg: Conv2dConfig) -> Result<Self, LayersError> {
        let fan_in = in_ch * cfg.kernel.0 * cfg.kernel.1;
        Self::with_init(store, in_ch, out_ch, cfg, Init::DefaultFanIn(fan_in), Init::DefaultFanIn(fan_in))
    }

    pub fn with_init(store: &ParamStore, in_ch: usize, out_ch: usize, cfg: Conv2dConfig, w: Init, b: Init) -> Result<Self, LayersError> {
        let weight = store.param("weight", &[out_ch, in_ch, cfg.kernel.0, cfg.kernel.1], w)?;
        let bias = if cfg.bias { Some(store.param("bias", &[out_ch], b)?) } else { None };
        let slot = SparseSlot::new(weight, store.training_flag())?;
        store.register_sparse(slot.clone());
        Ok(Conv2d { slot, bias, cfg })
    }

    /// `x` `[n, in, h, w]` to `[n, out, h', w']`. Without grad mode and with
    /// an N:M deployed weight this runs the N:M kernels (CPU: im2col + SpMM)
    /// on the weight compressed once (see `nn/deployed.rs`); otherwise the
    /// dense convolution with the mode's effective weight.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayersError> {
        let g = deployed::ConvGeometry { stride: self.cfg.stride, padding: self.cfg.padding };
        if let Some(y) = deployed::conv_forward(&self.slot, x, self.bias.as_ref(), g)? {
            return Ok(y);
        }
        let w = self.slot.effective_weight()?;
        Ok(x.conv2d(&w, self.bias.as_ref(), self.cfg.stride, self.cfg.padding)?)
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
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }
}
