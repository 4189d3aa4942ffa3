//! Softmax and log-softmax over one dim, and scaled dot-product attention
//! (the math path: softmax(q·kᵀ·scale)·v).

use crate::tensor::bw;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Runs a row-wise primitive over `dim` by moving it last.
    fn over_dim(&self, dim: usize, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let last = self.rank().checked_sub(1).ok_or_else(|| Error::bad_shape("softmax", self.shape(), "need at least 1 dim"))?;
        self.layout().check_dim_pub("softmax", dim)?;
        if dim == last { f(self) } else { f(&self.transpose(dim, last)?.contiguous()?)?.transpose(dim, last) }
    }

    /// Softmax over `dim`.
    pub fn softmax(&self, dim: usize) -> Result<Tensor> {
        self.over_dim(dim, |x| x.softmax_last(false))
    }

    /// Log-softmax over `dim`.
    pub fn log_softmax(&self, dim: usize) -> Result<Tensor> {
        self.over_dim(dim, |x| x.softmax_last(true))
    }

    /// Softmax (or log-softmax) of the last dim: one primitive forward, one
    /// primitive backward from the output and its gradient.
    fn softmax_last(&self, log: bool) -> Result<Tensor> {
        let op = if log { "log_softmax" } else { "softmax" };
        let y = self.storage().softmax_last(self.layout(), log)?;
        Ok(Tensor::from_op(
            y,
            self.shape(),
            op,
            &[self],
            bw(move |c| {
                let gx = c.out.storage().softmax_last_backward(c.out.layout(), &c.grad.storage(), c.grad.layout(), log)?;
                Ok(vec![Some(Tensor::from_storage(gx, c.out.shape()))])
            }),
        ))
    }

    /// Scaled dot-product attention, math path: `softmax(q·kᵀ·scale)·v` over
    /// `[..., L, D]` inputs. `scale` defaults to 1/√D.
    pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: Option<f32>) -> Result<Tensor> {
        let d = *q.shape().last().ok_or_else(|| Error::bad_shape("attention", q.shape(), "need at least 2 dims"))?;
        let scale = scale.unwrap_or(1.0 / (d as f32).sqrt());
        let scores = q.matmul(&k.t()?)?.mul_scalar(scale)?;
        let last = scores.rank() - 1;
        scores.softmax(last)?.matmul(v)
    }
}
