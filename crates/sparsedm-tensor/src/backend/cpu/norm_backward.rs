//! The CPU backward of layer norm over the last dim, fused: one sweep per
//! row gives the input gradient and adds the row's share of the weight and
//! bias gradients.
//!
//! The composed backward (the trait's default) makes five passes as large
//! as the input — x̂ recomputed, `g·w`, the standardization backward, `g·x̂`,
//! and two column sums over a gathered copy — which cost the demo U-ViT's
//! training step 1.2 ms per layer norm (about 6 % of the step). Here each
//! row's statistics come from [`rows::row_stats_rows`] (the forward's bits),
//! the input gradient is [`rows`]' standardization backward of `g·w` with
//! the same operations in the same order (the same bits as composed), and
//! `Σ g·x̂`, `Σ g` go into per-task partial rows that are added in task
//! order, so the result does not depend on the number of threads.

use crate::backend::cpu::rows::{self, STATS_ROWS};
use crate::backend::cpu::simd::{Kernel, vectorized_with};
use rayon::prelude::*;

/// The gradients of `layer_norm(x)·w + b` over rows of `len`, from the
/// input `x` and the output gradient `g` (both contiguous, the same
/// length): `[gx, gw, gb]`, each computed where `need` says so.
pub(crate) fn layer_norm_last_backward(
    x: &[f32],
    g: &[f32],
    len: usize,
    eps: f32,
    w: Option<&[f32]>,
    need: [bool; 3],
) -> [Option<Vec<f32>>; 3] {
    assert_eq!(x.len(), g.len(), "layer_norm_backward: input and gradient lengths differ");
    assert!(w.is_none_or(|w| w.len() == len), "layer_norm_backward: weight length != {len}");
    let [need_x, need_w, need_b] = need;
    if len == 0 || !(need_x || need_w || need_b) {
        return [need_x.then(|| vec![0f32; x.len()]), need_w.then(|| vec![0f32; len]), need_b.then(|| vec![0f32; len])];
    }
    let chunk = len * rows::rows_per_task(len);
    let mut gx = vec![0f32; if need_x { x.len() } else { 0 }];
    let one = |(x, g, gx): (&[f32], &[f32], Option<&mut [f32]>)| {
        let mut gw = vec![0f32; if need_w { len } else { 0 }];
        let mut gb = vec![0f32; if need_b { len } else { 0 }];
        vectorized_with(Rows { x, g, gx, w, gw: need_w.then_some(&mut gw[..]), gb: need_b.then_some(&mut gb[..]), len, eps });
        (gw, gb)
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = if x.len() <= chunk {
        vec![one((x, g, need_x.then_some(&mut gx[..])))]
    } else if need_x {
        x.par_chunks(chunk).zip(g.par_chunks(chunk)).zip(gx.par_chunks_mut(chunk)).map(|((x, g), gx)| one((x, g, Some(gx)))).collect()
    } else {
        x.par_chunks(chunk).zip(g.par_chunks(chunk)).map(|(x, g)| one((x, g, None))).collect()
    };
    let (gw, gb): (Vec<Vec<f32>>, Vec<Vec<f32>>) = partials.into_iter().unzip();
    [need_x.then_some(gx), need_w.then(|| in_order_sum(&gw, len)), need_b.then(|| in_order_sum(&gb, len))]
}

/// The element-wise sum of the partial rows, added in order.
fn in_order_sum(parts: &[Vec<f32>], len: usize) -> Vec<f32> {
    let mut acc = vec![0f32; len];
    for p in parts {
        for (a, &v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
    acc
}

/// Rows of [`layer_norm_last_backward`]: a [`Kernel`].
struct Rows<'a> {
    x: &'a [f32],
    g: &'a [f32],
    gx: Option<&'a mut [f32]>,
    w: Option<&'a [f32]>,
    gw: Option<&'a mut [f32]>,
    gb: Option<&'a mut [f32]>,
    len: usize,
    eps: f32,
}

impl Kernel for Rows<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Rows { x, g, mut gx, w, mut gw, mut gb, len, eps } = self;
        let n = len as f64;
        let mut st = [(0f64, 0f64); STATS_ROWS];
        let mut gxh = vec![0f32; if w.is_some() { len } else { 0 }];
        let group = len * STATS_ROWS;
        for (k, (xs, gs)) in x.chunks(group).zip(g.chunks(group)).enumerate() {
            let st = &mut st[..xs.len() / len];
            rows::row_stats_rows(xs, len, eps, st);
            for (r, (&(mean, rstd), (x, g))) in st.iter().zip(xs.chunks(len).zip(gs.chunks(len))).enumerate() {
                // x̂ as the forward's standardization rounds it (f32 mean and rstd).
                let (mf, rf) = (mean as f32, rstd as f32);
                if let Some(gw) = gw.as_deref_mut() {
                    for ((a, &g), &x) in gw.iter_mut().zip(g).zip(x) {
                        *a += g * ((x - mf) * rf);
                    }
                }
                if let Some(gb) = gb.as_deref_mut() {
                    for (a, &g) in gb.iter_mut().zip(g) {
                        *a += g;
                    }
                }
                let Some(gx) = gx.as_deref_mut() else { continue };
                // The gradient of x̂: g·w (rounded to f32, as a separate multiply would).
                let gh: &[f32] = match w {
                    Some(w) => {
                        for ((o, &g), &w) in gxh.iter_mut().zip(g).zip(w) {
                            *o = g * w;
                        }
                        &gxh
                    }
                    None => g,
                };
                let o = &mut gx[(k * STATS_ROWS + r) * len..][..len];
                rows::standardize_backward_from_stats(gh, x, o, (mean, rstd), n);
            }
        }
    }
}
