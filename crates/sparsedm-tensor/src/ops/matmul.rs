//! Matrix products: `[..., m, k] @ [..., k, n]` with broadcast batch dims
//! (operands are passed to the backend as broadcast views, so transposed
//! operands are read through their strides without copying), and `linear`.

use crate::layout::broadcast_shapes;
use crate::tensor::bw;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Matrix product over the last two dims, batch dims broadcast.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let op = "matmul";
        let (ra, rb) = (self.rank(), rhs.rank());
        if ra < 2 || rb < 2 {
            return Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: rhs.shape().to_vec() });
        }
        let (m, k) = (self.shape()[ra - 2], self.shape()[ra - 1]);
        let (k2, n) = (rhs.shape()[rb - 2], rhs.shape()[rb - 1]);
        if k != k2 {
            return Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: rhs.shape().to_vec() });
        }
        // [.., m, k] @ [k, n]: fold the batch into m (one large GEMM, and a
        // plain 2-D weight gradient instead of a batch of them).
        if rb == 2 && ra > 2 {
            let lead = &self.shape()[..ra - 1];
            let x2 = self.reshape(&[lead.iter().product(), k])?;
            let mut out_shape = lead.to_vec();
            out_shape.push(n);
            return x2.matmul(rhs)?.reshape(&out_shape);
        }
        let batch = broadcast_shapes(op, &self.shape()[..ra - 2], &rhs.shape()[..rb - 2])?;
        let mut sa = batch.clone();
        sa.extend([m, k]);
        let mut sb = batch.clone();
        sb.extend([k, n]);
        let (la, lb) = (self.layout().broadcast_as(&sa)?, rhs.layout().broadcast_as(&sb)?);
        let storage = self.storage().matmul(&la, &rhs.storage(), &lb, &batch, m, k, n)?;
        let mut out_shape = batch;
        out_shape.extend([m, n]);
        let (a, b) = (self.clone(), rhs.clone());
        Ok(Tensor::from_op(
            storage,
            &out_shape,
            op,
            &[self, rhs],
            bw(move |c| {
                let ga = if c.needs[0] { Some(c.grad.matmul(&b.t()?)?.sum_to_shape(a.shape())?) } else { None };
                let gb = if c.needs[1] { Some(a.t()?.matmul(c.grad)?.sum_to_shape(b.shape())?) } else { None };
                Ok(vec![ga, gb])
            }),
        ))
    }
}

impl Tensor {
    /// `x · Wᵀ + b` over the last dim of `x` (`[..., in]`, weight
    /// `[out, in]`, bias `[out]`), as `torch.nn.functional.linear`: one GEMM
    /// whose output starts as the broadcast bias, so the bias costs no pass
    /// of its own.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let op = "linear";
        let k =
            *self.shape().last().ok_or_else(|| Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: weight.shape().to_vec() })?;
        if weight.rank() != 2 || weight.shape()[1] != k {
            return Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: weight.shape().to_vec() });
        }
        let n = weight.shape()[0];
        if let Some(b) = bias
            && b.shape() != [n]
        {
            return Err(Error::ShapeMismatch { op, lhs: weight.shape().to_vec(), rhs: b.shape().to_vec() });
        }
        let m = self.elem_count() / k.max(1);
        let x2 = self.reshape(&[m, k])?;
        let storage = {
            let (sb, lb) = (bias.map(|b| b.storage()), bias.map(|b| b.layout()));
            let bias_op = sb.as_deref().zip(lb);
            x2.storage().linear(x2.layout(), (&weight.storage(), weight.layout()), bias_op, m, k, n)?
        };
        let mut out_shape = self.shape().to_vec();
        *out_shape.last_mut().expect("rank >= 1") = n;
        let (xs, ws) = (x2.clone(), weight.clone());
        let in_shape = self.shape().to_vec();
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        Ok(Tensor::from_op(
            storage,
            &out_shape,
            op,
            &inputs,
            bw(move |c| {
                let g = c.grad.reshape(&[m, n])?;
                let gx = if c.needs[0] { Some(g.matmul(&ws)?.reshape(&in_shape)?) } else { None };
                let gw = if c.needs[1] { Some(g.t()?.matmul(&xs)?) } else { None };
                let mut grads = vec![gx, gw];
                if c.needs.len() == 3 {
                    grads.push(if c.needs[2] { Some(g.sum_dims(&[0], false)?) } else { None });
                }
                Ok(grads)
            }),
        ))
    }
}

impl Tensor {
    /// `linear(cat(parts, -1), weight, bias)` without materialising the
    /// concatenation where the backend can (the CPU adds one product per
    /// part into the output): U-ViT's long-skip Linear on `[x, skip]`. The
    /// parts share their leading dims; their last dims add up to the
    /// weight's `in`. The gradient of each part reads its columns of the
    /// weight through a view; the weight's gradient is the parts' blocks
    /// side by side.
    ///
    /// # Errors
    /// No parts, parts whose leading dims differ, widths that do not add up
    /// to the weight's input size, a bias that is not `[out]`, or operands
    /// on different devices.
    pub fn linear_cat(parts: &[&Tensor], weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let op = "linear_cat";
        let first = *parts.first().ok_or_else(|| Error::invalid(op, "no parts to concatenate"))?;
        let rank = first.rank();
        let bad = |t: &Tensor| Error::ShapeMismatch { op, lhs: t.shape().to_vec(), rhs: weight.shape().to_vec() };
        if rank == 0 || weight.rank() != 2 {
            return Err(bad(first));
        }
        let lead = &first.shape()[..rank - 1];
        if let Some(p) = parts.iter().find(|p| p.rank() != rank || &p.shape()[..rank - 1] != lead) {
            return Err(Error::ShapeMismatch { op, lhs: first.shape().to_vec(), rhs: p.shape().to_vec() });
        }
        let ks: Vec<usize> = parts.iter().map(|p| p.shape()[rank - 1]).collect();
        let (n, k) = (weight.shape()[0], ks.iter().sum::<usize>());
        if weight.shape()[1] != k {
            return Err(bad(first));
        }
        if let Some(b) = bias
            && b.shape() != [n]
        {
            return Err(Error::ShapeMismatch { op, lhs: weight.shape().to_vec(), rhs: b.shape().to_vec() });
        }
        let m: usize = lead.iter().product();
        let xs: Vec<Tensor> = parts.iter().zip(&ks).map(|(p, &ki)| p.reshape(&[m, ki])).collect::<Result<_>>()?;
        let storage = {
            let stores: Vec<_> = xs.iter().map(|x| x.storage()).collect();
            let operands: Vec<_> = stores.iter().zip(&xs).map(|(s, x)| (&**s, x.layout())).collect();
            let (sb, lb) = (bias.map(|b| b.storage()), bias.map(|b| b.layout()));
            crate::storage::Storage::linear_cat(&operands, (&weight.storage(), weight.layout()), sb.as_deref().zip(lb), m, &ks, n)?
        };
        let mut out_shape = lead.to_vec();
        out_shape.push(n);
        let shapes: Vec<Vec<usize>> = parts.iter().map(|p| p.shape().to_vec()).collect();
        let w = weight.clone();
        let mut inputs: Vec<&Tensor> = parts.to_vec();
        inputs.push(weight);
        if let Some(b) = bias {
            inputs.push(b);
        }
        let np = parts.len();
        Ok(Tensor::from_op(
            storage,
            &out_shape,
            op,
            &inputs,
            bw(move |c| {
                let g = c.grad.reshape(&[m, n])?;
                let mut grads = Vec::with_capacity(c.needs.len());
                let mut off = 0;
                for (i, (&ki, shape)) in ks.iter().zip(&shapes).enumerate() {
                    grads.push(if c.needs[i] { Some(g.matmul(&w.narrow(1, off, ki)?)?.reshape(shape)?) } else { None });
                    off += ki;
                }
                grads.push(if c.needs[np] {
                    let blocks: Vec<Tensor> = xs.iter().map(|x| g.t()?.matmul(x)).collect::<Result<_>>()?;
                    Some(Tensor::cat(&blocks.iter().collect::<Vec<_>>(), 1)?)
                } else {
                    None
                });
                if c.needs.len() == np + 2 {
                    grads.push(if c.needs[np + 1] { Some(g.sum_dims(&[0], false)?) } else { None });
                }
                Ok(grads)
            }),
        ))
    }
}
