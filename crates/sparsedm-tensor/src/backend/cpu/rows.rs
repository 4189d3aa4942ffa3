//! Row-wise CPU kernels over the last dim: softmax and log-softmax, and the
//! standardization behind layer norm and group norm, each with its fused
//! backward. Rows are processed in parallel on contiguous data.

use crate::backend::cpu::math::fast_exp;
use crate::backend::cpu::simd::{Kernel, vectorized_with};
#[cfg(target_arch = "x86_64")]
use crate::backend::cpu::simd::{SimdLevel, simd_level};
use crate::backend::cpu::strided::written_vec;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// One row kernel over an input row: implementations' `apply` is
/// `#[inline(always)]`, so that [`Rows`] compiles it into each instruction
/// set's copy of the loop (see `simd.rs`; a closure or a function item
/// passed here would stay out of line at baseline width).
trait RowOp: Sync {
    fn apply(&self, x: &[f32], y: &mut [f32]);
}

/// One row kernel over two input rows (see [`RowOp`]).
trait RowOp2: Sync {
    fn apply(&self, a: &[f32], b: &[f32], y: &mut [f32]);
}

/// Rows of `len` of `x` (and `b`) through `op` into `y`: a [`Kernel`].
struct Rows<'a, R> {
    x: &'a [f32],
    b: &'a [f32],
    y: &'a mut [f32],
    len: usize,
    op: &'a R,
}

/// The [`RowOp`] form of [`Rows`] (its `b` is unused).
struct Rows1<'a, R>(Rows<'a, R>);

impl<R: RowOp> Kernel for Rows1<'_, R> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Rows { x, y, len, op, .. } = self.0;
        for (x, y) in x.chunks(len).zip(y.chunks_mut(len)) {
            op.apply(x, y);
        }
    }
}

impl<R: RowOp2> Kernel for Rows<'_, R> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Rows { x, b, y, len, op } = self;
        for ((x, b), y) in x.chunks(len).zip(b.chunks(len)).zip(y.chunks_mut(len)) {
            op.apply(x, b, y);
        }
    }
}

/// Rows per parallel task: about 16 K floats of each operand.
pub(crate) fn rows_per_task(len: usize) -> usize {
    ((1 << 14) / len).max(1)
}

/// Applies `op` to every row of length `len`, in parallel for large inputs.
fn rows_map<R: RowOp>(data: &[f32], len: usize, op: R) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    if len == 0 {
        return out;
    }
    let chunk = len * rows_per_task(len);
    let one = |(x, y): (&[f32], &mut [f32])| vectorized_with(Rows1(Rows { x, b: &[], y, len, op: &op }));
    if data.len() <= chunk {
        one((data, &mut out));
    } else {
        data.par_chunks(chunk).zip(out.par_chunks_mut(chunk)).for_each(one);
    }
    out
}

/// Like [`rows_map`] over two inputs of the same shape.
fn rows_map2<R: RowOp2>(a: &[f32], b: &[f32], len: usize, op: R) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    if len == 0 {
        return out;
    }
    let chunk = len * rows_per_task(len);
    let one = |((x, b), y): ((&[f32], &[f32]), &mut [f32])| vectorized_with(Rows { x, b, y, len, op: &op });
    if a.len() <= chunk {
        one(((a, b), &mut out));
    } else {
        a.par_chunks(chunk).zip(b.par_chunks(chunk)).zip(out.par_chunks_mut(chunk)).for_each(one);
    }
    out
}

/// f32 accumulators of the row reductions of softmax: sixteen interleaved
/// partial maxima or sums, one AVX-512 register (two AVX2 ones), so the
/// sweep vectorises. A single running `fold` is a chain of dependent adds
/// (or maxes), one every few cycles: for U-ViT's 257-key attention rows it
/// cost more than the exponentials. The lane count is fixed, not the
/// SIMD width, so every instruction set adds in the same order and gives
/// the same bits.
const F32_LANES: usize = 16;

/// The largest element (−∞ for an empty row; NaNs are skipped as
/// `f32::max` does), in [`F32_LANES`] partial maxima. Exact in any order.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    // `if v > m` skips a NaN `v` as `f32::max` does (the partial maxima
    // start at −∞ and never become NaN) in one `vmaxps`; `f32::max` adds
    // a NaN test and a blend per vector.
    #[inline(always)]
    fn keep_larger(m: f32, v: f32) -> f32 {
        if v > m { v } else { m }
    }
    let mut m = [f32::NEG_INFINITY; F32_LANES];
    let mut c = x.chunks_exact(F32_LANES);
    for c in &mut c {
        for i in 0..F32_LANES {
            m[i] = keep_larger(m[i], c[i]);
        }
    }
    for (i, &v) in c.remainder().iter().enumerate() {
        m[i] = keep_larger(m[i], v);
    }
    m.iter().copied().fold(f32::NEG_INFINITY, keep_larger)
}

/// `Σ f(a, b)` over paired elements in [`F32_LANES`] interleaved partial
/// sums, added up pairwise at the end (a fixed order).
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut s = [0f32; F32_LANES];
    let (mut ca, mut cb) = (a.chunks_exact(F32_LANES), b.chunks_exact(F32_LANES));
    for (ca, cb) in (&mut ca).zip(&mut cb) {
        for i in 0..F32_LANES {
            s[i] += f(ca[i], cb[i]);
        }
    }
    for (i, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        s[i] += f(x, y);
    }
    let mut w = F32_LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            s[i] += s[i + w];
        }
    }
    s[0]
}

/// Softmax of one row, in place. The maximum, the exponentials and their
/// sum are each one vectorised sweep (the reductions in [`F32_LANES`]
/// partial results).
#[inline(always)]
pub(crate) fn softmax_in_place(y: &mut [f32]) {
    let max = lane_max(y);
    for o in y.iter_mut() {
        *o = fast_exp(*o - max);
    }
    let sum = lane_sum(y, y, |v, _| v);
    let inv = 1.0 / sum;
    y.iter_mut().for_each(|o| *o *= inv);
}

#[inline(always)]
fn softmax_row(x: &[f32], y: &mut [f32]) {
    y.copy_from_slice(x);
    softmax_in_place(y);
}

#[inline(always)]
fn log_softmax_row(x: &[f32], y: &mut [f32]) {
    let max = lane_max(x);
    let lse = max + x.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v - lse;
    }
}

struct SoftmaxOp;
impl RowOp for SoftmaxOp {
    #[inline(always)]
    fn apply(&self, x: &[f32], y: &mut [f32]) {
        softmax_row(x, y);
    }
}

struct LogSoftmaxOp;
impl RowOp for LogSoftmaxOp {
    #[inline(always)]
    fn apply(&self, x: &[f32], y: &mut [f32]) {
        log_softmax_row(x, y);
    }
}

/// Softmax (or log-softmax) of each row of length `len` of contiguous `x`.
pub(crate) fn softmax_last(x: &[f32], len: usize, log: bool) -> Vec<f32> {
    if log { rows_map(x, len, LogSoftmaxOp) } else { rows_map(x, len, SoftmaxOp) }
}

#[inline(always)]
fn log_softmax_backward_row(g: &[f32], y: &[f32], o: &mut [f32]) {
    let s = lane_sum(g, g, |v, _| v);
    for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
        *o = g - y.exp() * s;
    }
}

#[inline(always)]
fn softmax_backward_row(g: &[f32], y: &[f32], o: &mut [f32]) {
    let dot = lane_sum(g, y, |a, b| a * b);
    for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
        *o = y * (g - dot);
    }
}

/// Gradient of [`softmax_last`] from its output `y` and the gradient `g`
/// (both contiguous): `y ⊙ (g − Σ g⊙y)`, or `g − exp(y)·Σ g` for log-softmax.
pub(crate) fn softmax_last_backward(y: &[f32], g: &[f32], len: usize, log: bool) -> Vec<f32> {
    if log { rows_map2(g, y, len, LogSoftmaxBackwardOp) } else { rows_map2(g, y, len, SoftmaxBackwardOp) }
}

/// [`softmax_backward_row`] times `scale`, in place on the rows of `g`
/// (`len` floats each) against the softmax output `y`: attention's score
/// gradient, with the same operations in the same order as the softmax
/// backward followed by a separate scaling.
pub(crate) struct SoftmaxBackwardScaled<'a> {
    pub(crate) g: &'a mut [f32],
    pub(crate) y: &'a [f32],
    pub(crate) len: usize,
    pub(crate) scale: f32,
}

impl Kernel for SoftmaxBackwardScaled<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Self { g, y, len, scale } = self;
        for (g, y) in g.chunks_mut(len).zip(y.chunks(len)) {
            let dot = lane_sum(g, y, |a, b| a * b);
            for (g, &y) in g.iter_mut().zip(y) {
                *g = y * (*g - dot) * scale;
            }
        }
    }
}

struct SoftmaxBackwardOp;
impl RowOp2 for SoftmaxBackwardOp {
    #[inline(always)]
    fn apply(&self, g: &[f32], y: &[f32], o: &mut [f32]) {
        softmax_backward_row(g, y, o);
    }
}

struct LogSoftmaxBackwardOp;
impl RowOp2 for LogSoftmaxBackwardOp {
    #[inline(always)]
    fn apply(&self, g: &[f32], y: &[f32], o: &mut [f32]) {
        log_softmax_backward_row(g, y, o);
    }
}

/// f64 accumulators per row sweep: eight lanes, so the sweep vectorises.
const LANES: usize = 8;

/// `(Σ f(a, b).0, Σ f(a, b).1)` over paired elements, in [`LANES`]
/// interleaved partial sums (one vectorised sweep), added up at the end.
#[inline(always)]
fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f64, f64)) -> (f64, f64) {
    let (mut s1, mut s2) = ([0f64; LANES], [0f64; LANES]);
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (ca, cb) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            let (u, v) = f(ca[i], cb[i]);
            s1[i] += u;
            s2[i] += v;
        }
    }
    for (i, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        let (u, v) = f(x, y);
        s1[i] += u;
        s2[i] += v;
    }
    (s1.iter().sum(), s2.iter().sum())
}

/// `Σ f(a, b)` over paired elements, each term rounded to f32 and summed in
/// f64 over [`LANES`] interleaved partial sums (group norm's per-channel
/// weight and bias gradients).
#[inline(always)]
pub(crate) fn sum_f64_of(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    lane_sums(a, b, |x, y| (f(x, y) as f64, 0.0)).0
}

/// Mean and 1/√(var + eps) of a row (biased variance), in one sweep: the
/// sums of `d = x − x₀` and `d²` in f64 (each `d` and `d²` exact in f64 for
/// f32 inputs), over [`LANES`] interleaved partial sums. Shifting by the
/// first element keeps `Σd²/n − (Σd/n)²` free of cancellation when the
/// mean is large against the spread; the relative error of the variance is
/// then ~len·2⁻⁵³, far below f32 resolution.
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f64, f64) {
    let n = x.len() as f64;
    let shift = x.first().map_or(0.0, |&v| v as f64);
    let (sum, sumsq) = lane_sums(x, x, |v, _| {
        let d = v as f64 - shift;
        (d, d * d)
    });
    finish_stats(sum, sumsq, n, shift, eps)
}

/// Mean and 1/√(var + eps) from the shifted sums of [`row_stats`].
#[inline(always)]
fn finish_stats(sum: f64, sumsq: f64, n: f64, shift: f64, eps: f32) -> (f64, f64) {
    let dmean = sum / n;
    let var = (sumsq / n - dmean * dmean).max(0.0);
    (shift + dmean, 1.0 / (var + eps as f64).sqrt())
}

/// Rows per group of [`row_stats_rows`].
pub(crate) const STATS_ROWS: usize = 16;

/// [`row_stats`] of each row of `x` (rows of `len`, at most
/// [`STATS_ROWS`]) into `out`: with AVX2, [`row_stats_avx2`] (the same
/// bits). Computing a group's statistics before normalising any of its
/// rows keeps each row's dependency chain (the sweep's additions, the
/// lane sums, the square root and division) independent of the rows
/// around it, so the out-of-order core overlaps them.
#[inline(always)]
pub(crate) fn row_stats_rows(x: &[f32], len: usize, eps: f32, out: &mut [(f64, f64)]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(simd_level(), SimdLevel::Avx2 | SimdLevel::Avx512) {
        // SAFETY: the CPU has AVX2 and FMA (the level in use says so).
        return unsafe { row_stats_avx2(x, len, eps, out) };
    }
    for (s, x) in out.iter_mut().zip(x.chunks(len)) {
        *s = row_stats(x, eps);
    }
}

/// [`row_stats`] of up to [`STATS_ROWS`] rows on AVX2: per lane the same
/// operations in the same order (the f64 conversion, `d = x − x₀`,
/// `s₁ += d`, `s₂ += d·d` with the product rounded first, the tail of the
/// row into the first lanes, the lanes summed in order, then
/// [`finish_stats`]'s divisions and square root), so the same bits. Two
/// rows share the sweep (eight independent chains of additions); the lane
/// sums and the finishing arithmetic run four rows to a register. The
/// compiler's own version of [`lane_sums`] reversed its lanes with four
/// permutes per 8 floats, and each row's sums, two divisions, square root
/// and division formed one ~100-cycle chain: LayerNorm ran at ~1.9 cycles a
/// float on the demo model's 128-wide rows.
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` holds `out.len()` rows of `len ≥ 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_stats_avx2(x: &[f32], len: usize, eps: f32, out: &mut [(f64, f64)]) {
    use std::arch::x86_64::*;
    let rows = out.len();
    assert!(len > 0 && rows <= STATS_ROWS && x.len() >= rows * len);
    let l8 = len / LANES * LANES;
    // Per row: its shift and its lane sums (rows past the last stay zero).
    let mut shift = [0f64; STATS_ROWS];
    let (mut s1, mut s2) = ([[0f64; LANES]; STATS_ROWS], [[0f64; LANES]; STATS_ROWS]);
    let mut r = 0;
    while r < rows {
        // Two rows (the second a repeat of the first on an odd last row).
        let pair = [r, (r + 1).min(rows - 1)];
        // SAFETY: AVX2 (the caller); every load reads floats c..c+8 ≤ l8
        // ≤ len of a row inside x.
        unsafe {
            let p = [x.as_ptr().add(pair[0] * len), x.as_ptr().add(pair[1] * len)];
            let sh = [_mm256_set1_pd(*p[0] as f64), _mm256_set1_pd(*p[1] as f64)];
            let one = _mm256_set1_pd(1.0);
            let mut a = [[_mm256_setzero_pd(); 2]; 2];
            let mut b = [[_mm256_setzero_pd(); 2]; 2];
            let mut c = 0;
            while c < l8 {
                for u in 0..2 {
                    // x·1 − x₀ and d·1 + s₁ are each rounded once, as the
                    // subtraction and the addition are: the same bits, on
                    // the FMA pipes (Zen 3's two adders were the bound).
                    let lo = _mm256_fmsub_pd(_mm256_cvtps_pd(_mm_loadu_ps(p[u].add(c))), one, sh[u]);
                    let hi = _mm256_fmsub_pd(_mm256_cvtps_pd(_mm_loadu_ps(p[u].add(c + 4))), one, sh[u]);
                    a[u][0] = _mm256_fmadd_pd(lo, one, a[u][0]);
                    a[u][1] = _mm256_fmadd_pd(hi, one, a[u][1]);
                    b[u][0] = _mm256_add_pd(b[u][0], _mm256_mul_pd(lo, lo));
                    b[u][1] = _mm256_add_pd(b[u][1], _mm256_mul_pd(hi, hi));
                }
                c += LANES;
            }
            for u in 0..2 {
                let i = pair[u];
                _mm256_storeu_pd(s1[i].as_mut_ptr(), a[u][0]);
                _mm256_storeu_pd(s1[i].as_mut_ptr().add(4), a[u][1]);
                _mm256_storeu_pd(s2[i].as_mut_ptr(), b[u][0]);
                _mm256_storeu_pd(s2[i].as_mut_ptr().add(4), b[u][1]);
                shift[i] = *p[u] as f64;
            }
        }
        for &i in &pair[..if pair[1] == pair[0] { 1 } else { 2 }] {
            for (k, &v) in x[i * len + l8..(i + 1) * len].iter().enumerate() {
                let d = v as f64 - shift[i];
                s1[i][k] += d;
                s2[i][k] += d * d;
            }
        }
        r += 2;
    }
    // Four rows to a register: lane k of each row's sums added in order
    // (`iter().sum()` starts from −0.0, and −0.0 + s = s), then the
    // finishing arithmetic.
    let mut r = 0;
    while r < rows {
        // SAFETY: AVX2 (the caller); reads inside the arrays (r + 3 < STATS_ROWS).
        unsafe {
            let lane = |s: &[[f64; LANES]; STATS_ROWS], k: usize| [s[r][k], s[r + 1][k], s[r + 2][k], s[r + 3][k]];
            let (mut sum, mut sumsq) = (_mm256_loadu_pd(lane(&s1, 0).as_ptr()), _mm256_loadu_pd(lane(&s2, 0).as_ptr()));
            for k in 1..LANES {
                sum = _mm256_add_pd(sum, _mm256_loadu_pd(lane(&s1, k).as_ptr()));
                sumsq = _mm256_add_pd(sumsq, _mm256_loadu_pd(lane(&s2, k).as_ptr()));
            }
            let n = _mm256_set1_pd(len as f64);
            let sh = _mm256_loadu_pd(shift.as_ptr().add(r));
            let dmean = _mm256_div_pd(sum, n);
            // `max(·, 0)` as `f64::max`: a NaN variance gives 0 (the
            // second operand), and −0 cannot occur (x − x is +0).
            let var = _mm256_max_pd(_mm256_sub_pd(_mm256_div_pd(sumsq, n), _mm256_mul_pd(dmean, dmean)), _mm256_setzero_pd());
            let rstd = _mm256_div_pd(_mm256_set1_pd(1.0), _mm256_sqrt_pd(_mm256_add_pd(var, _mm256_set1_pd(eps as f64))));
            let (mut m, mut q) = ([0f64; 4], [0f64; 4]);
            _mm256_storeu_pd(m.as_mut_ptr(), _mm256_add_pd(sh, dmean));
            _mm256_storeu_pd(q.as_mut_ptr(), rstd);
            for (u, o) in out[r..(r + 4).min(rows)].iter_mut().enumerate() {
                *o = (m[u], q[u]);
            }
        }
        r += 4;
    }
}

/// One row of [`layer_norm_last`] from its [`row_stats`]: `((x −
/// mean)·rstd)·w + b` (the affine parts optional), in the order of
/// standardizing and then multiplying and adding as separate ops, so both
/// give the same bits; returns `rstd`.
#[inline(always)]
fn normalize_row(x: &[f32], y: &mut [MaybeUninit<f32>], (mean, rs): (f64, f64), w: Option<&[f32]>, b: Option<&[f32]>) -> f32 {
    let (mean, rs) = (mean as f32, rs as f32);
    match (w, b) {
        (None, None) => y.iter_mut().zip(x).for_each(|(o, &v)| {
            o.write((v - mean) * rs);
        }),
        (Some(w), None) => y.iter_mut().zip(x).zip(w).for_each(|((o, &v), &w)| {
            o.write((v - mean) * rs * w);
        }),
        (None, Some(b)) => y.iter_mut().zip(x).zip(b).for_each(|((o, &v), &b)| {
            o.write((v - mean) * rs + b);
        }),
        (Some(w), Some(b)) => y.iter_mut().zip(x).zip(w.iter().zip(b)).for_each(|((o, &v), (&w, &b))| {
            o.write((v - mean) * rs * w + b);
        }),
    }
    rs
}

/// `(x − mean)·rstd` per row of contiguous `x`, and `rstd` per row (f32),
/// in one pass over the rows (in parallel for large inputs).
pub(crate) fn standardize_last(x: &[f32], len: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    layer_norm_last(x, len, eps, None, None)
}

/// Layer norm of each row of contiguous `x`: `(x − mean)·rstd·w + b` with
/// the optional affine `w`, `b` of `len` floats, and `rstd` per row (f32),
/// in one pass over the rows (in parallel for large inputs).
pub(crate) fn layer_norm_last(x: &[f32], len: usize, eps: f32, w: Option<&[f32]>, b: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
    if len == 0 {
        return (vec![0f32; x.len()], Vec::new());
    }
    assert!(w.is_none_or(|w| w.len() == len) && b.is_none_or(|b| b.len() == len), "layer_norm: affine length != {len}");
    let mut rstd = vec![0f32; x.len() / len];
    let rows = rows_per_task(len);
    // One task: rows of x, their outputs, their rstd.
    type Task<'t> = ((&'t [f32], &'t mut [MaybeUninit<f32>]), &'t mut [f32]);
    let one = |((x, y), rstd): Task<'_>| vectorized_with(LayerNormRows { x, y, rstd, len, eps, w, b });
    // SAFETY: every row of `x` (whole rows: x.len() is a multiple of len, as
    // rstd's length assumes) gets its `len` outputs written by
    // `layer_norm_row`, so every element is written; no zeroing pass first.
    let y = unsafe {
        written_vec(x.len(), |y| {
            if rstd.len() <= rows {
                one(((x, y), &mut rstd));
            } else {
                x.par_chunks(len * rows).zip(y.par_chunks_mut(len * rows)).zip(rstd.par_chunks_mut(rows)).for_each(one);
            }
        })
    };
    (y, rstd)
}

/// [`layer_norm_last`] of the rows of `x` into `y` on the calling thread,
/// without the `rstd` output: the same bits, row for row (the N:M kernels
/// normalise their token tiles with it, `nm_cpu/fuse.rs`).
pub(crate) fn layer_norm_rows_into(x: &[f32], len: usize, eps: f32, w: Option<&[f32]>, b: Option<&[f32]>, y: &mut [MaybeUninit<f32>]) {
    assert!(
        x.len() == y.len() && (len == 0 || x.len().is_multiple_of(len)),
        "layer_norm_rows_into: {} inputs, {} outputs, rows of {len}",
        x.len(),
        y.len()
    );
    assert!(w.is_none_or(|w| w.len() == len) && b.is_none_or(|b| b.len() == len), "layer_norm: affine length != {len}");
    if len == 0 {
        return;
    }
    const CHUNK: usize = 64;
    let mut rstd = [0f32; CHUNK];
    for (x, y) in x.chunks(len * CHUNK).zip(y.chunks_mut(len * CHUNK)) {
        let rows = x.len() / len;
        vectorized_with(LayerNormRows { x, y, rstd: &mut rstd[..rows], len, eps, w, b });
    }
}

/// Rows of [`layer_norm_last`]: a [`Kernel`].
struct LayerNormRows<'a> {
    x: &'a [f32],
    y: &'a mut [MaybeUninit<f32>],
    rstd: &'a mut [f32],
    len: usize,
    eps: f32,
    w: Option<&'a [f32]>,
    b: Option<&'a [f32]>,
}

impl Kernel for LayerNormRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let LayerNormRows { x, y, rstd, len, eps, w, b } = self;
        let mut st = [(0f64, 0f64); STATS_ROWS];
        for ((x, y), r) in x.chunks(len * STATS_ROWS).zip(y.chunks_mut(len * STATS_ROWS)).zip(rstd.chunks_mut(STATS_ROWS)) {
            let st = &mut st[..r.len()];
            row_stats_rows(x, len, eps, st);
            for (((x, y), r), &s) in x.chunks(len).zip(y.chunks_mut(len)).zip(r.iter_mut()).zip(st.iter()) {
                *r = normalize_row(x, y, s, w, b);
            }
        }
    }
}

/// One row of [`standardize_last_backward`].
#[inline(always)]
fn standardize_backward_row(g: &[f32], x: &[f32], o: &mut [f32], eps: f32) {
    standardize_backward_from_stats(g, x, o, row_stats(x, eps), x.len() as f64);
}

/// [`standardize_backward_row`] from the row's [`row_stats`] and length `n`
/// (layer norm's fused backward computes the statistics of several rows
/// at once, `norm_backward.rs`).
#[inline(always)]
pub(crate) fn standardize_backward_from_stats(g: &[f32], x: &[f32], o: &mut [f32], (mean, rstd): (f64, f64), n: f64) {
    let (sg, sgy) = lane_sums(g, x, |g, x| (g as f64, g as f64 * ((x as f64 - mean) * rstd)));
    let (mg, mgy) = (sg / n, sgy / n);
    for ((o, &g), &x) in o.iter_mut().zip(g).zip(x) {
        let y = (x as f64 - mean) * rstd;
        *o = (rstd * (g as f64 - mg - y * mgy)) as f32;
    }
}

/// Gradient of [`standardize_last`] from the input `x` and the gradient `g`
/// (contiguous): `rstd·(g − mean(g) − y·mean(g⊙y))`, with the statistics
/// recomputed from `x` in f64 and the two means summed over [`LANES`] partial
/// sums.
pub(crate) fn standardize_last_backward(x: &[f32], g: &[f32], len: usize, eps: f32) -> Vec<f32> {
    rows_map2(g, x, len, StandardizeBackwardOp(eps))
}

struct StandardizeBackwardOp(f32);
impl RowOp2 for StandardizeBackwardOp {
    #[inline(always)]
    fn apply(&self, g: &[f32], x: &[f32], o: &mut [f32]) {
        standardize_backward_row(g, x, o, self.0);
    }
}

#[cfg(test)]
mod tests {
    /// The lane reductions against plain ones, at lengths below, at and
    /// past the lane count (remainders), NaNs skipped by the maximum.
    #[test]
    fn lane_reductions_match_plain_ones() {
        let mut rng = crate::Rng::new(9);
        for len in [0, 1, 15, 16, 17, 257, 1000] {
            let x = rng.uniform_vec(len, -3.0, 5.0);
            let y = rng.uniform_vec(len, -1.0, 1.0);
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(super::lane_max(&x), max, "max of {len}");
            let want: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            let abs: f64 = x.iter().zip(&y).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            let got = super::lane_sum(&x, &y, |a, b| a * b) as f64;
            assert!((got - want).abs() <= 1e-6 * abs.max(1.0), "dot of {len}: {got} vs {want}");
        }
        let mut x = vec![1.0, f32::NAN, -2.0];
        x.extend(std::iter::repeat_n(f32::NAN, 20));
        assert_eq!(super::lane_max(&x), 1.0);
        assert_eq!(super::lane_sum(&[], &[], |a, _| a), 0.0);
    }

    /// The one-sweep statistics against the two-pass f64 formula, on rows
    /// whose mean is far larger than their spread and whose lengths leave
    /// remainders past the lanes.
    #[test]
    fn one_sweep_stats_match_two_passes() {
        let mut rng = crate::Rng::new(5);
        for (len, mean, spread) in [(1, 3.0, 1.0), (7, 0.0, 1.0), (130, 1e4, 1e-1), (1031, -250.0, 3.0)] {
            let x: Vec<f32> = rng.uniform_vec(len, -1.0, 1.0).iter().map(|u| mean + spread * u).collect();
            let n = len as f64;
            let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
            let (got_m, got_rstd) = super::row_stats(&x, 1e-5);
            let want_rstd = 1.0 / (var + 1e-5f32 as f64).sqrt();
            assert!((got_m - m).abs() <= 1e-12 * m.abs().max(1.0), "len {len}: mean {got_m} vs {m}");
            assert!((got_rstd - want_rstd).abs() <= 1e-9 * want_rstd, "len {len}: rstd {got_rstd} vs {want_rstd}");
        }
    }

    /// The AVX2 statistics give [`super::row_stats`]'s bits, row for row:
    /// lengths around the lane count and the demo model's 128, every group
    /// size up to [`super::STATS_ROWS`] (odd ones repeat a row in the
    /// sweep, partial ones pad the four-row finish), rows whose mean dwarfs
    /// their spread, values far apart in magnitude (squares that round),
    /// a constant row, and rows holding NaN or infinities.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_stats_are_the_scalar_ones() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("skipped: the CPU has no AVX2 + FMA");
            return;
        }
        let mut rng = crate::Rng::new(17);
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3e38, -1e-30, 0.0, -0.0];
        for len in [1, 2, 7, 8, 9, 16, 23, 128, 131, 512] {
            for rows in 1..=super::STATS_ROWS {
                let mut x = Vec::with_capacity(rows * len);
                for r in 0..rows {
                    let (mean, spread) = [(0.0, 1.0), (1e4, 1e-2), (-250.0, 3.0), (1e30, 1e28), (0.0, 1e-30)][r % 5];
                    x.extend(rng.uniform_vec(len, -1.0, 1.0).iter().map(|u| mean + spread * u));
                    if r % 6 == 5 {
                        // A shift far below the rest: d has ~35 bits, d² rounds.
                        x[r * len] = 1.2345e-3;
                    }
                    if r % 7 == 3 {
                        x[r * len..].fill(2.5);
                    }
                    if r % 4 == 2 {
                        let k = r * len + (r * 5) % len;
                        x[k] = specials[r % specials.len()];
                    }
                }
                let mut got = vec![(0f64, 0f64); rows];
                // SAFETY: AVX2 + FMA were detected; `x` holds `rows` rows of `len`.
                unsafe { super::row_stats_avx2(&x, len, 1e-5, &mut got) };
                for (r, g) in got.iter().enumerate() {
                    let want = super::row_stats(&x[r * len..(r + 1) * len], 1e-5);
                    let bits = |(a, b): (f64, f64)| (a.to_bits(), b.to_bits());
                    assert_eq!(bits(*g), bits(want), "len {len}, {rows} rows, row {r}: {g:?} vs {want:?}");
                }
            }
        }
    }
}
