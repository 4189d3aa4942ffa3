//! Data movement: constant padding, concatenation, split/chunk,
//! `index_select` and embedding lookup.

use crate::cpu::strided::Walk;
use crate::ops::view::f32_storage;
use crate::tensor::bw;
use crate::{Error, Result, Tensor};

/// Copies the strided source view into the contiguous region of `dst`
/// described by `dst_shape` (a sub-box of `dst_full` at `dst_start`).
fn copy_into_box(src: &[f32], src_layout: &crate::Layout, dst: &mut [f32], dst_full: &[usize], dst_start: &[usize]) {
    let dst_strides = crate::layout::contiguous_strides(dst_full);
    let base: usize = dst_start.iter().zip(&dst_strides).map(|(a, b)| a * b).sum();
    let shape = src_layout.shape();
    let walk = Walk::new(shape, [src_layout.strides(), &dst_strides]);
    let inner = walk.inner();
    let [is, id] = walk.inner_strides();
    let rows = shape.iter().product::<usize>() / inner.max(1);
    for r in 0..rows {
        let [os, od] = walk.row_offsets(r);
        let (os, od) = (os + src_layout.offset(), od + base);
        for i in 0..inner {
            dst[od + i * id] = src[os + i * is];
        }
    }
}

impl Tensor {
    /// Pads every dim `d` with `pads[d] = (before, after)` entries of `value`
    /// (asymmetric constant padding, like `F.pad` with the spec reversed).
    pub fn pad(&self, pads: &[(usize, usize)], value: f32) -> Result<Tensor> {
        if pads.len() != self.rank() {
            crate::error::bail!("pad", "need one (before, after) pair per dim of shape {:?}, got {}", self.shape(), pads.len());
        }
        if pads.iter().all(|&p| p == (0, 0)) {
            return Ok(self.clone());
        }
        let out_shape: Vec<usize> = self.shape().iter().zip(pads).map(|(&s, &(a, b))| s + a + b).collect();
        let start: Vec<usize> = pads.iter().map(|p| p.0).collect();
        #[cfg(feature = "cuda")]
        let storage = if self.is_cuda() {
            crate::cuda::index::pad(self, &start, &out_shape, value)?
        } else {
            let mut out = vec![value; out_shape.iter().product()];
            self.with_f32("pad", |src, l| copy_into_box(src, l, &mut out, &out_shape, &start))?;
            f32_storage(out)
        };
        #[cfg(not(feature = "cuda"))]
        let storage = {
            let mut out = vec![value; out_shape.iter().product()];
            self.with_f32("pad", |src, l| copy_into_box(src, l, &mut out, &out_shape, &start))?;
            f32_storage(out)
        };
        let in_shape = self.shape().to_vec();
        Ok(Tensor::from_op(
            storage,
            &out_shape,
            "pad",
            &[self],
            bw(move |c| {
                let mut g = c.grad.clone();
                for (d, (&s, &n)) in start.iter().zip(&in_shape).enumerate() {
                    g = g.narrow(d, s, n)?;
                }
                Ok(vec![Some(g.contiguous()?)])
            }),
        ))
    }

    /// Pads the last two dims (NCHW): `left, right, top, bottom`.
    pub fn pad2d(&self, left: usize, right: usize, top: usize, bottom: usize, value: f32) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::bad_shape("pad2d", self.shape(), "need at least 2 dims"));
        }
        let mut pads = vec![(0, 0); self.rank()];
        let r = self.rank();
        pads[r - 2] = (top, bottom);
        pads[r - 1] = (left, right);
        self.pad(&pads, value)
    }

    /// Concatenates along `dim`.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("cat", "no tensors to concatenate"))?;
        first.layout().check_dim_pub("cat", dim)?;
        let mut out_shape = first.shape().to_vec();
        out_shape[dim] = 0;
        for t in tensors {
            let ok = t.rank() == first.rank() && t.shape().iter().zip(first.shape()).enumerate().all(|(d, (a, b))| d == dim || a == b);
            if !ok {
                return Err(Error::ShapeMismatch { op: "cat", lhs: first.shape().to_vec(), rhs: t.shape().to_vec() });
            }
            out_shape[dim] += t.shape()[dim];
        }
        #[cfg(feature = "cuda")]
        let cuda = if tensors.iter().any(|t| t.is_cuda()) { Some(crate::cuda::index::cat(tensors, dim, &out_shape)?) } else { None };
        #[cfg(not(feature = "cuda"))]
        let cuda: Option<crate::storage::Storage> = None;
        let storage = match cuda {
            Some(s) => s,
            None => {
                let mut out = vec![0f32; out_shape.iter().product()];
                let mut start = vec![0; out_shape.len()];
                for t in tensors {
                    t.with_f32("cat", |src, l| copy_into_box(src, l, &mut out, &out_shape, &start))?;
                    start[dim] += t.shape()[dim];
                }
                f32_storage(out)
            }
        };
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[dim]).collect();
        Ok(Tensor::from_op(
            storage,
            &out_shape,
            "cat",
            tensors,
            bw(move |c| {
                let mut grads = Vec::with_capacity(sizes.len());
                let mut at = 0;
                for (&s, &need) in sizes.iter().zip(c.needs) {
                    grads.push(if need { Some(c.grad.narrow(dim, at, s)?.contiguous()?) } else { None });
                    at += s;
                }
                Ok(grads)
            }),
        ))
    }

    /// Splits `dim` into pieces of the given sizes (views).
    pub fn split(&self, sizes: &[usize], dim: usize) -> Result<Vec<Tensor>> {
        let total = self.dim(dim)?;
        if sizes.iter().sum::<usize>() != total {
            crate::error::bail!("split", "sizes {sizes:?} do not add up to dim {dim} of shape {:?}", self.shape());
        }
        let mut at = 0;
        sizes
            .iter()
            .map(|&s| {
                let t = self.narrow(dim, at, s);
                at += s;
                t
            })
            .collect()
    }

    /// Splits `dim` into `n` equal pieces (views).
    pub fn chunk(&self, n: usize, dim: usize) -> Result<Vec<Tensor>> {
        let total = self.dim(dim)?;
        if n == 0 || total % n != 0 {
            crate::error::bail!("chunk", "dim {dim} of shape {:?} does not split into {n} equal chunks", self.shape());
        }
        self.split(&vec![total / n; n], dim)
    }

    /// Selects entries `indices` (an i64 tensor of rank 1) along `dim`.
    pub fn index_select(&self, dim: usize, indices: &Tensor) -> Result<Tensor> {
        let op = "index_select";
        self.layout().check_dim_pub(op, dim)?;
        if indices.rank() != 1 {
            return Err(Error::bad_shape(op, indices.shape(), "indices must be rank 1"));
        }
        let idx = indices.to_vec_i64()?;
        let size = self.shape()[dim];
        let idx: Vec<usize> = idx
            .iter()
            .map(|&i| {
                if i < 0 || i as usize >= size {
                    Err(Error::invalid(op, format!("index {i} out of range for dim {dim} of shape {:?}", self.shape())))
                } else {
                    Ok(i as usize)
                }
            })
            .collect::<Result<_>>()?;
        #[cfg(feature = "cuda")]
        if self.is_cuda() || indices.is_cuda() {
            let (s, idx_t) = crate::cuda::index::index_select(self, dim, &idx, indices)?;
            let mut out_shape = self.shape().to_vec();
            out_shape[dim] = idx.len();
            let in_shape = self.shape().to_vec();
            return Ok(Tensor::from_op(
                s,
                &out_shape,
                op,
                &[self],
                bw(move |c| Ok(vec![Some(crate::cuda::index::index_select_backward(c.grad, &idx_t, &in_shape, dim)?)])),
            ));
        }
        let src = self.contiguous()?;
        let outer: usize = self.shape()[..dim].iter().product();
        let inner: usize = self.shape()[dim + 1..].iter().product();
        let mut out = vec![0f32; outer * idx.len() * inner];
        src.with_contiguous_f32(op, |s| {
            for o in 0..outer {
                for (j, &i) in idx.iter().enumerate() {
                    let from = (o * size + i) * inner;
                    let to = (o * idx.len() + j) * inner;
                    out[to..to + inner].copy_from_slice(&s[from..from + inner]);
                }
            }
        })?;
        let mut out_shape = self.shape().to_vec();
        out_shape[dim] = idx.len();
        let in_shape = self.shape().to_vec();
        Ok(Tensor::from_op(
            f32_storage(out),
            &out_shape,
            op,
            &[self],
            bw(move |c| {
                // index_add of the gradient rows into zeros.
                let g = c.grad.contiguous()?.to_vec_f32()?;
                let mut acc = vec![0f32; in_shape.iter().product()];
                for o in 0..outer {
                    for (j, &i) in idx.iter().enumerate() {
                        let to = (o * size + i) * inner;
                        let from = (o * idx.len() + j) * inner;
                        for (a, &x) in acc[to..to + inner].iter_mut().zip(&g[from..from + inner]) {
                            *a += x;
                        }
                    }
                }
                Ok(vec![Some(Tensor::from_storage(f32_storage(acc), &in_shape))])
            }),
        ))
    }

    /// Embedding lookup: rows of this `[num, dim]` table for i64 `ids` of any
    /// shape; the result has shape `ids.shape() + [dim]`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::bad_shape("embedding", self.shape(), "the table must be [num_embeddings, dim]"));
        }
        let flat = ids.reshape(&[ids.elem_count()])?;
        let mut shape = ids.shape().to_vec();
        shape.push(self.shape()[1]);
        self.index_select(0, &flat)?.reshape(&shape)
    }
}

impl crate::Layout {
    pub(crate) fn check_dim_pub(&self, op: &'static str, dim: usize) -> Result<()> {
        self.check_dim(op, dim)
    }
}
