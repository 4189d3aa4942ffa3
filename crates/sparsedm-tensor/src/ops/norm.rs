//! Normalisation layers' functional forms. `standardize_last` ((x −
//! mean)/√(var + eps) over the last dim, with its fused backward) is one
//! backend primitive; layer norm and group norm each have a forward and a
//! backward primitive with the affine parts inside (fused on the CPU, the
//! trait's defaults compose them from the standardization for CUDA).

use crate::storage::Storage;
use crate::tensor::bw;
use crate::{Error, Layout, Result, Tensor};

/// An affine parameter's storage and layout, when the norm has it.
type Param<'a> = Option<(&'a Storage, &'a Layout)>;

impl Tensor {
    /// (x − mean)/√(var + eps) over the last dim (biased variance).
    pub fn standardize_last(&self, eps: f32) -> Result<Tensor> {
        let len = *self.shape().last().ok_or_else(|| Error::bad_shape("standardize", self.shape(), "need at least 1 dim"))?;
        let (y, rstd) = self.storage().standardize_last(self.layout(), eps)?;
        let rstd = Tensor::from_storage(rstd, &[self.elem_count().checked_div(len).unwrap_or(0)]);
        let x = self.detach();
        Ok(Tensor::from_op(
            y,
            self.shape(),
            "standardize",
            &[self],
            bw(move |c| {
                let gx = x.storage().standardize_last_backward(
                    x.layout(),
                    (&c.out.storage(), c.out.layout()),
                    &rstd.storage(),
                    (&c.grad.storage(), c.grad.layout()),
                    eps,
                )?;
                Ok(vec![Some(Tensor::from_storage(gx, x.shape()))])
            }),
        ))
    }

    /// Layer norm over the last dim with optional affine `weight`/`bias`
    /// of shape `[D]` (`torch.nn.LayerNorm`).
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        let d = *self.shape().last().ok_or_else(|| Error::bad_shape("layer_norm", self.shape(), "need at least 1 dim"))?;
        // One primitive forward (the CPU fuses the affine into the row
        // pass) and one backward giving all three gradients (the CPU fuses
        // it into one sweep per row; CUDA composes it from x̂ = standardize(x)).
        let rows = self.elem_count().checked_div(d).unwrap_or(0);
        self.affine_norm(
            "layer_norm",
            (weight, bias, d),
            rows,
            move |x, l, w, b| x.layer_norm_last(l, w, b, eps),
            move |x, l, w, rstd, g, need| x.layer_norm_last_backward(l, w, rstd, g, eps, need),
        )
    }

    /// Group norm of `[N, C, ...]` with `groups` groups and optional
    /// per-channel `weight`/`bias` of shape `[C]` (`torch.nn.GroupNorm`).
    pub fn group_norm(&self, groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::bad_shape("group_norm", self.shape(), "need [N, C, ...]"));
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        if groups == 0 || c % groups != 0 {
            return Err(Error::bad_shape("group_norm", self.shape(), format!("{c} channels do not split into {groups} groups")));
        }
        // One primitive each way with the affine parts inside (fused on the
        // CPU; CUDA composes the standardization, multiply and add).
        self.affine_norm(
            "group_norm",
            (weight, bias, c),
            n * groups,
            move |x, l, w, b| x.group_norm(l, groups, w, b, eps),
            move |x, l, w, rstd, g, need| x.group_norm_backward(l, groups, w, rstd, g, eps, need),
        )
    }

    /// A normalisation with optional affine `weight`/`bias` of shape `[p]`
    /// (checked here): the forward primitive `fwd(x, layout, w, b)` gives
    /// the output and `rstd_len` saved reciprocal deviations, and one
    /// autograd node runs the backward primitive `bwd(x, layout, w, rstd,
    /// grad, need)` for `[gx, gw, gb]` (each where the inputs need it).
    fn affine_norm(
        &self,
        op: &'static str,
        (weight, bias, p): (Option<&Tensor>, Option<&Tensor>, usize),
        rstd_len: usize,
        fwd: impl FnOnce(&Storage, &Layout, Param<'_>, Param<'_>) -> Result<(Storage, Storage)>,
        bwd: impl Fn(&Storage, &Layout, Param<'_>, &Storage, (&Storage, &Layout), [bool; 3]) -> Result<[Option<Storage>; 3]>
        + Send
        + Sync
        + 'static,
    ) -> Result<Tensor> {
        for t in [weight, bias].into_iter().flatten() {
            if t.shape() != [p] {
                return Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: t.shape().to_vec() });
            }
        }
        let (y, rstd) = {
            let (ws, bs) = (weight.map(|w| w.storage()), bias.map(|b| b.storage()));
            let w = ws.as_ref().zip(weight).map(|(s, w)| (&**s, w.layout()));
            let b = bs.as_ref().zip(bias).map(|(s, b)| (&**s, b.layout()));
            fwd(&self.storage(), self.layout(), w, b)?
        };
        let rstd = Tensor::from_storage(rstd, &[rstd_len]);
        let inputs: Vec<&Tensor> = [Some(self), weight, bias].into_iter().flatten().collect();
        let (x, w, has_w, has_b) = (self.detach(), weight.map(Tensor::detach), weight.is_some(), bias.is_some());
        Ok(Tensor::from_op(
            y,
            self.shape(),
            op,
            &inputs,
            bw(move |ctx| {
                // Inputs in order: x, then w and b where given.
                let need_w = has_w && ctx.needs[1];
                let need_b = has_b && ctx.needs[1 + usize::from(has_w)];
                let [gx, gw, gb] = {
                    let ws = w.as_ref().map(|w| w.storage());
                    let wop = ws.as_deref().zip(w.as_ref()).map(|(s, w)| (s, w.layout()));
                    let (gs, rs) = (ctx.grad.storage(), rstd.storage());
                    bwd(&x.storage(), x.layout(), wop, &rs, (&gs, ctx.grad.layout()), [ctx.needs[0], need_w, need_b])?
                };
                let mut out = vec![gx.map(|s| Tensor::from_storage(s, x.shape()))];
                if has_w {
                    out.push(gw.map(|s| Tensor::from_storage(s, &[p])));
                }
                if has_b {
                    out.push(gb.map(|s| Tensor::from_storage(s, &[p])));
                }
                Ok(out)
            }),
        ))
    }

    /// Batch norm in inference mode (running statistics) on `[N, C, ...]`.
    pub fn batch_norm_inference(
        &self,
        mean: &Tensor,
        var: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::bad_shape("batch_norm", self.shape(), "need [N, C, ...]"));
        }
        let c = self.shape()[1];
        for p in [Some(mean), Some(var), weight, bias].into_iter().flatten() {
            if p.shape() != [c] {
                return Err(Error::ShapeMismatch { op: "batch_norm", lhs: self.shape().to_vec(), rhs: p.shape().to_vec() });
            }
        }
        let mut pshape = vec![1; self.rank() - 1];
        pshape[0] = c;
        let inv = var.add_scalar(eps)?.rsqrt()?;
        let scale = match weight {
            Some(w) => w.mul(&inv)?,
            None => inv,
        };
        let shift = mean.mul(&scale)?.neg()?;
        let shift = match bias {
            Some(b) => b.add(&shift)?,
            None => shift,
        };
        self.mul(&scale.reshape(&pshape)?)?.add(&shift.reshape(&pshape)?)
    }
}
