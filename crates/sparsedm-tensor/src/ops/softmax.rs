//! Softmax and log-softmax over one dim, and scaled dot-product attention
//! (the math path: softmax(q·kᵀ·scale)·v).

use crate::ops::view::f32_storage;
use crate::tensor::bw;
use crate::{Error, Result, Tensor};
use rayon::prelude::*;

/// Applies `f(row_in, row_out)` to every row of length `len`, in parallel.
pub(crate) fn rows_map(data: &[f32], len: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    if len == 0 {
        return out;
    }
    if data.len() < 1 << 14 {
        data.chunks(len).zip(out.chunks_mut(len)).for_each(|(i, o)| f(i, o));
    } else {
        data.par_chunks(len).zip(out.par_chunks_mut(len)).for_each(|(i, o)| f(i, o));
    }
    out
}

/// Like [`rows_map`] over two inputs of the same shape.
pub(crate) fn rows_map2(a: &[f32], b: &[f32], len: usize, f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    if len == 0 {
        return out;
    }
    if a.len() < 1 << 14 {
        a.chunks(len).zip(b.chunks(len)).zip(out.chunks_mut(len)).for_each(|((x, y), o)| f(x, y, o));
    } else {
        a.par_chunks(len).zip(b.par_chunks(len)).zip(out.par_chunks_mut(len)).for_each(|((x, y), o)| f(x, y, o));
    }
    out
}

fn softmax_row(x: &[f32], y: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = crate::ops::elementwise::fast_exp(v - max);
        sum += *o;
    }
    let inv = 1.0 / sum;
    y.iter_mut().for_each(|o| *o *= inv);
}

fn log_softmax_row(x: &[f32], y: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + x.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v - lse;
    }
}

impl Tensor {
    /// Runs a row-wise primitive over `dim` by moving it last.
    fn over_dim(&self, dim: usize, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let last = self.rank().checked_sub(1).ok_or_else(|| Error::bad_shape("softmax", self.shape(), "need at least 1 dim"))?;
        self.layout().check_dim_pub("softmax", dim)?;
        if dim == last { f(self) } else { f(&self.transpose(dim, last)?.contiguous()?)?.transpose(dim, last) }
    }

    /// Softmax over `dim`.
    pub fn softmax(&self, dim: usize) -> Result<Tensor> {
        self.over_dim(dim, |x| x.softmax_last())
    }

    /// Log-softmax over `dim`.
    pub fn log_softmax(&self, dim: usize) -> Result<Tensor> {
        self.over_dim(dim, |x| x.log_softmax_last())
    }

    /// Softmax or log-softmax of the last dim on CUDA, with the fused backward kernel.
    #[cfg(feature = "cuda")]
    fn softmax_last_cuda(&self, log: bool) -> Result<Tensor> {
        let op = if log { "log_softmax" } else { "softmax" };
        let s = crate::cuda::nn::softmax(self, log)?;
        Ok(Tensor::from_op(
            s,
            self.shape(),
            op,
            &[self],
            bw(move |c| Ok(vec![Some(crate::cuda::nn::softmax_backward(c.out, c.grad, log)?)])),
        ))
    }

    fn softmax_last(&self) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            return self.softmax_last_cuda(false);
        }
        let len = *self.shape().last().unwrap_or(&1);
        let y = self.with_contiguous_f32("softmax", |d| rows_map(d, len, softmax_row))?;
        Ok(Tensor::from_op(
            f32_storage(y),
            self.shape(),
            "softmax",
            &[self],
            bw(move |c| {
                // dx = y ⊙ (g − Σ g⊙y)
                let g = c.grad.contiguous()?;
                let v = g.with_contiguous_f32("softmax_backward", |g| {
                    c.out.with_contiguous_f32("softmax_backward", |y| {
                        rows_map2(g, y, len, |g, y, o| {
                            let dot: f32 = g.iter().zip(y).map(|(a, b)| a * b).sum();
                            for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
                                *o = y * (g - dot);
                            }
                        })
                    })
                })??;
                Ok(vec![Some(Tensor::from_storage(f32_storage(v), c.out.shape()))])
            }),
        ))
    }

    fn log_softmax_last(&self) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            return self.softmax_last_cuda(true);
        }
        let len = *self.shape().last().unwrap_or(&1);
        let y = self.with_contiguous_f32("log_softmax", |d| rows_map(d, len, log_softmax_row))?;
        Ok(Tensor::from_op(
            f32_storage(y),
            self.shape(),
            "log_softmax",
            &[self],
            bw(move |c| {
                // dx = g − exp(y)·Σ g
                let g = c.grad.contiguous()?;
                let v = g.with_contiguous_f32("log_softmax_backward", |g| {
                    c.out.with_contiguous_f32("log_softmax_backward", |y| {
                        rows_map2(g, y, len, |g, y, o| {
                            let s: f32 = g.iter().sum();
                            for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
                                *o = g - y.exp() * s;
                            }
                        })
                    })
                })??;
                Ok(vec![Some(Tensor::from_storage(f32_storage(v), c.out.shape()))])
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
