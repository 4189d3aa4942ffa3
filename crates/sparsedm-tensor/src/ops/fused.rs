//! Fused, in-place training updates and the N:M magnitude mask, on any
//! device: one AdamW step over a parameter and its two moments, the EMA of
//! weights, and the grouped N:M mask of a weight. Each is one backend
//! primitive (a single kernel per parameter on a GPU, so a training step
//! never moves parameters through host memory; parallel loops on the CPU).
//! The arithmetic is the same on every device: that of `sparsedm-train`'s
//! AdamW and EMA, operation by operation (see `kernels/optim.cu`), and the
//! N:M rule of [`crate::nm`].

use crate::op_kinds::AdamWScalars;
use crate::{DType, Error, Result, Tensor};

/// Checks that `t` is f32 and that its elements are its whole buffer from
/// element 0 in row-major order: an in-place update writes the buffer, not a view.
fn in_place_target(t: &Tensor, op: &'static str, what: &str) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: t.dtype(), expected: "f32" });
    }
    if t.layout().contiguous_range().is_none_or(|r| r.start != 0) {
        return Err(Error::bad_shape(op, t.shape(), format!("the {what} must be contiguous from the start of its buffer")));
    }
    Ok(())
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch { op, lhs: a.shape().to_vec(), rhs: b.shape().to_vec() });
    }
    Ok(())
}

/// Refuses operands that share a buffer: an update takes one mutable and
/// several shared borrows, and the storage locks would deadlock.
fn distinct(op: &'static str, ts: &[(&str, &Tensor)]) -> Result<()> {
    for (i, (na, a)) in ts.iter().enumerate() {
        for (nb, b) in &ts[i + 1..] {
            if a.shares_storage(b) {
                return Err(Error::invalid(op, format!("the {na} and the {nb} share one buffer")));
            }
        }
    }
    Ok(())
}

impl Tensor {
    /// One AdamW step on this parameter, in place: `self`, the first moment
    /// `exp_avg` and the second moment `exp_avg_sq` are rewritten from
    /// `grad` (one fused kernel on a GPU). Not recorded in the graph.
    ///
    /// `self`, `exp_avg` and `exp_avg_sq` must be f32, contiguous from the
    /// start of their own (distinct) buffers; `grad` may be any f32 view of
    /// the same shape. All four must be on the same device.
    ///
    /// # Errors
    /// Mismatched devices, shapes or dtypes, a non-contiguous target, shared
    /// buffers, or a failed launch.
    pub fn adamw_step_(&self, grad: &Tensor, exp_avg: &Tensor, exp_avg_sq: &Tensor, scalars: &AdamWScalars) -> Result<()> {
        let op = "adamw_step_";
        for t in [grad, exp_avg, exp_avg_sq] {
            same_shape(op, self, t)?;
            if t.device() != self.device() {
                return Err(Error::DeviceMismatch { op, lhs: self.device(), rhs: t.device() });
            }
        }
        if grad.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: grad.dtype(), expected: "f32" });
        }
        in_place_target(self, op, "parameter")?;
        in_place_target(exp_avg, op, "first moment")?;
        in_place_target(exp_avg_sq, op, "second moment")?;
        distinct(op, &[("parameter", self), ("gradient", grad), ("first moment", exp_avg), ("second moment", exp_avg_sq)])?;
        let gs = grad.storage();
        let (mut ps, mut ms, mut vs) = (self.storage_mut(), exp_avg.storage_mut(), exp_avg_sq.storage_mut());
        ps.adamw_step((&gs, grad.layout()), &mut ms, &mut vs, scalars, self.elem_count())
    }

    /// `self ← decay·self + (1 − decay)·value`, in place (one fused kernel
    /// on a GPU): the EMA of model weights. `self` must be f32 and
    /// contiguous from the start of its buffer; `value` any f32 view of the
    /// same shape on the same device, in another buffer. Not recorded in the graph.
    ///
    /// # Errors
    /// Mismatched devices, shapes or dtypes, a non-contiguous target, a
    /// shared buffer, or a failed launch.
    pub fn ema_update_(&self, value: &Tensor, decay: f32) -> Result<()> {
        let op = "ema_update_";
        same_shape(op, self, value)?;
        if value.device() != self.device() {
            return Err(Error::DeviceMismatch { op, lhs: self.device(), rhs: value.device() });
        }
        if value.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: value.dtype(), expected: "f32" });
        }
        in_place_target(self, op, "average")?;
        distinct(op, &[("average", self), ("value", value)])?;
        let vs = value.storage();
        self.storage_mut().ema_update((&vs, value.layout()), decay, self.elem_count())
    }

    /// The grouped `n:m` magnitude mask of this weight `[out, in, …]`
    /// (Linear `[out, in]`, Conv2d `[out, in, kh, kw]`) on its device: 1.0
    /// for the `n` largest `|w|` of every `m` consecutive input channels at
    /// each output and kernel position, 0.0 elsewhere; ties go to the
    /// earlier channel, NaN counts as largest ([`crate::nm`]'s rule, which
    /// also has the flat-index grouping). The result is an untracked f32
    /// tensor of the weight's shape.
    ///
    /// # Errors
    /// A rank below 2, a pattern outside `1 ≤ n ≤ m ≤ 32`, an input
    /// dimension that is not a multiple of `m`, a non-f32 weight, or a
    /// failed launch.
    pub fn nm_mask(&self, n: usize, m: usize) -> Result<Tensor> {
        let op = "nm_mask";
        let (rows, inp, k) = match self.shape() {
            [rows, inp, rest @ ..] => (*rows, *inp, rest.iter().product::<usize>()),
            _ => return Err(Error::bad_shape(op, self.shape(), "expected a weight [out, in, …]")),
        };
        if m == 0 || n == 0 || n > m || m > crate::nm::MAX_M || !inp.is_multiple_of(m) {
            return Err(Error::invalid(op, format!("pattern {n}:{m} on {inp} input channels (need 1 ≤ n ≤ m ≤ 32 and m | inputs)")));
        }
        if self.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype(), expected: "f32" });
        }
        let s = self.storage().nm_mask(self.layout(), rows, inp, k, n, m)?;
        Ok(Tensor::from_storage(s, self.shape()))
    }
}
