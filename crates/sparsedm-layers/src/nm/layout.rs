//! Weight layouts and the axis along which N:M groups run.
//!
//! Weights are stored as in PyTorch: a Linear weight is `[out, in]` and a Conv2d weight is
//! `[out, in, kh, kw]`, row-major. N:M groups always run along the **input dimension**:
//!
//! * Linear: `M` consecutive elements of one row (stride 1);
//! * Conv2d: `M` consecutive input channels at a fixed `(out, ky, kx)`, i.e. a strided gather with
//!   stride `kh·kw` (the "NHWC" grouping of SR-STE's `Sparse_NHWC` and of apex ASP, the one sparse
//!   tensor cores need for an implicit-GEMM convolution).
//!
//! Both are the same thing once a Linear is seen as a Conv2d with a 1×1 kernel, which is how the
//! kernels in this crate treat them: one code path over `out × (kh·kw) × in` with stride `kh·kw`
//! along `in`. [`WeightLayout`] is that description.

use std::fmt;

use crate::error::LayersError;

/// The shape of a weight whose N:M groups run along its input dimension.
///
/// The variants are public for convenient matching; the functions of this crate re-check every
/// layout they receive (nonzero dimensions, no overflow), so a hand-built invalid layout gives an
/// error, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// `nn.Linear` weight `[out, in]`; groups along `in`.
    Linear {
        /// Output features (rows).
        out: usize,
        /// Input features (the grouped axis).
        inp: usize,
    },
    /// `nn.Conv2d` weight `[out, in, kh, kw]`; groups along `in` at each `(out, ky, kx)`.
    Conv2d {
        /// Output channels.
        out: usize,
        /// Input channels (the grouped axis).
        inp: usize,
        /// Kernel height.
        kh: usize,
        /// Kernel width.
        kw: usize,
    },
}

impl WeightLayout {
    /// A validated Linear layout `[out, in]`.
    ///
    /// # Errors
    /// [`LayersError::EmptyDimension`] or [`LayersError::ShapeOverflow`].
    pub fn linear(out: usize, inp: usize) -> Result<Self, LayersError> {
        let l = WeightLayout::Linear { out, inp };
        l.checked_numel()?;
        Ok(l)
    }

    /// A validated Conv2d layout `[out, in, kh, kw]`.
    ///
    /// # Errors
    /// [`LayersError::EmptyDimension`] or [`LayersError::ShapeOverflow`].
    pub fn conv2d(out: usize, inp: usize, kh: usize, kw: usize) -> Result<Self, LayersError> {
        let l = WeightLayout::Conv2d { out, inp, kh, kw };
        l.checked_numel()?;
        Ok(l)
    }

    /// The layout of a PyTorch weight shape: rank 2 is a Linear, rank 4 a Conv2d.
    ///
    /// # Errors
    /// [`LayersError::UnsupportedRank`] for any other rank, and the errors of
    /// [`WeightLayout::linear`] / [`WeightLayout::conv2d`].
    pub fn from_shape(shape: &[usize]) -> Result<Self, LayersError> {
        match *shape {
            [out, inp] => Self::linear(out, inp),
            [out, inp, kh, kw] => Self::conv2d(out, inp, kh, kw),
            _ => Err(LayersError::UnsupportedRank { shape: shape.to_vec() }),
        }
    }

    /// The PyTorch shape (`[out, in]` or `[out, in, kh, kw]`).
    pub fn shape(&self) -> Vec<usize> {
        match *self {
            WeightLayout::Linear { out, inp } => vec![out, inp],
            WeightLayout::Conv2d { out, inp, kh, kw } => vec![out, inp, kh, kw],
        }
    }

    /// Output dimension (rows / output channels).
    pub fn out(&self) -> usize {
        match *self {
            WeightLayout::Linear { out, .. } | WeightLayout::Conv2d { out, .. } => out,
        }
    }

    /// Input dimension: the axis the N:M groups run along.
    pub fn inp(&self) -> usize {
        match *self {
            WeightLayout::Linear { inp, .. } | WeightLayout::Conv2d { inp, .. } => inp,
        }
    }

    /// `(kh, kw)`; `(1, 1)` for a Linear.
    pub fn kernel(&self) -> (usize, usize) {
        match *self {
            WeightLayout::Linear { .. } => (1, 1),
            WeightLayout::Conv2d { kh, kw, .. } => (kh, kw),
        }
    }

    /// `kh·kw`: the number of kernel positions, which is also the stride between two consecutive
    /// elements of a group (1 for a Linear).
    ///
    /// Saturates instead of overflowing; the mask functions reject overflowing layouts first.
    pub fn kernel_area(&self) -> usize {
        let (kh, kw) = self.kernel();
        kh.saturating_mul(kw)
    }

    /// Elements per output index, `in·kh·kw` (saturating).
    pub fn row_len(&self) -> usize {
        self.inp().saturating_mul(self.kernel_area())
    }

    /// Total element count (saturating; see [`WeightLayout::checked_numel`]).
    pub fn numel(&self) -> usize {
        self.out().saturating_mul(self.row_len())
    }

    /// Total element count, or an error for a zero dimension or an overflow.
    ///
    /// # Errors
    /// [`LayersError::EmptyDimension`] or [`LayersError::ShapeOverflow`].
    pub fn checked_numel(&self) -> Result<usize, LayersError> {
        let shape = self.shape();
        if shape.contains(&0) {
            return Err(LayersError::EmptyDimension { shape });
        }
        shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(LayersError::ShapeOverflow { shape })
    }

    /// `(ky, kx)` of kernel position `p` (in `0..kh·kw`) for a Conv2d, `None` for a Linear.
    pub fn kernel_pos(&self, p: usize) -> Option<(usize, usize)> {
        match *self {
            WeightLayout::Linear { .. } => None,
            WeightLayout::Conv2d { kw, .. } => Some((p / kw, p % kw)),
        }
    }

    /// PyTorch multi-index of the element at flat (row-major) index `i`.
    pub fn multi_index(&self, i: usize) -> Vec<usize> {
        let k = self.kernel_area();
        let (o, rem) = (i / self.row_len(), i % self.row_len());
        let (c, p) = (rem / k, rem % k);
        match self.kernel_pos(p) {
            None => vec![o, c],
            Some((ky, kx)) => vec![o, c, ky, kx],
        }
    }

    /// Checks the layout and that `len` (the length of the buffer called `what`) matches it;
    /// returns the element count.
    pub(crate) fn check_len(&self, what: &'static str, len: usize) -> Result<usize, LayersError> {
        let expected = self.checked_numel()?;
        if len != expected {
            return Err(LayersError::LengthMismatch { what, layout: *self, expected, actual: len });
        }
        Ok(expected)
    }
}

impl fmt::Display for WeightLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WeightLayout::Linear { out, inp } => write!(f, "Linear weight [{out}, {inp}]"),
            WeightLayout::Conv2d { out, inp, kh, kw } => {
                write!(f, "Conv2d weight [{out}, {inp}, {kh}, {kw}]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let c = WeightLayout::from_shape(&[8, 32, 3, 3]).unwrap();
        assert_eq!(c.kernel_area(), 9);
        assert_eq!(c.row_len(), 288);
        assert_eq!(c.numel(), 2304);
        assert_eq!(c.multi_index(288 + 9 * 5 + 7), vec![1, 5, 2, 1]);
        let l = WeightLayout::from_shape(&[16, 64]).unwrap();
        assert_eq!(l.multi_index(70), vec![1, 6]);
        assert_eq!(l.kernel_pos(0), None);
        assert!(matches!(WeightLayout::from_shape(&[4, 4, 3]), Err(LayersError::UnsupportedRank { .. })));
        assert!(matches!(WeightLayout::from_shape(&[4, 0]), Err(LayersError::EmptyDimension { .. })));
        assert!(matches!(WeightLayout::from_shape(&[usize::MAX, 2]), Err(LayersError::ShapeOverflow { .. })));
    }
}
