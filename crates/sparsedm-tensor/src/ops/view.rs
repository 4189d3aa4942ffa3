//! Zero-copy views: reshape (of contiguous data), transpose, permute, narrow,
//! broadcast, unsqueeze/squeeze; and `contiguous`, which copies only when
//! the layout is not already row-major.

use crate::tensor::bw;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Reshapes; zero-copy for contiguous tensors, a copy otherwise.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.elem_count() {
            return Err(Error::ElementCount { op: "reshape", shape: shape.to_vec(), len: self.elem_count() });
        }
        let src = if self.is_contiguous() { self.clone() } else { self.contiguous()? };
        let layout = src.layout().reshape(shape).ok_or_else(|| Error::invalid("reshape", "internal: not contiguous"))?;
        let in_shape = self.shape().to_vec();
        Ok(src.view_op(layout, "reshape", bw(move |c| Ok(vec![Some(c.grad.reshape(&in_shape)?)]))))
    }

    /// Merges dims `from..` into one.
    pub fn flatten_from(&self, from: usize) -> Result<Tensor> {
        if from >= self.rank() {
            return Err(Error::DimOutOfRange { op: "flatten_from", dim: from, shape: self.shape().to_vec() });
        }
        let mut shape = self.shape()[..from].to_vec();
        shape.push(self.shape()[from..].iter().product());
        self.reshape(&shape)
    }

    /// Swaps dims `a` and `b` (a view).
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        let layout = self.layout().transpose(a, b)?;
        Ok(self.view_op(layout, "transpose", bw(move |c| Ok(vec![Some(c.grad.transpose(a, b)?)]))))
    }

    /// Transposes the last two dims.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::bad_shape("t", self.shape(), "need at least 2 dims"));
        }
        self.transpose(self.rank() - 2, self.rank() - 1)
    }

    /// Reorders dims: output dim `i` is input dim `perm[i]` (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute(perm)?;
        let inv = crate::layout::inverse_permutation(perm);
        Ok(self.view_op(layout, "permute", bw(move |c| Ok(vec![Some(c.grad.permute(&inv)?)]))))
    }

    /// `len` entries of `dim` from `start` (a view).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let layout = self.layout().narrow(dim, start, len)?;
        let size = self.shape()[dim];
        let rank = self.rank();
        Ok(self.view_op(
            layout,
            "narrow",
            bw(move |c| {
                let mut pads = vec![(0, 0); rank];
                pads[dim] = (start, size - start - len);
                Ok(vec![Some(c.grad.pad(&pads, 0.0)?)])
            }),
        ))
    }

    /// Broadcasts to `shape` (a view with zero strides).
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_as(shape)?;
        let in_shape = self.shape().to_vec();
        Ok(self.view_op(layout, "broadcast_as", bw(move |c| Ok(vec![Some(c.grad.sum_to_shape(&in_shape)?)]))))
    }

    /// Inserts a size-1 dim at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        let layout = self.layout().unsqueeze(dim)?;
        Ok(self.view_op(layout, "unsqueeze", bw(move |c| Ok(vec![Some(c.grad.squeeze(dim)?)]))))
    }

    /// Removes the size-1 dim `dim`.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        let layout = self.layout().squeeze(dim)?;
        Ok(self.view_op(layout, "squeeze", bw(move |c| Ok(vec![Some(c.grad.unsqueeze(dim)?)]))))
    }

    /// A row-major copy, or `self` when already contiguous.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let data = self.storage().copy_view(self.layout(), "contiguous")?;
        Ok(Tensor::from_op(data, self.shape(), "contiguous", &[self], bw(|c| Ok(vec![Some(c.grad.clone())]))))
    }

    /// Sums a broadcast gradient back to `shape` (the inverse of
    /// `broadcast_as`): leading extra dims and stretched size-1 dims are summed.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let rank = self.rank();
        if shape.len() > rank {
            return Err(Error::ShapeMismatch { op: "sum_to_shape", lhs: self.shape().to_vec(), rhs: shape.to_vec() });
        }
        let extra = rank - shape.len();
        let mut dims: Vec<usize> = (0..extra).collect();
        for (i, &d) in shape.iter().enumerate() {
            let have = self.shape()[extra + i];
            if d == 1 && have != 1 {
                dims.push(extra + i);
            } else if d != have {
                return Err(Error::ShapeMismatch { op: "sum_to_shape", lhs: self.shape().to_vec(), rhs: shape.to_vec() });
            }
        }
        self.sum_dims(&dims, true)?.reshape(shape)
    }
}
