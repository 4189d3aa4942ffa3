//! Reductions over dimensions: sum, mean, max, var. Sums accumulate in f64
//! per output row so that large means stay exact to f32 precision.

use crate::ops::view::f32_storage;
use crate::tensor::bw;
use crate::{Error, Result, Tensor};
use rayon::prelude::*;

/// Checks `dims`, returning them sorted and deduplicated.
fn normalize_dims(op: &'static str, shape: &[usize], dims: &[usize]) -> Result<Vec<usize>> {
    let mut d = dims.to_vec();
    d.sort_unstable();
    d.dedup();
    if let Some(&bad) = d.iter().find(|&&x| x >= shape.len()) {
        return Err(Error::DimOutOfRange { op, dim: bad, shape: shape.to_vec() });
    }
    Ok(d)
}

fn reduced_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(shape.len());
    for (i, &s) in shape.iter().enumerate() {
        if dims.contains(&i) {
            if keepdim {
                out.push(1);
            }
        } else {
            out.push(s);
        }
    }
    out
}

/// Sums contiguous `data` viewed as `[rows, inner]` over rows (a prefix
/// reduction, e.g. a bias gradient), in parallel over row blocks.
fn sum_prefix(data: &[f32], rows: usize, inner: usize) -> Vec<f32> {
    const BLOCK: usize = 64;
    let partial = |r0: usize, r1: usize| {
        let mut acc = vec![0f32; inner];
        for r in r0..r1 {
            for (a, &x) in acc.iter_mut().zip(&data[r * inner..(r + 1) * inner]) {
                *a += x;
            }
        }
        acc
    };
    if rows * inner < 1 << 15 {
        return partial(0, rows);
    }
    let blocks: Vec<Vec<f32>> =
        (0..rows.div_ceil(BLOCK)).into_par_iter().map(|b| partial(b * BLOCK, ((b + 1) * BLOCK).min(rows))).collect();
    let mut acc = vec![0f32; inner];
    for b in blocks {
        for (a, x) in acc.iter_mut().zip(b) {
            *a += x;
        }
    }
    acc
}

/// Reduces each contiguous row of length `len` with `f`.
fn reduce_rows<T: Send>(data: &[f32], len: usize, f: impl Fn(&[f32]) -> T + Sync) -> Vec<T> {
    if len == 0 {
        return Vec::new();
    }
    if data.len() < 1 << 14 { data.chunks(len).map(&f).collect() } else { data.par_chunks(len).map(&f).collect() }
}

impl Tensor {
    /// Moves `dims` last and returns the contiguous values with the number
    /// of elements reduced per output.
    fn reduced_rows_data(&self, op: &'static str, dims: &[usize]) -> Result<(Vec<f32>, usize)> {
        let kept: Vec<usize> = (0..self.rank()).filter(|d| !dims.contains(d)).collect();
        let perm: Vec<usize> = kept.iter().chain(dims).copied().collect();
        let n: usize = dims.iter().map(|&d| self.shape()[d]).product();
        let layout = self.layout().permute(&perm)?;
        let data = self.with_f32(op, |s, _| crate::cpu::strided::gather(s, layout.shape(), layout.strides(), layout.offset()))?;
        Ok((data, n))
    }

    /// Sums over `dims`.
    pub fn sum_dims(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let dims = normalize_dims("sum", self.shape(), dims)?;
        let out_shape = reduced_shape(self.shape(), &dims, keepdim);
        let n: usize = dims.iter().map(|&d| self.shape()[d]).product();
        let rank = self.rank();
        let is_prefix = dims.iter().enumerate().all(|(i, &d)| i == d);
        let is_suffix = dims.iter().rev().enumerate().all(|(i, &d)| d == rank - 1 - i);
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            let s = crate::cuda::reduce::reduce(self, &dims, crate::cuda::reduce::Reduce::Sum, "sum")?;
            let in_shape = self.shape().to_vec();
            let kept_shape = reduced_shape(self.shape(), &dims, true);
            return Ok(Tensor::from_op(
                s,
                &out_shape,
                "sum",
                &[self],
                bw(move |c| Ok(vec![Some(c.grad.reshape(&kept_shape)?.broadcast_as(&in_shape)?.contiguous()?)])),
            ));
        }
        let values = if dims.is_empty() {
            self.to_vec_f32()?
        } else if self.is_contiguous() && is_suffix {
            self.with_contiguous_f32("sum", |d| reduce_rows(d, n, |r| r.iter().map(|&x| x as f64).sum::<f64>() as f32))?
        } else if self.is_contiguous() && is_prefix {
            self.with_contiguous_f32("sum", |d| sum_prefix(d, n, self.elem_count() / n.max(1)))?
        } else {
            let (data, n) = self.reduced_rows_data("sum", &dims)?;
            reduce_rows(&data, n, |r| r.iter().map(|&x| x as f64).sum::<f64>() as f32)
        };
        let in_shape = self.shape().to_vec();
        let kept_shape = reduced_shape(self.shape(), &dims, true);
        Ok(Tensor::from_op(
            f32_storage(values),
            &out_shape,
            "sum",
            &[self],
            bw(move |c| Ok(vec![Some(c.grad.reshape(&kept_shape)?.broadcast_as(&in_shape)?.contiguous()?)])),
        ))
    }

    /// Sum of all elements (a 0-dim tensor).
    pub fn sum_all(&self) -> Result<Tensor> {
        let dims: Vec<usize> = (0..self.rank()).collect();
        self.sum_dims(&dims, false)
    }

    /// Mean over `dims`.
    pub fn mean_dims(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let dims = normalize_dims("mean", self.shape(), dims)?;
        let n: usize = dims.iter().map(|&d| self.shape()[d]).product();
        self.sum_dims(&dims, keepdim)?.mul_scalar(1.0 / n.max(1) as f32)
    }

    /// Mean of all elements (a 0-dim tensor).
    pub fn mean_all(&self) -> Result<Tensor> {
        let dims: Vec<usize> = (0..self.rank()).collect();
        self.mean_dims(&dims, false)
    }

    /// Variance over `dims` (`unbiased` divides by n − 1, as `torch.var`).
    pub fn var_dims(&self, dims: &[usize], keepdim: bool, unbiased: bool) -> Result<Tensor> {
        let dims = normalize_dims("var", self.shape(), dims)?;
        let n: usize = dims.iter().map(|&d| self.shape()[d]).product();
        let denom = if unbiased { n.saturating_sub(1) } else { n };
        if denom == 0 {
            return Err(Error::bad_shape("var", self.shape(), format!("cannot take the variance of {n} element(s) over dims {dims:?}")));
        }
        let centered = self.sub(&self.mean_dims(&dims, true)?)?;
        centered.sqr()?.sum_dims(&dims, keepdim)?.mul_scalar(1.0 / denom as f32)
    }

    /// Maximum over `dim`; the gradient goes to the first maximal element.
    pub fn max_dim(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        Ok(self.max_dim_with_index(dim, keepdim)?.0)
    }

    /// Maximum over `dim` and the index of the first maximal element (i64).
    pub fn max_dim_with_index(&self, dim: usize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        let dims = normalize_dims("max", self.shape(), &[dim])?;
        if self.shape()[dim] == 0 {
            return Err(Error::bad_shape("max", self.shape(), format!("dim {dim} is empty")));
        }
        let out_shape = reduced_shape(self.shape(), &dims, keepdim);
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            let (vals, idx) = crate::cuda::reduce::max_with_index(self, dim)?;
            let index = Tensor::from_storage(idx, &out_shape);
            let (x, kept_shape) = (self.detach(), reduced_shape(self.shape(), &dims, true));
            let out = Tensor::from_op(
                vals,
                &out_shape,
                "max",
                &[self],
                bw(move |c| {
                    // The gradient goes to the first maximal element: a one-hot mask times the broadcast gradient.
                    let mask = crate::cuda::reduce::first_max_mask(&x, dim)?;
                    Ok(vec![Some(mask.mul(&c.grad.reshape(&kept_shape)?)?)])
                }),
            );
            return Ok((out, index));
        }
        let (data, n) = self.reduced_rows_data("max", &dims)?;
        let pairs = reduce_rows(&data, n, |r| {
            let mut best = (r[0], 0usize);
            for (i, &x) in r.iter().enumerate().skip(1) {
                if x > best.0 || (x.is_nan() && !best.0.is_nan()) {
                    best = (x, i);
                }
            }
            best
        });
        let values: Vec<f32> = pairs.iter().map(|p| p.0).collect();
        let idx: Vec<i64> = pairs.iter().map(|p| p.1 as i64).collect();
        let index = Tensor::from_vec_i64(idx.clone(), &out_shape, &self.device())?;
        let in_shape = self.shape().to_vec();
        let kept_shape = reduced_shape(self.shape(), &dims, true);
        let out = Tensor::from_op(
            f32_storage(values),
            &out_shape,
            "max",
            &[self],
            bw(move |c| {
                // Scatter the gradient into a [kept..., n] buffer, then move
                // `dim` back into place.
                let g = c.grad.to_vec_f32()?;
                let mut buf = vec![0f32; g.len() * n];
                for (o, (&gv, &i)) in g.iter().zip(&idx).enumerate() {
                    buf[o * n + i as usize] = gv;
                }
                let mut moved: Vec<usize> = kept_shape.iter().enumerate().filter(|(d, _)| *d != dim).map(|(_, &s)| s).collect();
                moved.push(n);
                let t = Tensor::from_storage(f32_storage(buf), &moved);
                // t has dim moved last; build the inverse permutation.
                let rank = in_shape.len();
                let mut perm = Vec::with_capacity(rank);
                let mut k = 0;
                for d in 0..rank {
                    if d == dim {
                        perm.push(rank - 1);
                    } else {
                        perm.push(k);
                        k += 1;
                    }
                }
                Ok(vec![Some(t.permute(&perm)?.contiguous()?)])
            }),
        );
        Ok((out, index))
    }
}
