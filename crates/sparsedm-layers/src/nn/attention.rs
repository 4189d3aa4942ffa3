//! Multi-head self-attention as U-ViT's `Attention` module (`qkv` and
//! `proj` Linear layers; the math path of scaled dot-product attention).

use crate::nn::init::Init;
use crate::nn::linear::Linear;
use crate::nn::norm::LayerNorm;
use crate::{LayersError, ParamStore};
use sparsedm_tensor::Tensor;

/// Self-attention over `[B, L, C]` tokens with `heads` heads.
#[derive(Debug, Clone)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    heads: usize,
    /// Width of one head; `heads · head_dim` is the inner width of `qkv`
    /// (per third) and of `proj`'s input, which a structurally pruned model
    /// may make smaller than the token width.
    head_dim: usize,
    scale: f32,
}

impl Attention {
    /// `qk_scale` overrides the default 1/√(C/heads).
    pub fn new(
        store: &ParamStore,
        dim: usize,
        heads: usize,
        qkv_bias: bool,
        qk_scale: Option<f32>,
        init: (Init, Init),
    ) -> Result<Self, LayersError> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(LayersError::Param { name: store.path("qkv"), msg: format!("width {dim} does not split into {heads} heads") });
        }
        Self::with_heads(store, dim, heads, dim / heads, qkv_bias, qk_scale, init)
    }

    /// Attention with `heads` heads of `head_dim` each, whatever the token
    /// width `dim` (a model whose heads were pruned keeps its head width and
    /// its scale 1/√head_dim): `qkv` is `dim → 3·heads·head_dim`, `proj`
    /// `heads·head_dim → dim`.
    pub fn with_heads(
        store: &ParamStore,
        dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        qk_scale: Option<f32>,
        init: (Init, Init),
    ) -> Result<Self, LayersError> {
        if heads == 0 || head_dim == 0 {
            return Err(LayersError::Param {
                name: store.path("qkv"),
                msg: format!("{heads} heads of width {head_dim}: both must be positive"),
            });
        }
        let inner = heads * head_dim;
        Ok(Attention {
            qkv: Linear::with_init(&store.pp("qkv"), dim, inner * 3, qkv_bias, init.0, init.1)?,
            proj: Linear::with_init(&store.pp("proj"), inner, dim, true, init.0, init.1)?,
            heads,
            head_dim,
            scale: qk_scale.unwrap_or(1.0 / (head_dim as f32).sqrt()),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayersError> {
        self.forward_fused(x, None, None)
    }

    /// `residual + attention(norm(x))` (either part optional): a pre-norm
    /// block's half, with the norm taken into `qkv`'s call and the residual
    /// into `proj`'s (`Linear::forward_fused`; fused into the N:M kernels
    /// when they are deployed on the CPU).
    pub fn forward_fused(&self, x: &Tensor, norm: Option<&LayerNorm>, residual: Option<&Tensor>) -> Result<Tensor, LayersError> {
        let (b, l) = match *x.shape() {
            [b, l, _] => (b, l),
            _ => {
                return Err(sparsedm_tensor::Error::BadShape {
                    op: "attention",
                    shape: x.shape().to_vec(),
                    msg: "expected [B, L, C]".into(),
                }
                .into());
            }
        };
        let (h, hd) = (self.heads, self.head_dim);
        // [B, L, 3·H·D] -> [B, L, 3, H, D] -> [3, B, H, L, D]
        let qkv = self.qkv.forward_fused(x, norm, None)?.reshape(&[b, l, 3, h, hd])?.permute(&[2, 0, 3, 1, 4])?;
        // One op over the packed view: its gradient comes back as one
        // tensor in the projection's layout, not three zero-padded narrows.
        let y = Tensor::scaled_dot_product_attention_qkv(&qkv, Some(self.scale))?;
        let y = y.transpose(1, 2)?.reshape(&[b, l, h * hd])?;
        self.proj.forward_fused(&y, None, residual)
    }
}
