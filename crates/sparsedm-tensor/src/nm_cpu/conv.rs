//! An N:M Conv2d for inference on the CPU: on AVX2 the row-wise kernel
//! reading and writing NCHW directly (`conv_rows.rs`); elsewhere im2col in
//! channel-last order and the same SpMM kernel as [`NmLinear`].
//!
//! `sparsedm-layers` groups a convolution weight `[out, in, kh, kw]` along
//! the input channels at each `(out, ky, kx)`. With the columns of a patch
//! ordered `(ky, kx, c)` (channel last) those groups are `m` consecutive
//! columns, so the weight permuted to `[out, kh, kw, in]` is an ordinary
//! N:M Linear weight `[out, kh·kw·in]` and every output pixel is one row of
//! `X·Wᵀ`. The im2col route copies the image to channel-last once, builds
//! the patch rows of a few images at a time (a bounded buffer), runs the
//! SpMM and writes the result back to NCHW; the direct route builds the
//! row-wise kernel's panels of 64 output pixels from the NCHW input and
//! stores its output-channel rows straight into the NCHW output.
//!
//! Per shape, [`NmConv2d::forward_tensor`] times the N:M routes against the
//! dense convolution (`Tensor::conv2d` on the masked weight, what the model
//! would run otherwise) once and keeps the fastest, like [`NmLinear`]; on an
//! AVX-512 CPU both N:M routes are timed (the direct one on the AVX2
//! row-wise kernel, im2col on the AVX-512 pattern kernel).

use super::dispatch::{NmLinear, NmPath, SPARSE_MARGIN, count_calls, forced_path};
use super::spmm::{Isa, NmKernel};
use crate::backend::cpu::strided::written_vec;
use crate::{Device, Error, Result, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Floats of patch rows built at once (16 MiB): whole images, at least one.
const COL_BUDGET: usize = 4 << 20;

/// Timed repetitions of each path at a shape's first use.
const TUNE_REPS: usize = 2;

/// Key of the convolution choice table: (images rounded up to a power of
/// two, in, out, h, w, kh, kw, stride, padding, n, m).
type ConvKey = (usize, usize, usize, usize, usize, usize, usize, (usize, usize), (usize, usize), usize, usize);

fn table() -> &'static Mutex<HashMap<ConvKey, Route>> {
    static T: OnceLock<Mutex<HashMap<ConvKey, Route>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// How a convolution runs: the dense convolution, or one of the two N:M
/// routes ([`NmConv2d::forward_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Dense,
    /// The row-wise kernel straight on NCHW (AVX2 + FMA).
    Direct,
    /// im2col and the best instruction set's SpMM kernel.
    Im2col,
}

impl Route {
    fn path(self) -> NmPath {
        match self {
            Route::Dense => NmPath::Dense,
            Route::Direct | Route::Im2col => NmPath::Sparse,
        }
    }
}

/// An N:M convolution (NCHW, weight `[out, in, kh, kw]` N:M along `in`).
#[derive(Debug, Clone)]
pub struct NmConv2d {
    /// The weight permuted to `[out, kh·kw·in]`, compressed, with the bias.
    linear: NmLinear,
    /// The masked weight in PyTorch layout, for the dense path.
    dense: Tensor,
    bias: Option<Tensor>,
    inp: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
}

impl NmConv2d {
    /// From a masked weight `[out, in, kh, kw]` (row-major) that is `n:m`
    /// along `in` at every `(out, ky, kx)`; `in` must be a multiple of `m`
    /// (otherwise the layers leave the weight dense or use flat-index
    /// groups, which are not channel groups).
    ///
    /// # Errors
    /// A weight whose length does not match, `in` not a multiple of `m`, a
    /// zero stride, a group with more than `n` non-zeros (named by
    /// [`crate::nm_cpu::NmWeight::compress`], in the permuted layout), or a
    /// bias of length other than `out`.
    pub fn new(
        masked_weight: &[f32],
        shape: [usize; 4],
        bias: Option<&[f32]>,
        stride: (usize, usize),
        padding: (usize, usize),
        n: usize,
        m: usize,
    ) -> Result<Self> {
        let op = "nm_conv2d";
        let [o, c, kh, kw] = shape;
        if masked_weight.len() != o * c * kh * kw {
            return Err(Error::ElementCount { op, shape: shape.to_vec(), len: masked_weight.len() });
        }
        if m == 0 || !c.is_multiple_of(m) {
            return Err(Error::bad_shape(op, &shape, format!("in channels {c} are not a multiple of m = {m}: no channel groups")));
        }
        if stride.0 == 0 || stride.1 == 0 {
            return Err(Error::invalid(op, format!("stride must be positive, got {stride:?}")));
        }
        let k = kh * kw * c;
        let mut perm = vec![0f32; o * k];
        for oi in 0..o {
            for ci in 0..c {
                for y in 0..kh {
                    for x in 0..kw {
                        perm[oi * k + (y * kw + x) * c + ci] = masked_weight[((oi * c + ci) * kh + y) * kw + x];
                    }
                }
            }
        }
        let linear = NmLinear::new(&perm, o, k, bias, n, m)?;
        let dense = Tensor::from_slice(masked_weight, &shape, &Device::Cpu)?;
        let bias = bias.map(|b| Tensor::from_slice(b, &[o], &Device::Cpu)).transpose()?;
        Ok(NmConv2d { linear, dense, bias, inp: c, kernel: (kh, kw), stride, padding })
    }

    /// The N:M Linear over patch rows (weight `[out, kh·kw·in]`, channel last).
    pub fn linear(&self) -> &NmLinear {
        &self.linear
    }

    fn geometry(&self, x: &Tensor) -> Result<(usize, usize, usize, usize, usize)> {
        let op = "nm_conv2d";
        let s = x.shape();
        if x.device() != Device::Cpu {
            return Err(Error::NotImplementedOnDevice { op, device: x.device() });
        }
        if s.len() != 4 || s[1] != self.inp {
            return Err(Error::ShapeMismatch { op, lhs: s.to_vec(), rhs: self.dense.shape().to_vec() });
        }
        let ((kh, kw), (sh, sw), (ph, pw)) = (self.kernel, self.stride, self.padding);
        if s[2] + 2 * ph < kh || s[3] + 2 * pw < kw {
            return Err(Error::bad_shape(op, s, format!("kernel {kh}x{kw} larger than the padded input")));
        }
        Ok((s[0], s[2], s[3], (s[2] + 2 * ph - kh) / sh + 1, (s[3] + 2 * pw - kw) / sw + 1))
    }

    /// The convolution by the given path: `Dense` is `Tensor::conv2d` on the
    /// masked weight; `Sparse` is the row-wise kernel straight on NCHW on
    /// AVX2 (`conv_rows.rs`), else im2col and the SpMM kernel
    /// ([`NmConv2d::forward_im2col`]).
    ///
    /// # Errors
    /// A tensor not on the CPU, not `[n, in, h, w]`, or smaller than the kernel.
    pub fn forward_with(&self, path: NmPath, x: &Tensor) -> Result<Tensor> {
        match path {
            NmPath::Dense => self.forward_route(Route::Dense, x),
            NmPath::Sparse => self.forward_route(self.sparse_routes()[0], x),
        }
    }

    fn forward_route(&self, route: Route, x: &Tensor) -> Result<Tensor> {
        match route {
            Route::Dense => {
                self.geometry(x)?;
                x.conv2d(&self.dense, self.bias.as_ref(), self.stride, self.padding)
            }
            #[cfg(target_arch = "x86_64")]
            Route::Direct => self.forward_direct(x),
            #[cfg(not(target_arch = "x86_64"))]
            Route::Direct => self.forward_im2col(x),
            Route::Im2col => self.forward_im2col(x),
        }
    }

    /// Whether the direct route runs here: AVX2 + FMA, and a weight the
    /// row-wise kernel takes.
    fn direct_available(&self) -> bool {
        cfg!(target_arch = "x86_64")
            && Isa::Avx2Fma.is_available()
            && NmKernel::for_weight(Isa::Avx2Fma, self.linear.weight()) == NmKernel::Rows
    }

    /// The N:M routes worth timing on this CPU, the default first: the
    /// direct one where it runs; im2col where it does not, and on AVX-512,
    /// whose pattern kernel the Linears prefer (measured on Zen 4), so
    /// that there the first use of a shape times both against each other.
    fn sparse_routes(&self) -> Vec<Route> {
        match (self.direct_available(), Isa::best()) {
            (true, Isa::Avx2Fma) => vec![Route::Direct],
            (true, _) => vec![Route::Direct, Route::Im2col],
            (false, _) => vec![Route::Im2col],
        }
    }

    /// The N:M path on AVX2: the row-wise kernel reading its panels from
    /// the NCHW input and writing NCHW output (`conv_rows.rs`).
    #[cfg(target_arch = "x86_64")]
    fn forward_direct(&self, x: &Tensor) -> Result<Tensor> {
        if !self.direct_available() {
            return self.forward_im2col(x);
        }
        let (nb, h, w, ho, wo) = self.geometry(x)?;
        let out = self.linear.weight().out_features();
        let g = super::conv_rows::ConvShape {
            c: self.inp,
            h,
            w,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            out_hw: (ho, wo),
        };
        let y = x.with_host_f32("nm_conv2d", |xv| {
            // SAFETY: `direct_available` (checked above): the CPU has AVX2 +
            // FMA and `supports` holds; `geometry` checked the input
            // (`nb` images of [in, h, w], so `xv` holds nb·c·h·w floats) and
            // gave the output size; the weight is [out, kh·kw·in] and the bias
            // `out` floats (`new`); `conv_rows` writes all nb·out·ho·wo outputs.
            unsafe {
                written_vec(nb * out * ho * wo, |y| super::conv_rows::conv_rows(xv, nb, g, self.linear.weight(), self.linear.bias(), y))
            }
        })?;
        Tensor::from_vec(y, &[nb, out, ho, wo], &Device::Cpu)
    }

    /// The N:M path through im2col (the route off AVX2, on AVX-512 and the
    /// portable kernels): the input copied to channel-last, patch rows of a
    /// few images at a time (a bounded buffer), the Linear's SpMM, and the
    /// result transposed back to NCHW. Public for tests and benchmarks,
    /// which compare it with the direct route on AVX2.
    ///
    /// # Errors
    /// As [`NmConv2d::forward_with`].
    pub fn forward_im2col(&self, x: &Tensor) -> Result<Tensor> {
        let (nb, h, w, ho, wo) = self.geometry(x)?;
        let c = self.inp;
        let ((kh, kw), (sh, sw), (ph, pw)) = (self.kernel, self.stride, self.padding);
        let (o, k, p) = (self.linear.weight().out_features(), kh * kw * c, ho * wo);
        // Channel-last copy of the input: [n, h, w, c], read in place when
        // the input is contiguous f32, written without zeroing it first.
        let xh = x.with_host_f32("nm_conv2d", |xv| {
            // SAFETY: for every image, channel and pixel one element is
            // written: all n·h·w·c of them.
            unsafe {
                written_vec(nb * h * w * c, |xh| {
                    xh.par_chunks_mut((h * w * c).max(1)).zip(xv.par_chunks((c * h * w).max(1))).for_each(|(dst, src)| {
                        for ci in 0..c {
                            for (i, &v) in src[ci * h * w..(ci + 1) * h * w].iter().enumerate() {
                                dst[i * c + ci].write(v);
                            }
                        }
                    })
                })
            }
        })?;
        let mut out = vec![0f32; nb * o * p];
        let per = (COL_BUDGET / (p * k).max(1)).clamp(1, nb.max(1));
        let mut cols = vec![0f32; per * p * k];
        let mut y = vec![0f32; per * p * o];
        for b0 in (0..nb).step_by(per) {
            let imgs = per.min(nb - b0);
            let rows = imgs * p;
            // Patch rows: row (img, oy, ox) = the (ky, kx, c) window, zeros outside.
            cols[..rows * k].par_chunks_mut(k).enumerate().for_each(|(r, row)| {
                let (img, pix) = (b0 + r / p, r % p);
                let (oy, ox) = (pix / wo, pix % wo);
                let src = &xh[img * h * w * c..(img + 1) * h * w * c];
                for ky in 0..kh {
                    let iy = (oy * sh + ky) as isize - ph as isize;
                    for kx in 0..kw {
                        let ix = (ox * sw + kx) as isize - pw as isize;
                        let dst = &mut row[(ky * kw + kx) * c..(ky * kw + kx + 1) * c];
                        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                            dst.fill(0.0);
                        } else {
                            let at = (iy as usize * w + ix as usize) * c;
                            dst.copy_from_slice(&src[at..at + c]);
                        }
                    }
                }
            });
            self.linear.forward_with(NmPath::Sparse, &cols[..rows * k], rows, &mut y[..rows * o])?;
            // [imgs, p, o] -> [imgs, o, p].
            out[b0 * o * p..(b0 + imgs) * o * p].par_chunks_mut(o * p).enumerate().for_each(|(i, dst)| {
                let src = &y[i * p * o..(i + 1) * p * o];
                for pix in 0..p {
                    for oi in 0..o {
                        dst[oi * p + pix] = src[pix * o + oi];
                    }
                }
            });
        }
        Tensor::from_vec(out, &[nb, o, ho, wo], &Device::Cpu)
    }

    /// The convolution by the fastest route for this shape: the first call
    /// for a shape times the dense one and the N:M ones this CPU has
    /// ([`TUNE_REPS`] interleaved runs, best time) and files the winner (an
    /// N:M route only by the margin [`SPARSE_MARGIN`]); later calls use
    /// it. Untracked (inference).
    ///
    /// # Errors
    /// As [`NmConv2d::forward_with`].
    pub fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let (nb, h, w, _, _) = self.geometry(x)?;
        if let Some(path) = forced_path() {
            count_calls(path, 1);
            return self.forward_with(path, x);
        }
        let (n, m) = self.linear.weight().pattern();
        let (kh, kw) = self.kernel;
        let key = (nb.max(1).next_power_of_two(), self.inp, self.dense.shape()[0], h, w, kh, kw, self.stride, self.padding, n, m);
        let known = table().lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
        if let Some(route) = known {
            count_calls(route.path(), 1);
            return self.forward_route(route, x);
        }
        let routes: Vec<Route> = std::iter::once(Route::Dense).chain(self.sparse_routes()).collect();
        let mut best = vec![f64::INFINITY; routes.len()];
        let mut last = None;
        for _ in 0..TUNE_REPS {
            for (i, &route) in routes.iter().enumerate() {
                let t = Instant::now();
                let y = self.forward_route(route, x)?;
                best[i] = best[i].min(t.elapsed().as_secs_f64());
                last = Some((route, y));
            }
        }
        // The dense route (first) unless a sparse one beats it by the margin.
        let fastest =
            (1..routes.len()).min_by(|&a, &b| best[a].total_cmp(&best[b])).filter(|&i| best[i] < best[0] * SPARSE_MARGIN).unwrap_or(0);
        let route = routes[fastest];
        table().lock().unwrap_or_else(|e| e.into_inner()).insert(key, route);
        count_calls(route.path(), 1);
        match last {
            Some((r, y)) if r == route => Ok(y),
            _ => self.forward_route(route, x),
        }
    }
}

/// The path chosen for convolutions of this weight shape on `images`
/// images of `h × w`, if timed (tests and reports).
pub fn chosen_conv_path(conv: &NmConv2d, images: usize, h: usize, w: usize) -> Option<NmPath> {
    let (n, m) = conv.linear.weight().pattern();
    let (kh, kw) = conv.kernel;
    let key = (images.max(1).next_power_of_two(), conv.inp, conv.dense.shape()[0], h, w, kh, kw, conv.stride, conv.padding, n, m);
    table().lock().unwrap_or_else(|e| e.into_inner()).get(&key).map(|r| r.path())
}
