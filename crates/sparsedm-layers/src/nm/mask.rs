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
//! Implementation: each element's key is the bit pattern of `|w|`, which orders like the value
//! (NaN above `+inf`); an element is kept iff fewer than N elements of its group have a larger
//! key or an equal key at an earlier position. Groups of up to 8 count these ranks directly
//! (unrolled and vectorised: the common M ∈ {2, 4, 8, 16, 32} get specialised copies); larger
//! groups find the N-th largest (key, position) — by a max/min scan for N = 1 or N = M − 1, by
//! selection otherwise — and keep what is not below it.

use rayon::prelude::*;

use crate::error::LayersError;
use crate::nm::layout::WeightLayout;
use crate::nm::pattern::{MAX_M, NmPattern};

/// Calls `f::<M>` with `M = m` for the common group sizes and `M = 0` (runtime size) otherwise.
macro_rules! dispatch_m {
    ($m:expr, $f:ident($($arg:expr),*)) => {
        match $m {
            2 => $f::<2>($($arg),*),
            4 => $f::<4>($($arg),*),
            8 => $f::<8>($($arg),*),
            16 => $f::<16>($($arg),*),
            32 => $f::<32>($($arg),*),
            _ => $f::<0>($($arg),*),
        }
    };
}

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

/// Below this many elements a mask is computed on the calling thread (rayon's overhead would
/// dominate); above it, tasks get about this many elements each.
const PAR_GRAIN: usize = 1 << 14;

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
    let (n, m) = (pattern.n(), pattern.m());
    let (inp, k, row_len) = (layout.inp(), layout.kernel_area(), layout.row_len());
    match outcome {
        _ if pattern.is_dense() => mask.fill(1.0),
        MaskOutcome::LeftDense => mask.fill(1.0),
        // Linear (or 1×1 conv): groups are contiguous runs of M.
        MaskOutcome::Grouped if k == 1 => par_regions(weight, mask, m, |w, out| dispatch_m!(m, mask_contiguous(w, out, n, m))),
        MaskOutcome::Grouped => par_regions(weight, mask, row_len, |w, out| dispatch_m!(m, mask_rows_strided(w, out, inp, k, n, m))),
        MaskOutcome::FlatIndex => {
            // Flat groups may cross rows: a region of `rows` whole rows holds whole groups.
            let rows = m / gcd(row_len, m);
            par_regions(weight, mask, rows * row_len, |w, out| dispatch_m!(m, mask_region_flat(w, out, inp, k, n, m)));
        }
    }
    Ok(outcome)
}

/// Splits `weight`/`mask` into regions that are whole multiples of `unit` elements and runs `f`
/// on each, in parallel when the tensor is large. `weight.len()` is a multiple of `unit`.
fn par_regions<F>(weight: &[f32], mask: &mut [f32], unit: usize, f: F)
where
    F: Fn(&[f32], &mut [f32]) + Sync,
{
    if weight.len() <= PAR_GRAIN {
        f(weight, mask);
        return;
    }
    let region = unit * PAR_GRAIN.div_ceil(unit);
    mask.par_chunks_mut(region).zip(weight.par_chunks(region)).for_each(|(out, w)| f(w, out));
}

/// Magnitude key of `w`: the bits of `|w|` as a non-negative `i32`. For non-negative floats the
/// bit pattern orders like the value, with NaN above `+inf`; signed compares vectorise on every
/// x86-64 (SSE2 has no unsigned 32-bit compare).
#[inline(always)]
fn key(w: f32) -> i32 {
    (w.to_bits() & 0x7FFF_FFFF) as i32
}

/// Marks the `n` largest of `keys` with 1.0 in `flags` (0.0 elsewhere), ties going to the
/// earlier element. Small groups count ranks (unrolled, vectorised); large ones select a
/// threshold in O(M).
#[inline(always)]
fn select_group(keys: &[i32], n: usize, flags: &mut [f32]) {
    if keys.len() <= 8 {
        select_by_rank(keys, n, flags);
    } else {
        select_by_threshold(keys, n, flags);
    }
}

/// Rank of element `i` = number of larger keys + number of equal keys before it; kept iff < n.
#[inline(always)]
fn select_by_rank(keys: &[i32], n: usize, flags: &mut [f32]) {
    for (i, (&ki, f)) in keys.iter().zip(flags.iter_mut()).enumerate() {
        let mut rank = 0u32;
        for (j, &kj) in keys.iter().enumerate() {
            rank += u32::from((kj > ki) | ((kj == ki) & (j < i)));
        }
        *f = if (rank as usize) < n { 1.0 } else { 0.0 };
    }
}

/// Distinct composite keys `key << 5 | (31 − position)` (larger = kept first); the `n`-th
/// largest is the threshold, found by selection (or a max/min scan for `n = 1` / `n = m − 1`).
#[inline(always)]
fn select_by_threshold(keys: &[i32], n: usize, flags: &mut [f32]) {
    let m = keys.len();
    let mut comp = [0u64; MAX_M];
    for (j, (c, &k)) in comp.iter_mut().zip(keys).enumerate() {
        *c = ((k as u64) << 5) | (31 - j) as u64;
    }
    let comp = &comp[..m];
    let threshold = if n == 1 {
        comp.iter().copied().max().unwrap_or(0)
    } else if n + 1 == m {
        comp.iter().copied().min().unwrap_or(0) + 1
    } else {
        let mut scratch = [0u64; MAX_M];
        let scratch = &mut scratch[..m];
        scratch.copy_from_slice(comp);
        *scratch.select_nth_unstable(m - n).1
    };
    for (f, &c) in flags.iter_mut().zip(comp) {
        *f = if c >= threshold { 1.0 } else { 0.0 };
    }
}

/// The group size to use: the compile-time `M` of a specialised copy, or the runtime `m` when
/// `M == 0` (the generic fallback). Specialising for the paper's M ∈ {2, 4, 8, 16, 32} lets the
/// compiler unroll and vectorise the rank counting.
#[inline(always)]
fn group_size<const M: usize>(m: usize) -> usize {
    if M == 0 { m } else { M }
}

/// Groups of `m` contiguous elements (`w.len()` is a multiple of `m`).
fn mask_contiguous<const M: usize>(w: &[f32], out: &mut [f32], n: usize, m: usize) {
    let m = group_size::<M>(m);
    let mut buf = [0i32; MAX_M];
    for (wg, og) in w.chunks_exact(m).zip(out.chunks_exact_mut(m)) {
        for (b, &x) in buf[..m].iter_mut().zip(wg) {
            *b = key(x);
        }
        select_group(&buf[..m], n, og);
    }
}

/// Whole rows of a conv weight: groups of `m` input channels at stride `k` for each kernel
/// position (`in % m == 0`).
fn mask_rows_strided<const M: usize>(w: &[f32], out: &mut [f32], inp: usize, k: usize, n: usize, m: usize) {
    let m = group_size::<M>(m);
    let row_len = inp * k;
    let mut buf = [0i32; MAX_M];
    let mut flags = [0f32; MAX_M];
    for (wr, or) in w.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
        for (wb, ob) in wr.chunks_exact(m * k).zip(or.chunks_exact_mut(m * k)) {
            for p in 0..k {
                for j in 0..m {
                    buf[j] = key(wb[j * k + p]);
                }
                select_group(&buf[..m], n, &mut flags[..m]);
                for j in 0..m {
                    ob[j * k + p] = flags[j];
                }
            }
        }
    }
}

/// Flat-index groups (see [`NonDivisible::FlatIndex`]) over a region of whole rows whose element
/// count is a multiple of `m`: flat position `f` in `(out, ky, kx, in)` order maps to
/// `o·row_len + c·k + p` in the PyTorch `(out, in, ky, kx)` buffer.
fn mask_region_flat<const M: usize>(w: &[f32], out: &mut [f32], inp: usize, k: usize, n: usize, m: usize) {
    let m = group_size::<M>(m);
    let row_len = inp * k;
    let mut buf = [0i32; MAX_M];
    let mut idx = [0usize; MAX_M];
    let mut flags = [0f32; MAX_M];
    for g in 0..w.len() / m {
        for j in 0..m {
            let i = flat_to_pytorch(g * m + j, inp, k, row_len);
            idx[j] = i;
            buf[j] = key(w[i]);
        }
        select_group(&buf[..m], n, &mut flags[..m]);
        for j in 0..m {
            out[idx[j]] = flags[j];
        }
    }
}

/// Index in the `(out, in, ky, kx)` buffer of flat position `f` of the `(out, ky, kx, in)` order.
#[inline]
pub(crate) fn flat_to_pytorch(f: usize, inp: usize, k: usize, row_len: usize) -> usize {
    let (o, rem) = (f / row_len, f % row_len);
    let (p, c) = (rem / inp, rem % inp);
    o * row_len + c * k + p
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> NmPattern {
        s.parse().unwrap()
    }

    #[test]
    fn both_selection_strategies_match_a_stable_sort_for_every_pattern() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for m in 1..=MAX_M {
            for n in 1..=m {
                for trial in 0..20 {
                    let keys: Vec<i32> = (0..m)
                        .map(|_| {
                            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                            // Few distinct values on odd trials: many ties.
                            let r = (state >> 33) as i32;
                            if trial % 2 == 1 { r % 3 } else { r }
                        })
                        .collect();
                    let mut order: Vec<usize> = (0..m).collect();
                    order.sort_by(|&a, &b| keys[b].cmp(&keys[a])); // stable: earlier first
                    let mut expected = vec![0.0f32; m];
                    for &i in &order[..n] {
                        expected[i] = 1.0;
                    }
                    let mut got = vec![9.0f32; m];
                    select_by_rank(&keys, n, &mut got);
                    assert_eq!(got, expected, "rank {n}:{m} {keys:?}");
                    select_by_threshold(&keys, n, &mut got);
                    assert_eq!(got, expected, "threshold {n}:{m} {keys:?}");
                }
            }
        }
    }

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

    #[test]
    fn flat_index_equals_grouped_when_divisible_and_parallel_equals_serial() {
        let l = WeightLayout::conv2d(64, 16, 3, 3).unwrap(); // 9216 elements, parallel path
        let big = WeightLayout::conv2d(64, 64, 3, 3).unwrap(); // 36864 elements
        for layout in [l, big] {
            let w: Vec<f32> = (0..layout.numel()).map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * (1.0 + (i % 7) as f32)).collect();
            let (a, _) = compute_mask(&w, layout, p("2:4"), NonDivisible::LeaveDense).unwrap();
            let mut b = vec![0.0; layout.numel()];
            let rows = 4;
            let row_len = layout.row_len();
            mask_region_flat::<0>(&w, &mut b, layout.inp(), layout.kernel_area(), 2, 4);
            assert_eq!(a, b);
            let mut c = vec![0.0; layout.numel()];
            for (wc, cc) in w.chunks(rows * row_len).zip(c.chunks_mut(rows * row_len)) {
                mask_rows_strided::<4>(wc, cc, layout.inp(), layout.kernel_area(), 2, 4);
            }
            assert_eq!(a, c);
        }
    }
}
