//! CPU reductions: sums (accumulated in f64 per output row so that large
//! means stay exact to f32 precision, with fast paths for reductions over a
//! suffix or a prefix of a contiguous tensor) and the maximum with its index.

use crate::backend::cpu::buffer::with_contiguous;
use crate::backend::cpu::simd::vectorized;
use crate::backend::cpu::strided::gather;
use crate::{Layout, Result};
use rayon::prelude::*;

/// `acc += row` for each row of `rows` (rows of `acc.len()`), in order.
#[inline(always)]
fn add_rows(acc: &mut [f32], rows: &[f32]) {
    if acc.is_empty() {
        return;
    }
    for row in rows.chunks_exact(acc.len()) {
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x;
        }
    }
}

/// Sums contiguous `data` viewed as `[rows, inner]` over rows (a prefix
/// reduction, e.g. a bias gradient), in parallel over row blocks.
fn sum_prefix(data: &[f32], rows: usize, inner: usize) -> Vec<f32> {
    const BLOCK: usize = 64;
    let partial = |r0: usize, r1: usize| {
        let mut acc = vec![0f32; inner];
        vectorized(|| add_rows(&mut acc, &data[r0 * inner..r1 * inner]));
        acc
    };
    if rows * inner < 1 << 15 {
        return partial(0, rows);
    }
    let blocks: Vec<Vec<f32>> =
        (0..rows.div_ceil(BLOCK)).into_par_iter().map(|b| partial(b * BLOCK, ((b + 1) * BLOCK).min(rows))).collect();
    let mut acc = vec![0f32; inner];
    for b in blocks {
        for (a, x) in acc.iter_mut().zip(b) {
            *a += x;
        }
    }
    acc
}

/// Reduces each contiguous row of length `len` with `f`.
fn reduce_rows<T: Send>(data: &[f32], len: usize, f: impl Fn(&[f32]) -> T + Sync) -> Vec<T> {
    if len == 0 {
        return Vec::new();
    }
    if data.len() < 1 << 14 { data.chunks(len).map(&f).collect() } else { data.par_chunks(len).map(&f).collect() }
}

/// The view with `dims` moved last, gathered contiguously, and the number of
/// elements reduced per output.
fn reduced_rows_data(x: &[f32], l: &Layout, dims: &[usize]) -> Result<(Vec<f32>, usize)> {
    let kept: Vec<usize> = (0..l.rank()).filter(|d| !dims.contains(d)).collect();
    let perm: Vec<usize> = kept.iter().chain(dims).copied().collect();
    let n: usize = dims.iter().map(|&d| l.shape()[d]).product();
    let p = l.permute(&perm)?;
    Ok((gather(x, p.shape(), p.strides(), p.offset()), n))
}

/// Σ of `r` in f64 over eight lanes (vectorised by [`vectorized`]'s
/// caller), rounded by the caller: at f64 precision the order of the adds
/// does not show in an f32 result.
#[inline(always)]
fn sum_f64(r: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut lanes = r.chunks_exact(8);
    for v in &mut lanes {
        for (a, &x) in acc.iter_mut().zip(v) {
            *a += x as f64;
        }
    }
    acc.iter().sum::<f64>() + lanes.remainder().iter().map(|&x| x as f64).sum::<f64>()
}

fn row_sum(r: &[f32]) -> f32 {
    vectorized(|| sum_f64(r)) as f32
}

/// Sums contiguous `data` viewed as `[outer, mid, inner]` over its first and
/// last axes (`out[m] = Σ_o Σ_i x[o, m, i]`, in f64): a conv's bias
/// gradient (`[N, C, H, W]` over 0, 2, 3), a per-channel scale's or shift's.
/// These were a strided gather of the whole tensor into `[C, N·H·W]` rows
/// first (5 % of the demo UNet's training step).
fn sum_outer_inner(data: &[f32], outer: usize, mid: usize, inner: usize) -> Vec<f32> {
    let one = |m: usize| vectorized(|| (0..outer).map(|o| sum_f64(&data[(o * mid + m) * inner..][..inner])).sum::<f64>() as f32);
    if data.len() < 1 << 15 || mid < rayon::current_num_threads() {
        (0..mid).map(one).collect()
    } else {
        (0..mid).into_par_iter().map(one).collect()
    }
}

/// Σx² of `x` in f64, rounded once to f32: fixed chunks summed in
/// parallel (eight f64 lanes each), the chunk sums added in order, so the
/// result does not depend on the number of threads. One read of `x`, no
/// squared copy (a global gradient norm over a model's parameters was a
/// squared copy of every gradient and a serial f64 sum of it).
pub(crate) fn sum_sq(x: &[f32]) -> f32 {
    const CHUNK: usize = 1 << 15;
    let chunk = |c: &[f32]| {
        vectorized(|| {
            let mut acc = [0f64; 8];
            let mut lanes = c.chunks_exact(8);
            for v in &mut lanes {
                for (a, &x) in acc.iter_mut().zip(v) {
                    *a = (x as f64).mul_add(x as f64, *a);
                }
            }
            let tail: f64 = lanes.remainder().iter().map(|&x| x as f64 * x as f64).sum();
            acc.iter().sum::<f64>() + tail
        })
    };
    let parts: Vec<f64> = if x.len() <= CHUNK { vec![chunk(x)] } else { x.par_chunks(CHUNK).map(chunk).collect() };
    parts.iter().sum::<f64>() as f32
}

/// Sum of the view over the sorted, distinct `dims`.
pub(crate) fn sum_dims(x: &[f32], l: &Layout, dims: &[usize]) -> Result<Vec<f32>> {
    let rank = l.rank();
    let n: usize = dims.iter().map(|&d| l.shape()[d]).product();
    let is_prefix = dims.iter().enumerate().all(|(i, &d)| i == d);
    let is_suffix = dims.iter().rev().enumerate().all(|(i, &d)| d == rank - 1 - i);
    Ok(if dims.is_empty() {
        gather(x, l.shape(), l.strides(), l.offset())
    } else if l.is_contiguous() && is_suffix {
        with_contiguous(x, l, |d| reduce_rows(d, n, row_sum))
    } else if l.is_contiguous() && is_prefix {
        with_contiguous(x, l, |d| sum_prefix(d, n, l.elem_count() / n.max(1)))
    } else if let Some((a, b)) = l.is_contiguous().then(|| outer_inner_split(dims, rank)).flatten() {
        let size = |r: std::ops::Range<usize>| l.shape()[r].iter().product::<usize>();
        with_contiguous(x, l, |d| sum_outer_inner(d, size(0..a), size(a..b), size(b..rank)))
    } else {
        let (data, n) = reduced_rows_data(x, l, dims)?;
        reduce_rows(&data, n, row_sum)
    })
}

/// `Some((a, b))` when the sorted `dims` are `0..a` followed by `b..rank`
/// (`0 < a ≤ b < rank`): a reduction over a prefix and a suffix that keeps
/// the axes `a..b`.
fn outer_inner_split(dims: &[usize], rank: usize) -> Option<(usize, usize)> {
    let a = dims.iter().enumerate().take_while(|&(i, &d)| i == d).count();
    let suffix = &dims[a..];
    let b = rank - suffix.len();
    let is_suffix = suffix.iter().enumerate().all(|(i, &d)| d == b + i);
    (a > 0 && !suffix.is_empty() && is_suffix && a <= b).then_some((a, b))
}

/// Maximum over `dim` (non-empty) and the index of the first maximal element.
pub(crate) fn max_dim(x: &[f32], l: &Layout, dim: usize) -> Result<(Vec<f32>, Vec<i64>)> {
    let (data, n) = reduced_rows_data(x, l, &[dim])?;
    let pairs = reduce_rows(&data, n, |r| {
        let mut best = (r[0], 0usize);
        for (i, &x) in r.iter().enumerate().skip(1) {
            if x > best.0 || (x.is_nan() && !best.0.is_nan()) {
                best = (x, i);
            }
        }
        best
    });
    Ok((pairs.iter().map(|p| p.0).collect(), pairs.iter().map(|p| p.1 as i64).collect()))
}

/// Gradient of [`max_dim`]: the output gradient scattered into a
/// `[kept…, n]` buffer at the saved indices, then `dim` moved back in place.
pub(crate) fn max_dim_backward(g: &[f32], lg: &Layout, idx: &[i64], in_shape: &[usize], dim: usize) -> Result<Vec<f32>> {
    let n = in_shape[dim];
    let g = gather(g, lg.shape(), lg.strides(), lg.offset());
    let mut buf = vec![0f32; g.len() * n];
    for (o, (&gv, &i)) in g.iter().zip(idx).enumerate() {
        buf[o * n + i as usize] = gv;
    }
    let mut moved: Vec<usize> = in_shape.iter().enumerate().filter(|(d, _)| *d != dim).map(|(_, &s)| s).collect();
    moved.push(n);
    // `buf` has `dim` last; view it with `dim` back in place and gather.
    let rank = in_shape.len();
    let perm: Vec<usize> = (0..rank)
        .map(|d| {
            if d == dim {
                rank - 1
            } else if d < dim {
                d
            } else {
                d - 1
            }
        })
        .collect();
    let view = Layout::contiguous(&moved).permute(&perm)?;
    Ok(gather(&buf, view.shape(), view.strides(), view.offset()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum over `dims` by the definition, in f64: every element added to
    /// the output its kept indices name.
    fn naive(x: &[f32], shape: &[usize], dims: &[usize]) -> Vec<f32> {
        let strides = crate::contiguous_strides(shape);
        let kept: Vec<usize> = (0..shape.len()).filter(|d| !dims.contains(d)).collect();
        let out_len: usize = kept.iter().map(|&d| shape[d]).product();
        let mut out = vec![0f64; out_len];
        for (i, &v) in x.iter().enumerate() {
            let o = kept.iter().fold(0, |acc, &d| acc * shape[d] + (i / strides[d]) % shape[d]);
            out[o] += f64::from(v);
        }
        out.iter().map(|&v| v as f32).collect()
    }

    /// Every subset of the axes of rank-4 tensors, small (serial) and large
    /// enough for the parallel paths, contiguous and a transposed view:
    /// each fast path (suffix, prefix, prefix and suffix) and the gather.
    #[test]
    fn sum_dims_matches_the_definition_on_every_axis_subset() {
        for shape in [[2usize, 3, 4, 5], [9, 64, 8, 9], [3, 5, 1, 7], [64, 3, 16, 13]] {
            let len: usize = shape.iter().product();
            let x: Vec<f32> = (0..len).map(|i| ((i * 7919 % 1009) as f32 - 504.0) * 0.01).collect();
            for mask in 0u32..16 {
                let dims: Vec<usize> = (0..4).filter(|d| mask & (1 << d) != 0).collect();
                let l = Layout::contiguous(&shape);
                let got = sum_dims(&x, &l, &dims).unwrap();
                let want = naive(&x, &shape, &dims);
                // f32 accumulation (the prefix path) may be off by a few ulps of Σ|x|.
                let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                let tol = naive(&abs, &shape, &dims);
                assert_eq!(got.len(), want.len(), "{shape:?} over {dims:?}");
                for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                    assert!((a - e).abs() <= 1e-6 * (tol[i] + 1.0), "{shape:?} over {dims:?}: [{i}] {a} vs {e}");
                }
                // The same values through a transposed (non-contiguous) view.
                let t = l.permute(&[0, 2, 1, 3]).unwrap();
                let tshape = [shape[0], shape[2], shape[1], shape[3]];
                let xt = gather(&x, t.shape(), t.strides(), t.offset());
                let got = sum_dims(&x, &t, &dims).unwrap();
                let want = naive(&xt, &tshape, &dims);
                let abs: Vec<f32> = xt.iter().map(|v| v.abs()).collect();
                let tol = naive(&abs, &tshape, &dims);
                assert_eq!(got.len(), want.len(), "{tshape:?} (transposed) over {dims:?}");
                for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                    assert!((a - e).abs() <= 1e-6 * (tol[i] + 1.0), "{tshape:?} (transposed) over {dims:?}: [{i}] {a} vs {e}");
                }
            }
        }
    }

    #[test]
    fn outer_inner_split_names_prefix_and_suffix() {
        assert_eq!(outer_inner_split(&[0, 2, 3], 4), Some((1, 2)));
        assert_eq!(outer_inner_split(&[0, 1, 3], 4), Some((2, 3)));
        assert_eq!(outer_inner_split(&[0, 3], 4), Some((1, 3)));
        assert_eq!(outer_inner_split(&[1, 3], 4), None);
        assert_eq!(outer_inner_split(&[0, 2], 4), None);
        assert_eq!(outer_inner_split(&[2, 3], 4), None);
        assert_eq!(outer_inner_split(&[0, 1], 4), None);
    }
}
