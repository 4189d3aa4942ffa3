//! Group norm on the CPU, fused: the forward standardizes each (image,
//! group) row — its `C/G` channels' planes — and applies the per-channel
//! weight and bias in the same pass; the backward gives the input gradient
//! and the row's share of the weight and bias gradients in one sweep.
//!
//! Composed from primitives (the trait's default, as CUDA runs it) group
//! norm was the standardization, then a broadcast multiply and add, each a
//! pass over the activations, and the backward five more plus two
//! reductions over N, H, W (about a tenth of the demo UNet's training
//! step). The statistics come from [`rows::row_stats_rows`] and the
//! arithmetic per element is the composed one in the same order
//! (`((x − mean)·rstd)·w + b`; the standardization backward of `g·w`), so
//! the output and the input gradient have the composed bits; the weight
//! and bias gradients are summed in f64 per task and the tasks added in
//! order, so they do not depend on the number of threads.

use crate::backend::cpu::rows::{self, STATS_ROWS};
use crate::backend::cpu::simd::{Kernel, vectorized_with};
use rayon::prelude::*;

/// The shape of a group norm: `n` images of `c` channels of `plane`
/// elements each, in `groups` groups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupShape {
    pub n: usize,
    pub c: usize,
    pub plane: usize,
    pub groups: usize,
}

impl GroupShape {
    /// Channels per group.
    fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Elements per (image, group) row.
    fn row(&self) -> usize {
        self.cg() * self.plane
    }
}

/// `((x − mean)·rstd)·w[c] + b[c]` per (image, group) row of contiguous
/// `x` (the affine parts optional, `[C]`), and `rstd` per row (f32).
pub(crate) fn group_norm(x: &[f32], s: GroupShape, eps: f32, w: Option<&[f32]>, b: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
    let len = s.row();
    let rows = s.n * s.groups;
    assert_eq!(x.len(), rows * len, "group_norm: {} elements for {s:?}", x.len());
    let mut y = vec![0f32; x.len()];
    let mut rstd = vec![0f32; rows];
    if len == 0 {
        return (y, rstd);
    }
    let per = rows::rows_per_task(len);
    let one =
        |t: usize, x: &[f32], y: &mut [f32], rstd: &mut [f32]| vectorized_with(Forward { x, y, rstd, first_row: t * per, s, eps, w, b });
    if rows <= per {
        one(0, x, &mut y, &mut rstd);
    } else {
        let tasks = x.par_chunks(len * per).zip(y.par_chunks_mut(len * per)).zip(rstd.par_chunks_mut(per)).enumerate();
        tasks.for_each(|(t, ((x, y), rstd))| one(t, x, y, rstd));
    }
    (y, rstd)
}

/// Rows of [`group_norm`] from row `first_row` on: a [`Kernel`].
struct Forward<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    rstd: &'a mut [f32],
    first_row: usize,
    s: GroupShape,
    eps: f32,
    w: Option<&'a [f32]>,
    b: Option<&'a [f32]>,
}

impl Kernel for Forward<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Forward { x, y, rstd, first_row, s, eps, w, b } = self;
        let (len, cg, plane) = (s.row(), s.cg(), s.plane);
        let mut st = [(0f64, 0f64); STATS_ROWS];
        let group = len * STATS_ROWS;
        for (k, ((xs, ys), rs)) in x.chunks(group).zip(y.chunks_mut(group)).zip(rstd.chunks_mut(STATS_ROWS)).enumerate() {
            let st = &mut st[..rs.len()];
            rows::row_stats_rows(xs, len, eps, st);
            for (r, ((x, y), (rs, &(mean, rsd)))) in xs.chunks(len).zip(ys.chunks_mut(len)).zip(rs.iter_mut().zip(st.iter())).enumerate() {
                let (mean, rsd) = (mean as f32, rsd as f32);
                *rs = rsd;
                let g = (first_row + k * STATS_ROWS + r) % s.groups;
                for (j, (x, y)) in x.chunks(plane).zip(y.chunks_mut(plane)).enumerate() {
                    let ch = g * cg + j;
                    // The composed ops' order: standardize, then times w, then plus b.
                    match (w.map(|w| w[ch]), b.map(|b| b[ch])) {
                        (Some(wc), Some(bc)) => y.iter_mut().zip(x).for_each(|(o, &v)| *o = (v - mean) * rsd * wc + bc),
                        (Some(wc), None) => y.iter_mut().zip(x).for_each(|(o, &v)| *o = (v - mean) * rsd * wc),
                        (None, Some(bc)) => y.iter_mut().zip(x).for_each(|(o, &v)| *o = (v - mean) * rsd + bc),
                        (None, None) => y.iter_mut().zip(x).for_each(|(o, &v)| *o = (v - mean) * rsd),
                    }
                }
            }
        }
    }
}

/// The gradients of [`group_norm`] from the input `x` and the output
/// gradient `g` (both contiguous): `[gx, gw, gb]` (`gw`, `gb` of `C`), each
/// computed where `need` says so.
pub(crate) fn group_norm_backward(
    x: &[f32],
    g: &[f32],
    s: GroupShape,
    eps: f32,
    w: Option<&[f32]>,
    need: [bool; 3],
) -> [Option<Vec<f32>>; 3] {
    let len = s.row();
    let rows = s.n * s.groups;
    assert!(x.len() == rows * len && g.len() == x.len(), "group_norm_backward: {} inputs, {} gradients for {s:?}", x.len(), g.len());
    let [need_x, need_w, need_b] = need;
    let mut gx = vec![0f32; if need_x { x.len() } else { 0 }];
    if len == 0 || rows == 0 {
        return [need_x.then_some(gx), need_w.then(|| vec![0f32; s.c]), need_b.then(|| vec![0f32; s.c])];
    }
    let per = rows::rows_per_task(len);
    let one = |t: usize, x: &[f32], g: &[f32], gx: Option<&mut [f32]>| {
        let mut gw = vec![0f64; if need_w { s.c } else { 0 }];
        let mut gb = vec![0f64; if need_b { s.c } else { 0 }];
        let (pw, pb) = (need_w.then_some(&mut gw[..]), need_b.then_some(&mut gb[..]));
        vectorized_with(Backward { x, g, gx, first_row: t * per, s, eps, w, gw: pw, gb: pb });
        (gw, gb)
    };
    let partials: Vec<(Vec<f64>, Vec<f64>)> = if rows <= per {
        vec![one(0, x, g, need_x.then_some(&mut gx[..]))]
    } else if need_x {
        let tasks = x.par_chunks(len * per).zip(g.par_chunks(len * per)).zip(gx.par_chunks_mut(len * per)).enumerate();
        tasks.map(|(t, ((x, g), gx))| one(t, x, g, Some(gx))).collect()
    } else {
        x.par_chunks(len * per).zip(g.par_chunks(len * per)).enumerate().map(|(t, (x, g))| one(t, x, g, None)).collect()
    };
    let (gw, gb): (Vec<Vec<f64>>, Vec<Vec<f64>>) = partials.into_iter().unzip();
    [need_x.then_some(gx), need_w.then(|| in_order_sum(&gw, s.c)), need_b.then(|| in_order_sum(&gb, s.c))]
}

/// The element-wise sum of the partial rows, added in order, rounded to f32.
fn in_order_sum(parts: &[Vec<f64>], len: usize) -> Vec<f32> {
    let mut acc = vec![0f64; len];
    for p in parts {
        for (a, &v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// Rows of [`group_norm_backward`] from row `first_row` on: a [`Kernel`].
struct Backward<'a> {
    x: &'a [f32],
    g: &'a [f32],
    gx: Option<&'a mut [f32]>,
    first_row: usize,
    s: GroupShape,
    eps: f32,
    w: Option<&'a [f32]>,
    gw: Option<&'a mut [f64]>,
    gb: Option<&'a mut [f64]>,
}

impl Kernel for Backward<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Backward { x, g, mut gx, first_row, s, eps, w, mut gw, mut gb } = self;
        let want_x = gx.is_some();
        let (len, cg, plane) = (s.row(), s.cg(), s.plane);
        let mut st = [(0f64, 0f64); STATS_ROWS];
        let mut gxh = vec![0f32; if w.is_some() { len } else { 0 }];
        let group = len * STATS_ROWS;
        for (k, (xs, gs)) in x.chunks(group).zip(g.chunks(group)).enumerate() {
            let st = &mut st[..xs.len() / len];
            rows::row_stats_rows(xs, len, eps, st);
            for (r, (&(mean, rstd), (x, g))) in st.iter().zip(xs.chunks(len).zip(gs.chunks(len))).enumerate() {
                let grp = (first_row + k * STATS_ROWS + r) % s.groups;
                // x̂ as the forward's standardization rounds it (f32 mean and rstd).
                let (mf, rf) = (mean as f32, rstd as f32);
                for (j, (x, g)) in x.chunks(plane).zip(g.chunks(plane)).enumerate() {
                    let ch = grp * cg + j;
                    if let Some(gw) = gw.as_deref_mut() {
                        gw[ch] += rows::sum_f64_of(g, x, |g, x| g * ((x - mf) * rf));
                    }
                    if let Some(gb) = gb.as_deref_mut() {
                        gb[ch] += rows::sum_f64_of(g, g, |g, _| g);
                    }
                    if let (Some(w), true) = (w, want_x) {
                        for (o, &g) in gxh[j * plane..(j + 1) * plane].iter_mut().zip(g) {
                            *o = g * w[ch];
                        }
                    }
                }
                let Some(gx) = gx.as_deref_mut() else { continue };
                let gh: &[f32] = if w.is_some() { &gxh } else { g };
                let o = &mut gx[(k * STATS_ROWS + r) * len..][..len];
                rows::standardize_backward_from_stats(gh, x, o, (mean, rstd), len as f64);
            }
        }
    }
}
