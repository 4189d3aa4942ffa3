//! The one CPU implementation of the magnitude N:M mask: keep the `n`
//! largest `|w|` of every group of `m` weights. `kernels/sparse.cu` is the
//! one GPU implementation of the grouped rule; the two are tested against
//! each other (`tests/kernels_emulated_nn.rs` in the root package).
//!
//! # Groups
//! A weight is seen as `[out, inp, k]` (`k = kh·kw` for a Conv2d, 1 for a
//! Linear), PyTorch's row-major layout.
//! - [`NmGroups::Grouped`]: `m` consecutive input channels at a fixed
//!   `(out, kernel position)` form a group (stride `k` in memory); `inp` must
//!   be a multiple of `m`.
//! - [`NmGroups::FlatIndex`]: the weight is flattened in `(out, ky, kx, in)`
//!   order and every `m` consecutive elements of that order form a group,
//!   whatever dimension boundaries they cross (SparseDM's `Sparse_NHWC` for
//!   layers whose input dimension is not a multiple of `m`); the element
//!   count must be a multiple of `m`. It equals `Grouped` when `inp % m == 0`.
//!
//! A dense pattern (`n == m`) gives a mask of ones.
//!
//! # Ties and non-finite values (deterministic)
//! On equal `|w|` the element earlier in the group is kept (sort
//! descending, stably, keep the first `n`); `-0.0` and `0.0` are equal; a
//! NaN counts as larger than every number, `+inf` included.
//!
//! Implementation: each element's key is the bit pattern of `|w|`, which
//! orders like the value (NaN above `+inf`); an element is kept iff fewer
//! than `n` elements of its group have a larger key or an equal key at an
//! earlier position. Groups of up to 8 count these ranks directly
//! (branch-free, vectorised; M ∈ {2, 4, 8, 16, 32} get specialised copies);
//! larger groups find the n-th largest (key, position) — by a max/min scan
//! for n = 1 or n = m − 1, by selection otherwise — and keep what is not
//! below it. Large weights are processed in parallel (rayon) over regions of
//! whole groups; nothing is allocated besides what the caller passes.

use rayon::prelude::*;

use crate::{Error, Result};

/// Calls `f::<M>` with `M = m` for the common group sizes and `M = 0`
/// (runtime size) otherwise.
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

/// The largest group size `m` (the per-group scratch lives on the stack).
pub const MAX_M: usize = 32;

/// How the groups of an N:M mask are formed; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NmGroups {
    /// `m` consecutive input channels at one output and kernel position.
    Grouped,
    /// `m` consecutive elements of the `(out, ky, kx, in)` flattening.
    FlatIndex,
}

/// Below this many elements a mask is computed on the calling thread;
/// above it, tasks get about this many elements each.
const PAR_GRAIN: usize = 1 << 14;

/// Writes the magnitude `n:m` mask of `weight` — PyTorch layout `[out, inp,
/// k]` given as `(out, inp, k)` — into `mask` (1.0 kept, 0.0 pruned; every
/// element is overwritten), with groups formed as `groups` says.
///
/// # Errors
/// A pattern outside `1 ≤ n ≤ m ≤ 32`, a `weight` or `mask` whose length is
/// not `out·inp·k`, an input dimension that is not a multiple of `m` for
/// [`NmGroups::Grouped`], or an element count that is not for
/// [`NmGroups::FlatIndex`].
pub fn nm_mask_into(
    weight: &[f32],
    mask: &mut [f32],
    (out, inp, k): (usize, usize, usize),
    n: usize,
    m: usize,
    groups: NmGroups,
) -> Result<()> {
    const OP: &str = "nm_mask";
    if n == 0 || n > m || m > MAX_M {
        return Err(Error::invalid(OP, format!("pattern {n}:{m} (need 1 ≤ n ≤ m ≤ {MAX_M})")));
    }
    let numel = out
        .checked_mul(inp)
        .and_then(|x| x.checked_mul(k))
        .ok_or_else(|| Error::invalid(OP, format!("weight [{out}, {inp}, {k}] is too large")))?;
    for (what, len) in [("weight", weight.len()), ("mask", mask.len())] {
        if len != numel {
            return Err(Error::invalid(OP, format!("the {what} has {len} elements, the weight [{out}, {inp}, {k}] has {numel}")));
        }
    }
    if n == m {
        mask.fill(1.0);
        return Ok(());
    }
    let row_len = inp * k;
    match groups {
        NmGroups::Grouped if !inp.is_multiple_of(m) => {
            return Err(Error::invalid(OP, format!("{inp} input channels do not split into groups of {m}")));
        }
        NmGroups::FlatIndex if !numel.is_multiple_of(m) => {
            return Err(Error::invalid(OP, format!("{numel} weights do not split into flat groups of {m}")));
        }
        // Linear (or 1×1 conv): groups are contiguous runs of m.
        NmGroups::Grouped if k == 1 => par_regions(weight, mask, m, |w, o| dispatch_m!(m, mask_contiguous(w, o, n, m))),
        NmGroups::Grouped => par_regions(weight, mask, row_len, |w, o| dispatch_m!(m, mask_rows_strided(w, o, inp, k, n, m))),
        NmGroups::FlatIndex if numel == 0 => {}
        NmGroups::FlatIndex => {
            // Flat groups may cross rows: a region of `rows` whole rows holds whole groups.
            let rows = m / gcd(row_len, m);
            par_regions(weight, mask, rows * row_len, |w, o| dispatch_m!(m, mask_region_flat(w, o, inp, k, n, m)));
        }
    }
    Ok(())
}

/// Splits `weight`/`mask` into regions of whole multiples of `unit`
/// elements and runs `f` on each, in parallel when the tensor is large.
fn par_regions<F>(weight: &[f32], mask: &mut [f32], unit: usize, f: F)
where
    F: Fn(&[f32], &mut [f32]) + Sync,
{
    if weight.len() <= PAR_GRAIN || unit == 0 {
        f(weight, mask);
        return;
    }
    let region = unit * PAR_GRAIN.div_ceil(unit);
    mask.par_chunks_mut(region).zip(weight.par_chunks(region)).for_each(|(o, w)| f(w, o));
}

/// Magnitude key of `w`: the bits of `|w|` as a non-negative `i32`, which
/// order like the value with NaN above `+inf` (signed compares vectorise on
/// every x86-64).
#[inline(always)]
fn key(w: f32) -> i32 {
    (w.to_bits() & 0x7FFF_FFFF) as i32
}

/// Marks the `n` largest of `keys` with 1.0 in `flags` (0.0 elsewhere),
/// ties going to the earlier element.
#[inline(always)]
fn select_group(keys: &[i32], n: usize, flags: &mut [f32]) {
    if keys.len() <= 8 {
        select_by_rank(keys, n, flags);
    } else {
        select_by_threshold(keys, n, flags);
    }
}

/// Rank of element `i` = larger keys + equal keys before it; kept iff < n.
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

/// Distinct composite keys `key << 5 | (31 − position)` (larger = kept
/// first); the `n`-th largest is the threshold.
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

/// The compile-time `M` of a specialised copy, or the runtime `m` for `M == 0`.
#[inline(always)]
fn group_size<const M: usize>(m: usize) -> usize {
    if M == 0 { m } else { M }
}

/// Groups of `m` contiguous elements.
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

/// Whole rows of a conv weight: groups of `m` input channels at stride `k`
/// for each kernel position.
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

/// Flat-index groups over a region of whole rows holding whole groups.
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

/// Index in the `(out, in, ky, kx)` buffer of flat position `f` of the
/// `(out, ky, kx, in)` order (`row_len = inp·k`).
#[inline]
pub fn flat_to_pytorch(f: usize, inp: usize, k: usize, row_len: usize) -> usize {
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

    fn mask(w: &[f32], shape: (usize, usize, usize), n: usize, m: usize, g: NmGroups) -> Vec<f32> {
        let mut out = vec![9.0; w.len()];
        nm_mask_into(w, &mut out, shape, n, m, g).unwrap();
        out
    }

    /// Both selection strategies equal a stable descending sort for every pattern.
    #[test]
    fn selection_matches_a_stable_sort_for_every_pattern() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for m in 1..=MAX_M {
            for n in 1..=m {
                for trial in 0..20 {
                    let keys: Vec<i32> = (0..m)
                        .map(|_| {
                            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                            let r = (state >> 33) as i32;
                            if trial % 2 == 1 { r % 3 } else { r }
                        })
                        .collect();
                    let mut order: Vec<usize> = (0..m).collect();
                    order.sort_by(|&a, &b| keys[b].cmp(&keys[a]));
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
    fn ties_keep_the_earlier_element_and_nan_is_largest() {
        assert_eq!(mask(&[1.0, -1.0, 1.0, 0.5], (1, 4, 1), 2, 4, NmGroups::Grouped), [1.0, 1.0, 0.0, 0.0]);
        assert_eq!(mask(&[0.0, -0.0, 0.0, 0.0], (1, 4, 1), 2, 4, NmGroups::Grouped), [1.0, 1.0, 0.0, 0.0]);
        assert_eq!(mask(&[f32::INFINITY, 1.0, f32::NAN, -2.0], (1, 4, 1), 2, 4, NmGroups::Grouped), [1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn conv_groups_stride_over_kernel_positions() {
        // [1, 4, 1, 2]: kernel position 0 holds 1, 2, 3, 4 and position 1 holds 4, 3, 2, 1.
        let w = [1.0, 4.0, 2.0, 3.0, 3.0, 2.0, 4.0, 1.0];
        assert_eq!(mask(&w, (1, 4, 2), 1, 4, NmGroups::Grouped), [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }

    /// Flat-index groups cross kernel positions: `[1, 3, 2]` flattened as
    /// (ky·kx, in) is w[0], w[2], w[4], w[1], w[3], w[5].
    #[test]
    fn flat_index_groups_follow_the_nhwc_order() {
        let w = [6.0, 1.0, 5.0, 2.0, 4.0, 3.0];
        // flat order: 6, 5, 4 | 1, 2, 3 → keep 6 and 3 (1:3).
        assert_eq!(mask(&w, (1, 3, 2), 1, 3, NmGroups::FlatIndex), [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert!(nm_mask_into(&w, &mut [0.0; 6], (1, 3, 2), 1, 4, NmGroups::FlatIndex).is_err());
        assert!(nm_mask_into(&w, &mut [0.0; 6], (1, 3, 2), 1, 2, NmGroups::Grouped).is_err());
    }

    /// Flat-index equals grouped when divisible; the parallel path equals
    /// whole-tensor serial scans.
    #[test]
    fn flat_equals_grouped_when_divisible_and_parallel_equals_serial() {
        for (o, i, k) in [(64, 16, 9), (64, 64, 9), (300, 64, 1)] {
            let numel = o * i * k;
            let w: Vec<f32> = (0..numel).map(|x| ((x as f32 * 0.618_034).fract() - 0.5) * (1.0 + (x % 7) as f32)).collect();
            let a = mask(&w, (o, i, k), 2, 4, NmGroups::Grouped);
            assert_eq!(a, mask(&w, (o, i, k), 2, 4, NmGroups::FlatIndex));
            let mut serial = vec![0.0; numel];
            mask_region_flat::<0>(&w, &mut serial, i, k, 2, 4);
            assert_eq!(a, serial);
            if k == 1 {
                assert!(a.chunks(4).all(|g| g.iter().sum::<f32>() == 2.0));
            }
        }
    }

    #[test]
    fn bad_patterns_and_lengths_are_errors() {
        let w = [1.0; 8];
        assert!(nm_mask_into(&w, &mut [0.0; 8], (1, 8, 1), 0, 4, NmGroups::Grouped).is_err());
        assert!(nm_mask_into(&w, &mut [0.0; 8], (1, 8, 1), 5, 4, NmGroups::Grouped).is_err());
        assert!(nm_mask_into(&w, &mut [0.0; 8], (1, 8, 1), 1, 33, NmGroups::Grouped).is_err());
        assert!(nm_mask_into(&w, &mut [0.0; 7], (1, 8, 1), 2, 4, NmGroups::Grouped).is_err());
        assert_eq!(mask(&w, (1, 8, 1), 4, 4, NmGroups::Grouped), [1.0; 8]);
    }
}
