//! Checks and measures of N:M sparsity: does a weight (or a mask) have at most N nonzeros in
//! every group of M along its input dimension, and how sparse is it.
//!
//! Used to verify a masked weight before it goes to a 2:4 sparse GEMM, to verify exported
//! checkpoints, and in tests. Validation is not on the hot path and runs on one thread, so the
//! error can name the *first* offending group in a defined order: by output index, then kernel
//! position `(ky, kx)`, then input range (the `(out, ky, kx, in)` order of the reference).
//! A value counts as nonzero unless it equals `0.0` (`-0.0` is zero, NaN is nonzero).

use crate::error::LayersError;
use crate::nm::layout::WeightLayout;
use crate::nm::mask::{NonDivisible, flat_to_pytorch};
use crate::nm::pattern::NmPattern;

/// Checks that `values` (a weight or a mask in layout `layout`) has at most `N` nonzeros in every
/// group of `M` along the input dimension.
///
/// A dense pattern (`N == M`) is satisfied by anything and returns `Ok` at once. When the input
/// dimension is not a multiple of `M`, [`NonDivisible::FlatIndex`] checks SparseDM's flat-index
/// groups, and [`NonDivisible::LeaveDense`] fails with [`LayersError::InputNotDivisible`] (such a
/// layer has no N:M groups, so it cannot be N:M sparse).
///
/// # Errors
/// An invalid layout or length; [`LayersError::NmViolation`] or
/// [`LayersError::FlatGroupViolation`] naming the first offending group and its nonzero count;
/// [`LayersError::InputNotDivisible`]; [`LayersError::FlatIndexNotDivisible`].
pub fn check_nm(values: &[f32], layout: WeightLayout, pattern: NmPattern, non_divisible: NonDivisible) -> Result<(), LayersError> {
    let numel = layout.check_len("values", values.len())?;
    if pattern.is_dense() {
        return Ok(());
    }
    let (n, m) = (pattern.n(), pattern.m());
    let (inp, k, row_len) = (layout.inp(), layout.kernel_area(), layout.row_len());
    if inp % m == 0 {
        for (o, row) in values.chunks_exact(row_len).enumerate() {
            for p in 0..k {
                for g in 0..inp / m {
                    let nonzeros = (g * m..(g + 1) * m).filter(|&c| row[c * k + p] != 0.0).count();
                    if nonzeros > n {
                        return Err(LayersError::NmViolation {
                            layout,
                            pattern,
                            out: o,
                            kernel_pos: layout.kernel_pos(p),
                            in_start: g * m,
                            in_end: (g + 1) * m,
                            nonzeros,
                        });
                    }
                }
            }
        }
        return Ok(());
    }
    match non_divisible {
        NonDivisible::LeaveDense => Err(LayersError::InputNotDivisible { layout, inp, pattern }),
        NonDivisible::FlatIndex => {
            if numel % m != 0 {
                return Err(LayersError::FlatIndexNotDivisible { layout, numel, pattern });
            }
            let at = |f: usize| flat_to_pytorch(f, inp, k, row_len);
            for g in 0..numel / m {
                let nonzeros = (g * m..(g + 1) * m).filter(|&f| values[at(f)] != 0.0).count();
                if nonzeros > n {
                    return Err(LayersError::FlatGroupViolation {
                        layout,
                        pattern,
                        group: g,
                        first: layout.multi_index(at(g * m)),
                        last: layout.multi_index(at((g + 1) * m - 1)),
                        nonzeros,
                    });
                }
            }
            Ok(())
        }
    }
}

/// Fraction of exact zeros in `values` (`-0.0` counts, NaN does not); `0.0` for an empty slice.
pub fn sparsity(values: &[f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().filter(|&&v| v == 0.0).count() as f64 / values.len() as f64
}

/// Sum of `|w|` over the entries the mask keeps (mask value nonzero), accumulated in `f64`.
///
/// The objective that magnitude masks maximise; the transposable-mask fixture is compared on it.
///
/// # Errors
/// An invalid layout, or a `weight`/`mask` length that does not match it.
pub fn kept_magnitude(weight: &[f32], mask: &[f32], layout: WeightLayout) -> Result<f64, LayersError> {
    layout.check_len("weight", weight.len())?;
    layout.check_len("mask", mask.len())?;
    Ok(weight.iter().zip(mask).filter(|&(_, &keep)| keep != 0.0).map(|(&w, _)| f64::from(w.abs())).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparsity_counts_zeros() {
        assert_eq!(sparsity(&[]), 0.0);
        assert_eq!(sparsity(&[0.0, -0.0, 1.0, f32::NAN]), 0.5);
    }

    #[test]
    fn dense_pattern_always_passes() {
        let l = WeightLayout::linear(1, 3).unwrap();
        let p: NmPattern = "4:4".parse().unwrap();
        assert!(check_nm(&[1.0, 2.0, 3.0], l, p, NonDivisible::LeaveDense).is_ok());
    }
}
