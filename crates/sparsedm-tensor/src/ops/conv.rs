//! 2-D convolution, NCHW, with stride and zero padding. The forward pass
//! and both backward products (input and weight gradients) are backend
//! primitives (im2col and GEMMs on every device); the bias gradient is a sum.

use crate::op_kinds::ConvGeom;
use crate::tensor::bw;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// 2-D convolution of `[N, C, H, W]` with a `[O, C, kh, kw]` kernel,
    /// optional `[O]` bias, `stride` and zero `padding` as (h, w) pairs.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
        let op = "conv2d";
        let mismatch = || Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: weight.shape().to_vec() };
        if self.rank() != 4 || weight.rank() != 4 {
            return Err(mismatch());
        }
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        let (o, wc, kh, kw) = (weight.shape()[0], weight.shape()[1], weight.shape()[2], weight.shape()[3]);
        if wc != c {
            return Err(mismatch());
        }
        if stride.0 == 0 || stride.1 == 0 {
            crate::error::bail!(op, "stride must be positive, got {stride:?}");
        }
        if h + 2 * padding.0 < kh || w + 2 * padding.1 < kw {
            return Err(Error::bad_shape(op, self.shape(), format!("kernel {kh}x{kw} larger than the padded input")));
        }
        if let Some(b) = bias
            && b.shape() != [o]
        {
            return Err(Error::ShapeMismatch { op, lhs: weight.shape().to_vec(), rhs: b.shape().to_vec() });
        }
        let ho = (h + 2 * padding.0 - kh) / stride.0 + 1;
        let wo = (w + 2 * padding.1 - kw) / stride.1 + 1;
        let g = ConvGeom { n, c, h, w, o, kh, kw, sh: stride.0, sw: stride.1, ph: padding.0, pw: padding.1, ho, wo };
        // Contiguous operands (copies only of strided views), kept for the backward.
        let (xc, wt) = (self.contiguous()?.detach(), weight.contiguous()?.detach());
        let out = {
            let (sb, lb) = (bias.map(|b| b.storage()), bias.map(|b| b.layout()));
            xc.storage().conv2d(xc.layout(), (&wt.storage(), wt.layout()), sb.as_deref().zip(lb), &g)?
        };
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        Ok(Tensor::from_op(
            out,
            &[n, o, ho, wo],
            op,
            &inputs,
            bw(move |ctx| {
                let gout = ctx.grad.contiguous()?;
                let gx = if ctx.needs[0] {
                    let v = gout.storage().conv2d_backward_input(gout.layout(), &wt.storage(), wt.layout(), &g)?;
                    Some(Tensor::from_storage(v, &[g.n, g.c, g.h, g.w]))
                } else {
                    None
                };
                let gw = if ctx.needs[1] {
                    let v = gout.storage().conv2d_backward_weight(gout.layout(), &xc.storage(), xc.layout(), &g)?;
                    Some(Tensor::from_storage(v, &[g.o, g.c, g.kh, g.kw]))
                } else {
                    None
                };
                let mut grads = vec![gx, gw];
                if ctx.needs.len() == 3 {
                    grads.push(if ctx.needs[2] { Some(gout.sum_dims(&[0, 2, 3], false)?) } else { None });
                }
                Ok(grads)
            }),
        ))
    }
}
