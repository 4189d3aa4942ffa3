//! 2-D convolution, NCHW, with stride and zero padding: im2col per image
//! and one GEMM `[O, C·kh·kw] × [C·kh·kw, Ho·Wo]`. Backward recomputes the
//! columns (no extra memory kept from the forward) and gives the input
//! (col2im of Wᵀ·g), weight (Σₙ g·colᵀ) and bias gradients.

use crate::ops::matmul::gemm_f32;
use crate::ops::view::f32_storage;
use crate::tensor::bw;
use crate::{Error, Result, Tensor};
use rayon::prelude::*;

/// Shapes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    fn ck(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.ho * self.wo
    }
    /// A 1×1 stride-1 unpadded conv reads the image itself as its columns.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }

    fn im2col(&self, x: &[f32], col: &mut [f32]) {
        let (p, wo) = (self.p(), self.wo);
        for c in 0..self.c {
            for ki in 0..self.kh {
                for kj in 0..self.kw {
                    let row = &mut col[((c * self.kh + ki) * self.kw + kj) * p..][..p];
                    for oh in 0..self.ho {
                        let ih = (oh * self.sh + ki) as isize - self.ph as isize;
                        let dst = &mut row[oh * wo..(oh + 1) * wo];
                        if ih < 0 || ih as usize >= self.h {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &x[(c * self.h + ih as usize) * self.w..][..self.w];
                        for (ow, d) in dst.iter_mut().enumerate() {
                            let iw = (ow * self.sw + kj) as isize - self.pw as isize;
                            *d = if iw < 0 || iw as usize >= self.w { 0.0 } else { src[iw as usize] };
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

fn conv_forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (ck, p, o) = (g.ck(), g.p(), g.o);
    let in_img = g.c * g.h * g.w;
    let mut out = vec![0f32; g.n * o * p];
    let one = |i: usize, dst: &mut [f32], parallel: bool| {
        let xi = &x[i * in_img..(i + 1) * in_img];
        if let Some(b) = bias {
            for (row, &bv) in dst.chunks_mut(p).zip(b) {
                row.fill(bv);
            }
        }
        if g.is_pointwise() {
            gemm_f32(dst, o, p, ck, w, ck, 1, xi, p, 1, bias.is_some(), parallel);
        } else {
            let mut col = vec![0f32; ck * p];
            g.im2col(xi, &mut col);
            gemm_f32(dst, o, p, ck, w, ck, 1, &col, p, 1, bias.is_some(), parallel);
        }
    };
    if per_image_parallel(g.n) {
        out.par_chunks_mut(o * p).enumerate().for_each(|(i, d)| one(i, d, false));
    } else {
        out.chunks_mut(o * p).enumerate().for_each(|(i, d)| one(i, d, true));
    }
    out
}

/// Input gradient: col2im(Wᵀ · g) per image.
fn conv_backward_input(g: &Geom, gout: &[f32], w: &[f32]) -> Vec<f32> {
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
fn conv_backward_weight(g: &Geom, gout: &[f32], x: &[f32]) -> Vec<f32> {
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

impl Tensor {
    /// 2-D convolution of `[N, C, H, W]` with a `[O, C, kh, kw]` kernel,
    /// optional `[O]` bias, `stride` and zero `padding` as (h, w) pairs.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
        let op = "conv2d";
        let mismatch = || Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: weight.shape().to_vec() };
        if self.rank() != 4 || weight.rank() != 4 {
            return Err(mismatch());
        }
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        let (o, wc, kh, kw) = (weight.shape()[0], weight.shape()[1], weight.shape()[2], weight.shape()[3]);
        if wc != c {
            return Err(mismatch());
        }
        if stride.0 == 0 || stride.1 == 0 {
            crate::error::bail!(op, "stride must be positive, got {stride:?}");
        }
        if h + 2 * padding.0 < kh || w + 2 * padding.1 < kw {
            return Err(Error::bad_shape(op, self.shape(), format!("kernel {kh}x{kw} larger than the padded input")));
        }
        if let Some(b) = bias {
            if b.shape() != [o] {
                return Err(Error::ShapeMismatch { op, lhs: weight.shape().to_vec(), rhs: b.shape().to_vec() });
            }
        }
        let ho = (h + 2 * padding.0 - kh) / stride.0 + 1;
        let wo = (w + 2 * padding.1 - kw) / stride.1 + 1;
        let g = Geom { n, c, h, w, o, kh, kw, sh: stride.0, sw: stride.1, ph: padding.0, pw: padding.1, ho, wo };
        let (xc, wt) = (self.contiguous()?, weight.contiguous()?);
        let bvals = bias.map(|b| b.to_vec_f32()).transpose()?;
        let out = xc.with_contiguous_f32(op, |x| wt.with_contiguous_f32(op, |wv| conv_forward(&g, x, wv, bvals.as_deref())))??;
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        Ok(Tensor::from_op(
            f32_storage(out),
            &[n, o, ho, wo],
            op,
            &inputs,
            bw(move |ctx| {
                let gout = ctx.grad.contiguous()?;
                let gx = if ctx.needs[0] {
                    let v = gout.with_contiguous_f32(op, |gv| wt.with_contiguous_f32(op, |wv| conv_backward_input(&g, gv, wv)))??;
                    Some(Tensor::from_storage(f32_storage(v), &[g.n, g.c, g.h, g.w]))
                } else {
                    None
                };
                let gw = if ctx.needs[1] {
                    let v = gout.with_contiguous_f32(op, |gv| xc.with_contiguous_f32(op, |xv| conv_backward_weight(&g, gv, xv)))??;
                    Some(Tensor::from_storage(f32_storage(v), &[g.o, g.c, g.kh, g.kw]))
                } else {
                    None
                };
                let mut grads = vec![gx, gw];
                if ctx.needs.len() == 3 {
                    grads.push(if ctx.needs[2] { Some(gout.sum_dims(&[0, 2, 3], false)?) } else { None });
                }
                Ok(grads)
            }),
        ))
    }
}
