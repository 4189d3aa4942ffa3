//! Softmax and log-softmax over one dim, and scaled dot-product attention
//! (`softmax(q·kᵀ·scale)·v`, one fused primitive).

use crate::autograd::is_grad_enabled;
use crate::layout::{broadcast_shapes, inverse_permutation as inverse};
use crate::op_kinds::AttnDims;
use crate::tensor::bw;
use crate::{Error, Layout, Result, Tensor};

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
        let keep = is_grad_enabled() && [q, k, v].iter().any(|t| t.is_tracked());
        let AttnForward { out, shape, probs, scale, order } = attention_forward(q, k, v, scale, keep)?;
        let (qs, ks, vs) = (q.clone(), k.clone(), v.clone());
        let logical = inverse(&order);
        let back = logical.clone();
        let y = Tensor::from_op(
            out,
            &permuted(&shape, &order),
            "attention",
            &[q, k, v],
            bw(move |c| {
                let needs = [c.needs[0], c.needs[1], c.needs[2]];
                let g = c.grad.permute(&back)?;
                let [gq, gk, gv] = attention_grads(probs.as_ref(), &g, [&qs, &ks, &vs], scale, needs)?;
                Ok(vec![gq, gk, gv])
            }),
        );
        to_logical(y, &logical)
    }

    /// [`Tensor::scaled_dot_product_attention`] on a packed `qkv [3, ...,
    /// L, D]` (q, k and v stacked along dim 0, typically a permuted view of
    /// one projection's output `[B, L, 3, H, D]`): the same values, but the
    /// gradient of `qkv` is one tensor holding the three, where three
    /// `narrow`s would each pad their gradient to the full size with zeros
    /// and the autograd engine would then add the three pads. The backend
    /// writes the three straight into it, in qkv's memory order (fused per
    /// head on the CPU).
    pub fn scaled_dot_product_attention_qkv(qkv: &Tensor, scale: Option<f32>) -> Result<Tensor> {
        if qkv.rank() < 3 || qkv.shape()[0] != 3 {
            return Err(Error::bad_shape("attention_qkv", qkv.shape(), "need qkv [3, ..., L, D]"));
        }
        let keep = is_grad_enabled() && qkv.is_tracked();
        // qkv's dims from the largest stride to the smallest: the gradient
        // is written in this memory order, so that when qkv is a permuted
        // view of a contiguous buffer (the usual case) the gradient flowing
        // back through that permute and reshape needs no copy.
        let order = qkv.layout().memory_order();
        // Views of the untracked buffer: this op records the only node.
        let base = qkv.detach();
        let qkv_shape = qkv.shape().to_vec();
        let part = |i: usize| base.narrow(0, i, 1)?.squeeze(0);
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let AttnForward { out, shape, probs, scale, order: out_dims } = attention_forward(&q, &k, &v, scale, keep)?;
        let logical = inverse(&out_dims);
        let back = logical.clone();
        let y = Tensor::from_op(
            out,
            &permuted(&shape, &out_dims),
            "attention_qkv",
            &[qkv],
            bw(move |c| {
                let g = c.grad.permute(&back)?;
                let p = probs.as_ref().ok_or_else(|| Error::invalid("attention_qkv_backward", "the probabilities were not kept"))?;
                let r = q.rank();
                let batch = &q.shape()[..r - 2];
                let (l, d) = (q.shape()[r - 2], q.shape()[r - 1]);
                let dims = AttnDims { batch: batch.iter().product(), lq: l, lk: l, d, dv: d };
                // The packed gradient [3, …] laid out in qkv's memory order,
                // and its three parts: the backend writes them in place.
                let mem_shape = permuted(&qkv_shape, &order);
                let packed = Layout::contiguous(&mem_shape).permute(&inverse(&order))?;
                let part = |i: usize| packed.narrow(0, i, 1)?.squeeze(0);
                let outs = [part(0)?, part(1)?, part(2)?];
                let buf = q.storage().attention_backward(
                    q.layout(),
                    (&k.storage(), k.layout()),
                    (&v.storage(), v.layout()),
                    &p.storage(),
                    (&g.storage(), g.layout()),
                    batch,
                    dims,
                    scale,
                    &mem_shape,
                    [&outs[0], &outs[1], &outs[2]],
                )?;
                Ok(vec![Some(Tensor::from_storage(buf, &mem_shape).permute(&inverse(&order))?)])
            }),
        );
        to_logical(y, &logical)
    }
}

/// `shape` in `order` (outermost first).
fn permuted(shape: &[usize], order: &[usize]) -> Vec<usize> {
    order.iter().map(|&d| shape[d]).collect()
}

/// The attention output `y` (its dims in memory order) as its logical
/// `[batch…, Lq, Dv]` view: no copy; the identity order returns `y`.
fn to_logical(y: Tensor, logical: &[usize]) -> Result<Tensor> {
    if logical.iter().enumerate().all(|(i, &d)| i == d) { Ok(y) } else { y.permute(logical) }
}

/// The memory order (outermost first) of the attention output's dims:
/// q's, with the channels innermost, so that heads interleaved in q's
/// memory (U-ViT's `[B, L, H, D]` projection viewed as `[B, H, L, D]`)
/// come out interleaved the same way, and merging them back to
/// `[B, L, H·D]` for the output projection needs no copy. The natural
/// order when q is broadcast along a batch dim.
fn out_order(bq: &Layout) -> Vec<usize> {
    let r = bq.rank();
    let mut order: Vec<usize> = if bq.strides()[..r - 1].iter().zip(bq.shape()).any(|(&s, &n)| s == 0 && n > 1) {
        (0..r - 1).collect()
    } else {
        bq.memory_order().into_iter().filter(|&d| d != r - 1).collect()
    };
    order.push(r - 1);
    order
}

/// What the attention primitive returns: the output buffer and shape, the
/// probabilities when a backward pass needs them, and the scale used.
struct AttnForward {
    out: crate::storage::Storage,
    shape: Vec<usize>,
    probs: Option<Tensor>,
    scale: f32,
    /// The memory order of `out`'s dims ([`out_order`]).
    order: Vec<usize>,
}

/// Validates the shapes and runs the backend's attention primitive
/// (keeping the probabilities when `keep`).
fn attention_forward(q: &Tensor, k: &Tensor, v: &Tensor, scale: Option<f32>, keep: bool) -> Result<AttnForward> {
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
    let shape = full(lq, dv);
    let order = out_order(&bq);
    let lo = Layout::contiguous(&permuted(&shape, &order)).permute(&inverse(&order))?;
    let (out, probs) = q.storage().attention(&bq, (&k.storage(), &bk), (&v.storage(), &bv), &batch, dims, scale, keep, &lo)?;
    let probs = probs.map(|p| Tensor::from_storage(p, &full(lq, lk)));
    Ok(AttnForward { out, shape, probs, scale, order })
}

/// The gradients of q, k and v (those `needs` asks for) from the saved
/// probabilities `p` and the output gradient: the math path's products.
fn attention_grads(
    p: Option<&Tensor>,
    grad: &Tensor,
    [q, k, v]: [&Tensor; 3],
    scale: f32,
    needs: [bool; 3],
) -> Result<[Option<Tensor>; 3]> {
    let p = p.ok_or_else(|| Error::invalid("attention_backward", "the probabilities were not kept"))?;
    let gv = if needs[2] { Some(p.t()?.matmul(grad)?.sum_to_shape(v.shape())?) } else { None };
    let (gq, gk) = if needs[0] || needs[1] {
        let gp = grad.matmul(&v.t()?)?;
        let gs = p.storage().softmax_last_backward(p.layout(), &gp.storage(), gp.layout(), false)?;
        let gs = Tensor::from_storage(gs, p.shape()).mul_scalar(scale)?;
        let gq = if needs[0] { Some(gs.matmul(k)?.sum_to_shape(q.shape())?) } else { None };
        let gk = if needs[1] { Some(gs.t()?.matmul(q)?.sum_to_shape(k.shape())?) } else { None };
        (gq, gk)
    } else {
        (None, None)
    };
    Ok([gq, gk, gv])
}
