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

impl Tensor {
    /// Max pooling with a square `k`×`k` window, stride `s`, padding `p`
    /// (padding never wins; ties take the first element).
    pub fn max_pool2d(&self, k: usize, s: usize, p: usize) -> Result<Tensor> {
        let op = "max_pool2d";
        let (n, c, h, w) = check_nchw(op, self)?;
        let (ho, wo) = (out_size(op, self.shape(), h, k, s, p)?, out_size(op, self.shape(), w, k, s, p)?);
        let x = self.contiguous()?;
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
        let x = self.contiguous()?;
        let vals = x.with_contiguous_f32(op, |xv| {
            per_plane(xv, h * w, ho * wo, n * c, |plane, o| {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let (h0, h1, w0, w1, d) = divisor(oh, ow);
                        let mut acc = 0f32;
                        for ih in h0..h1 {
                            acc += plane[ih * w + w0..ih * w + w1].iter().sum::<f32>();
                        }
                        o[oh * wo + ow] = acc / d;
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
