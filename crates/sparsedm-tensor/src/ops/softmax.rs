//! Softmax and log-softmax over one dim, and scaled dot-product attention
//! (`softmax(q·kᵀ·scale)·v`, one fused primitive).

use crate::autograd::is_grad_enabled;
use crate::layout::broadcast_shapes;
use crate::op_kinds::AttnDims;
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

    /// Scaled dot-product attention `softmax(q·kᵀ·scale)·v` over
    /// `q [..., Lq, D]`, `k [..., Lk, D]`, `v [..., Lk, Dv]` with broadcast
    /// batch dims; `scale` defaults to 1/√D. One backend primitive (fused on
    /// the CPU: no score tensor is materialised unless a backward pass
    /// needs the probabilities; the unfused math path elsewhere), and a
    /// backward rule from the saved probabilities: the same products as the
    /// math path's gradient.
    pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: Option<f32>) -> Result<Tensor> {
        let op = "attention";
        let (r, rk, rv) = (q.rank(), k.rank(), v.rank());
        let bad = || {
            Error::bad_shape(
                op,
                q.shape(),
                format!("need q [..., Lq, D], k [..., Lk, D], v [..., Lk, Dv]; got k {:?}, v {:?}", k.shape(), v.shape()),
            )
        };
        if r < 2 || rk < 2 || rv < 2 {
            return Err(bad());
        }
        let (lq, d) = (q.shape()[r - 2], q.shape()[r - 1]);
        let (lk, dk) = (k.shape()[rk - 2], k.shape()[rk - 1]);
        let (lv, dv) = (v.shape()[rv - 2], v.shape()[rv - 1]);
        if dk != d || lv != lk {
            return Err(bad());
        }
        let scale = scale.unwrap_or(1.0 / (d as f32).sqrt());
        let batch = broadcast_shapes(op, &q.shape()[..r - 2], &k.shape()[..rk - 2])?;
        let batch = broadcast_shapes(op, &batch, &v.shape()[..rv - 2])?;
        let full = |a: usize, b: usize| {
            let mut s = batch.clone();
            s.extend([a, b]);
            s
        };
        let (bq, bk, bv) =
            (q.layout().broadcast_as(&full(lq, d))?, k.layout().broadcast_as(&full(lk, d))?, v.layout().broadcast_as(&full(lk, dv))?);
        let dims = AttnDims { batch: batch.iter().product(), lq, lk, d, dv };
        let keep = is_grad_enabled() && [q, k, v].iter().any(|t| t.is_tracked());
        let (out, probs) = q.storage().attention(&bq, (&k.storage(), &bk), (&v.storage(), &bv), &batch, dims, scale, keep)?;
        let probs = probs.map(|p| Tensor::from_storage(p, &full(lq, lk)));
        let (qs, ks, vs) = (q.clone(), k.clone(), v.clone());
        Ok(Tensor::from_op(
            out,
            &full(lq, dv),
            op,
            &[q, k, v],
            bw(move |c| {
                let p = probs.as_ref().ok_or_else(|| Error::invalid("attention_backward", "the probabilities were not kept"))?;
                let gv = if c.needs[2] { Some(p.t()?.matmul(c.grad)?.sum_to_shape(vs.shape())?) } else { None };
                let (gq, gk) = if c.needs[0] || c.needs[1] {
                    let gp = c.grad.matmul(&vs.t()?)?;
                    let gs = p.storage().softmax_last_backward(p.layout(), &gp.storage(), gp.layout(), false)?;
                    let gs = Tensor::from_storage(gs, p.shape()).mul_scalar(scale)?;
                    let gq = if c.needs[0] { Some(gs.matmul(&ks)?.sum_to_shape(qs.shape())?) } else { None };
                    let gk = if c.needs[1] { Some(gs.t()?.matmul(&qs)?.sum_to_shape(ks.shape())?) } else { None };
                    (gq, gk)
                } else {
                    (None, None)
                };
                Ok(vec![gq, gk, gv])
            }),
        ))
    }
}
