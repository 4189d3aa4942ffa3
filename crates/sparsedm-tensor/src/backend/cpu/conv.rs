//! CPU 2-D convolution, NCHW, with stride and zero padding: im2col per image
//! and GEMMs `[O, C·kh·kw] × [C·kh·kw, Ho·Wo]`. The forward pass builds the
//! columns in tiles of whole output rows (about 1 MiB each, so a tile stays
//! in the core's cache between im2col and the GEMM that reads it) and reuses
//! one column buffer per worker; 1×1 stride-1 convolutions read the image
//! itself. Backward recomputes the columns (no extra memory kept from the
//! forward) and gives the input (col2im of Wᵀ·g) and weight (Σₙ g·colᵀ)
//! gradients.

use crate::backend::cpu::matmul::{gemm_f32, gemm_f32_rows};
use crate::op_kinds::ConvGeom;
use rayon::prelude::*;

impl ConvGeom {
    fn im2col(&self, x: &[f32], col: &mut [f32]) {
        self.im2col_rows(x, col, 0, self.ho);
    }

    /// The columns of output rows `oh0..oh1`: `col` is `[C·kh·kw, (oh1−oh0)·Wo]`.
    /// Every element is written (padding as zeros).
    fn im2col_rows(&self, x: &[f32], col: &mut [f32], oh0: usize, oh1: usize) {
        let wo = self.wo;
        let p = (oh1 - oh0) * wo;
        for c in 0..self.c {
            let plane = &x[c * self.h * self.w..(c + 1) * self.h * self.w];
            for ki in 0..self.kh {
                for kj in 0..self.kw {
                    let row = &mut col[((c * self.kh + ki) * self.kw + kj) * p..][..p];
                    // Output columns whose input column iw = ow·sw + kj − pw lies in [0, w).
                    let lo = self.pw.saturating_sub(kj).div_ceil(self.sw).min(wo);
                    let hi = if self.w + self.pw > kj { ((self.w + self.pw - kj - 1) / self.sw + 1).min(wo) } else { 0 }.max(lo);
                    for oh in oh0..oh1 {
                        let dst = &mut row[(oh - oh0) * wo..(oh - oh0 + 1) * wo];
                        let ih = (oh * self.sh + ki) as isize - self.ph as isize;
                        if ih < 0 || ih as usize >= self.h {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[ih as usize * self.w..(ih as usize + 1) * self.w];
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

    fn col2im(&self, col: &[f32], x: &mut [f32]) {
        let (p, wo) = (self.p(), self.wo);
        for c in 0..self.c {
            for ki in 0..self.kh {
                for kj in 0..self.kw {
                    let row = &col[((c * self.kh + ki) * self.kw + kj) * p..][..p];
                    for oh in 0..self.ho {
                        let ih = (oh * self.sh + ki) as isize - self.ph as isize;
                        if ih < 0 || ih as usize >= self.h {
                            continue;
                        }
                        let dst = &mut x[(c * self.h + ih as usize) * self.w..][..self.w];
                        for (ow, &v) in row[oh * wo..(oh + 1) * wo].iter().enumerate() {
                            let iw = (ow * self.sw + kj) as isize - self.pw as isize;
                            if iw >= 0 && (iw as usize) < self.w {
                                dst[iw as usize] += v;
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

/// Input gradient: col2im(Wᵀ · g) per image.
pub(crate) fn conv_backward_input(g: &ConvGeom, gout: &[f32], w: &[f32]) -> Vec<f32> {
    let (ck, p, o) = (g.ck(), g.p(), g.o);
    let in_img = g.c * g.h * g.w;
    let mut gx = vec![0f32; g.n * in_img];
    let one = |i: usize, dst: &mut [f32], parallel: bool| {
        let gi = &gout[i * o * p..(i + 1) * o * p];
        if g.is_pointwise() {
            gemm_f32(dst, ck, p, o, w, 1, ck, gi, p, 1, false, parallel);
        } else {
            let mut col = vec![0f32; ck * p];
            gemm_f32(&mut col, ck, p, o, w, 1, ck, gi, p, 1, false, parallel);
            g.col2im(&col, dst);
        }
    };
    if per_image_parallel(g.n) {
        gx.par_chunks_mut(in_img).enumerate().for_each(|(i, d)| one(i, d, false));
    } else {
        gx.chunks_mut(in_img).enumerate().for_each(|(i, d)| one(i, d, true));
    }
    gx
}

/// Weight gradient: Σₙ gₙ · colₙᵀ.
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
        // acc[o, ck] += g[o, p] · cols[ck, p]ᵀ
        gemm_f32(acc, o, ck, p, gi, p, 1, cols, 1, p, true, parallel);
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
        total
    } else {
        let mut acc = vec![0f32; o * ck];
        let mut col = Vec::new();
        for i in 0..g.n {
            accumulate(&mut acc, &mut col, i, true);
        }
        acc
    }
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
