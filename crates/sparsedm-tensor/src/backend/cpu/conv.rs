//! CPU 2-D convolution, NCHW, with stride and zero padding: im2col per image
//! and GEMMs `[O, C·kh·kw] × [C·kh·kw, Ho·Wo]`. The forward pass builds the
//! columns in tiles of whole output rows (about 1 MiB each, so a tile stays
//! in the core's cache between im2col and the GEMM that reads it) and reuses
//! one column buffer per worker; 1×1 stride-1 convolutions read the image
//! itself. Backward recomputes the columns (no extra memory kept from the
//! forward) and gives the input gradient (at stride 1 the forward pass of
//! the transposed convolution, otherwise col2im of Wᵀ·g) and the weight
//! gradient (Σₙ g·colᵀ).

use crate::backend::cpu::matmul::{gemm_f32, gemm_f32_rows};
use crate::backend::cpu::strided::gather;
use crate::op_kinds::ConvGeom;
use rayon::prelude::*;

impl ConvGeom {
    fn im2col(&self, x: &[f32], col: &mut [f32]) {
        self.im2col_rows(x, col, 0, self.ho);
    }

    /// Output columns `lo..hi` whose input column `ow·sw + kj − pw` lies in `[0, w)`.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let lo = self.pw.saturating_sub(kj).div_ceil(self.sw).min(self.wo);
        let hi = if self.w + self.pw > kj { ((self.w + self.pw - kj - 1) / self.sw + 1).min(self.wo) } else { 0 }.max(lo);
        (lo, hi)
    }

    /// Output rows `lo..hi` whose input row `oh·sh + ki − ph` lies in `[0, h)`.
    fn valid_rows(&self, ki: usize) -> (usize, usize) {
        let lo = self.ph.saturating_sub(ki).div_ceil(self.sh).min(self.ho);
        let hi = if self.h + self.ph > ki { ((self.h + self.ph - ki - 1) / self.sh + 1).min(self.ho) } else { 0 }.max(lo);
        (lo, hi)
    }

    /// The columns of output rows `oh0..oh1`: `col` is `[C·kh·kw, (oh1−oh0)·Wo]`.
    /// Every element is written (padding as zeros).
    ///
    /// A stride-1 convolution that keeps the width (`wo == w`: 3×3 with
    /// padding 1, the UNet's) makes each column row the input plane shifted
    /// by `(ki − ph)·w + kj − pw`: one copy over all its valid output rows,
    /// then the few elements that wrapped around a row edge (and the rows
    /// outside the image) zeroed. Otherwise, one copy per output row. On
    /// 16-wide planes the per-row copies were 64-byte `memcpy` calls.
    fn im2col_rows(&self, x: &[f32], col: &mut [f32], oh0: usize, oh1: usize) {
        let wo = self.wo;
        let p = (oh1 - oh0) * wo;
        let shifted = self.sw == 1 && self.sh == 1 && wo == self.w;
        // The valid output rows (within the tile) and columns of every kernel row and column.
        let rows: Vec<(usize, usize)> = (0..self.kh)
            .map(|ki| {
                let (r0, r1) = self.valid_rows(ki);
                (r0.clamp(oh0, oh1), r1.clamp(oh0, oh1))
            })
            .collect();
        let cols: Vec<(usize, usize)> = (0..self.kw).map(|kj| self.valid_cols(kj)).collect();
        for c in 0..self.c {
            let plane = &x[c * self.h * self.w..(c + 1) * self.h * self.w];
            for (ki, &(a, b)) in rows.iter().enumerate() {
                for (kj, &(lo, hi)) in cols.iter().enumerate() {
                    let row = &mut col[((c * self.kh + ki) * self.kw + kj) * p..][..p];
                    if shifted {
                        if a >= b || lo >= hi {
                            row.fill(0.0);
                            continue;
                        }
                        // dst[i] = plane[i + off] for i in start..end, off = (oh0 + ki − ph)·w + kj − pw;
                        // start + off = (a + ki − ph)·w + lo + kj − pw ≥ 0 and
                        // end + off = (b − 1 + ki − ph)·w + hi + kj − pw ≤ h·w by the choice of a, b, lo, hi.
                        let (start, end) = ((a - oh0) * wo + lo, (b - 1 - oh0) * wo + hi);
                        let src = (a + ki - self.ph) * self.w + lo + kj - self.pw;
                        row[start..end].copy_from_slice(&plane[src..src + (end - start)]);
                        row[..start].fill(0.0);
                        row[end..].fill(0.0);
                        if lo > 0 || hi < wo {
                            for oh in a..b {
                                let base = (oh - oh0) * wo;
                                row[base..base + lo].fill(0.0);
                                row[base + hi..base + wo].fill(0.0);
                            }
                        }
                        continue;
                    }
                    for oh in oh0..oh1 {
                        let dst = &mut row[(oh - oh0) * wo..(oh - oh0 + 1) * wo];
                        if oh < a || oh >= b {
                            dst.fill(0.0);
                            continue;
                        }
                        let ih = oh * self.sh + ki - self.ph;
                        let src = &plane[ih * self.w..(ih + 1) * self.w];
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        if lo < hi {
                            // First input column read: lo·sw + kj − pw (≥ 0 by the choice of lo).
                            let first = lo * self.sw + kj - self.pw;
                            if self.sw == 1 {
                                dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                            } else {
                                for (d, s) in dst[lo..hi].iter_mut().zip(src[first..].iter().step_by(self.sw)) {
                                    *d = *s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `x += col2im(col)`: every column element added to the input pixel it
    /// was read from. The valid rows and columns are worked out once per
    /// kernel position (no per-element bounds tests); at stride 1 each
    /// output row adds to a contiguous run of its input row (vectorised).
    fn col2im(&self, col: &[f32], x: &mut [f32]) {
        let (p, wo) = (self.p(), self.wo);
        let rows: Vec<(usize, usize)> = (0..self.kh).map(|ki| self.valid_rows(ki)).collect();
        let cols: Vec<(usize, usize)> = (0..self.kw).map(|kj| self.valid_cols(kj)).collect();
        for c in 0..self.c {
            for (ki, &(r0, r1)) in rows.iter().enumerate() {
                for (kj, &(lo, hi)) in cols.iter().enumerate() {
                    if lo >= hi {
                        continue;
                    }
                    let row = &col[((c * self.kh + ki) * self.kw + kj) * p..][..p];
                    // First input column: lo·sw + kj − pw (≥ 0 by the choice of lo).
                    let first = lo * self.sw + kj - self.pw;
                    for oh in r0..r1 {
                        let ih = oh * self.sh + ki - self.ph;
                        let dst = &mut x[(c * self.h + ih) * self.w..][..self.w];
                        let src = &row[oh * wo + lo..oh * wo + hi];
                        if self.sw == 1 {
                            for (d, &v) in dst[first..first + (hi - lo)].iter_mut().zip(src) {
                                *d += v;
                            }
                        } else {
                            for (d, &v) in dst[first..].iter_mut().step_by(self.sw).zip(src) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether to parallelise over images (else inside each GEMM).
fn per_image_parallel(n: usize) -> bool {
    n >= rayon::current_num_threads()
}

/// Floats of im2col columns per tile in the forward pass (1 MiB).
const COL_TILE_FLOATS: usize = 1 << 18;

pub(crate) fn conv_forward(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    conv_forward_tiled(g, x, w, bias, COL_TILE_FLOATS)
}

/// The forward pass with im2col tiles of at most `tile_floats` (at least one
/// output row per tile).
fn conv_forward_tiled(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, tile_floats: usize) -> Vec<f32> {
    let (ck, p, o) = (g.ck(), g.p(), g.o);
    let in_img = g.c * g.h * g.w;
    let rows_per_tile = (tile_floats / (ck * g.wo).max(1)).clamp(1, g.ho.max(1));
    let mut out = vec![0f32; g.n * o * p];
    if out.is_empty() {
        return out;
    }
    let one = |col: &mut Vec<f32>, i: usize, dst: &mut [f32], parallel: bool| {
        let xi = &x[i * in_img..(i + 1) * in_img];
        if let Some(b) = bias {
            for (row, &bv) in dst.chunks_mut(p).zip(b) {
                row.fill(bv);
            }
        }
        if g.is_pointwise() {
            gemm_f32_rows(dst, p, o, p, ck, w, ck, 1, xi, p, 1, bias.is_some(), parallel);
            return;
        }
        for oh0 in (0..g.ho).step_by(rows_per_tile) {
            let oh1 = (oh0 + rows_per_tile).min(g.ho);
            let tp = (oh1 - oh0) * g.wo;
            // Every element of the tile is overwritten by im2col_rows.
            if col.len() < ck * tp {
                col.resize(ck * tp, 0.0);
            }
            g.im2col_rows(xi, &mut col[..ck * tp], oh0, oh1);
            gemm_f32_rows(&mut dst[oh0 * g.wo..], p, o, tp, ck, w, ck, 1, &col[..ck * tp], tp, 1, bias.is_some(), parallel);
        }
    };
    if per_image_parallel(g.n) {
        out.par_chunks_mut(o * p).enumerate().for_each_init(Vec::new, |col, (i, d)| one(col, i, d, false));
    } else {
        let mut col = Vec::new();
        out.chunks_mut(o * p).enumerate().for_each(|(i, d)| one(&mut col, i, d, true));
    }
    out
}

/// Input gradient of the convolution `g` from the output gradient `gout`.
///
/// At stride 1 (padding below the kernel size) it is itself a convolution:
/// `gout` padded by `k − 1 − p` and correlated with the kernel flipped in
/// both axes and transposed to `[C, O, kh, kw]` ([`transposed_geom`]). That
/// runs the forward pass — im2col of `gout` and GEMMs `[C, O·kh·kw] × [O·kh·kw, H·W]`
/// straight into the gradient — instead of `[C·kh·kw, O] × [O, P]` (an inner
/// dimension of only `O`) into a column buffer, then col2im's scattered adds.
/// Same multiply–adds and no column buffer the size of `C·kh·kw × P` to
/// write and scatter back: 0-8 % faster on the DDPM UNets' 3×3 convs
/// (`examples/conv_speed.rs`). Other strides take [`input_grad_col2im`].
pub(crate) fn conv_backward_input(g: &ConvGeom, gout: &[f32], w: &[f32]) -> Vec<f32> {
    match transposed_geom(g) {
        Some(t) if !g.is_pointwise() => conv_forward(&t, gout, &flip_transpose(g, w), None),
        _ => input_grad_col2im(g, gout, w),
    }
}

/// The convolution whose forward pass is `g`'s input gradient, for stride 1
/// with padding below the kernel size: `O` input channels of `Ho × Wo`, `C`
/// outputs, padding `k − 1 − p`, so its output is `H × W`.
fn transposed_geom(g: &ConvGeom) -> Option<ConvGeom> {
    if g.sh != 1 || g.sw != 1 || g.ph >= g.kh || g.pw >= g.kw {
        return None;
    }
    let (ph, pw) = (g.kh - 1 - g.ph, g.kw - 1 - g.pw);
    let t = ConvGeom { n: g.n, c: g.o, h: g.ho, w: g.wo, o: g.c, kh: g.kh, kw: g.kw, sh: 1, sw: 1, ph, pw, ho: g.h, wo: g.w };
    debug_assert_eq!((t.ho, t.wo), (t.h + 2 * ph + 1 - t.kh, t.w + 2 * pw + 1 - t.kw));
    Some(t)
}

/// `w[o, c, ki, kj]` as `[C, O, kh, kw]` with both kernel axes reversed.
fn flip_transpose(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    let kk = g.kh * g.kw;
    let mut t = vec![0f32; w.len()];
    for o in 0..g.o {
        for c in 0..g.c {
            let src = &w[(o * g.c + c) * kk..][..kk];
            let dst = &mut t[(c * g.o + o) * kk..][..kk];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    t
}

/// Input gradient as col2im(Wᵀ · g) per image (any stride).
fn input_grad_col2im(g: &ConvGeom, gout: &[f32], w: &[f32]) -> Vec<f32> {
    let (ck, p, o) = (g.ck(), g.p(), g.o);
    let in_img = g.c * g.h * g.w;
    let mut gx = vec![0f32; g.n * in_img];
    // `col` is one buffer per worker, reused from image to image: the
    // product overwrites it (no accumulation), so it is never zeroed.
    let one = |col: &mut Vec<f32>, i: usize, dst: &mut [f32], parallel: bool| {
        let gi = &gout[i * o * p..(i + 1) * o * p];
        if g.is_pointwise() {
            gemm_f32(dst, ck, p, o, w, 1, ck, gi, p, 1, false, parallel);
        } else {
            col.resize(ck * p, 0.0);
            gemm_f32(col, ck, p, o, w, 1, ck, gi, p, 1, false, parallel);
            g.col2im(col, dst);
        }
    };
    if per_image_parallel(g.n) {
        gx.par_chunks_mut(in_img).enumerate().for_each_init(Vec::new, |col, (i, d)| one(col, i, d, false));
    } else {
        let mut col = Vec::new();
        gx.chunks_mut(in_img).enumerate().for_each(|(i, d)| one(&mut col, i, d, true));
    }
    gx
}

/// Weight gradient: Σₙ gₙ · colₙᵀ, accumulated transposed (`[C·kh·kw, O]`)
/// and transposed once at the end.
pub(crate) fn conv_backward_weight(g: &ConvGeom, gout: &[f32], x: &[f32]) -> Vec<f32> {
    let (ck, p, o) = (g.ck(), g.p(), g.o);
    let in_img = g.c * g.h * g.w;
    let accumulate = |acc: &mut Vec<f32>, col: &mut Vec<f32>, i: usize, parallel: bool| {
        let xi = &x[i * in_img..(i + 1) * in_img];
        let gi = &gout[i * o * p..(i + 1) * o * p];
        let cols: &[f32] = if g.is_pointwise() {
            xi
        } else {
            col.resize(ck * p, 0.0);
            g.im2col(xi, col);
            col
        };
        // accᵀ[ck, o] += cols[ck, p] · g[o, p]ᵀ: the transposing pack is
        // then the small `g`'s, not the columns' (`acc[o, ck] += g · colsᵀ`
        // packed `cols` transposed; 5-16 % slower at the UNets' shapes).
        gemm_f32(acc, ck, o, p, cols, p, 1, gi, 1, p, true, parallel);
    };
    if per_image_parallel(g.n) {
        let threads = rayon::current_num_threads();
        let per = g.n.div_ceil(threads);
        let partials: Vec<Vec<f32>> = (0..threads)
            .into_par_iter()
            .map(|t| {
                let mut acc = vec![0f32; o * ck];
                let mut col = Vec::new();
                for i in t * per..((t + 1) * per).min(g.n) {
                    accumulate(&mut acc, &mut col, i, false);
                }
                acc
            })
            .collect();
        let mut total = vec![0f32; o * ck];
        for part in partials {
            for (a, b) in total.iter_mut().zip(part) {
                *a += b;
            }
        }
        transpose(&total, ck, o)
    } else {
        let mut acc = vec![0f32; o * ck];
        let mut col = Vec::new();
        for i in 0..g.n {
            accumulate(&mut acc, &mut col, i, true);
        }
        transpose(&acc, ck, o)
    }
}

/// `[rows, cols]` row-major as `[cols, rows]`.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    gather(a, &[cols, rows], &[1, cols], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution by the definition, in f64.
    fn naive(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0f32; g.n * g.o * g.ho * g.wo];
        for n in 0..g.n {
            for o in 0..g.o {
                for oh in 0..g.ho {
                    for ow in 0..g.wo {
                        let mut acc = bias.map_or(0.0, |b| f64::from(b[o]));
                        for c in 0..g.c {
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let ih = (oh * g.sh + ki) as isize - g.ph as isize;
                                    let iw = (ow * g.sw + kj) as isize - g.pw as isize;
                                    if ih < 0 || iw < 0 || ih as usize >= g.h || iw as usize >= g.w {
                                        continue;
                                    }
                                    let xv = x[((n * g.c + c) * g.h + ih as usize) * g.w + iw as usize];
                                    let wv = w[((o * g.c + c) * g.kh + ki) * g.kw + kj];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        out[((n * g.o + o) * g.ho + oh) * g.wo + ow] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5).collect()
    }

    /// Tiled forward (several tile sizes, including one output row per tile) against the definition.
    #[test]
    fn tiled_forward_matches_direct_convolution() {
        // (n, c, h, w, o, kh, kw, sh, sw, ph, pw)
        let cases = [
            (2, 3, 11, 9, 4, 3, 3, 2, 2, 0, 0),
            (1, 2, 10, 13, 3, 3, 3, 1, 1, 1, 1),
            (3, 4, 9, 9, 5, 1, 7, 1, 1, 0, 3),
            (2, 4, 9, 8, 2, 7, 1, 1, 1, 3, 0),
            (1, 3, 12, 12, 2, 5, 5, 1, 1, 2, 2),
            (2, 2, 8, 11, 3, 3, 2, 2, 3, 1, 1),
            (1, 2, 6, 6, 2, 1, 1, 1, 1, 0, 0),
            (2, 2, 7, 7, 3, 1, 1, 2, 2, 0, 0),
            (1, 1, 3, 3, 1, 3, 3, 1, 1, 1, 1),
        ];
        for (case, &(n, c, h, w, o, kh, kw, sh, sw, ph, pw)) in cases.iter().enumerate() {
            let ho = (h + 2 * ph - kh) / sh + 1;
            let wo = (w + 2 * pw - kw) / sw + 1;
            let g = ConvGeom { n, c, h, w, o, kh, kw, sh, sw, ph, pw, ho, wo };
            let x = values(n * c * h * w, 7 + case as u32);
            let wt = values(o * c * kh * kw, 99 + case as u32);
            let b = values(o, 5);
            for bias in [None, Some(b.as_slice())] {
                let want = naive(&g, &x, &wt, bias);
                for tile in [1, g.ck() * wo * 2, usize::MAX / 2] {
                    let got = conv_forward_tiled(&g, &x, &wt, bias, tile);
                    for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                        assert!((a - e).abs() <= 1e-5, "case {case} tile {tile} bias {}: [{i}] {a} vs {e}", bias.is_some());
                    }
                }
            }
        }
    }

    /// Geometries of both im2col routes: stride-1 width-keeping ones (the
    /// shifted-plane copy: 3×3 pad 1, 1×7 pad (0, 3), 7×1, 5×5 pad 2, a
    /// 1-wide plane) and the rest (strides 2 and 3, no padding, a width that
    /// shrinks).
    /// (c, h, w, kh, kw, sh, sw, ph, pw, o)
    type Route = (usize, usize, usize, usize, usize, usize, usize, usize, usize, usize);

    const ROUTES: [Route; 10] = [
        (2, 10, 13, 3, 3, 1, 1, 1, 1, 3),
        (3, 9, 9, 1, 7, 1, 1, 0, 3, 2),
        (2, 9, 8, 7, 1, 1, 1, 3, 0, 2),
        (1, 12, 12, 5, 5, 1, 1, 2, 2, 2),
        (2, 5, 1, 3, 1, 1, 1, 1, 0, 2),
        (2, 2, 2, 3, 3, 1, 1, 1, 1, 3),
        (2, 11, 9, 3, 3, 2, 2, 0, 0, 2),
        (2, 8, 11, 3, 2, 2, 3, 1, 1, 3),
        (3, 7, 6, 3, 3, 1, 1, 0, 0, 2),
        (2, 6, 7, 3, 3, 2, 1, 1, 1, 2),
    ];

    fn geom(
        n: usize,
        (c, h, w, kh, kw, sh, sw, ph, pw, o): (usize, usize, usize, usize, usize, usize, usize, usize, usize, usize),
    ) -> ConvGeom {
        let (ho, wo) = ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1);
        ConvGeom { n, c, h, w, o, kh, kw, sh, sw, ph, pw, ho, wo }
    }

    /// im2col of every tile of output rows against the definition, into
    /// buffers full of NaN (so an element left unwritten fails).
    #[test]
    fn im2col_rows_matches_the_definition() {
        for (case, &r) in ROUTES.iter().enumerate() {
            let g = geom(1, r);
            let x = values(g.c * g.h * g.w, 11 + case as u32);
            for rows in 1..=g.ho {
                for oh0 in (0..g.ho).step_by(rows) {
                    let oh1 = (oh0 + rows).min(g.ho);
                    let tp = (oh1 - oh0) * g.wo;
                    let mut col = vec![f32::NAN; g.ck() * tp];
                    g.im2col_rows(&x, &mut col, oh0, oh1);
                    for (c, ki, kj) in (0..g.c).flat_map(|c| (0..g.kh).flat_map(move |ki| (0..g.kw).map(move |kj| (c, ki, kj)))) {
                        for oh in oh0..oh1 {
                            for ow in 0..g.wo {
                                let (ih, iw) = ((oh * g.sh + ki) as isize - g.ph as isize, (ow * g.sw + kj) as isize - g.pw as isize);
                                let inside = ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w;
                                let want = if inside { x[(c * g.h + ih as usize) * g.w + iw as usize] } else { 0.0 };
                                let got = col[((c * g.kh + ki) * g.kw + kj) * tp + (oh - oh0) * g.wo + ow];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "case {case} rows {oh0}..{oh1}: ({c}, {ki}, {kj}) at ({oh}, {ow})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// One term of a convolution by its definition: image `b`, output
    /// channel `o`, input channel `c`, kernel position `k` (`ki·kw + kj`),
    /// output pixel `out` (`oh·wo + ow`) and the input pixel `inp`
    /// (`ih·w + iw`) the window puts there.
    struct Tap {
        b: usize,
        o: usize,
        c: usize,
        k: usize,
        out: usize,
        inp: usize,
    }

    /// Every term of `g`'s convolution whose input pixel lies inside the image.
    fn taps(g: &ConvGeom) -> impl Iterator<Item = Tap> + '_ {
        let pixels = move |ki: usize, kj: usize| {
            (0..g.ho).flat_map(move |oh| (0..g.wo).map(move |ow| (oh, ow))).filter_map(move |(oh, ow)| {
                let (ih, iw) = ((oh * g.sh + ki).checked_sub(g.ph)?, (ow * g.sw + kj).checked_sub(g.pw)?);
                (ih < g.h && iw < g.w).then_some((oh * g.wo + ow, ih * g.w + iw))
            })
        };
        let kernel = move || (0..g.kh).flat_map(move |ki| (0..g.kw).map(move |kj| (ki, kj)));
        (0..g.n).flat_map(move |b| {
            (0..g.o).flat_map(move |o| {
                (0..g.c).flat_map(move |c| {
                    kernel().flat_map(move |(ki, kj)| pixels(ki, kj).map(move |(out, inp)| Tap { b, o, c, k: ki * g.kw + kj, out, inp }))
                })
            })
        })
    }

    /// The input gradient (the transposed convolution at stride 1, and
    /// col2im of a GEMM on every geometry it takes) against the definition:
    /// `gx[n, c, ih, iw] = Σ g[n, o, oh, ow]·w[o, c, ki, kj]` over the
    /// output pixels whose window puts (ki, kj) on (ih, iw); one image and
    /// several (the per-image parallel path, each worker reusing its buffer).
    #[test]
    fn input_gradient_matches_the_definition() {
        for (case, &r) in ROUTES.iter().enumerate() {
            for n in [1, 3] {
                let g = geom(n, r);
                let gout = values(n * g.o * g.p(), 21 + case as u32);
                let wt = values(g.o * g.ck(), 31 + case as u32);
                let routes: Vec<Vec<f32>> = match transposed_geom(&g) {
                    Some(_) => vec![conv_backward_input(&g, &gout, &wt), input_grad_col2im(&g, &gout, &wt)],
                    None => vec![conv_backward_input(&g, &gout, &wt)],
                };
                let mut want = vec![0f64; n * g.c * g.h * g.w];
                for Tap { b, o, c, k, out, inp } in taps(&g) {
                    want[(b * g.c + c) * g.h * g.w + inp] +=
                        f64::from(gout[(b * g.o + o) * g.p() + out]) * f64::from(wt[(o * g.c + c) * g.kh * g.kw + k]);
                }
                for (route, got) in routes.iter().enumerate() {
                    assert_eq!(got.len(), want.len());
                    for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                        assert!((f64::from(*a) - e).abs() <= 1e-5, "case {case}, route {route}, {n} images: gx[{i}] {a} vs {e}");
                    }
                }
            }
        }
    }

    /// The weight gradient against the definition, `gw[o, c, ki, kj] =
    /// Σ g[n, o, oh, ow]·x[n, c, ih, iw]` over the output pixels whose window
    /// puts (ki, kj) on an input pixel; one image (the product threaded
    /// inside) and three (per-image partial sums).
    #[test]
    fn weight_gradient_matches_the_definition() {
        for (case, &r) in ROUTES.iter().chain(&[(3, 6, 5, 1, 1, 1, 1, 0, 0, 4)]).enumerate() {
            for n in [1, 3] {
                let g = geom(n, r);
                let gout = values(n * g.o * g.p(), 41 + case as u32);
                let x = values(n * g.c * g.h * g.w, 51 + case as u32);
                let got = conv_backward_weight(&g, &gout, &x);
                let mut want = vec![0f64; g.o * g.ck()];
                for Tap { b, o, c, k, out, inp } in taps(&g) {
                    want[(o * g.c + c) * g.kh * g.kw + k] +=
                        f64::from(gout[(b * g.o + o) * g.p() + out]) * f64::from(x[(b * g.c + c) * g.h * g.w + inp]);
                }
                assert_eq!(got.len(), want.len());
                for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                    assert!((f64::from(*a) - e).abs() <= 1e-5, "case {case}, {n} images: gw[{i}] {a} vs {e}");
                }
            }
        }
    }

    #[test]
    fn tiled_im2col_equals_whole_im2col() {
        let g = ConvGeom { n: 1, c: 2, h: 9, w: 7, o: 1, kh: 3, kw: 3, sh: 2, sw: 1, ph: 1, pw: 1, ho: 5, wo: 7 };
        let x = values(g.c * g.h * g.w, 3);
        let mut whole = vec![f32::NAN; g.ck() * g.p()];
        g.im2col(&x, &mut whole);
        for (oh0, oh1) in [(0, 2), (2, 5), (4, 5)] {
            let tp = (oh1 - oh0) * g.wo;
            let mut tile = vec![f32::NAN; g.ck() * tp];
            g.im2col_rows(&x, &mut tile, oh0, oh1);
            for r in 0..g.ck() {
                assert_eq!(&tile[r * tp..(r + 1) * tp], &whole[r * g.p() + oh0 * g.wo..r * g.p() + oh1 * g.wo]);
            }
        }
    }
}
