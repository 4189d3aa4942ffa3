//! Data movement: constant padding, concatenation, split/chunk,
//! `index_select` and embedding lookup. Padding and concatenation write
//! views into boxes of a new buffer (one backend primitive, `assemble`).

use crate::storage::Storage;
use crate::tensor::bw;
use crate::{Error, Layout, Result, Tensor};

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
        let mut region = Layout::contiguous(&out_shape);
        for (d, (&st, &len)) in start.iter().zip(self.shape()).enumerate() {
            region = region.narrow(d, st, len)?;
        }
        let storage = Storage::assemble(&[(&self.storage(), self.layout(), region)], &out_shape, Some(value), "pad")?;
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
        let storage = {
            let full = Layout::contiguous(&out_shape);
            let guards: Vec<_> = tensors.iter().map(|t| t.storage()).collect();
            let mut at = 0;
            let mut parts = Vec::with_capacity(tensors.len());
            for (t, g) in tensors.iter().zip(&guards) {
                parts.push((&**g, t.layout(), full.narrow(dim, at, t.shape()[dim])?));
                at += t.shape()[dim];
            }
            Storage::assemble(&parts, &out_shape, None, "cat")?
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
        // The validated indices on the tensor's device, kept for the backward.
        let idx_t = Tensor::from_vec_i64(idx.iter().map(|&i| i as i64).collect(), &[idx.len()], &self.device())?;
        let out = self.storage().index_select(self.layout(), dim, &idx_t.storage())?;
        let mut out_shape = self.shape().to_vec();
        out_shape[dim] = idx.len();
        let in_shape = self.shape().to_vec();
        Ok(Tensor::from_op(
            out,
            &out_shape,
            op,
            &[self],
            bw(move |c| {
                let gx = c.grad.storage().index_select_backward(c.grad.layout(), &idx_t.storage(), &in_shape, dim)?;
                Ok(vec![Some(Tensor::from_storage(gx, &in_shape))])
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
