//! The row-wise N:M kernel for AVX2 + FMA: `Y = X·Wᵀ + b`, one output
//! row at a time over 64-token tiles.
//!
//! Why a second kernel: the pattern kernel ([`super::spmm`]) shares each
//! loaded panel row between the rows of a 4-row block that use it, but it
//! walks up to 15 runs per (block, column chunk), whose lengths vary from
//! block to block. On AVX2's 16-token tiles a run is a few dozen columns
//! (a handful at 1:8), so each run's set-up and its mispredicted exit cost
//! about as much as its FMAs: on a 2-core Zen 2 the pattern kernel ran at
//! 40-45 % of the FMA peak at 2:4 and about 25 % at 1:8. Here every row of
//! a column chunk holds the same number of entries (`n` per group of `m`),
//! so the inner loop has a fixed trip count and no pattern branches, and a
//! 64-token tile gives each entry one 8-byte load (offset and value), one
//! broadcast and 8 fused load-multiply-adds into 8 independent
//! accumulators: 9 loads per 8 FMAs at every sparsity. (Two rows at a
//! time over 48-token tiles, 12 accumulators so that the FMA latency is
//! covered, measured no faster: the loads, not the latency, bound it.)
//! Measured there (one thread, [2048, 512] ×
//! [512, 512], best of 7, both kernels in one process): 2:4 10.6 → 8.9 ms,
//! 1:4 7.1 → 5.2 ms, 1:8 4.3 → 3.3 ms against the pattern kernel.
//!
//! Loop order: a work item takes one token tile (and a range of row slabs
//! when there are few tiles), transposes it once into a panel
//! `Xᵀ[in, 64]` (thread-local scratch), then per slab of [`SLAB`] output
//! rows sweeps the column chunks (a chunk's panel rows, 16-32 KiB, stay in
//! L1; the slab's accumulators go through a small `Yᵀ` tile between
//! chunks) and finally transposes the slab's `Yᵀ` into `Y` by 8×8 register
//! transposes.

use super::format::NmWeight;
use super::fuse::{NmFuse, RowNorm};
use crate::backend::cpu::strided::SendPtr;
use std::mem::MaybeUninit;

/// Tokens per tile: 8 registers of 8 floats.
pub(crate) const TOKENS: usize = 64;
/// Output rows per slab (their `Yᵀ` tile is 8 KiB).
pub(crate) const SLAB: usize = 32;
/// Columns per chunk before rounding down to a multiple of `m` (at least
/// `m`): enough for about 16 entries per row (each row's run pays for
/// loading and storing its 8 accumulators), between 64 and 128 panel rows
/// (16 to 32 KiB, within L1). On a 2-core Zen 2, [2048, 512] × [512, 512]
/// one thread: 1:8 3.30 → 3.18 ms with 128 columns instead of 64, 256
/// slower (3.70); 2:4 (32 entries at 64 columns) slower with 128.
fn chunk_target(n: usize, m: usize) -> usize {
    (16 * m / n).clamp(64, 128)
}
/// Largest `in`: panel byte offsets `c · 256` must fit a `u32`.
pub(crate) const MAX_IN: usize = 1 << 24;

/// One kept weight: the byte offset of its column's panel row and its value.
/// `repr(C)`: the kernel reads both with one 8-byte little-endian load
/// (offset in the low half; x86-64 only).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RowEntry {
    off: u32,
    val: f32,
}

/// The row-wise layout of an [`NmWeight`]: per slab of [`SLAB`] rows, per
/// column chunk, per row, that row's entries in the chunk. Every row has
/// `counts[ch]` entries in chunk `ch` (rows with fewer are padded with
/// zero weights), so entry `j` of row `o` in chunk `ch` is at
/// `s0·e + rows_in_slab·cum[ch] + (o - s0)·counts[ch] + j` (`s0` the
/// slab's first row).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowLayout {
    counts: Vec<usize>,
    cum: Vec<usize>,
    e: usize,
    ent: Vec<RowEntry>,
}

impl RowLayout {
    /// Builds the layout from the weight's canonical rows.
    pub(crate) fn build(w: &NmWeight) -> RowLayout {
        let (out, inp) = (w.out_features(), w.in_features());
        let (n, m) = w.pattern();
        let chunk = (chunk_target(n, m) / m).max(1) * m;
        let chunks = inp.div_ceil(chunk).max(1);
        let chunk_of = |o: usize, j: usize| w.row_entry(o, j).0 / chunk;
        // Entries per chunk: the most any row has there (zero values are
        // kept: they are the padding of groups with fewer than n non-zeros;
        // every row has the same counts, the maximum only makes that safe).
        let mut counts = vec![0usize; chunks];
        let mut here = vec![0usize; chunks];
        for o in 0..out {
            here.fill(0);
            (0..w.entries_per_row()).for_each(|j| here[chunk_of(o, j)] += 1);
            counts.iter_mut().zip(&here).for_each(|(c, &h)| *c = (*c).max(h));
        }
        let cum: Vec<usize> = counts.iter().scan(0, |s, &c| Some(std::mem::replace(s, *s + c))).collect();
        let e: usize = counts.iter().sum();
        // Each entry straight to its place (a row's entries are in column
        // order, so `here` counts its entries so far in each chunk); the
        // slots a row leaves free stay zero weights at offset 0.
        let mut ent = vec![RowEntry { off: 0, val: 0.0 }; out * e];
        for o in 0..out {
            let s0 = o / SLAB * SLAB;
            let nrows = (s0 + SLAB).min(out) - s0;
            here.fill(0);
            for j in 0..w.entries_per_row() {
                let (c, val) = w.row_entry(o, j);
                let ch = c / chunk;
                ent[s0 * e + nrows * cum[ch] + (o - s0) * counts[ch] + here[ch]] = RowEntry { off: (c * TOKENS * 4) as u32, val };
                here[ch] += 1;
            }
        }
        RowLayout { counts, cum, e, ent }
    }
}

/// Whether the row-wise kernel can take `w` (panel offsets fit a `u32`).
pub(crate) fn supports(w: &NmWeight) -> bool {
    w.in_features() <= MAX_IN
}

/// `y = norm(x)·Wᵀ + bias + residual` (`fuse`: the norm and the residual,
/// each optional) with the row-wise kernel, parallel over rayon's
/// threads; every one of `y`'s `rows·out` elements is written.
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` holds `rows·in` floats, `y` `rows·out`,
/// `bias` (if any) `out`; `fuse` passed [`NmFuse::check`]; [`supports`]`(w)`.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn spmm_rows(x: &[f32], rows: usize, w: &NmWeight, bias: Option<&[f32]>, fuse: &NmFuse<'_>, y: &mut [MaybeUninit<f32>]) {
    use rayon::prelude::*;
    let (inp, out) = (w.in_features(), w.out_features());
    let lay = w.row_layout();
    let tiles = rows.div_ceil(TOKENS);
    let slabs = out.div_ceil(SLAB);
    let threads = rayon::current_num_threads().max(1);
    // Few tiles (one image): split the slabs between items too.
    let parts = (2 * threads).div_ceil(tiles).clamp(1, slabs);
    let per_part = slabs.div_ceil(parts);
    let y_ptr = SendPtr(y.as_mut_ptr().cast::<f32>());
    let bias = bias.map_or(std::ptr::null(), <[f32]>::as_ptr) as usize;
    let res = fuse.residual.map_or(std::ptr::null(), <[f32]>::as_ptr) as usize;
    let norm = fuse.norm.as_ref();
    // With a norm the first scratch area also holds the tile's normalised rows.
    let area = if norm.is_some() { 2 * inp * TOKENS } else { inp * TOKENS };
    let work = |k: usize| {
        let (t, q) = (k / parts, k % parts);
        let (sl0, sl1) = ((q * per_part).min(slabs), ((q + 1) * per_part).min(slabs));
        if sl0 == sl1 {
            return;
        }
        let r0 = t * TOKENS;
        let rt = (rows - r0).min(TOKENS);
        super::spmm::with_scratch(area, SLAB * TOKENS, |panel, yt| {
            // SAFETY: the caller guarantees AVX2 + FMA and the extents; the
            // scratch holds the panel (and the normalised rows) and one
            // slab's Yᵀ; this item alone writes rows r0..r0+rt × columns of
            // slabs sl0..sl1 of y.
            unsafe {
                let res = if res == 0 { std::ptr::null() } else { (res as *const f32).add(r0 * out) };
                item(
                    x.as_ptr().add(r0 * inp),
                    rt,
                    lay,
                    (sl0, sl1),
                    (w, bias as *const f32, norm),
                    (y_ptr.get().add(r0 * out), res),
                    (panel, yt),
                )
            }
        });
    };
    let items = tiles * parts;
    if items == 1 || rows * out * lay.e < (1 << 18) {
        (0..items).for_each(work);
    } else {
        (0..items).into_par_iter().for_each(work);
    }
}

/// The fused MLP `y = act(norm(x)·W₁ᵀ + b₁)·W₂ᵀ + b₂ + residual` (`fuse`:
/// the norm and the residual, each optional) with the row-wise kernel,
/// one 64-token tile at a time: the first layer's `Yᵀ` rows are written
/// straight into a `[hidden, 64]` buffer, which is exactly the second
/// layer's panel, so the hidden activations are never transposed back,
/// `act` runs on them while they are in L2, and the second layer builds no
/// panel. Parallel over tiles; every element of `y` is written.
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` holds `rows·in₁` floats, `y` `rows·out₂`;
/// `bias1` (if any) at least `hidden` floats, `bias2` `out₂`;
/// `w2.in_features() == w1.out_features()`; `fuse` passed
/// [`NmFuse::check`]; [`supports`] both.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mlp_rows(
    x: &[f32],
    rows: usize,
    w1: &NmWeight,
    bias1: Option<&[f32]>,
    act: &(dyn Fn(&mut [f32]) + Sync),
    w2: &NmWeight,
    bias2: Option<&[f32]>,
    fuse: &NmFuse<'_>,
    y: &mut [MaybeUninit<f32>],
) {
    use rayon::prelude::*;
    let (inp, hidden, out) = (w1.in_features(), w1.out_features(), w2.out_features());
    let (lay1, lay2) = (w1.row_layout(), w2.row_layout());
    let tiles = rows.div_ceil(TOKENS);
    let y_ptr = SendPtr(y.as_mut_ptr().cast::<f32>());
    let (b1, b2) = (bias1.map_or(std::ptr::null(), <[f32]>::as_ptr) as usize, bias2.map_or(std::ptr::null(), <[f32]>::as_ptr) as usize);
    let res = fuse.residual.map_or(std::ptr::null(), <[f32]>::as_ptr) as usize;
    let norm = fuse.norm.as_ref();
    // The panel, Hᵀ, and with a norm the tile's normalised rows.
    let area = (inp + hidden) * TOKENS + if norm.is_some() { inp * TOKENS } else { 0 };
    let work = |t: usize| {
        let r0 = t * TOKENS;
        let rt = (rows - r0).min(TOKENS);
        super::spmm::with_scratch(area, SLAB * TOKENS, |panel, yt| {
            // SAFETY: the caller guarantees AVX2 + FMA and the extents; the
            // first scratch area holds the panel, Hᵀ, then the normalised
            // rows; this tile alone writes rows r0..r0+rt of y.
            unsafe {
                let h = panel.add(inp * TOKENS);
                let xt = tile_input(x.as_ptr().add(r0 * inp), rt, inp, norm, h.add(hidden * TOKENS));
                hidden_tile(xt, rt, lay1, (inp, hidden), b1 as *const f32, panel, h);
                act(std::slice::from_raw_parts_mut(h, hidden * TOKENS));
                let slabs = out.div_ceil(SLAB);
                let res = if res == 0 { std::ptr::null() } else { (res as *const f32).add(r0 * out) };
                item_on_panel(rt, lay2, (0, slabs), (out, b2 as *const f32), (y_ptr.get().add(r0 * out), res), (h, yt));
            }
        });
    };
    if tiles == 1 {
        work(0);
    } else {
        (0..tiles).into_par_iter().for_each(work);
    }
}

/// The first layer of [`mlp_rows`] for one tile: the panel of `x`'s `rt`
/// rows, then every slab's `Yᵀ` rows written into `h` (`[hidden, 64]`).
///
/// # Safety
/// As [`mlp_rows`]; `panel` holds `in·64` floats, `h` `hidden·64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn hidden_tile(
    x: *const f32,
    rt: usize,
    lay: &RowLayout,
    (inp, hidden): (usize, usize),
    bias: *const f32,
    panel: *mut f32,
    h: *mut f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        super::simd_avx2::panel_avx(x, inp, rt, TOKENS, inp, panel, TOKENS);
        for s0 in (0..hidden).step_by(SLAB) {
            slab_tile(panel, lay, (s0, (s0 + SLAB).min(hidden)), rt, bias, h.add(s0 * TOKENS));
        }
    }
}

/// Slabs `sl0..sl1` of a layer on a panel that is already built, into
/// `y` (the tile's first row of `Y`, row stride `out`), plus `res` (the
/// same rows of the residual; null: none).
///
/// # Safety
/// AVX2 + FMA; `panel` holds the layer's `in·64` floats; `y` `rt` rows of
/// `out` writable floats, `res` null or as many readable; `yt` `SLAB·64`
/// floats; `bias` null or `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn item_on_panel(
    rt: usize,
    lay: &RowLayout,
    (sl0, sl1): (usize, usize),
    (out, bias): (usize, *const f32),
    (y, res): (*mut f32, *const f32),
    (panel, yt): (*const f32, *mut f32),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        for s in sl0..sl1 {
            let (s0, s1) = (s * SLAB, ((s + 1) * SLAB).min(out));
            slab_tile(panel, lay, (s0, s1), rt, bias, yt);
            let res = if res.is_null() { res } else { res.add(s0) };
            store_tile(yt, s1 - s0, rt, y.add(s0), res, out);
        }
    }
}

/// The rows the tile's panel is built from: `x` itself, or with a norm
/// its `rt` rows normalised into `scratch`.
///
/// # Safety
/// `x` holds `rt` rows of `inp` floats; `scratch` (used with a norm)
/// `rt·inp` writable floats; the norm's affine parts `inp`.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_input(x: *const f32, rt: usize, inp: usize, norm: Option<&RowNorm<'_>>, scratch: *mut f32) -> *const f32 {
    match norm {
        None => x,
        Some(n) => {
            // SAFETY: as the caller guarantees.
            unsafe { n.rows_into(x, rt, inp, scratch) };
            scratch
        }
    }
}

/// One work item: the panel of the `rt` token rows at `x` (normalised
/// first with a norm), then slabs `sl0..sl1` of `w` into `y` (the tile's
/// first row of `Y`), plus `res` (null: none). A function of
/// its own so that everything in it, closures excepted, is compiled with
/// AVX2 (intrinsics in a closure would not inherit the target feature and
/// become calls).
///
/// # Safety
/// AVX2 + FMA; `x` holds `rt` rows of `in` floats; `y` `rt` rows of `out`
/// writable floats, `res` null or as many readable; `panel` `in·64` (with
/// a norm `2·in·64`), `yt` `SLAB·64` floats of scratch; `bias` null or
/// `out` floats; the norm's affine parts `in`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn item(
    x: *const f32,
    rt: usize,
    lay: &RowLayout,
    (sl0, sl1): (usize, usize),
    (w, bias, norm): (&NmWeight, *const f32, Option<&RowNorm<'_>>),
    (y, res): (*mut f32, *const f32),
    (panel, yt): (*mut f32, *mut f32),
) {
    let (inp, out) = (w.in_features(), w.out_features());
    // SAFETY: forwarded from the caller.
    unsafe {
        let x = tile_input(x, rt, inp, norm, panel.add(inp * TOKENS));
        super::simd_avx2::panel_avx(x, inp, rt, TOKENS, inp, panel, TOKENS);
        item_on_panel(rt, lay, (sl0, sl1), (out, bias), (y, res), (panel, yt));
    }
}

/// Accumulates rows `s0..s1` of the slab over every column chunk into
/// `yt[(o - s0)·64 + i]` for the first `rt` tokens (rounded up to whole
/// registers: a partial last tile, such as the 8 tokens left by U-ViT-S/2's
/// 8 × 257, costs what its registers cost), starting from the bias (or
/// zero).
///
/// # Safety
/// AVX2 + FMA; `panel` holds `in·64` floats; `yt` `SLAB·64`; `bias` null
/// or `out` floats; `1 ≤ rt ≤ 64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn slab_tile(panel: *const f32, lay: &RowLayout, (s0, s1): (usize, usize), rt: usize, bias: *const f32, yt: *mut f32) {
    // SAFETY: forwarded; `V·8 ≤ 64` tokens of every panel and `yt` row.
    unsafe {
        match rt.div_ceil(8) {
            1 => slab_tile_v::<1>(panel, lay, s0, s1, bias, yt),
            2 => slab_tile_v::<2>(panel, lay, s0, s1, bias, yt),
            3 => slab_tile_v::<3>(panel, lay, s0, s1, bias, yt),
            4 => slab_tile_v::<4>(panel, lay, s0, s1, bias, yt),
            5 => slab_tile_v::<5>(panel, lay, s0, s1, bias, yt),
            6 => slab_tile_v::<6>(panel, lay, s0, s1, bias, yt),
            7 => slab_tile_v::<7>(panel, lay, s0, s1, bias, yt),
            _ => slab_tile_v::<8>(panel, lay, s0, s1, bias, yt),
        }
    }
}

/// [`slab_tile`] with `V` registers (`8·V` tokens) per row.
///
/// # Safety
/// As [`slab_tile`], inlined into it (AVX2 + FMA enabled there).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn slab_tile_v<const V: usize>(panel: *const f32, lay: &RowLayout, s0: usize, s1: usize, bias: *const f32, yt: *mut f32) {
    use std::arch::x86_64::{__m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps};
    let panel = panel.cast::<u8>();
    let nrows = s1 - s0;
    // SAFETY: entry offsets are panel rows < in (checked at compression);
    // the entry indices follow the layout's formula inside `lay.ent`.
    unsafe {
        for (ch, &cnt) in lay.counts.iter().enumerate() {
            let base = lay.ent.as_ptr().add(s0 * lay.e + nrows * lay.cum[ch]);
            for o in 0..nrows {
                let ytp = yt.add(o * TOKENS);
                let b = if bias.is_null() || ch > 0 { 0.0 } else { *bias.add(s0 + o) };
                let mut acc: [__m256; V] = [_mm256_set1_ps(b); V];
                if ch > 0 {
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_loadu_ps(ytp.add(8 * v));
                    }
                }
                let e = base.add(o * cnt);
                for j in 0..cnt {
                    // One 8-byte load for both halves of the entry (the
                    // offset and the value, split in registers): one load
                    // fewer per 8 FMAs than two loads, ~2 % at 2:4.
                    let pair = e.add(j).cast::<u64>().read_unaligned();
                    let (off, val) = (pair as u32, f32::from_bits((pair >> 32) as u32));
                    let wv = _mm256_set1_ps(val);
                    let p = panel.add(off as usize).cast::<f32>();
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p.add(8 * v)), *a);
                    }
                }
                for (v, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(ytp.add(8 * v), *a);
                }
            }
        }
    }
}

/// `y[i·ldy + o] = yt[o·64 + i]` (`+ res[i·ldy + o]` when `res` is not
/// null) for `o < nrows`, `i < rt`: 8×8 register transposes where both
/// are whole, scalar at the edges.
///
/// # Safety
/// AVX; `yt` holds `nrows·64` floats; `y + i·ldy + o` writable for those,
/// `res + i·ldy + o` readable unless `res` is null.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_tile(yt: *const f32, nrows: usize, rt: usize, y: *mut f32, res: *const f32, ldy: usize) {
    // Two copies of the loop, so that the plain store tests nothing per element.
    // SAFETY: forwarded from the caller.
    unsafe {
        if res.is_null() {
            store_tile_with::<false>(yt, nrows, rt, y, res, ldy);
        } else {
            store_tile_with::<true>(yt, nrows, rt, y, res, ldy);
        }
    }
}

/// [`store_tile`] with (`RES`) or without the residual.
///
/// Output features go out 16 at a time where there are 16 (two 8×8
/// transposes whose rows are stored together): each token's 64 bytes of
/// `y` are then written by two adjacent stores, a whole cache line at a
/// time, instead of in two halves a slab pass apart. On the Zen 3 this was
/// measured on (the demo model's qkv, [4160, 128] → 384 at 1:8, one
/// thread) the kernel took 5 % less.
///
/// # Safety
/// As [`store_tile`], inlined into it (AVX2 + FMA enabled there).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_tile_with<const RES: bool>(yt: *const f32, nrows: usize, rt: usize, y: *mut f32, res: *const f32, ldy: usize) {
    let (o8, i8) = (nrows / 8 * 8, rt / 8 * 8);
    // SAFETY: every block lies within o < o8 ≤ nrows, i < i8 ≤ rt (as
    // `store_blocks` requires); the scalar edge reads yt[o·64 + i] with
    // o < nrows, i < rt and writes y[i·ldy + o] for the same.
    unsafe {
        let o16 = nrows / 16 * 16;
        for o in (0..o16).step_by(16) {
            store_blocks::<RES, 2>(yt, o, i8, y, res, ldy);
        }
        if o16 < o8 {
            store_blocks::<RES, 1>(yt, o16, i8, y, res, ldy);
        }
        for i in 0..rt {
            let from = if i < i8 { o8 } else { 0 };
            for o in from..nrows {
                let k = i * ldy + o;
                *y.add(k) = if RES { *yt.add(o * TOKENS + i) + *res.add(k) } else { *yt.add(o * TOKENS + i) };
            }
        }
    }
}

/// Output features `o..o + 8·W` of tokens `0..i8` (a multiple of 8) by
/// 8×8 register transposes, the `W` blocks of each token stored one after
/// the other.
///
/// # Safety
/// As [`store_tile`], with `o + 8·W ≤ nrows` and `i8 ≤ rt`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_blocks<const RES: bool, const W: usize>(yt: *const f32, o: usize, i8: usize, y: *mut f32, res: *const f32, ldy: usize) {
    use super::simd_avx2::transpose4_in_lanes;
    use std::arch::x86_64::{
        __m256, _mm_loadu_ps, _mm256_add_ps, _mm256_castps128_ps256, _mm256_insertf128_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    // SAFETY: every load reads yt[r·64 + i] with r < o + 8·W ≤ nrows,
    // i < i8 ≤ 64; every store writes y[i·ldy + o'..+8] (plus the residual
    // there) with i < i8 ≤ rt, o' + 8 ≤ o + 8·W ≤ nrows.
    unsafe {
        for i in (0..i8).step_by(8) {
            for h in [0, 4] {
                // Register q of block b holds tokens i+h..i+h+4 of row
                // o+8b+q in its low lane and of row o+8b+4+q in its high
                // lane, so the in-lane 4×4 transpose leaves whole output
                // rows (8 features of one token): no cross-lane permutes.
                let mut t = [[_mm256_setzero_ps(); 4]; W];
                for (b, tb) in t.iter_mut().enumerate() {
                    let rows = yt.add((o + 8 * b) * TOKENS + i + h);
                    // (A loop, not `array::from_fn`: intrinsics in a closure
                    // would not inherit AVX2 and become calls.)
                    let mut r: [__m256; 4] = [_mm256_setzero_ps(); 4];
                    for (q, v) in r.iter_mut().enumerate() {
                        let lo = _mm_loadu_ps(rows.add(q * TOKENS));
                        *v = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(lo), _mm_loadu_ps(rows.add((4 + q) * TOKENS)));
                    }
                    *tb = transpose4_in_lanes(r);
                }
                for j in 0..4 {
                    for (b, tb) in t.iter().enumerate() {
                        let k = (i + h + j) * ldy + o + 8 * b;
                        let v = if RES { _mm256_add_ps(tb[j], _mm256_loadu_ps(res.add(k))) } else { tb[j] };
                        _mm256_storeu_ps(y.add(k), v);
                    }
                }
            }
        }
    }
}
