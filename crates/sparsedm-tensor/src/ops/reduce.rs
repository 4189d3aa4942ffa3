//! Reductions over dimensions: sum, mean, max, var. Sum and max are
//! backend primitives (the max keeps its index for the backward); mean and
//! var are built from them.

use crate::tensor::bw;
use crate::{Error, Result, Tensor};

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

impl Tensor {
    /// Sums over `dims`.
    pub fn sum_dims(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let dims = normalize_dims("sum", self.shape(), dims)?;
        let out_shape = reduced_shape(self.shape(), &dims, keepdim);
        let values = self.storage().sum_dims(self.layout(), &dims)?;
        let in_shape = self.shape().to_vec();
        let kept_shape = reduced_shape(self.shape(), &dims, true);
        Ok(Tensor::from_op(
            values,
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

    /// Σx² over all elements (a 0-dim f32 tensor on this tensor's device),
    /// reading the elements once where the backend can (the CPU: no squared
    /// copy, f64 accumulation): a gradient's squared norm. Its gradient is
    /// 2x times the output's.
    ///
    /// # Errors
    /// A dtype other than f32, or a failed launch.
    pub fn sum_sq_all(&self) -> Result<Tensor> {
        if self.dtype() != crate::DType::F32 {
            return Err(Error::UnsupportedDType { op: "sum_sq_all", dtype: self.dtype(), expected: "f32" });
        }
        let values = self.storage().sum_sq_all(self.layout())?;
        let x = self.clone();
        Ok(Tensor::from_op(
            values,
            &[],
            "sum_sq_all",
            &[self],
            bw(move |c| {
                let ones = vec![1; x.rank()];
                let g = c.grad.reshape(&ones)?.broadcast_as(x.shape())?;
                Ok(vec![Some(x.mul(&g)?.mul_scalar(2.0)?)])
            }),
        ))
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
        let (values, idx) = self.storage().max_dim(self.layout(), dim)?;
        let index = Tensor::from_storage(idx, &out_shape);
        let (idx, in_shape) = (index.clone(), self.shape().to_vec());
        let kept_shape = reduced_shape(self.shape(), &dims, true);
        let out = Tensor::from_op(
            values,
            &out_shape,
            "max",
            &[self],
            bw(move |c| {
                // The gradient goes to the first maximal element (the saved index).
                let g = c.grad.reshape(&kept_shape)?;
                let gi = g.storage().max_dim_backward(g.layout(), &idx.storage(), &in_shape, dim)?;
                Ok(vec![Some(Tensor::from_storage(gi, &in_shape))])
            }),
        );
        Ok((out, index))
    }
}
