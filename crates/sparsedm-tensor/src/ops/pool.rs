//! Pooling and resampling of NCHW images: max pool, average pool (both
//! `count_include_pad` settings), adaptive average pool to 1×1, nearest
//! integer-factor upsampling, and bilinear resize with PyTorch's
//! `align_corners=False` sampling. Each forward and each backward is one
//! backend primitive (the max pool keeps its argmax for the backward).

use crate::op_kinds::PoolGeom;
use crate::tensor::bw;
use crate::{Error, Result, Tensor};

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

impl Tensor {
    /// The pool geometry of this `[N, C, H, W]` tensor, validated.
    fn pool_geom(&self, op: &'static str, k: usize, s: usize, p: usize) -> Result<PoolGeom> {
        let (n, c, h, w) = check_nchw(op, self)?;
        let (ho, wo) = (out_size(op, self.shape(), h, k, s, p)?, out_size(op, self.shape(), w, k, s, p)?);
        Ok(PoolGeom { n, c, h, w, k, s, p, ho, wo })
    }

    /// Max pooling with a square `k`×`k` window, stride `s`, padding `p`
    /// (padding never wins; ties take the first element).
    pub fn max_pool2d(&self, k: usize, s: usize, p: usize) -> Result<Tensor> {
        let op = "max_pool2d";
        let g = self.pool_geom(op, k, s, p)?;
        let out_shape = [g.n, g.c, g.ho, g.wo];
        // The argmax is kept only when a gradient may be asked for.
        let tracked = crate::autograd::is_grad_enabled() && self.is_tracked();
        let (vals, arg) = self.storage().max_pool2d(self.layout(), &g, tracked)?;
        let Some(arg) = arg else { return Ok(Tensor::from_storage(vals, &out_shape)) };
        let arg = Tensor::from_storage(arg, &out_shape);
        Ok(Tensor::from_op(
            vals,
            &out_shape,
            op,
            &[self],
            bw(move |ctx| {
                let gx = ctx.grad.storage().max_pool2d_backward(ctx.grad.layout(), &arg.storage(), &g)?;
                Ok(vec![Some(Tensor::from_storage(gx, &[g.n, g.c, g.h, g.w]))])
            }),
        ))
    }

    /// Average pooling with a square window; `count_include_pad` chooses
    /// whether padded zeros count in the divisor (PyTorch semantics,
    /// `ceil_mode=False`).
    pub fn avg_pool2d(&self, k: usize, s: usize, p: usize, count_include_pad: bool) -> Result<Tensor> {
        let op = "avg_pool2d";
        let g = self.pool_geom(op, k, s, p)?;
        let vals = self.storage().avg_pool2d(self.layout(), &g, count_include_pad)?;
        Ok(Tensor::from_op(
            vals,
            &[g.n, g.c, g.ho, g.wo],
            op,
            &[self],
            bw(move |ctx| {
                let gx = ctx.grad.storage().avg_pool2d_backward(ctx.grad.layout(), &g, count_include_pad)?;
                Ok(vec![Some(Tensor::from_storage(gx, &[g.n, g.c, g.h, g.w]))])
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
        let vals = self.storage().upsample_nearest2d(self.layout(), [n, c, h, w], factor)?;
        Ok(Tensor::from_op(
            vals,
            &[n, c, h * factor, w * factor],
            op,
            &[self],
            bw(move |ctx| {
                let gx = ctx.grad.storage().upsample_nearest2d_backward(ctx.grad.layout(), [n, c, h, w], factor)?;
                Ok(vec![Some(Tensor::from_storage(gx, &[n, c, h, w]))])
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
        let vals = self.storage().resize_bilinear(self.layout(), [n, c, h, w], (out_h, out_w))?;
        Ok(Tensor::from_op(
            vals,
            &[n, c, out_h, out_w],
            op,
            &[self],
            bw(move |ctx| {
                let gx = ctx.grad.storage().resize_bilinear_backward(ctx.grad.layout(), [n, c, h, w], (out_h, out_w))?;
                Ok(vec![Some(Tensor::from_storage(gx, &[n, c, h, w]))])
            }),
        ))
    }
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
