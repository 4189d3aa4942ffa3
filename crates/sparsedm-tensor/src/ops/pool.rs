//! Pooling and resampling of NCHW images: max pool, average pool (both
//! `count_include_pad` settings), adaptive average pool to 1×1, nearest
//! integer-factor upsampling, and bilinear resize with PyTorch's
//! `align_corners=False` sampling. All work plane by plane in parallel.

use crate::ops::view::f32_storage;
use crate::tensor::bw;
use crate::{Error, Result, Tensor};
use rayon::prelude::*;

fn check_nchw(op: &'static str, t: &Tensor) -> Result<(usize, usize, usize, usize)> {
    if t.rank() != 4 {
        return Err(Error::bad_shape(op, t.shape(), "expected [N, C, H, W]"));
    }
    Ok((t.shape()[0], t.shape()[1], t.shape()[2], t.shape()[3]))
}

/// Output size of a window op, or an error.
fn out_size(op: &'static str, shape: &[usize], n: usize, k: usize, s: usize, p: usize) -> Result<usize> {
    if k == 0 || s == 0 {
        crate::error::bail!(op, "kernel and stride must be positive");
    }
    if p * 2 > k {
        crate::error::bail!(op, "padding {p} must be at most half the kernel size {k}");
    }
    if n + 2 * p < k {
        return Err(Error::bad_shape(op, shape, format!("kernel {k} larger than the padded input")));
    }
    Ok((n + 2 * p - k) / s + 1)
}

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

impl Tensor {
    /// Max pooling with a square `k`×`k` window, stride `s`, padding `p`
    /// (padding never wins; ties take the first element).
    pub fn max_pool2d(&self, k: usize, s: usize, p: usize) -> Result<Tensor> {
        let op = "max_pool2d";
        let (n, c, h, w) = check_nchw(op, self)?;
        let (ho, wo) = (out_size(op, self.shape(), h, k, s, p)?, out_size(op, self.shape(), w, k, s, p)?);
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            let (vals, arg) = crate::cuda::pool::max_pool(self, k, s, p)?;
            let x_shape = self.shape().to_vec();
            return Ok(Tensor::from_op(
                vals,
                &[n, c, ho, wo],
                op,
                &[self],
                bw(move |ctx| Ok(vec![Some(crate::cuda::pool::max_pool_backward(ctx.grad, &arg, &x_shape, k, s, p)?)])),
            ));
        }
        let x = self.contiguous()?;
        if !(crate::autograd::is_grad_enabled() && self.is_tracked()) {
            // No gradient will be asked for: values only, without the argmax.
            let (rows, cols) = (Windows::new(h, ho, k, s, p), Windows::new(w, wo, k, s, p));
            let vals =
                x.with_contiguous_f32(op, |xv| per_plane(xv, h * w, ho * wo, n * c, |plane, o| max_pool_plane(plane, w, &rows, &cols, o)))?;
            return Ok(Tensor::from_storage(f32_storage(vals), &[n, c, ho, wo]));
        }
        // Output value and flat in-plane argmax per output element.
        let mut arg = vec![0usize; n * c * ho * wo];
        let vals = x.with_contiguous_f32(op, |xv| {
            let mut out = vec![0f32; n * c * ho * wo];
            out.par_chunks_mut(ho * wo).zip(arg.par_chunks_mut(ho * wo)).enumerate().for_each(|(i, (o, a))| {
                let plane = &xv[i * h * w..(i + 1) * h * w];
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
                        a[oh * wo + ow] = bi;
                    }
                }
            });
            out
        })?;
        Ok(Tensor::from_op(
            f32_storage(vals),
            &[n, c, ho, wo],
            op,
            &[self],
            bw(move |ctx| {
                let g = ctx.grad.contiguous()?.to_vec_f32()?;
                let mut gx = vec![0f32; n * c * h * w];
                gx.par_chunks_mut(h * w).enumerate().for_each(|(i, plane)| {
                    for j in 0..ho * wo {
                        plane[arg[i * ho * wo + j]] += g[i * ho * wo + j];
                    }
                });
                Ok(vec![Some(Tensor::from_storage(f32_storage(gx), &[n, c, h, w]))])
            }),
        ))
    }

    /// Average pooling with a square window; `count_include_pad` chooses
    /// whether padded zeros count in the divisor (PyTorch semantics,
    /// `ceil_mode=False`).
    pub fn avg_pool2d(&self, k: usize, s: usize, p: usize, count_include_pad: bool) -> Result<Tensor> {
        let op = "avg_pool2d";
        let (n, c, h, w) = check_nchw(op, self)?;
        let (ho, wo) = (out_size(op, self.shape(), h, k, s, p)?, out_size(op, self.shape(), w, k, s, p)?);
        // Window bounds (clipped) and divisor for each output position.
        let window = move |o: usize, len: usize| {
            let start = (o * s) as isize - p as isize;
            let end = (start + k as isize).min((len + p) as isize);
            let padded = (end - start) as usize;
            let (a, b) = (start.max(0) as usize, end.min(len as isize) as usize);
            (a, b, padded)
        };
        let divisor = move |oh: usize, ow: usize| {
            let (h0, h1, hp) = window(oh, h);
            let (w0, w1, wp) = window(ow, w);
            let d = if count_include_pad { hp * wp } else { (h1 - h0) * (w1 - w0) };
            (h0, h1, w0, w1, d.max(1) as f32)
        };
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            let vals = crate::cuda::pool::avg_pool(self, k, s, p, count_include_pad)?;
            let x_shape = self.shape().to_vec();
            return Ok(Tensor::from_op(
                vals,
                &[n, c, ho, wo],
                op,
                &[self],
                bw(move |ctx| Ok(vec![Some(crate::cuda::pool::avg_pool_backward(ctx.grad, &x_shape, k, s, p, count_include_pad)?)])),
            ));
        }
        let x = self.contiguous()?;
        // Separable: per input row the window sums along W, then per output
        // row the sum of its window's rows, added in the same order as a
        // direct window sum (row by row, each row left to right), so the
        // values are bitwise those of the direct computation.
        let (rows, cols) = (Windows::new(h, ho, k, s, p), Windows::new(w, wo, k, s, p));
        let divisors: Vec<f32> = (0..ho * wo).map(|i| divisor(i / wo, i % wo).4).collect();
        let vals = x.with_contiguous_f32(op, |xv| {
            per_plane(xv, h * w, ho * wo, n * c, |plane, o| {
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
        })?;
        Ok(Tensor::from_op(
            f32_storage(vals),
            &[n, c, ho, wo],
            op,
            &[self],
            bw(move |ctx| {
                let g = ctx.grad.contiguous()?.to_vec_f32()?;
                let mut gx = vec![0f32; n * c * h * w];
                gx.par_chunks_mut(h * w).enumerate().for_each(|(i, plane)| {
                    for oh in 0..ho {
                        for ow in 0..wo {
                            let (h0, h1, w0, w1, d) = divisor(oh, ow);
                            let v = g[i * ho * wo + oh * wo + ow] / d;
                            for ih in h0..h1 {
                                plane[ih * w + w0..ih * w + w1].iter_mut().for_each(|x| *x += v);
                            }
                        }
                    }
                });
                Ok(vec![Some(Tensor::from_storage(f32_storage(gx), &[n, c, h, w]))])
            }),
        ))
    }

    /// Adaptive average pooling to 1×1: the mean over H and W, kept as
    /// `[N, C, 1, 1]`.
    pub fn adaptive_avg_pool2d_1x1(&self) -> Result<Tensor> {
        check_nchw("adaptive_avg_pool2d", self)?;
        self.mean_dims(&[2, 3], true)
    }

    /// Nearest-neighbour upsampling by an integer factor (`scale_factor=2`
    /// in the UNet).
    pub fn upsample_nearest2d(&self, factor: usize) -> Result<Tensor> {
        let op = "upsample_nearest2d";
        let (n, c, h, w) = check_nchw(op, self)?;
        if factor == 0 {
            crate::error::bail!(op, "factor must be positive");
        }
        let (ho, wo) = (h * factor, w * factor);
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            let x_shape = self.shape().to_vec();
            let vals = crate::cuda::pool::upsample(self, &x_shape, factor, false)?;
            return Ok(Tensor::from_op(
                vals,
                &[n, c, ho, wo],
                op,
                &[self],
                bw(move |ctx| {
                    Ok(vec![Some(Tensor::from_storage(crate::cuda::pool::upsample(ctx.grad, &x_shape, factor, true)?, &x_shape))])
                }),
            ));
        }
        let x = self.contiguous()?;
        let vals = x.with_contiguous_f32(op, |xv| {
            per_plane(xv, h * w, ho * wo, n * c, |plane, o| {
                for oh in 0..ho {
                    for ow in 0..wo {
                        o[oh * wo + ow] = plane[(oh / factor) * w + ow / factor];
                    }
                }
            })
        })?;
        Ok(Tensor::from_op(
            f32_storage(vals),
            &[n, c, ho, wo],
            op,
            &[self],
            bw(move |ctx| {
                let g = ctx.grad.contiguous()?;
                let v = g.with_contiguous_f32(op, |gv| {
                    per_plane(gv, ho * wo, h * w, n * c, |gp, o| {
                        for oh in 0..ho {
                            for ow in 0..wo {
                                o[(oh / factor) * w + ow / factor] += gp[oh * wo + ow];
                            }
                        }
                    })
                })?;
                Ok(vec![Some(Tensor::from_storage(f32_storage(v), &[n, c, h, w]))])
            }),
        ))
    }

    /// Bilinear resize to `(out_h, out_w)` with `align_corners=False`, as
    /// `F.interpolate(x, size, mode="bilinear", align_corners=False)`
    /// (no antialiasing), the resize pytorch-fid applies before Inception.
    pub fn resize_bilinear(&self, out_h: usize, out_w: usize) -> Result<Tensor> {
        let op = "resize_bilinear";
        let (n, c, h, w) = check_nchw(op, self)?;
        if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
            return Err(Error::bad_shape(op, self.shape(), format!("cannot resize to {out_h}x{out_w}")));
        }
        let hi = source_indices(h, out_h);
        let wi = source_indices(w, out_w);
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            let vals = crate::cuda::pool::resize_bilinear(self, out_h, out_w)?;
            let x_shape = self.shape().to_vec();
            return Ok(Tensor::from_op(
                vals,
                &[n, c, out_h, out_w],
                op,
                &[self],
                bw(move |ctx| Ok(vec![Some(crate::cuda::pool::resize_bilinear_backward(ctx.grad, &x_shape, &hi, &wi)?)])),
            ));
        }
        let x = self.contiguous()?;
        let (hi2, wi2) = (hi.clone(), wi.clone());
        let vals = x.with_contiguous_f32(op, |xv| {
            per_plane(xv, h * w, out_h * out_w, n * c, |plane, o| {
                for (oh, &(h0, h1, lh)) in hi.iter().enumerate() {
                    for (ow, &(w0, w1, lw)) in wi.iter().enumerate() {
                        let top = (1.0 - lw) * plane[h0 * w + w0] + lw * plane[h0 * w + w1];
                        let bot = (1.0 - lw) * plane[h1 * w + w0] + lw * plane[h1 * w + w1];
                        o[oh * out_w + ow] = (1.0 - lh) * top + lh * bot;
                    }
                }
            })
        })?;
        Ok(Tensor::from_op(
            f32_storage(vals),
            &[n, c, out_h, out_w],
            op,
            &[self],
            bw(move |ctx| {
                let g = ctx.grad.contiguous()?;
                let v = g.with_contiguous_f32(op, |gv| {
                    per_plane(gv, out_h * out_w, h * w, n * c, |gp, o| {
                        for (oh, &(h0, h1, lh)) in hi2.iter().enumerate() {
                            for (ow, &(w0, w1, lw)) in wi2.iter().enumerate() {
                                let gval = gp[oh * out_w + ow];
                                o[h0 * w + w0] += (1.0 - lh) * (1.0 - lw) * gval;
                                o[h0 * w + w1] += (1.0 - lh) * lw * gval;
                                o[h1 * w + w0] += lh * (1.0 - lw) * gval;
                                o[h1 * w + w1] += lh * lw * gval;
                            }
                        }
                    })
                })?;
                Ok(vec![Some(Tensor::from_storage(f32_storage(v), &[n, c, h, w]))])
            }),
        ))
    }
}

/// For each output index: the two source indices and the weight of the
/// second, following ATen's `area_pixel_compute_source_index` with
/// `align_corners=False` (src = (dst + ½)·in/out − ½, clamped at 0).
fn source_indices(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::{Device, Tensor};

    fn input(n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * c * h * w).map(|i| (((i as u32).wrapping_mul(2_654_435_761) >> 16) % 17) as f32 - 8.0).collect();
        // Ties, signed zeros and NaN.
        v[3] = f32::NAN;
        v[10] = -0.0;
        v[11] = 0.0;
        v
    }

    /// The value-only max pool (untracked input) equals the argmax-tracking one bit for bit.
    #[test]
    fn untracked_max_pool_equals_tracked() {
        for &(h, w, k, s, p) in
            &[(7, 9, 3, 2, 0), (8, 8, 3, 1, 1), (5, 6, 2, 2, 1), (9, 7, 3, 2, 1), (4, 4, 1, 1, 0), (17, 19, 3, 2, 0), (13, 11, 5, 3, 2)]
        {
            let x = Tensor::from_vec(input(2, 3, h, w), &[2, 3, h, w], &Device::Cpu).unwrap();
            let fast = x.max_pool2d(k, s, p).unwrap().to_vec_f32().unwrap();
            let slow = x.to_var().max_pool2d(k, s, p).unwrap().to_vec_f32().unwrap();
            assert_eq!(fast.len(), slow.len());
            for (a, b) in fast.iter().zip(&slow) {
                assert_eq!(a.to_bits(), b.to_bits(), "{h}x{w} k{k} s{s} p{p}");
            }
        }
    }

    /// The separable average pool equals the direct window sums bit for bit.
    #[test]
    fn separable_avg_pool_equals_direct_sum() {
        for &(h, w, k, s, p) in &[(7, 9, 3, 2, 0), (8, 8, 3, 1, 1), (5, 6, 2, 2, 1), (9, 7, 3, 2, 1), (17, 19, 3, 2, 0), (13, 11, 5, 3, 2)]
        {
            let mut v = input(1, 2, h, w);
            v[3] = 1.5;
            let x = Tensor::from_vec(v.clone(), &[1, 2, h, w], &Device::Cpu).unwrap();
            for include_pad in [false, true] {
                let got = x.avg_pool2d(k, s, p, include_pad).unwrap().to_vec_f32().unwrap();
                let ho = (h + 2 * p - k) / s + 1;
                let wo = (w + 2 * p - k) / s + 1;
                for c in 0..2 {
                    let plane = &v[c * h * w..(c + 1) * h * w];
                    for oh in 0..ho {
                        for ow in 0..wo {
                            let (hs, ws) = ((oh * s) as isize - p as isize, (ow * s) as isize - p as isize);
                            let (he, we) = ((hs + k as isize).min((h + p) as isize), (ws + k as isize).min((w + p) as isize));
                            let (h0, h1) = (hs.max(0) as usize, he.min(h as isize) as usize);
                            let (w0, w1) = (ws.max(0) as usize, we.min(w as isize) as usize);
                            let mut acc = 0f32;
                            for ih in h0..h1 {
                                acc += plane[ih * w + w0..ih * w + w1].iter().sum::<f32>();
                            }
                            let d = if include_pad { (he - hs) as usize * (we - ws) as usize } else { (h1 - h0) * (w1 - w0) };
                            let want = acc / d.max(1) as f32;
                            assert_eq!(got[(c * ho + oh) * wo + ow].to_bits(), want.to_bits(), "{h}x{w} k{k} s{s} p{p} pad {include_pad}");
                        }
                    }
                }
            }
        }
    }
}
