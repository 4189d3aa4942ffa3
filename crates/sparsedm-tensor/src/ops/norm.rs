//! Normalisation layers' functional forms. One primitive, `standardize_last`
//! ((x − mean)/√(var + eps) over the last dim, with its fused backward),
//! serves layer norm and group norm; the affine parts are ordinary tracked
//! ops, so their gradients come for free.

use crate::ops::softmax::{rows_map, rows_map2};
use crate::ops::view::f32_storage;
use crate::tensor::bw;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// (x − mean)/√(var + eps) over the last dim (biased variance).
    pub fn standardize_last(&self, eps: f32) -> Result<Tensor> {
        let len = *self.shape().last().ok_or_else(|| Error::bad_shape("standardize", self.shape(), "need at least 1 dim"))?;
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            if len == 0 {
                return Err(Error::bad_shape("standardize", self.shape(), "rows of zero elements"));
            }
            // The kernel keeps rstd per row; the backward kernel uses it with the output.
            let (s, rstd) = crate::cuda::nn::standardize(self, eps)?;
            return Ok(Tensor::from_op(
                s,
                self.shape(),
                "standardize",
                &[self],
                bw(move |c| Ok(vec![Some(crate::cuda::nn::standardize_backward(c.out, &rstd, c.grad)?)])),
            ));
        }
        let y = self.with_contiguous_f32("standardize", |d| {
            rows_map(d, len, |x, y| {
                let n = x.len() as f64;
                let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
                let mean = mean as f32;
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = (v - mean) * rstd;
                }
            })
        })?;
        let x = self.clone();
        Ok(Tensor::from_op(
            f32_storage(y),
            self.shape(),
            "standardize",
            &[self],
            bw(move |c| {
                // dx = rstd·(g − mean(g) − y·mean(g⊙y)); rstd is recomputed.
                let g = c.grad.contiguous()?;
                let xs = x.contiguous()?;
                let v = g.with_contiguous_f32("standardize_backward", |g| {
                    xs.with_contiguous_f32("standardize_backward", |xv| {
                        rows_map2(g, xv, len, |g, x, o| {
                            let n = x.len() as f64;
                            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
                            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                            let rstd = 1.0 / (var + eps as f64).sqrt();
                            let (mut mg, mut mgy) = (0f64, 0f64);
                            for (&g, &x) in g.iter().zip(x) {
                                let y = (x as f64 - mean) * rstd;
                                mg += g as f64;
                                mgy += g as f64 * y;
                            }
                            mg /= n;
                            mgy /= n;
                            for ((o, &g), &x) in o.iter_mut().zip(g).zip(x) {
                                let y = (x as f64 - mean) * rstd;
                                *o = (rstd * (g as f64 - mg - y * mgy)) as f32;
                            }
                        })
                    })
                })??;
                Ok(vec![Some(Tensor::from_storage(f32_storage(v), x.shape()))])
            }),
        ))
    }

    /// Layer norm over the last dim with optional affine `weight`/`bias`
    /// of shape `[D]` (`torch.nn.LayerNorm`).
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        let d = *self.shape().last().ok_or_else(|| Error::bad_shape("layer_norm", self.shape(), "need at least 1 dim"))?;
        for p in [weight, bias].into_iter().flatten() {
            if p.shape() != [d] {
                return Err(Error::ShapeMismatch { op: "layer_norm", lhs: self.shape().to_vec(), rhs: p.shape().to_vec() });
            }
        }
        let mut y = self.standardize_last(eps)?;
        if let Some(w) = weight {
            y = y.mul(w)?;
        }
        if let Some(b) = bias {
            y = y.add(b)?;
        }
        Ok(y)
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
        let y = self.reshape(&[n, groups, self.elem_count() / (n * groups).max(1)])?.standardize_last(eps)?.reshape(self.shape())?;
        let mut pshape = vec![1; self.rank() - 1];
        pshape[0] = c;
        self.channel_affine(y, weight, bias, &pshape, "group_norm")
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

    fn channel_affine(
        &self,
        y: Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        pshape: &[usize],
        op: &'static str,
    ) -> Result<Tensor> {
        let c = pshape[0];
        let mut y = y;
        for p in [weight, bias].into_iter().flatten() {
            if p.shape() != [c] {
                return Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: p.shape().to_vec() });
            }
        }
        if let Some(w) = weight {
            y = y.mul(&w.reshape(pshape)?)?;
        }
        if let Some(b) = bias {
            y = y.add(&b.reshape(pshape)?)?;
        }
        Ok(y)
    }
}
