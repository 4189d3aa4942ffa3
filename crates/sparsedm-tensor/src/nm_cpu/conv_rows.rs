//! The N:M convolution straight from NCHW on the row-wise kernel (AVX2 +
//! FMA), without im2col rows or layout copies.
//!
//! The row-wise kernel works on a panel `Xᵀ[in, 64]` (a tile of 64 tokens,
//! one panel row per input column) and produces `Yᵀ[out, 64]` slab by slab.
//! For a convolution whose weight is permuted to `[out, kh·kw·C]` (columns
//! in `(ky, kx, c)` order, [`super::NmConv2d`]) the tokens are output
//! pixels, and both ends are already in the convolution's own layout:
//! - panel row `(ky, kx, c)` of 64 consecutive output pixels is channel
//!   `c` of the NCHW input read at those pixels shifted by `(ky, kx)`:
//!   at stride 1, a few contiguous runs of an input row (one per output
//!   row the tile touches), zeros where the window leaves the image;
//! - a slab's `Yᵀ` row `o` is output channel `o` at those 64 pixels, which
//!   are contiguous in the NCHW output.
//!
//! So one pass builds each tile's panel from the input and copies each
//! `Yᵀ` row to its place. The im2col path ([`super::NmConv2d`]'s other
//! route, on the other instruction sets) copies the input to channel-last,
//! writes every pixel's patch row, transposes each tile of them into the
//! same panel, and transposes the `[pixels, out]` result back to NCHW: four
//! passes over data as large as the input or the output (the patch rows
//! `kh·kw` times the input), all gone here.

use super::format::NmWeight;
use super::rowwise::{SLAB, TOKENS, slab_tile};
use crate::backend::cpu::strided::SendPtr;
use std::mem::MaybeUninit;

/// The geometry of one convolution: input `[c, h, w]` per image, kernel,
/// stride, padding, output `[ho, wo]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub out_hw: (usize, usize),
}

/// `y = conv(x, W) + b`, NCHW in and out: `x` holds `nb` images of
/// `[c, h, w]`, `y` `nb` of `[out, ho, wo]`, every element written; `w` is
/// the weight permuted to `[out, kh·kw·c]` in `(ky, kx, c)` order.
/// Parallel over tiles of 64 output pixels of one image (and over slabs
/// of output channels when there are few tiles).
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` holds `nb·c·h·w` floats, `y` `nb·out·ho·wo`;
/// `w.in_features() == kh·kw·c`; `bias` (if any) `out` floats;
/// `rowwise::supports(w)`; `ho`, `wo` are the output size of `g`.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn conv_rows(x: &[f32], nb: usize, g: ConvShape, w: &NmWeight, bias: Option<&[f32]>, y: &mut [MaybeUninit<f32>]) {
    use rayon::prelude::*;
    let (k, out) = (w.in_features(), w.out_features());
    let p = g.out_hw.0 * g.out_hw.1;
    let img_in = g.c * g.h * g.w;
    let lay = w.row_layout();
    let tiles_img = p.div_ceil(TOKENS);
    let tiles = nb * tiles_img;
    let slabs = out.div_ceil(SLAB);
    let threads = rayon::current_num_threads().max(1);
    // Few tiles (small feature maps, one image): split the slabs too.
    let parts = (2 * threads).div_ceil(tiles.max(1)).clamp(1, slabs.max(1));
    let per_part = slabs.div_ceil(parts);
    let y_ptr = SendPtr(y.as_mut_ptr().cast::<f32>());
    let bias = bias.map_or(std::ptr::null(), <[f32]>::as_ptr) as usize;
    let work = |item: usize| {
        let (t, q) = (item / parts, item % parts);
        let (sl0, sl1) = ((q * per_part).min(slabs), ((q + 1) * per_part).min(slabs));
        if sl0 == sl1 {
            return;
        }
        let (img, p0) = (t / tiles_img, (t % tiles_img) * TOKENS);
        let rt = (p - p0).min(TOKENS);
        super::spmm::with_scratch(k * TOKENS, SLAB * TOKENS, |panel, yt| {
            // SAFETY: the caller guarantees AVX2 + FMA and the extents; the
            // scratch holds the panel (`k·64`) and one slab's Yᵀ; this item
            // alone writes pixels p0..p0+rt of channels of slabs sl0..sl1
            // of image img.
            unsafe {
                conv_panel(x.as_ptr().add(img * img_in), g, p0, rt, panel);
                let yi = y_ptr.get().add(img * out * p + p0);
                for s in sl0..sl1 {
                    let (s0, s1) = (s * SLAB, ((s + 1) * SLAB).min(out));
                    slab_tile(panel, lay, (s0, s1), rt, bias as *const f32, yt);
                    for o in s0..s1 {
                        std::ptr::copy_nonoverlapping(yt.add((o - s0) * TOKENS), yi.add(o * p), rt);
                    }
                }
            }
        });
    };
    let items = tiles * parts;
    if items == 1 || nb * p * out * lay_entries(w) < (1 << 18) {
        (0..items).for_each(work);
    } else {
        (0..items).into_par_iter().for_each(work);
    }
}

/// Kept entries per output row (the work per output element).
fn lay_entries(w: &NmWeight) -> usize {
    w.entries_per_row().max(1)
}

/// The panel of output pixels `p0..p0+rt` of one image: row
/// `(ky·kw + kx)·c + ci`, token `t`, holds input channel `ci` at the pixel
/// the window of output pixel `p0 + t` puts under `(ky, kx)` (zero in the
/// padding). Tokens `rt..64` are left as they are (the kernel's results
/// for them are not stored).
///
/// # Safety
/// `x` holds one image's `c·h·w` floats; `panel` `kh·kw·c·64` writable
/// floats; `p0 + rt ≤ ho·wo`, `rt ≤ 64`.
#[cfg(target_arch = "x86_64")]
unsafe fn conv_panel(x: *const f32, g: ConvShape, p0: usize, rt: usize, panel: *mut f32) {
    let ConvShape { c, h, w, kernel: (kh, kw), stride: (sh, sw), padding: (ph, pw), out_hw: (_, wo) } = g;
    // The tile's runs of output pixels along one output row: (first token,
    // output row, first output column, length).
    let mut runs = [(0usize, 0usize, 0usize, 0usize); TOKENS];
    let mut nruns = 0;
    let mut t = 0;
    while t < rt {
        let (oy, ox) = ((p0 + t) / wo, (p0 + t) % wo);
        let len = (wo - ox).min(rt - t);
        runs[nruns] = (t, oy, ox, len);
        nruns += 1;
        t += len;
    }
    // SAFETY: every write is panel[r·64 + t] with r < kh·kw·c, t < rt ≤ 64;
    // every read is x[(ci·h + iy)·w + ix] with ci < c, iy < h, ix < w.
    unsafe {
        for ci in 0..c {
            let plane = x.add(ci * h * w);
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = panel.add(((ky * kw + kx) * c + ci) * TOKENS);
                    for &(t0, oy, ox0, len) in &runs[..nruns] {
                        let dst = std::slice::from_raw_parts_mut(row.add(t0), len);
                        let iy = (oy * sh + ky) as isize - ph as isize;
                        if iy < 0 || iy as usize >= h {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = plane.add(iy as usize * w);
                        // Input column of output column ox0 + j: (ox0 + j)·sw + kx − pw.
                        let first = (ox0 * sw + kx) as isize - pw as isize;
                        if sw == 1 {
                            // Columns inside the image: j in lo..hi.
                            let lo = (-first).clamp(0, len as isize) as usize;
                            let hi = (w as isize - first).clamp(lo as isize, len as isize) as usize;
                            dst[..lo].fill(0.0);
                            if hi > lo {
                                let from = std::slice::from_raw_parts(src.offset(first + lo as isize), hi - lo);
                                dst[lo..hi].copy_from_slice(from);
                            }
                            dst[hi..].fill(0.0);
                        } else {
                            for (j, d) in dst.iter_mut().enumerate() {
                                let ix = first + (j * sw) as isize;
                                *d = if ix < 0 || ix as usize >= w { 0.0 } else { *src.offset(ix) };
                            }
                        }
                    }
                }
            }
        }
    }
}
