//! CPU pooling and resampling of NCHW planes: max pool (value-only, or with
//! the argmax kept for the backward), average pool (both
//! `count_include_pad` settings), nearest integer-factor upsampling and
//! bilinear resize, each with its backward. All work plane by plane in
//! parallel on contiguous data.

use crate::op_kinds::{PoolGeom, bilinear_taps};
use rayon::prelude::*;

/// Runs `f(plane_in, plane_out)` for every (n, c) plane in parallel.
fn per_plane(input: &[f32], in_plane: usize, out_plane: usize, planes: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; planes * out_plane];
    if out_plane == 0 {
        return out;
    }
    out.par_chunks_mut(out_plane).enumerate().for_each(|(i, o)| f(&input[i * in_plane..(i + 1) * in_plane], o));
    out
}

/// The windows of a pool along one axis: window `o` covers input
/// `[o·s − p, o·s − p + k)`, clipped to `[0, len)` in `ranges` (every window
/// of a valid pool keeps at least one input element); windows `lo..hi` lie
/// entirely inside the input.
struct Windows {
    ranges: Vec<(usize, usize)>,
    lo: usize,
    hi: usize,
    k: usize,
    s: usize,
    p: usize,
}

impl Windows {
    fn new(len: usize, out: usize, k: usize, s: usize, p: usize) -> Self {
        let ranges = (0..out)
            .map(|o| {
                let start = (o * s) as isize - p as isize;
                let end = (start + k as isize).min(len as isize);
                (start.max(0) as usize, end.max(0) as usize)
            })
            .collect();
        let lo = p.div_ceil(s).min(out);
        let hi = if len + p >= k { ((len + p - k) / s + 1).min(out) } else { 0 }.max(lo);
        Windows { ranges, lo, hi, k, s, p }
    }

    fn len(&self) -> usize {
        self.ranges.len()
    }

    /// `dst[o] = step(…step(step(row[a], row[a+1]), row[a+2])…)` over each
    /// window `[a, b)` of `row`, elements in order. Interior windows are
    /// computed tap by tap across all outputs, which vectorises.
    /// A strided interior is reduced at every position first (contiguous,
    /// vectorised) in `scratch`, then subsampled.
    fn reduce_row(&self, row: &[f32], dst: &mut [f32], scratch: &mut Vec<f32>, step: impl Fn(f32, f32) -> f32) {
        for o in (0..self.lo).chain(self.hi..self.len()) {
            let (a, b) = self.ranges[o];
            let mut acc = row[a];
            for &v in &row[a + 1..b] {
                acc = step(acc, v);
            }
            dst[o] = acc;
        }
        if self.lo == self.hi {
            return;
        }
        let n = self.hi - self.lo;
        let base = self.lo * self.s - self.p;
        let reduce_contiguous = |d: &mut [f32]| {
            let len = d.len();
            d.copy_from_slice(&row[base..base + len]);
            for t in 1..self.k {
                for (m, &v) in d.iter_mut().zip(&row[base + t..base + t + len]) {
                    *m = step(*m, v);
                }
            }
        };
        if self.s == 1 {
            reduce_contiguous(&mut dst[self.lo..self.hi]);
        } else {
            scratch.resize((n - 1) * self.s + 1, 0.0);
            reduce_contiguous(scratch);
            for (d, &v) in dst[self.lo..self.hi].iter_mut().zip(scratch.iter().step_by(self.s)) {
                *d = v;
            }
        }
    }
}

/// Whether `v` replaces `best` in a max pool scan: strictly greater, or the
/// first NaN (so NaN propagates and ties keep the first element).
#[inline]
fn max_wins(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

#[inline]
fn max_step(best: f32, v: f32) -> f32 {
    if max_wins(v, best) { v } else { best }
}

/// Values of a max pool on one plane of width `w`: the max over each row's
/// column windows, then over each output's rows. Scanning rows in order and
/// keeping the first maximum gives the element a row-major scan of the
/// window keeps (the same value, bit for bit, including ±0 and NaN).
fn max_pool_plane(plane: &[f32], w: usize, rows: &Windows, cols: &Windows, out: &mut [f32]) {
    let wo = cols.len();
    let h = plane.len() / w.max(1);
    let mut hmax = vec![0f32; h * wo];
    let mut scratch = Vec::new();
    for ih in 0..h {
        cols.reduce_row(&plane[ih * w..(ih + 1) * w], &mut hmax[ih * wo..(ih + 1) * wo], &mut scratch, max_step);
    }
    for (oh, &(h0, h1)) in rows.ranges.iter().enumerate() {
        let dst = &mut out[oh * wo..(oh + 1) * wo];
        dst.copy_from_slice(&hmax[h0 * wo..(h0 + 1) * wo]);
        for ih in h0 + 1..h1 {
            for (d, &v) in dst.iter_mut().zip(&hmax[ih * wo..(ih + 1) * wo]) {
                *d = max_step(*d, v);
            }
        }
    }
}

/// Max pool of contiguous `x`: values and, when asked, the flat in-plane
/// argmax of each output (padding never wins; ties take the first element).
pub(crate) fn max_pool2d(x: &[f32], g: &PoolGeom, with_argmax: bool) -> (Vec<f32>, Option<Vec<i64>>) {
    let PoolGeom { n, c, h, w, k, s, p, ho, wo } = *g;
    if !with_argmax {
        // No gradient will be asked for: values only, separably.
        let (rows, cols) = (Windows::new(h, ho, k, s, p), Windows::new(w, wo, k, s, p));
        return (per_plane(x, h * w, ho * wo, n * c, |plane, o| max_pool_plane(plane, w, &rows, &cols, o)), None);
    }
    let mut arg = vec![0i64; n * c * ho * wo];
    let mut out = vec![0f32; n * c * ho * wo];
    if ho * wo > 0 {
        out.par_chunks_mut(ho * wo).zip(arg.par_chunks_mut(ho * wo)).enumerate().for_each(|(i, (o, a))| {
            let plane = &x[i * h * w..(i + 1) * h * w];
            for oh in 0..ho {
                for ow in 0..wo {
                    let (mut best, mut bi) = (f32::NEG_INFINITY, usize::MAX);
                    for ki in 0..k {
                        let ih = (oh * s + ki) as isize - p as isize;
                        if ih < 0 || ih as usize >= h {
                            continue;
                        }
                        for kj in 0..k {
                            let iw = (ow * s + kj) as isize - p as isize;
                            if iw < 0 || iw as usize >= w {
                                continue;
                            }
                            let idx = ih as usize * w + iw as usize;
                            let v = plane[idx];
                            if v > best || bi == usize::MAX || (v.is_nan() && !best.is_nan()) {
                                best = v;
                                bi = idx;
                            }
                        }
                    }
                    o[oh * wo + ow] = best;
                    a[oh * wo + ow] = bi as i64;
                }
            }
        });
    }
    (out, Some(arg))
}

/// Gradient of [`max_pool2d`]: each output gradient added at its argmax.
pub(crate) fn max_pool2d_backward(gy: &[f32], arg: &[i64], g: &PoolGeom) -> Vec<f32> {
    let PoolGeom { n, c, h, w, ho, wo, .. } = *g;
    let mut gx = vec![0f32; n * c * h * w];
    if h * w == 0 {
        return gx;
    }
    gx.par_chunks_mut(h * w).enumerate().for_each(|(i, plane)| {
        for j in 0..ho * wo {
            plane[arg[i * ho * wo + j] as usize] += gy[i * ho * wo + j];
        }
    });
    gx
}

/// Window bounds (clipped to the input) and divisor of output `(oh, ow)`.
fn avg_window(g: &PoolGeom, count_include_pad: bool, oh: usize, ow: usize) -> (usize, usize, usize, usize, f32) {
    let window = |o: usize, len: usize| {
        let start = (o * g.s) as isize - g.p as isize;
        let end = (start + g.k as isize).min((len + g.p) as isize);
        let padded = (end - start) as usize;
        let (a, b) = (start.max(0) as usize, end.min(len as isize) as usize);
        (a, b, padded)
    };
    let (h0, h1, hp) = window(oh, g.h);
    let (w0, w1, wp) = window(ow, g.w);
    let d = if count_include_pad { hp * wp } else { (h1 - h0) * (w1 - w0) };
    (h0, h1, w0, w1, d.max(1) as f32)
}

/// Average pool of contiguous `x`. Separable: per input row the window sums
/// along W, then per output row the sum of its window's rows, added in the
/// same order as a direct window sum (row by row, each row left to right),
/// so the values are bitwise those of the direct computation.
pub(crate) fn avg_pool2d(x: &[f32], g: &PoolGeom, count_include_pad: bool) -> Vec<f32> {
    let PoolGeom { n, c, h, w, k, s, p, ho, wo } = *g;
    let (rows, cols) = (Windows::new(h, ho, k, s, p), Windows::new(w, wo, k, s, p));
    let divisors: Vec<f32> = (0..ho * wo).map(|i| avg_window(g, count_include_pad, i / wo, i % wo).4).collect();
    per_plane(x, h * w, ho * wo, n * c, |plane, o| {
        let mut hsum = vec![0f32; h * wo];
        let mut scratch = Vec::new();
        for ih in 0..h {
            // row[a] + row[a+1] + …: `iter().sum()` of the window
            // (its −0.0 start is the identity of +).
            cols.reduce_row(&plane[ih * w..(ih + 1) * w], &mut hsum[ih * wo..(ih + 1) * wo], &mut scratch, |acc, v| acc + v);
        }
        for (oh, &(h0, h1)) in rows.ranges.iter().enumerate() {
            let dst = &mut o[oh * wo..(oh + 1) * wo];
            dst.fill(0.0);
            for ih in h0..h1 {
                for (d, &v) in dst.iter_mut().zip(&hsum[ih * wo..(ih + 1) * wo]) {
                    *d += v;
                }
            }
            for (d, &dv) in dst.iter_mut().zip(&divisors[oh * wo..(oh + 1) * wo]) {
                *d /= dv;
            }
        }
    })
}

/// Gradient of [`avg_pool2d`] from the contiguous output gradient.
pub(crate) fn avg_pool2d_backward(gy: &[f32], g: &PoolGeom, count_include_pad: bool) -> Vec<f32> {
    let PoolGeom { n, c, h, w, ho, wo, .. } = *g;
    let mut gx = vec![0f32; n * c * h * w];
    if h * w == 0 {
        return gx;
    }
    gx.par_chunks_mut(h * w).enumerate().for_each(|(i, plane)| {
        for oh in 0..ho {
            for ow in 0..wo {
                let (h0, h1, w0, w1, d) = avg_window(g, count_include_pad, oh, ow);
                let v = gy[i * ho * wo + oh * wo + ow] / d;
                for ih in h0..h1 {
                    plane[ih * w + w0..ih * w + w1].iter_mut().for_each(|x| *x += v);
                }
            }
        }
    });
    gx
}

/// Nearest upsampling of contiguous `[n, c, h, w]` by `f`.
///
/// Row by row: each input row widened once into its first output row, which
/// the other `f − 1` copy (an integer division per output element, to find
/// its source, made this and the backward ~2 ns an element).
pub(crate) fn upsample_nearest2d(x: &[f32], [n, c, h, w]: [usize; 4], f: usize) -> Vec<f32> {
    let wo = w * f;
    per_plane(x, h * w, h * f * wo, n * c, |plane, o| {
        if wo == 0 {
            return;
        }
        for (src, block) in plane.chunks_exact(w).zip(o.chunks_exact_mut(f * wo)) {
            let (first, rest) = block.split_at_mut(wo);
            for (d, &v) in first.chunks_exact_mut(f).zip(src) {
                d.fill(v);
            }
            for row in rest.chunks_exact_mut(wo) {
                row.copy_from_slice(first);
            }
        }
    })
}

/// Gradient of [`upsample_nearest2d`]: the sum of each f×f block, its
/// elements added in row-major order (as a walk over the output adds them).
pub(crate) fn upsample_nearest2d_backward(gy: &[f32], [n, c, h, w]: [usize; 4], f: usize) -> Vec<f32> {
    let wo = w * f;
    per_plane(gy, h * f * wo, h * w, n * c, |gp, o| {
        if wo == 0 {
            return;
        }
        for (block, dst) in gp.chunks_exact(f * wo).zip(o.chunks_exact_mut(w)) {
            for row in block.chunks_exact(wo) {
                for (d, g) in dst.iter_mut().zip(row.chunks_exact(f)) {
                    for &v in g {
                        *d += v;
                    }
                }
            }
        }
    })
}

/// Bilinear resize (`align_corners=False`) of contiguous `[n, c, h, w]`.
pub(crate) fn resize_bilinear(x: &[f32], [n, c, h, w]: [usize; 4], (out_h, out_w): (usize, usize)) -> Vec<f32> {
    let (hi, wi) = (bilinear_taps(h, out_h), bilinear_taps(w, out_w));
    per_plane(x, h * w, out_h * out_w, n * c, |plane, o| {
        for (oh, &(h0, h1, lh)) in hi.iter().enumerate() {
            for (ow, &(w0, w1, lw)) in wi.iter().enumerate() {
                let top = (1.0 - lw) * plane[h0 * w + w0] + lw * plane[h0 * w + w1];
                let bot = (1.0 - lw) * plane[h1 * w + w0] + lw * plane[h1 * w + w1];
                o[oh * out_w + ow] = (1.0 - lh) * top + lh * bot;
            }
        }
    })
}

/// Gradient of [`resize_bilinear`] from the contiguous output gradient.
pub(crate) fn resize_bilinear_backward(gy: &[f32], [n, c, h, w]: [usize; 4], (out_h, out_w): (usize, usize)) -> Vec<f32> {
    let (hi, wi) = (bilinear_taps(h, out_h), bilinear_taps(w, out_w));
    per_plane(gy, out_h * out_w, h * w, n * c, |gp, o| {
        for (oh, &(h0, h1, lh)) in hi.iter().enumerate() {
            for (ow, &(w0, w1, lw)) in wi.iter().enumerate() {
                let gval = gp[oh * out_w + ow];
                o[h0 * w + w0] += (1.0 - lh) * (1.0 - lw) * gval;
                o[h0 * w + w1] += (1.0 - lh) * lw * gval;
                o[h1 * w + w0] += lh * (1.0 - lw) * gval;
                o[h1 * w + w1] += lh * lw * gval;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest upsampling and its gradient against the definition, element
    /// by element (the gradient's block sums added in the same row-major
    /// order, so the same bits), for factors 1-3 and planes of 1-5 rows
    /// and columns.
    #[test]
    fn upsample_nearest_matches_the_definition() {
        for (n, c, h, w, f) in [(1, 1, 1, 1, 1), (2, 3, 3, 5, 2), (1, 2, 5, 1, 3), (3, 1, 4, 4, 2), (1, 1, 2, 3, 1)] {
            let x: Vec<f32> = (0..n * c * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
            let (ho, wo) = (h * f, w * f);
            let y = upsample_nearest2d(&x, [n, c, h, w], f);
            let gy: Vec<f32> = (0..n * c * ho * wo).map(|i| (i as f32 * 0.11).cos()).collect();
            let gx = upsample_nearest2d_backward(&gy, [n, c, h, w], f);
            let mut want_gx = vec![0f32; x.len()];
            for p in 0..n * c {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let (o, i) = ((p * ho + oh) * wo + ow, (p * h + oh / f) * w + ow / f);
                        assert_eq!(y[o].to_bits(), x[i].to_bits(), "{n}x{c}x{h}x{w} by {f}: y[{o}]");
                        want_gx[i] += gy[o];
                    }
                }
            }
            for (i, (a, b)) in gx.iter().zip(&want_gx).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{n}x{c}x{h}x{w} by {f}: gx[{i}] {a} vs {b}");
            }
        }
    }
}
