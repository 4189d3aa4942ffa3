//! Magnitude N:M masks: keep the N largest `|w|` of every group of M consecutive weights along the
//! input dimension.
//!
//! This is the rule of SR-STE (aojunzz/NM-sparsity `devkit/sparse_ops/sparse_ops.py`, copied into
//! SparseDM's `libs/sparse_ops_mask.py`): the weight's magnitudes are reshaped to `[numel/M, M]`
//! (for a conv after permuting `[out, in, kh, kw]` to `[out, kh, kw, in]`), `argsort` runs along
//! each group and the `M − N` smallest get mask 0. SR-STE and SparseDM recompute the mask from the
//! dense weights at **every forward pass of every sparse layer**, so [`mask_into`] writes into a
//! caller buffer, allocates nothing, and runs in parallel (rayon) over output rows of large layers.
//!
//! # Groups
//! See [`crate::nm::layout`]: a Linear groups `M` consecutive inputs of one row; a Conv2d groups `M`
//! consecutive input channels at a fixed `(out, ky, kx)` (stride `kh·kw` in memory). When the
//! input dimension is not a multiple of `M`, [`NonDivisible`] decides what happens.
//!
//! # Ties and non-finite values (deterministic)
//! The reference calls `torch.argsort` with its default `stable=False`, so its order among equal
//! magnitudes is unspecified (x86-simd-sort or `std::sort` on CPU, a bitonic/radix sort on CUDA).
//! This crate fixes one rule: **on equal `|w|` the element that comes earlier in the group is
//! kept** (earlier input index; for flat-index groups earlier in the `(out, ky, kx, in)` order).
//! That is "sort descending, stably, keep the first N". (A stable *ascending* argsort that prunes
//! the first `M − N` would do the opposite; neither is what PyTorch promises.) The golden fixture
//! has no ties inside any group, so it does not constrain this choice.
//! `-0.0` and `0.0` are equal; a NaN counts as larger than every number, `+inf` included, as in
//! PyTorch's sort (NaNs go last in ascending order, hence are kept).
//!
//! Implementation: the selection itself is [`sparsedm_tensor::nm::nm_mask_into`], the project's
//! one CPU implementation of the rule (the CUDA kernel `kernels/sparse.cu` is the other, and the
//! emulated-kernel tests compare the two). This module adds the layer vocabulary around it:
//! [`WeightLayout`], [`NmPattern`], and what to do with a non-divisible input dimension.

use sparsedm_tensor::nm::{NmGroups, nm_mask_into};

use crate::error::LayersError;
use crate::nm::layout::WeightLayout;
use crate::nm::pattern::NmPattern;

/// What to do with a layer whose input dimension is not a multiple of `M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NonDivisible {
    /// Leave the layer dense (mask of ones) and report [`MaskOutcome::LeftDense`] so the caller
    /// can say so. This is the default, and what apex ASP does with layers it cannot group.
    #[default]
    LeaveDense,
    /// SparseDM's flat-index grouping (MODELS_AND_METHOD.md §7.2, used for its UNet's first conv
    /// with 3 input channels). The reference does
    /// `weight.abs().permute(0, 2, 3, 1).reshape(numel // M, M)` (`Sparse_NHWC`; `Sparse` for a
    /// Linear does the same without the permute): the weight is flattened in `(out, ky, kx, in)`
    /// order (`(out, in)` for a Linear) and every `M` consecutive elements of that flat order form
    /// one group, **whatever dimension boundaries they cross** (kernel positions, input channels,
    /// even output channels). The mask is permuted back afterwards. It requires `numel % M == 0`
    /// (otherwise the reference's reshape fails), and keeps exactly `N/M` of the weights. When
    /// `in % M == 0` it coincides with the normal grouping.
    FlatIndex,
}

/// How a mask was (or would be) computed for a given layout and pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaskOutcome {
    /// N:M groups along the input dimension (`in % M == 0`).
    Grouped,
    /// The input dimension is not a multiple of M and the flat-index grouping was used.
    FlatIndex,
    /// The input dimension is not a multiple of M and the layer was left dense (mask of ones).
    LeftDense,
}

/// Decides how a mask would be computed, without computing it: lets a layer report at
/// construction time that it will be left dense or use flat-index groups.
///
/// # Errors
/// An invalid layout, or [`LayersError::FlatIndexNotDivisible`] for flat-index grouping of a
/// weight whose element count is not a multiple of M.
pub fn plan_mask(layout: WeightLayout, pattern: NmPattern, non_divisible: NonDivisible) -> Result<MaskOutcome, LayersError> {
    let numel = layout.checked_numel()?;
    if layout.inp().is_multiple_of(pattern.m()) {
        return Ok(MaskOutcome::Grouped);
    }
    match non_divisible {
        NonDivisible::LeaveDense => Ok(MaskOutcome::LeftDense),
        NonDivisible::FlatIndex if numel % pattern.m() == 0 => Ok(MaskOutcome::FlatIndex),
        NonDivisible::FlatIndex => Err(LayersError::FlatIndexNotDivisible { layout, numel, pattern }),
    }
}

/// Computes the magnitude N:M mask of `weight` (PyTorch layout `layout`) as 0.0/1.0 values of
/// the same shape, ready to multiply with the weight.
///
/// # Errors
/// See [`mask_into`].
pub fn compute_mask(
    weight: &[f32],
    layout: WeightLayout,
    pattern: NmPattern,
    non_divisible: NonDivisible,
) -> Result<(Vec<f32>, MaskOutcome), LayersError> {
    let numel = layout.check_len("weight", weight.len())?;
    let mut mask = vec![0.0f32; numel];
    let outcome = mask_into(weight, &mut mask, layout, pattern, non_divisible)?;
    Ok((mask, outcome))
}

/// Writes the magnitude N:M mask of `weight` into `mask` (0.0 = pruned, 1.0 = kept); every
/// element of `mask` is overwritten. Allocation-free; parallel over output rows for large layers.
///
/// A dense pattern (`N == M`) and [`MaskOutcome::LeftDense`] give a mask of ones.
///
/// # Errors
/// An invalid layout, a `weight` or `mask` whose length is not `layout.numel()`
/// ([`LayersError::LengthMismatch`]), or [`LayersError::FlatIndexNotDivisible`].
pub fn mask_into(
    weight: &[f32],
    mask: &mut [f32],
    layout: WeightLayout,
    pattern: NmPattern,
    non_divisible: NonDivisible,
) -> Result<MaskOutcome, LayersError> {
    layout.check_len("weight", weight.len())?;
    layout.check_len("mask", mask.len())?;
    let outcome = plan_mask(layout, pattern, non_divisible)?;
    let shape = (layout.out(), layout.inp(), layout.kernel_area());
    let (n, m) = (pattern.n(), pattern.m());
    let groups = match outcome {
        _ if pattern.is_dense() => None,
        MaskOutcome::LeftDense => None,
        MaskOutcome::Grouped => Some(NmGroups::Grouped),
        MaskOutcome::FlatIndex => Some(NmGroups::FlatIndex),
    };
    match groups {
        None => mask.fill(1.0),
        Some(g) => nm_mask_into(weight, mask, shape, n, m, g)?,
    }
    Ok(outcome)
}

/// Index in the `(out, in, ky, kx)` buffer of flat position `f` of the `(out, ky, kx, in)` order.
pub(crate) use sparsedm_tensor::nm::flat_to_pytorch;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> NmPattern {
        s.parse().unwrap()
    }

    // The selection strategies themselves (rank counting, threshold selection, flat-index
    // regions, parallel vs serial) are tested where they live: sparsedm-tensor's
    // `backend/cpu/nm.rs`.

    #[test]
    fn ties_keep_the_earlier_element() {
        let l = WeightLayout::linear(1, 4).unwrap();
        let (mask, _) = compute_mask(&[1.0, -1.0, 1.0, 0.5], l, p("2:4"), NonDivisible::default()).unwrap();
        assert_eq!(mask, [1.0, 1.0, 0.0, 0.0]);
        let (mask, _) = compute_mask(&[0.0, -0.0, 0.0, 0.0], l, p("2:4"), NonDivisible::default()).unwrap();
        assert_eq!(mask, [1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn nan_counts_as_largest() {
        let l = WeightLayout::linear(1, 4).unwrap();
        let w = [f32::INFINITY, 1.0, f32::NAN, -2.0];
        let (mask, _) = compute_mask(&w, l, p("2:4"), NonDivisible::default()).unwrap();
        assert_eq!(mask, [1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn strided_conv_groups() {
        // [1, 4, 1, 2]: kernel position 0 holds 1, 2, 3, 4 and position 1 holds 4, 3, 2, 1.
        let l = WeightLayout::conv2d(1, 4, 1, 2).unwrap();
        let w = [1.0, 4.0, 2.0, 3.0, 3.0, 2.0, 4.0, 1.0];
        let (mask, o) = compute_mask(&w, l, p("1:4"), NonDivisible::default()).unwrap();
        assert_eq!(o, MaskOutcome::Grouped);
        assert_eq!(mask, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }
}
