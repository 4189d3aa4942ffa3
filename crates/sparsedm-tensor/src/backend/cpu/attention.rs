//! Fused scaled dot-product attention on the CPU: for each batch element
//! (e.g. one head of one image) `softmax(q·kᵀ·scale)·v`, computed tile by
//! tile of query rows while the tile's scores are cache-hot — the scale is
//! applied by the score GEMM itself, the softmax runs in place on the tile
//! and the second GEMM reads it straight back. q, k and v are read through
//! their strides (the heads of a packed `qkv` projection need no split
//! copies). The whole `[batch…, Lq, Lk]` score tensor is written only when
//! the caller keeps the probabilities for the backward pass.

use crate::Layout;
use crate::backend::cpu::matmul::gemm_f32;
use crate::backend::cpu::rows::softmax_in_place;
use crate::backend::cpu::simd::{Kernel, vectorized_with};
use crate::op_kinds::AttnDims;
use rayon::prelude::*;

/// Scores per query tile (floats): 512 KiB, which still stays in a Zen 4
/// or recent Intel core's 1–2 MiB L2 with the k/v panels. Each tile repacks
/// k and v for its two products, so fewer tiles pack less: U-ViT-S/2's 257
/// keys now fit one tile per head instead of five (its batch-8 forward,
/// 2 threads, interleaved medians: 1589–1602 ms → 1471–1508 ms).
const TILE_SCORES: usize = 1 << 17;

/// The element offset of batch element `i` (row-major over the batch dims,
/// which are every dim but the last two) in the view `l`.
fn batch_offset(l: &Layout, i: usize) -> usize {
    let r = l.rank();
    let mut rem = i;
    let mut off = l.offset();
    for d in (0..r - 2).rev() {
        off += (rem % l.shape()[d]) * l.strides()[d];
        rem /= l.shape()[d];
    }
    off
}

/// `softmax(row · scale)` in place: the scores are scaled, then
/// `rows.rs`'s softmax runs on them — the same operations in the same order
/// as scaling the score tensor and then taking its softmax, so the fused and
/// the composed attention agree to the bit.
#[inline(always)]
fn softmax_scaled_in_place(row: &mut [f32], scale: f32) {
    row.iter_mut().for_each(|v| *v *= scale);
    softmax_in_place(row);
}

/// [`softmax_scaled_in_place`] on each row of `nk` scores of a tile; a
/// [`Kernel`], so the exponentials are vectorised for the CPU's widest
/// instructions.
struct SoftmaxRows<'a> {
    s: &'a mut [f32],
    nk: usize,
    scale: f32,
}

impl Kernel for SoftmaxRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        for row in self.s.chunks_mut(self.nk) {
            softmax_scaled_in_place(row, self.scale);
        }
    }
}

thread_local! {
    /// Each thread's score tile, kept between calls: a fresh zeroed tile
    /// per head cost a memset and, for U-ViT-S/2's 264 KiB tiles, page
    /// faults on memory the allocator had handed back to the OS.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls `f` with this thread's score scratch of at least `len` floats
/// (contents unspecified: the score product overwrites what it uses).
fn with_scores_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCORES.with(|s| {
        // A nested call on this thread (none today) gets its own buffer.
        let Ok(mut buf) = s.try_borrow_mut() else { return f(&mut vec![0f32; len]) };
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// `softmax(q·kᵀ·scale)·v` as a contiguous `[batch…, lq, dv]` buffer, and,
/// when `keep_probs`, the probabilities as a contiguous `[batch…, lq, lk]`
/// buffer. Every row's softmax is over all `lk` keys, so tiles of query
/// rows are independent; batch elements run in parallel. `d == 0` gives
/// zero scores (uniform probabilities), as the composed product would.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    q: &[f32],
    lq: &Layout,
    k: &[f32],
    lk: &Layout,
    v: &[f32],
    lv: &Layout,
    dims: AttnDims,
    scale: f32,
    keep_probs: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let AttnDims { batch, lq: nq, lk: nk, d, dv } = dims;
    let mut out = vec![0f32; batch * nq * dv];
    let mut probs = keep_probs.then(|| vec![0f32; batch * nq * nk]);
    if batch == 0 || nq == 0 || dv == 0 {
        return (out, probs);
    }
    let r = lq.rank();
    let (q_rs, q_cs) = (lq.strides()[r - 2], lq.strides()[r - 1]);
    let (k_rs, k_cs) = (lk.strides()[r - 2], lk.strides()[r - 1]);
    let (v_rs, v_cs) = (lv.strides()[r - 2], lv.strides()[r - 1]);
    let tile = (TILE_SCORES / nk.max(1)).clamp(1, nq);
    // One batch element: `o` is its [nq, dv] output, `p` its [nq, nk]
    // probabilities when kept (else scores live in a per-tile scratch).
    let one = |i: usize, o: &mut [f32], p: Option<&mut [f32]>| {
        let (oq, ok, ov) = (batch_offset(lq, i), batch_offset(lk, i), batch_offset(lv, i));
        if nk == 0 {
            // No keys: the product with an empty probability row is zero.
            return;
        }
        with_scores_scratch(if p.is_none() { tile * nk } else { 0 }, |scratch| {
            let mut p = p;
            let mut r0 = 0;
            while r0 < nq {
                let rows = tile.min(nq - r0);
                let s: &mut [f32] = match p.as_deref_mut() {
                    Some(p) => &mut p[r0 * nk..(r0 + rows) * nk],
                    None => &mut scratch[..rows * nk],
                };
                // s = q[r0..r0+rows] · kᵀ   (rhs[kk, j] = k[j, kk]), then its softmax
                gemm_f32(s, rows, nk, d, &q[oq + r0 * q_rs..], q_rs, q_cs, &k[ok..], k_cs, k_rs, false, false);
                vectorized_with(SoftmaxRows { s: &mut *s, nk, scale });
                // o[r0..r0+rows] = s · v
                gemm_f32(&mut o[r0 * dv..(r0 + rows) * dv], rows, dv, nk, s, nk, 1, &v[ov..], v_rs, v_cs, false, false);
                r0 += rows;
            }
        });
    };
    match probs.as_mut() {
        Some(p) => out.par_chunks_mut(nq * dv).zip(p.par_chunks_mut(nq * nk)).enumerate().for_each(|(i, (o, p))| one(i, o, Some(p))),
        None => out.par_chunks_mut(nq * dv).enumerate().for_each(|(i, o)| one(i, o, None)),
    }
    (out, probs)
}
