//! Matrix products through the `gemm` crate (packed, SIMD, rayon-parallel
//! kernels): `[..., m, k] @ [..., k, n]` with broadcast batch dims, reading
//! transposed operands through their strides without copying.

use crate::layout::broadcast_shapes;
use crate::ops::view::f32_storage;
use crate::tensor::bw;
use crate::{Error, Layout, Result, Tensor};
use rayon::prelude::*;

/// Work (m·n·k) above which one product is worth gemm's own threads.
const PAR_GEMM_WORK: usize = 1 << 18;

/// `out[m,n] = lhs[m,k] · rhs[k,n]` for one matrix, given element strides
/// (row, col) of each operand; `out` is row-major.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32(
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    accumulate: bool,
    parallel: bool,
) {
    assert!(out.len() >= m * n, "gemm_f32: output buffer too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    // Bounds of the strided operands must lie inside the slices.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len() && last(k, n, rhs_rs, rhs_cs) < rhs.len(), "gemm_f32: operand out of bounds");
    let par = if parallel && m * n * k >= PAR_GEMM_WORK {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above guarantee that every element addressed
    // through (rows, cols, strides) lies inside `out`, `lhs` and `rhs`; `out`
    // is uniquely borrowed and does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Batched product of two broadcast layouts of equal batch shape.
fn bmm(a: &[f32], la: &Layout, b: &[f32], lb: &Layout, m: usize, k: usize, n: usize) -> Vec<f32> {
    let r = la.rank();
    let batch_shape = &la.shape()[..r - 2];
    let batch: usize = batch_shape.iter().product();
    let (ars, acs) = (la.strides()[r - 2], la.strides()[r - 1]);
    let (brs, bcs) = (lb.strides()[r - 2], lb.strides()[r - 1]);
    let offsets = |l: &Layout, i: usize| {
        let mut rem = i;
        let mut off = l.offset();
        for d in (0..r - 2).rev() {
            off += (rem % l.shape()[d]) * l.strides()[d];
            rem /= l.shape()[d];
        }
        off
    };
    let mut out = vec![0f32; batch * m * n];
    if m * n == 0 {
        return out;
    }
    let one = |i: usize, o: &mut [f32], parallel: bool| {
        let (oa, ob) = (offsets(la, i), offsets(lb, i));
        gemm_f32(o, m, n, k, &a[oa..], ars, acs, &b[ob..], brs, bcs, false, parallel);
    };
    if batch == 1 || m * n * k >= PAR_GEMM_WORK * 8 {
        out.chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, true));
    } else {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, false));
    }
    out
}

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
        #[cfg(feature = "cuda")]
        let storage = if self.is_cuda() || rhs.is_cuda() {
            crate::cuda::gemm::matmul(self, rhs, &batch, m, k, n)?
        } else {
            let (la, lb) = (self.layout().broadcast_as(&sa)?, rhs.layout().broadcast_as(&sb)?);
            let (ga, gb) = (self.storage(), rhs.storage());
            f32_storage(bmm(ga.cpu_f32(op)?, &la, gb.cpu_f32(op)?, &lb, m, k, n))
        };
        #[cfg(not(feature = "cuda"))]
        let storage = {
            let (la, lb) = (self.layout().broadcast_as(&sa)?, rhs.layout().broadcast_as(&sb)?);
            let (ga, gb) = (self.storage(), rhs.storage());
            f32_storage(bmm(ga.cpu_f32(op)?, &la, gb.cpu_f32(op)?, &lb, m, k, n))
        };
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
        #[cfg(feature = "cuda")]
        let cuda_out = if self.is_cuda() || weight.is_cuda() || bias.is_some_and(|b| b.is_cuda()) {
            Some(crate::cuda::gemm::linear(&x2, weight, bias, m, k, n)?)
        } else {
            None
        };
        #[cfg(not(feature = "cuda"))]
        let cuda_out: Option<crate::storage::Storage> = None;
        let storage = match cuda_out {
            Some(s) => s,
            None => f32_storage(Self::linear_cpu(&x2, weight, bias, m, k, n)?),
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

    /// The CPU forward of `linear`: one GEMM onto rows pre-filled with the bias.
    fn linear_cpu(x2: &Tensor, weight: &Tensor, bias: Option<&Tensor>, m: usize, k: usize, n: usize) -> Result<Vec<f32>> {
        let op = "linear";
        let mut out = vec![0f32; m * n];
        if let Some(b) = bias {
            let bv = b.to_vec_f32()?;
            for row in out.chunks_mut(n.max(1)) {
                row.copy_from_slice(&bv);
            }
        }
        {
            let (sx, sw) = (x2.storage(), weight.storage());
            let (lx, lw) = (x2.layout(), weight.layout());
            let (xv, wv) = (&sx.cpu_f32(op)?[lx.offset()..], &sw.cpu_f32(op)?[lw.offset()..]);
            // rhs[kk, j] = W[j, kk]
            gemm_f32(&mut out, m, n, k, xv, lx.strides()[0], lx.strides()[1], wv, lw.strides()[1], lw.strides()[0], bias.is_some(), true);
        }
        Ok(out)
    }
}
