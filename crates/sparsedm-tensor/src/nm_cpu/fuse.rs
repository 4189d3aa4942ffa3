//! What an N:M layer's call can take in with it: the layer norm of its
//! input rows (a pre-norm block: U-ViT's `norm1` before `qkv`, `norm2`
//! before `fc1`) and a residual added to its output (`x + proj(…)`,
//! `x + fc2(…)`).
//!
//! Why: in the sampling forward of a pre-norm transformer these are
//! separate passes over `[tokens, width]` memory around every N:M layer:
//! the norm writes its output and the layer reads it back to build its
//! panels; the layer writes its output and the add reads it back with the
//! residual. The row-wise kernel (AVX2) instead normalises each 64-token
//! tile into cache-resident scratch just before transposing it into its
//! panel, and adds the residual as it stores the tile. Results are the
//! same bits as the separate ops: the same row function normalises (see
//! `backend/cpu/rows.rs`), and the layer's sum is complete before the
//! residual is added to it, as the add op does. Every other path (the
//! pattern kernel, the dense GEMM) runs the norm and the add apart, with
//! the same functions ([`NmFuse::normed`], [`NmFuse::add_residual`]).

use crate::backend::cpu::rows::{layer_norm_last, layer_norm_rows_into};
use crate::{Error, Result, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;

/// `torch.nn.LayerNorm` over the last dimension: `(x − mean)·rstd·w + b`,
/// the affine parts optional.
#[derive(Debug, Clone, Copy)]
pub struct RowNorm<'a> {
    /// The scale `w` (`in` floats), if any.
    pub weight: Option<&'a [f32]>,
    /// The shift `b` (`in` floats), if any.
    pub bias: Option<&'a [f32]>,
    /// Added to the variance.
    pub eps: f32,
}

/// A layer norm given as tensors (`[in]` each, any dtype; copied to the
/// host as f32), for the tensor-level calls
/// ([`super::NmLinear::forward_tensor_fused`], [`super::nm_mlp_forward_fused`]).
#[derive(Debug, Clone, Copy)]
pub struct NormParams<'a> {
    /// The scale, if any.
    pub weight: Option<&'a Tensor>,
    /// The shift, if any.
    pub bias: Option<&'a Tensor>,
    /// Added to the variance.
    pub eps: f32,
}

/// The work fused into one N:M call: `y = norm(x)·Wᵀ + b + residual`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NmFuse<'a> {
    /// The layer norm of the input rows, if any.
    pub norm: Option<RowNorm<'a>>,
    /// Added to the output (`rows·out` floats, row-major like it), if any.
    pub residual: Option<&'a [f32]>,
}

/// Above this many elements the separate add runs in parallel.
const PAR_ADD: usize = 1 << 15;

impl NmFuse<'_> {
    /// Nothing fused: the plain `y = x·Wᵀ + b`.
    pub const NONE: NmFuse<'static> = NmFuse { norm: None, residual: None };

    /// The lengths: the norm's affine parts `in` floats, the residual
    /// `rows·out`.
    pub(crate) fn check(&self, op: &'static str, rows: usize, inp: usize, out: usize) -> Result<()> {
        if let Some(n) = &self.norm {
            for (what, p) in [("weight", n.weight), ("bias", n.bias)] {
                if let Some(p) = p
                    && p.len() != inp
                {
                    return Err(Error::invalid(op, format!("layer norm {what} has {} floats, the input rows {inp}", p.len())));
                }
            }
        }
        if let Some(r) = self.residual
            && r.len() != rows * out
        {
            return Err(Error::ElementCount { op, shape: vec![rows, out], len: r.len() });
        }
        Ok(())
    }

    /// `x` (rows of `inp`) with the norm applied, materialised, for the
    /// paths that do not normalise tile by tile; `x` itself without a norm.
    pub(crate) fn normed<'x>(&self, x: &'x [f32], inp: usize) -> Cow<'x, [f32]> {
        match &self.norm {
            Some(n) if inp > 0 => Cow::Owned(layer_norm_last(x, inp, n.eps, n.weight, n.bias).0),
            _ => Cow::Borrowed(x),
        }
    }

    /// Adds the residual to `y`, which a path that does not fuse it has
    /// written completely.
    ///
    /// # Safety
    /// Every element of `y` is initialised; the residual (if any) has
    /// `y.len()` floats ([`NmFuse::check`]).
    pub(crate) unsafe fn add_residual(&self, y: &mut [MaybeUninit<f32>]) {
        let Some(r) = self.residual else { return };
        // SAFETY: the caller guarantees every element is initialised.
        let y = unsafe { &mut *(std::ptr::from_mut(y) as *mut [f32]) };
        let add = |(y, r): (&mut [f32], &[f32])| y.iter_mut().zip(r).for_each(|(y, &r)| *y += r);
        if y.len() < PAR_ADD {
            add((y, r));
        } else {
            y.par_chunks_mut(PAR_ADD / 4).zip(r.par_chunks(PAR_ADD / 4)).for_each(add);
        }
    }
}

impl RowNorm<'_> {
    /// The norm of `rows` rows of `inp` floats at `x` (contiguous) into
    /// `y`, one thread: what [`NmFuse::normed`] gives for those rows, bit
    /// for bit.
    ///
    /// # Safety
    /// `x` holds `rows·inp` readable floats and `y` as many writable ones;
    /// the affine parts hold `inp` floats.
    pub(crate) unsafe fn rows_into(&self, x: *const f32, rows: usize, inp: usize, y: *mut f32) {
        // SAFETY: as the caller guarantees.
        let (x, y) = unsafe {
            (std::slice::from_raw_parts(x, rows * inp), std::slice::from_raw_parts_mut(y.cast::<MaybeUninit<f32>>(), rows * inp))
        };
        layer_norm_rows_into(x, inp, self.eps, self.weight, self.bias, y);
    }
}
