//! Fused scaled dot-product attention on the CPU: for each batch element
//! (e.g. one head of one image) `softmax(q·kᵀ·scale)·v`, computed tile by
//! tile of query rows while the tile's scores are cache-hot — the scaled
//! softmax runs in place on the tile and the second GEMM reads it straight
//! back. q, k and v are read through their strides (the heads of a packed
//! `qkv` projection need no split copies). The whole `[batch…, Lq, Lk]`
//! score tensor is written only when the caller keeps the probabilities for
//! the backward pass; otherwise each tile is computed transposed in a
//! per-thread scratch ([`SoftmaxCols`]).

use crate::Layout;
use crate::backend::cpu::attention_short;
use crate::backend::cpu::math::fast_exp;
use crate::backend::cpu::matmul::{gemm_f32, gemm_f32_raw, gemm_f32_rows};
use crate::backend::cpu::rows::{SoftmaxBackwardScaled, softmax_in_place};
use crate::backend::cpu::simd::{Kernel, vectorized_with};
use crate::backend::cpu::strided::{SendPtr, written_vec};
use crate::op_kinds::AttnDims;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Scores per query tile (floats): 512 KiB, which still stays in a Zen 4
/// or recent Intel core's 1–2 MiB L2 with the k/v panels. Each tile repacks
/// k and v for its two products, so fewer tiles pack less: U-ViT-S/2's 257
/// keys now fit one tile per head instead of five (its batch-8 forward,
/// 2 threads, interleaved medians: 1589–1602 ms → 1471–1508 ms).
const TILE_SCORES: usize = 1 << 17;

/// Whether some order of `l`'s dims is contiguous (each element of its
/// `elem_count` floats from its offset is one element of the view).
fn is_dense(l: &Layout) -> bool {
    l.permute(&l.memory_order()).is_ok_and(|p| p.is_contiguous())
}

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

/// Query columns one pass of [`SoftmaxCols`] handles together: one AVX-512
/// register (two AVX2 ones) per key row.
const COLS: usize = 16;

/// [`softmax_scaled_in_place`] on the first `cols` columns of a transposed
/// score tile `sᵀ[key, query]` (`nk` rows `ld` floats apart, `ld` and
/// `cols` multiples of [`COLS`]): each query's softmax runs down its
/// column, so the maximum and the sum are plain vector operations across
/// 16 queries at once instead of a horizontal reduction per row — for short rows (the demo model's 65
/// keys: four registers and one lane) those reductions and the scalar tail
/// cost about as much as the exponentials. The operations are the row
/// version's in the same order: scale, maximum, `fast_exp(x − max)`, the
/// sum in [`COLS`] partial sums (key `j` into partial `j mod 16`, then
/// halved pairwise), one reciprocal and a multiply, so both give the same
/// bits. Columns past the tile's queries (the padding up to `ld`) are
/// computed on whatever they hold and never read.
struct SoftmaxCols<'a> {
    st: &'a mut [f32],
    nk: usize,
    ld: usize,
    /// Columns to compute: the tile's queries rounded up to [`COLS`] (≤ `ld`).
    cols: usize,
    scale: f32,
}

impl Kernel for SoftmaxCols<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Self { st, nk, ld, cols, scale } = self;
        let mut g = 0;
        while g < cols {
            let col = |st: &mut [f32], j: usize| -> *mut [f32; COLS] { st[j * ld + g..j * ld + g + COLS].as_mut_ptr().cast() };
            let mut max = [f32::NEG_INFINITY; COLS];
            for j in 0..nk {
                // SAFETY: `col` points at COLS floats of row j inside `st`.
                let r = unsafe { &mut *col(st, j) };
                for c in 0..COLS {
                    let v = r[c] * scale;
                    r[c] = v;
                    max[c] = if v > max[c] { v } else { max[c] };
                }
            }
            let mut part = [[0f32; COLS]; COLS];
            for j in 0..nk {
                // SAFETY: as above.
                let r = unsafe { &mut *col(st, j) };
                let p = &mut part[j % COLS];
                for c in 0..COLS {
                    let e = fast_exp(r[c] - max[c]);
                    r[c] = e;
                    p[c] += e;
                }
            }
            // Halved pairwise, as `rows.rs`'s lane sums: 16 → 8 → 4 → 2 → 1
            // (constant widths: a loop over the width is vectorised across
            // the partials with gathers and scatters).
            #[inline(always)]
            fn fold(part: &mut [[f32; COLS]; COLS], w: usize) {
                for i in 0..w {
                    let hi = part[i + w];
                    for c in 0..COLS {
                        part[i][c] += hi[c];
                    }
                }
            }
            fold(&mut part, 8);
            fold(&mut part, 4);
            fold(&mut part, 2);
            fold(&mut part, 1);
            let mut inv = [0f32; COLS];
            for c in 0..COLS {
                inv[c] = 1.0 / part[0][c];
            }
            for j in 0..nk {
                // SAFETY: as above.
                let r = unsafe { &mut *col(st, j) };
                for c in 0..COLS {
                    r[c] *= inv[c];
                }
            }
            g += COLS;
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

/// `softmax(q·kᵀ·scale)·v` as a `[batch…, lq, dv]` buffer laid out as
/// `lo` (a dense layout of that shape with offset 0 and unit channel
/// stride, e.g. U-ViT's heads interleaved as `[B, L, H, D]`, which its
/// projection then reads without a transposing copy), and, when
/// `keep_probs`, the probabilities as a contiguous `[batch…, lq, lk]`
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
    lo: &Layout,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let AttnDims { batch, lq: nq, lk: nk, d, dv } = dims;
    let np = batch * nq * nk;
    if batch == 0 || nq == 0 || dv == 0 {
        // An empty output (its layout's strides say nothing then).
        return (vec![0f32; batch * nq * dv], keep_probs.then(|| vec![0f32; np]));
    }
    let r = lq.rank();
    assert!(
        lo.shape() == lq.shape().split_at(r - 1).0.iter().chain([&dv]).copied().collect::<Vec<_>>().as_slice()
            && lo.offset() == 0
            && (dv <= 1 || lo.strides()[r - 1] == 1)
            && is_dense(lo),
        "attention: output layout {lo:?} is not a dense [batch…, {nq}, {dv}] layout with unit channel stride"
    );
    let o_rs = lo.strides()[r - 2];
    let (q_rs, q_cs) = (lq.strides()[r - 2], lq.strides()[r - 1]);
    let (k_rs, k_cs) = (lk.strides()[r - 2], lk.strides()[r - 1]);
    let (v_rs, v_cs) = (lv.strides()[r - 2], lv.strides()[r - 1]);
    let tile = (TILE_SCORES / nk.max(1)).clamp(1, nq);
    // Short sequences: the register-blocked kernel of `attention_short`
    // (same bits as the products below), which also writes the
    // probabilities when they are kept.
    let short = attention_short::applies(nq, nk, d, dv, tile, q_cs, v_rs, v_cs);
    // One batch element: its [nq, dv] output starts at `o` (rows `o_rs`
    // apart), `p` is its [nq, nk] probabilities when kept (else scores
    // live in a per-tile scratch): uninitialised memory for the short
    // kernel, which writes all of it, zeros for the products below (which
    // take it as a slice). Rows r0..r0+rows of the output:
    let rows_out = |o: SendPtr, r0: usize, rows: usize| (o.get().wrapping_add(r0 * o_rs), (rows - 1) * o_rs + dv);
    let one = |i: usize, o: SendPtr, p: Option<SendPtr>| {
        let (oq, ok, ov) = (batch_offset(lq, i), batch_offset(lk, i), batch_offset(lv, i));
        if nk == 0 {
            // No keys: the product with an empty probability row is zero.
            for row in 0..nq {
                // SAFETY: row `row` of this element's output is dv floats
                // inside the buffer (the layout was checked above).
                unsafe { std::ptr::write_bytes(o.get().add(row * o_rs), 0, dv) };
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if short {
            let len = attention_short::scratch_len(tile, nk, d, dv);
            let p = p.map_or(std::ptr::null_mut(), SendPtr::get);
            return with_scores_scratch(len, |buf| {
                let mut r0 = 0;
                while r0 < nq {
                    let rows = tile.min(nq - r0);
                    // SAFETY: `applies` held (AVX2 + FMA in use, unit
                    // channel strides of q and v); the strides address this
                    // element's q rows r0.., its keys and values; the
                    // tile's output rows lie in the buffer and only this
                    // call writes them; `buf` has the scratch for `tile` rows;
                    // kept probabilities: this element's [nq, nk], of which
                    // the tile writes rows r0..r0+rows.
                    unsafe {
                        attention_short::tile(
                            (q.as_ptr().add(oq + r0 * q_rs), q_rs),
                            (k.as_ptr().add(ok), k_rs, k_cs),
                            (v.as_ptr().add(ov), v_rs),
                            (rows, nk, d, dv),
                            scale,
                            (o.get().add(r0 * o_rs), o_rs),
                            if p.is_null() { p } else { p.add(r0 * nk) },
                            buf.as_mut_ptr(),
                        )
                    };
                    r0 += rows;
                }
            });
        }
        // SAFETY: the kept probabilities are then a zeroed buffer, of which
        // this element alone uses these nq·nk floats.
        let p = p.map(|p| unsafe { std::slice::from_raw_parts_mut(p.get(), nq * nk) });
        let Some(p) = p else {
            // Inference: the tile's scores transposed, sᵀ = k · qᵀ (rows
            // padded to whole SIMD registers), their softmax down the
            // columns, and o = (sᵀ)ᵀ · v read through strides.
            let ld = tile.div_ceil(COLS) * COLS;
            return with_scores_scratch(nk * ld, |st| {
                let mut r0 = 0;
                while r0 < nq {
                    let rows = tile.min(nq - r0);
                    gemm_f32_rows(st, ld, nk, rows, d, &k[ok..], k_rs, k_cs, &q[oq + r0 * q_rs..], q_cs, q_rs, false, false);
                    vectorized_with(SoftmaxCols { st: &mut *st, nk, ld, cols: rows.div_ceil(COLS) * COLS, scale });
                    let (dst, len) = rows_out(o, r0, rows);
                    // SAFETY: the tile's output rows lie in the buffer and
                    // only this call writes them; gemm never reads them.
                    unsafe { gemm_f32_raw(dst, len, o_rs, rows, dv, nk, st, 1, ld, &v[ov..], v_rs, v_cs, false, false, None) };
                    r0 += rows;
                }
            });
        };
        let mut r0 = 0;
        while r0 < nq {
            let rows = tile.min(nq - r0);
            let s: &mut [f32] = &mut p[r0 * nk..(r0 + rows) * nk];
            // s = q[r0..r0+rows] · kᵀ   (rhs[kk, j] = k[j, kk]), then its softmax
            gemm_f32(s, rows, nk, d, &q[oq + r0 * q_rs..], q_rs, q_cs, &k[ok..], k_cs, k_rs, false, false);
            vectorized_with(SoftmaxRows { s: &mut *s, nk, scale });
            // o[r0..r0+rows] = s · v
            let (dst, len) = rows_out(o, r0, rows);
            // SAFETY: as in the inference branch.
            unsafe { gemm_f32_raw(dst, len, o_rs, rows, dv, nk, s, nk, 1, &v[ov..], v_rs, v_cs, false, false, None) };
            r0 += rows;
        }
    };
    // The output, with the probabilities (if kept) written at `probs`.
    // SAFETY: `one` writes all of its batch element's [nq, dv] output: the
    // second product of each query tile writes the tile's rows, and without
    // keys every row is zeroed; the elements' rows are disjoint (a dense
    // layout) and together cover the buffer. Element i's probabilities are
    // floats i·nq·nk.. of `probs`, written by it alone.
    let run = |probs: Option<SendPtr>| unsafe {
        written_vec(batch * nq * dv, |out: &mut [MaybeUninit<f32>]| {
            let base = SendPtr(out.as_mut_ptr().cast::<f32>());
            let at = |i: usize| SendPtr(base.get().wrapping_add(batch_offset(lo, i)));
            let p_at = |i: usize| probs.map(|p| SendPtr(p.get().wrapping_add(i * nq * nk)));
            (0..batch).into_par_iter().for_each(|i| one(i, at(i), p_at(i)));
        })
    };
    if !keep_probs || nk == 0 {
        // Without keys there are no probabilities to write.
        (run(None), keep_probs.then(Vec::new))
    } else if short {
        let mut out = Vec::new();
        // SAFETY: the short kernel writes every query row of every element's
        // probabilities (the query tiles cover 0..nq).
        let probs = unsafe { written_vec(np, |p: &mut [MaybeUninit<f32>]| out = run(Some(SendPtr(p.as_mut_ptr().cast::<f32>())))) };
        (out, Some(probs))
    } else {
        let mut probs = vec![0f32; np];
        let out = run(Some(SendPtr(probs.as_mut_ptr())));
        (out, Some(probs))
    }
}

/// The gradients of [`attention`]'s q, k and v, in one fused pass per batch
/// element, written into one new buffer of `len` floats through the dense
/// layouts `outs` (views of that buffer: the packed `qkv` gradient of
/// U-ViT's `[B, L, 3, H, D]` projection, so no stacking copy follows).
/// From the kept probabilities `p` (contiguous `[batch…, lq, lk]`) and the
/// output gradient `g` (any strides), per element: `gv = pᵀ·g`, the score
/// gradient `gs = p ⊙ (g·vᵀ − rowsum) · scale` in a per-thread scratch
/// (never a whole `[batch…, lq, lk]` tensor, nor a separate scaling pass),
/// `gq = gs·k` and `gk = gsᵀ·q` — the math path's products in its order.
/// No batch dim may be broadcast (q, k and v of one packed tensor).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    (q, lq): (&[f32], &Layout),
    (k, lk): (&[f32], &Layout),
    (v, lv): (&[f32], &Layout),
    p: &[f32],
    (g, lg): (&[f32], &Layout),
    dims: AttnDims,
    scale: f32,
    len: usize,
    outs: [&Layout; 3],
) -> Vec<f32> {
    let AttnDims { batch, lq: nq, lk: nk, d, dv } = dims;
    if len == 0 {
        // Empty gradients (their layouts' strides say nothing then).
        return Vec::new();
    }
    assert_eq!(p.len(), batch * nq * nk, "attention_backward: probabilities of the wrong size");
    for (o, (rows, cols)) in outs.iter().zip([(nq, d), (nk, d), (nk, dv)]) {
        let r = o.rank();
        assert!(
            r >= 2 && o.shape()[r - 2] == rows && o.shape()[r - 1] == cols && (cols <= 1 || o.strides()[r - 1] == 1),
            "attention_backward: output layout {o:?} is not [batch…, {rows}, {cols}] with unit column stride"
        );
        assert!(o.elem_count() == 0 || o.offset() + max_offset(o) < len, "attention_backward: output layout {o:?} outside {len} floats");
    }
    assert!(outs.iter().map(|o| o.elem_count()).sum::<usize>() == len, "attention_backward: the outputs do not fill the buffer");
    let r = lq.rank();
    let strides = |l: &Layout| (l.strides()[r - 2], l.strides()[r - 1]);
    let ((q_rs, q_cs), (k_rs, k_cs), (v_rs, v_cs), (g_rs, g_cs)) = (strides(lq), strides(lk), strides(lv), strides(lg));
    let out_rs = outs.map(|o| o.strides()[r - 2]);
    // SAFETY: each element's three gemms write its own rows of the three
    // outputs (dense, disjoint layouts that together cover the buffer, as
    // asserted), every float once; gemm without accumulation never reads them.
    unsafe {
        written_vec(len, |buf: &mut [MaybeUninit<f32>]| {
            let base = SendPtr(buf.as_mut_ptr().cast::<f32>());
            let at = |o: &Layout, i: usize| base.get().wrapping_add(batch_offset(o, i));
            let span = |rows: usize, cols: usize, rs: usize| if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + cols };
            (0..batch).into_par_iter().for_each(|i| {
                let (oq, ok, ov, og) = (batch_offset(lq, i), batch_offset(lk, i), batch_offset(lv, i), batch_offset(lg, i));
                let pi = &p[i * nq * nk..(i + 1) * nq * nk];
                // gv = pᵀ · g   (lhs[j, r] = p[r, j])
                gemm_f32_raw(
                    at(outs[2], i),
                    span(nk, dv, out_rs[2]),
                    out_rs[2],
                    nk,
                    dv,
                    nq,
                    pi,
                    1,
                    nk,
                    &g[og..],
                    g_rs,
                    g_cs,
                    false,
                    false,
                    None,
                );
                with_scores_scratch(nq * nk, |s| {
                    // s = g · vᵀ, then the scaled softmax backward in place
                    gemm_f32(s, nq, nk, dv, &g[og..], g_rs, g_cs, &v[ov..], v_cs, v_rs, false, false);
                    vectorized_with(SoftmaxBackwardScaled { g: &mut *s, y: pi, len: nk, scale });
                    // gq = s · k;  gk = sᵀ · q
                    gemm_f32_raw(
                        at(outs[0], i),
                        span(nq, d, out_rs[0]),
                        out_rs[0],
                        nq,
                        d,
                        nk,
                        s,
                        nk,
                        1,
                        &k[ok..],
                        k_rs,
                        k_cs,
                        false,
                        false,
                        None,
                    );
                    gemm_f32_raw(
                        at(outs[1], i),
                        span(nk, d, out_rs[1]),
                        out_rs[1],
                        nk,
                        d,
                        nq,
                        s,
                        1,
                        nk,
                        &q[oq..],
                        q_rs,
                        q_cs,
                        false,
                        false,
                        None,
                    );
                });
            });
        })
    }
}

/// The largest element offset of `l` past its own offset.
fn max_offset(l: &Layout) -> usize {
    l.shape().iter().zip(l.strides()).map(|(&n, &s)| n.saturating_sub(1) * s).sum()
}
