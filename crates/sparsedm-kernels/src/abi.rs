//! The Rust mirror of the kernel ABI (`kernels/ABI.md`): the [`SdmLayout`] struct passed by
//! value to the strided kernels, and the op codes of `kernels/include/sdm_ops.h`.
//!
//! Both sides must agree bit for bit, so the tests below parse the C header and check every
//! `#define` against the constants here (and back), and check the struct's size and field
//! offsets against the C layout of `kernels/include/sdm_common.cuh`.

/// Largest rank a kernel layout can describe (`SDM_MAX_DIMS`).
pub const MAX_DIMS: usize = 6;

/// A strided view as the kernels see it: element `(i0, …, i_{rank−1})` lives at
/// `offset + Σ i_d · strides[d]` (in elements). Dims past `rank` have shape 1 and stride 0.
/// Same fields, order and size (112 bytes) as `struct SdmLayout` in `sdm_common.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SdmLayout {
    /// Number of dims in use, 1..=6 (a scalar is rank 1, shape `[1]`).
    pub rank: i32,
    /// Padding that the C struct has before the 8-byte-aligned arrays; always 0.
    pub _pad: i32,
    /// Logical shape; unused dims are 1.
    pub shape: [i64; MAX_DIMS],
    /// Element strides; 0 marks a broadcast dim; unused dims are 0.
    pub strides: [i64; MAX_DIMS],
    /// Element offset of the view's first element.
    pub offset: i64,
}

impl SdmLayout {
    /// The layout of a view with `shape`, element `strides` and `offset`. A rank-0 view (a
    /// scalar) becomes rank 1 with shape `[1]`. `None` when the rank exceeds [`MAX_DIMS`], the
    /// shape and strides differ in length, or a value does not fit in `i64`.
    pub fn new(shape: &[usize], strides: &[usize], offset: usize) -> Option<Self> {
        if shape.len() > MAX_DIMS || shape.len() != strides.len() {
            return None;
        }
        let mut l = SdmLayout { rank: shape.len().max(1) as i32, offset: i64::try_from(offset).ok()?, ..Default::default() };
        l.shape = [1; MAX_DIMS];
        for (d, (&s, &st)) in shape.iter().zip(strides).enumerate() {
            l.shape[d] = i64::try_from(s).ok()?;
            l.strides[d] = i64::try_from(st).ok()?;
        }
        Some(l)
    }

    /// The row-major contiguous layout of `shape` at offset 0 (`None` when rank > [`MAX_DIMS`]).
    pub fn contiguous(shape: &[usize]) -> Option<Self> {
        let mut strides = vec![0usize; shape.len()];
        let mut acc = 1usize;
        for (st, &s) in strides.iter_mut().zip(shape).rev() {
            *st = acc;
            acc = acc.checked_mul(s)?;
        }
        Self::new(shape, &strides, 0)
    }

    /// The logical shape (the first `rank` dims).
    pub fn dims(&self) -> &[i64] {
        &self.shape[..self.rank.clamp(0, MAX_DIMS as i32) as usize]
    }
}

/// Op codes of `unary_T` (`SDM_U_*`).
pub mod unary {
    pub const NEG: i32 = 0;
    pub const EXP: i32 = 1;
    pub const LOG: i32 = 2;
    pub const SQRT: i32 = 3;
    pub const RSQRT: i32 = 4;
    /// `x^a`.
    pub const POWF: i32 = 5;
    pub const SQR: i32 = 6;
    pub const ABS: i32 = 7;
    pub const TANH: i32 = 8;
    pub const SIGMOID: i32 = 9;
    pub const RELU: i32 = 10;
    /// Exact (erf) GELU.
    pub const GELU: i32 = 11;
    pub const SILU: i32 = 12;
    /// `a·x + b`.
    pub const AFFINE: i32 = 13;
    /// `min(max(x, a), b)`; NaN stays NaN.
    pub const CLAMP: i32 = 14;
    pub const RECIP: i32 = 15;
    pub const SIN: i32 = 16;
    pub const COS: i32 = 17;
    /// The tanh approximation of GELU.
    pub const GELU_TANH: i32 = 18;
    /// `x > 0 ? 1 : 0`.
    pub const STEP: i32 = 19;
}

/// Op codes of `binary_T` (`SDM_B_*`).
pub mod binary {
    pub const ADD: i32 = 0;
    pub const SUB: i32 = 1;
    pub const MUL: i32 = 2;
    pub const DIV: i32 = 3;
    /// `torch.maximum`: NaN propagates.
    pub const MAX: i32 = 4;
    /// `torch.minimum`: NaN propagates.
    pub const MIN: i32 = 5;
    pub const POW: i32 = 6;
    /// `a = grad, b = x`: `a·GELU′(b)`.
    pub const GELU_BWD: i32 = 7;
    /// `a = grad, b = x`: `a·SiLU′(b)`.
    pub const SILU_BWD: i32 = 8;
    /// `a = grad, b = tanh output`: `a·(1 − b²)`.
    pub const TANH_BWD: i32 = 9;
    /// `a = grad, b = sigmoid output`: `a·b·(1 − b)`.
    pub const SIGMOID_BWD: i32 = 10;
    /// `a = grad, b = x`: `b > 0 ? a : 0`.
    pub const RELU_BWD: i32 = 11;
    pub const GT: i32 = 12;
    pub const GE: i32 = 13;
    pub const EQ: i32 = 14;
    pub const LT: i32 = 15;
}

/// Op codes of `reduce_T` (`SDM_R_*`).
pub mod reduce {
    pub const SUM: i32 = 0;
    pub const MEAN: i32 = 1;
    /// NaN propagates.
    pub const MAX: i32 = 2;
    /// NaN propagates.
    pub const MIN: i32 = 3;
    /// Sum of squares.
    pub const SUMSQ: i32 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Every op code of this module under its C name (`SDM_U_NEG`, …).
    fn rust_codes() -> BTreeMap<String, i32> {
        macro_rules! codes {
            ($map:ident, $prefix:literal, $module:ident: $($name:ident),+ $(,)?) => {
                $( $map.insert(format!("{}{}", $prefix, stringify!($name)), $module::$name); )+
            };
        }
        let mut m = BTreeMap::new();
        codes!(m, "SDM_U_", unary: NEG, EXP, LOG, SQRT, RSQRT, POWF, SQR, ABS, TANH, SIGMOID, RELU, GELU, SILU,
            AFFINE, CLAMP, RECIP, SIN, COS, GELU_TANH, STEP);
        codes!(m, "SDM_B_", binary: ADD, SUB, MUL, DIV, MAX, MIN, POW, GELU_BWD, SILU_BWD, TANH_BWD, SIGMOID_BWD,
            RELU_BWD, GT, GE, EQ, LT);
        codes!(m, "SDM_R_", reduce: SUM, MEAN, MAX, MIN, SUMSQ);
        m
    }

    /// The `#define SDM_[UBR]_NAME value` lines of sdm_ops.h.
    fn header_codes() -> BTreeMap<String, i32> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels/include/sdm_ops.h");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let mut m = BTreeMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("#define") {
                continue;
            }
            let (Some(name), Some(value)) = (words.next(), words.next()) else { continue };
            if ["SDM_U_", "SDM_B_", "SDM_R_"].iter().any(|p| name.starts_with(p)) {
                let v = value.parse().unwrap_or_else(|_| panic!("sdm_ops.h: {name} has a non-integer value {value:?}"));
                assert!(m.insert(name.to_string(), v).is_none(), "sdm_ops.h defines {name} twice");
            }
        }
        m
    }

    #[test]
    fn op_codes_match_the_c_header() {
        let (rust, c) = (rust_codes(), header_codes());
        for (name, v) in &c {
            assert_eq!(rust.get(name), Some(v), "sdm_ops.h: {name} = {v}, abi.rs has {:?}", rust.get(name));
        }
        for (name, v) in &rust {
            assert_eq!(c.get(name), Some(v), "abi.rs: {name} = {v}, sdm_ops.h has {:?}", c.get(name));
        }
        // Codes are table indices in the kernels' switches: unique within each family.
        for prefix in ["SDM_U_", "SDM_B_", "SDM_R_"] {
            let mut vals: Vec<i32> = rust.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, &v)| v).collect();
            let n = vals.len();
            vals.sort_unstable();
            vals.dedup();
            assert_eq!(vals.len(), n, "duplicate {prefix}* codes");
        }
    }

    #[test]
    fn layout_matches_the_c_struct() {
        // struct SdmLayout { int rank; int _pad; long long shape[6]; long long strides[6]; long long offset; }
        assert_eq!(std::mem::size_of::<SdmLayout>(), 112);
        assert_eq!(std::mem::align_of::<SdmLayout>(), 8);
        assert_eq!(std::mem::offset_of!(SdmLayout, rank), 0);
        assert_eq!(std::mem::offset_of!(SdmLayout, _pad), 4);
        assert_eq!(std::mem::offset_of!(SdmLayout, shape), 8);
        assert_eq!(std::mem::offset_of!(SdmLayout, strides), 56);
        assert_eq!(std::mem::offset_of!(SdmLayout, offset), 104);
        let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels/include/sdm_common.cuh")).unwrap();
        assert!(header.contains("#define SDM_MAX_DIMS 6"), "sdm_common.cuh changed SDM_MAX_DIMS; update abi::MAX_DIMS");
    }

    #[test]
    fn constructors() {
        let l = SdmLayout::new(&[2, 3], &[1, 2], 5).unwrap();
        assert_eq!((l.rank, l.dims(), &l.strides[..2], l.offset), (2, &[2i64, 3][..], &[1i64, 2][..], 5));
        assert_eq!((&l.shape[2..], &l.strides[2..]), (&[1i64; 4][..], &[0i64; 4][..]));
        let s = SdmLayout::new(&[], &[], 7).unwrap();
        assert_eq!((s.rank, s.dims(), s.offset), (1, &[1i64][..], 7));
        let c = SdmLayout::contiguous(&[4, 1, 3]).unwrap();
        assert_eq!((c.dims(), &c.strides[..3]), (&[4i64, 1, 3][..], &[3i64, 3, 1][..]));
        assert!(SdmLayout::new(&[1; 7], &[0; 7], 0).is_none());
        assert!(SdmLayout::new(&[2, 2], &[1], 0).is_none());
        assert!(SdmLayout::contiguous(&[1; 7]).is_none());
    }
}
