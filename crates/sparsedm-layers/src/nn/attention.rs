//! Multi-head self-attention as U-ViT's `Attention` module (`qkv` and
//! `proj` Linear layers; the math path of scaled dot-product attention).

use crate::nn::init::Init;
use crate::nn::linear::Linear;
use crate::{LayersError, ParamStore};
use sparsedm_tensor::Tensor;

/// Self-attention over `[B, L, C]` tokens with `heads` heads.
#[derive(Debug, Clone)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    heads: usize,
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
        let head_dim = dim / heads;
        Ok(Attention {
            qkv: Linear::with_init(&store.pp("qkv"), dim, dim * 3, qkv_bias, init.0, init.1)?,
            proj: Linear::with_init(&store.pp("proj"), dim, dim, true, init.0, init.1)?,
            heads,
            scale: qk_scale.unwrap_or(1.0 / (head_dim as f32).sqrt()),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayersError> {
        let (b, l, c) = match *x.shape() {
            [b, l, c] => (b, l, c),
            _ => {
                return Err(sparsedm_tensor::Error::BadShape {
                    op: "attention",
                    shape: x.shape().to_vec(),
                    msg: "expected [B, L, C]".into(),
                }
                .into());
            }
        };
        let h = self.heads;
        // [B, L, 3C] -> [B, L, 3, H, D] -> [3, B, H, L, D]
        let qkv = self.qkv.forward(x)?.reshape(&[b, l, 3, h, c / h])?.permute(&[2, 0, 3, 1, 4])?;
        let (q, k, v) = (qkv.narrow(0, 0, 1)?.squeeze(0)?, qkv.narrow(0, 1, 1)?.squeeze(0)?, qkv.narrow(0, 2, 1)?.squeeze(0)?);
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(self.scale))?;
        let y = y.transpose(1, 2)?.reshape(&[b, l, c])?;
        self.proj.forward(&y)
    }
}
