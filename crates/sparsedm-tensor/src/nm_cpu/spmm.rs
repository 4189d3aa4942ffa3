//! `Y = X·Wᵀ + b` with an N:M compressed `W` ([`NmWeight`]), by the "Xᵀ
//! panel" method.
//!
//! Why this shape of kernel: each output row of `W` keeps different columns,
//! so vectorising over output features would need a gather per multiply.
//! Instead a tile of `T` rows of `X` (tokens) is transposed once into a panel
//! `Xᵀ[in, T]`, and every kept entry `(w, c)` of an output row does
//! `Yᵀ[o, :] += w · Xᵀ[c, :]`: one broadcast and `T / lanes` contiguous
//! fused multiply-adds, no gather. [`ROW_BLOCK`] = 4 output rows are
//! accumulated together (4 × 4 zmm registers on AVX-512, 64 tokens), and
//! their entries are stored grouped by row pattern (which of the 4 rows use
//! a column), so that one loaded panel row feeds every row that needs it:
//! about 2 of 4 at 2:4, which halves the loads per multiply-add compared
//! with one load per entry (the loads, not the FMAs, bound this kernel).
//!
//! Loop order: work items are groups of token tiles (× a part of the
//! output rows when there are few tiles), spread over rayon's threads. An
//! item builds its tiles' panels once, in thread-local 64-byte aligned
//! scratch that stays in L2, then for each slab of row blocks (weights that
//! fit L2) and each tile sweeps the column chunks and the slab's blocks
//! (the chunk's panel rows stay in L1, the accumulators go through a small
//! `Yᵀ` tile between chunks); the last chunk's registers are stored
//! transposed straight into `Y`.
//!
//! [`mlp_uninit`] chains two such layers per token tile (an MLP): the first
//! layer's `Yᵀ` tile is kept as the second layer's panel.

use super::format::{NmWeight, PatternLayout, ROW_BLOCK};
use super::fuse::NmFuse;
use crate::backend::cpu::strided::SendPtr;
use crate::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// One SIMD register type and the four operations the kernel needs.
///
/// Implemented by the AVX-512, AVX2+FMA and portable back-ends; the generic
/// kernel is `#[inline(always)]` so that it is compiled inside each
/// back-end's `#[target_feature]` entry point with that instruction set.
pub(crate) trait Simd {
    /// f32 lanes per register.
    const LANES: usize;
    /// Most registers per accumulator row (tile width `T = VMAX·LANES`);
    /// `ROW_BLOCK·VMAX` accumulators must fit the register file, and `T`
    /// must be 16, 32 or 64 floats (the panel row stride, a power-of-two
    /// multiple of the 64 bytes the stored column offsets count in).
    const VMAX: usize;
    /// Independent FMA chains the kernel aims to keep in flight (FMA
    /// latency × FMAs per cycle of the cores it is tuned for); a pattern
    /// run with fewer accumulators than this is unrolled over columns.
    const CHAINS: usize;
    /// The register.
    type V: Copy;
    /// All lanes = `x`.
    ///
    /// # Safety
    /// The CPU must have the back-end's instruction set.
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` floats from `p` (no alignment needed).
    ///
    /// # Safety
    /// The CPU must have the back-end's instruction set; `p..p+LANES` readable.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `LANES` floats at `p`.
    ///
    /// # Safety
    /// The CPU must have the back-end's instruction set; `p..p+LANES` writable.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a·b + c` (fused where the instruction set has FMA).
    ///
    /// # Safety
    /// The CPU must have the back-end's instruction set.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    ///
    /// # Safety
    /// The CPU must have the back-end's instruction set.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;

    /// Stores 4 registers (4 output features × `LANES` tokens) transposed:
    /// `y[i·ldy + r] = a[r][i]` for every lane `i` and `r < 4`, so that a
    /// finished register tile goes straight to the row-major `Y`.
    ///
    /// # Safety
    /// The CPU must have the back-end's instruction set; the `LANES` runs of
    /// 4 floats at `y + i·ldy` writable.
    #[inline(always)]
    unsafe fn store_t4(a: [Self::V; 4], y: *mut f32, ldy: usize) {
        let mut tmp = [0f32; 64];
        for (r, v) in a.into_iter().enumerate() {
            // SAFETY: `tmp` holds 4·16 ≥ 4·LANES floats (LANES ≤ 16).
            unsafe { Self::store(tmp.as_mut_ptr().add(r * Self::LANES), v) };
        }
        for i in 0..Self::LANES {
            for r in 0..4 {
                // SAFETY: the caller guarantees `y + i·ldy .. + 4` is writable.
                unsafe { *y.add(i * ldy + r) = tmp[r * Self::LANES + i] };
            }
        }
    }

    /// The panel `p[k·t + i] = x[i·ldx + k]` for `k < inp`, `i < rt`, and
    /// `0` for the padding tokens `rt ≤ i < nt` (row stride `t ≥ nt`).
    ///
    /// # Safety
    /// The CPU must have the back-end's instruction set; `x` holds `rt` rows
    /// of `inp` floats at stride `ldx`; `p` holds `inp·t` floats; `rt ≤ nt ≤ t`.
    #[inline(always)]
    unsafe fn build_panel(x: *const f32, ldx: usize, rt: usize, nt: usize, inp: usize, p: *mut f32, t: usize) {
        // SAFETY: every index stays inside the extents the caller guarantees.
        unsafe { panel_scalar(x, ldx, rt, nt, 0, inp, p, t) }
    }
}

/// The scalar part of [`Simd::build_panel`]: `p[k·t + i] = x[i·ldx + k]`
/// for tokens `i < nt` (zero from `rt` on) and columns `k0..k1`, in blocks
/// of 16 columns so that the reads of each row are contiguous.
///
/// # Safety
/// `x` holds `min(rt, nt)` rows of `k1` floats at stride `ldx`; `p` holds
/// `(k1 - 1)·t + nt` floats.
#[inline(always)]
pub(crate) unsafe fn panel_scalar(x: *const f32, ldx: usize, rt: usize, nt: usize, k0: usize, k1: usize, p: *mut f32, t: usize) {
    // SAFETY: as documented above.
    unsafe {
        for kb in (k0..k1).step_by(16) {
            let ke = (kb + 16).min(k1);
            for i in 0..nt {
                if i < rt {
                    let xr = x.add(i * ldx);
                    for k in kb..ke {
                        *p.add(k * t + i) = *xr.add(k);
                    }
                } else {
                    for k in kb..ke {
                        *p.add(k * t + i) = 0.0;
                    }
                }
            }
        }
    }
}

/// The instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F, 16 lanes (x86-64 with `avx512f`, and `avx2` + `fma`,
    /// which every AVX-512 CPU has, for the panel transposes).
    Avx512,
    /// AVX2 + FMA, 8 lanes (x86-64 with `avx2` and `fma`).
    Avx2Fma,
    /// Plain Rust on arrays of 8 floats, vectorised by the compiler for the
    /// build's baseline target; runs everywhere.
    Portable,
}

impl Isa {
    /// Whether this CPU can run the instruction set (checked at run time).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest available instruction set, detected once.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| [Isa::Avx512, Isa::Avx2Fma, Isa::Portable].into_iter().find(|i| i.is_available()).unwrap_or(Isa::Portable))
    }

    /// Every instruction set, each with whether this CPU has it.
    pub fn all() -> [(Isa, bool); 3] {
        [Isa::Avx512, Isa::Avx2Fma, Isa::Portable].map(|i| (i, i.is_available()))
    }
}

/// Bytes of weights per slab of output rows (kept in L2 across token
/// tiles; x86 cores have 1 to 2 MiB of L2).
fn slab_bytes() -> usize {
    static SB: OnceLock<usize> = OnceLock::new();
    // SPARSEDM_NM_SLAB_BYTES: a benchmarking knob.
    *SB.get_or_init(|| std::env::var("SPARSEDM_NM_SLAB_BYTES").ok().and_then(|s| s.parse().ok()).unwrap_or(512 * 1024))
}

/// Bytes of the panels one work item builds and keeps (in L2).
const PANEL_BUDGET: usize = 1 << 20;

/// Everything one work item needs; raw pointers because items write
/// disjoint rectangles of one output buffer from several threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item {
    /// `X`, row-major `[rows, inp]`.
    pub x: *const f32,
    pub inp: usize,
    /// Token rows `r0 .. r0 + rt` of this tile (`rt ≤ v·LANES`).
    pub r0: usize,
    pub rt: usize,
    /// Registers per accumulator row for this tile (`1..=VMAX`).
    pub v: usize,
    /// Row blocks `b0 .. b1` of `W`.
    pub b0: usize,
    pub b1: usize,
    /// The kernel layout of `W` (`format::PatternLayout`): column chunks, pattern
    /// counts, per (block, chunk) starts, column offsets and values.
    pub chunks: usize,
    pub counts: *const u16,
    pub starts: *const (u32, u32),
    pub cols: *const u32,
    pub vals: *const f32,
    /// Bias `[out]` or null.
    pub bias: *const f32,
    /// `Y`, row-major `[rows, out]`.
    pub y: *mut f32,
    pub out: usize,
    /// Whether to build the panel first (the first row-block slab of this
    /// tile; later slabs reuse it).
    pub build: bool,
    /// Scratch: panel `[inp, VMAX·LANES]` and `Yᵀ` tile `[(b1-b0)·R, T]`, 64-byte aligned.
    pub panel: *mut f32,
    pub yt: *mut f32,
    /// Whether the result stays transposed in `yt` as the next layer's
    /// panel (`[(b1-b0)·R, VMAX·LANES]`, bias included, `y` unused): the
    /// fused MLP's hidden activations. `bias` (or null) then holds `b1·R`
    /// floats (zero-padded past `out`).
    pub to_panel: bool,
}

impl Item {
    /// An item of one layer (weights `p`, `bias` or none, `out` outputs,
    /// reading `x` of `inp` columns) with no tile, rows, output or scratch
    /// set yet: the template the work items are made from.
    fn layer(x: &[f32], inp: usize, p: &PatternLayout, bias: Option<&[f32]>, out: usize) -> Item {
        Item {
            x: x.as_ptr(),
            inp,
            r0: 0,
            rt: 0,
            v: 0,
            b0: 0,
            b1: 0,
            chunks: p.chunks,
            counts: p.counts.as_ptr(),
            starts: p.starts.as_ptr(),
            cols: p.cols.as_ptr(),
            vals: p.vals.as_ptr(),
            bias: bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
            y: std::ptr::null_mut(),
            out,
            build: true,
            panel: std::ptr::null_mut(),
            yt: std::ptr::null_mut(),
            to_panel: false,
        }
    }
}

// SAFETY: an `Item` is only a bundle of pointers into buffers that outlive
// the parallel loop; items write disjoint parts of `y` and use per-thread
// scratch, so sending one to another thread is sound.
unsafe impl Send for Item {}
// SAFETY: as above; shared references to an `Item` only read its fields.
unsafe impl Sync for Item {}

/// Where a row block's accumulators start from.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// The bias of its rows (`null`: zero), at the first column chunk.
    Bias(*const f32),
    /// The `Yᵀ` tile left by the previous chunk.
    Tile,
}

/// One run of `cnt` columns that all have row pattern `P` (bit `r`: row
/// `r` of the block uses the column): per column, `V` panel loads shared by
/// the pattern's rows, one broadcast weight and `V` FMAs per row.
///
/// A pattern with few rows feeds few accumulators: at 1:8 most columns are
/// used by one row of the block, so each FMA of the run waits for the
/// previous one into the same `V` registers (FMA latency, not throughput,
/// bounds it: a profile on Zen 2 put the samples on those FMAs). [`unroll`]
/// columns are therefore taken per step, each into its own set of partial
/// accumulators, added together at the end of the run, so that about
/// [`Simd::CHAINS`] independent chains are in flight.
///
/// # Safety
/// `S`'s instruction set is available; `cols` holds `cnt` offsets of
/// columns `< inp`, `vals` `cnt·popcount(P)` weights; `panel` holds
/// `inp·VMAX·LANES` floats.
#[inline(always)]
unsafe fn run_pattern<S: Simd, const V: usize, const P: usize>(
    acc: &mut [[S::V; V]; ROW_BLOCK],
    panel: *const u8,
    cols: *const u32,
    vals: *const f32,
    cnt: usize,
) {
    let pop = P.count_ones() as usize;
    let scale = S::VMAX * S::LANES / 16;
    let u = unroll::<S>(pop, V);
    // SAFETY: the caller guarantees the instruction set and the extents.
    unsafe {
        // Column `i` into the accumulator set `a`.
        let column = |a: &mut [[S::V; V]; ROW_BLOCK], i: usize| {
            let p = panel.add(*cols.add(i) as usize * scale).cast::<f32>();
            let x: [S::V; V] = std::array::from_fn(|v| S::load(p.add(v * S::LANES)));
            let w = vals.add(i * pop);
            let mut k = 0;
            for r in 0..ROW_BLOCK {
                if P & (1 << r) != 0 {
                    let wr = S::splat(*w.add(k));
                    k += 1;
                    for v in 0..V {
                        a[r][v] = S::fma(wr, x[v], a[r][v]);
                    }
                }
            }
        };
        let mut i = 0;
        if u > 1 && cnt >= u {
            // Partial sums of columns j·u + 1 .. j·u + u - 1 (the first of
            // each step goes to `acc`; rows outside `P` stay unused and are
            // optimised away).
            let mut part = [[[S::splat(0.0); V]; ROW_BLOCK]; MAX_UNROLL - 1];
            while i + u <= cnt {
                column(acc, i);
                for (q, a) in part.iter_mut().enumerate().take(u - 1) {
                    column(a, i + 1 + q);
                }
                i += u;
            }
            for a in part.iter().take(u - 1) {
                for r in 0..ROW_BLOCK {
                    if P & (1 << r) != 0 {
                        for v in 0..V {
                            acc[r][v] = S::add(acc[r][v], a[r][v]);
                        }
                    }
                }
            }
        }
        while i < cnt {
            column(acc, i);
            i += 1;
        }
    }
}

/// Most columns [`run_pattern`] takes at a time.
const MAX_UNROLL: usize = 4;

/// Columns per step of a run whose pattern has `pop` rows and `v`
/// registers per row: enough partial accumulator sets for about
/// [`Simd::CHAINS`] independent FMA chains, at most [`MAX_UNROLL`].
#[inline(always)]
const fn unroll<S: Simd>(pop: usize, v: usize) -> usize {
    let u = S::CHAINS.div_ceil(pop * v);
    if u > MAX_UNROLL {
        MAX_UNROLL
    } else if u < 1 {
        1
    } else {
        u
    }
}

/// Accumulates one (row block, column chunk) of the kernel layout:
/// accumulators from `init`, the 15 pattern runs, then either back into
/// the block's `Yᵀ` tile `yt` (`direct` null) or, at the last chunk of a
/// full block and full token tile, transposed straight into `Y` at `direct`
/// (row stride `ldy`).
///
/// # Safety
/// `S`'s instruction set is available; `counts` holds the 15 run lengths
/// and `cols`/`vals` the runs' entries (columns `< inp`); `panel` holds
/// `inp·VMAX·LANES` floats; `yt` holds `R` rows of `V·LANES` floats at
/// stride `yts`; a bias pointer `R` floats; a `direct` pointer `V·LANES`
/// rows of `R` writable floats at stride `ldy`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block_kernel<S: Simd, const V: usize>(
    panel: *const f32,
    counts: *const u16,
    cols: *const u32,
    vals: *const f32,
    yt: *mut f32,
    yts: usize,
    init: Init,
    direct: *mut f32,
    ldy: usize,
) {
    const R: usize = ROW_BLOCK;
    let t = yts;
    let panel = panel.cast::<u8>();
    // SAFETY: the caller guarantees the instruction set and the extents
    // documented above; every offset below stays inside them.
    unsafe {
        let mut acc = [[S::splat(0.0); V]; R];
        for r in 0..R {
            for v in 0..V {
                acc[r][v] = match init {
                    Init::Bias(b) if b.is_null() => S::splat(0.0),
                    Init::Bias(b) => S::splat(*b.add(r)),
                    Init::Tile => S::load(yt.add(r * t + v * S::LANES)),
                };
            }
        }
        let (mut ci, mut vi) = (0usize, 0usize);
        macro_rules! runs {
            ($($p:literal)*) => {$(
                let cnt = *counts.add($p - 1) as usize;
                if cnt > 0 {
                    run_pattern::<S, V, $p>(&mut acc, panel, cols.add(ci), vals.add(vi), cnt);
                    ci += cnt;
                    vi += cnt * ($p as usize).count_ones() as usize;
                }
            )*};
        }
        runs!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        let _ = (ci, vi);
        if direct.is_null() {
            for r in 0..R {
                for v in 0..V {
                    S::store(yt.add(r * t + v * S::LANES), acc[r][v]);
                }
            }
        } else {
            for v in 0..V {
                S::store_t4([acc[0][v], acc[1][v], acc[2][v], acc[3][v]], direct.add(v * S::LANES * ldy), ldy);
            }
        }
    }
}

/// One work item with `V` registers per accumulator row.
///
/// # Safety
/// `S`'s instruction set is available and `it` satisfies [`Item`]'s
/// invariants (checked by [`spmm_with`] before any item runs).
#[inline(always)]
unsafe fn item_v<S: Simd, const V: usize>(it: &Item) {
    let t = V * S::LANES;
    let stride = S::VMAX * S::LANES;
    // SAFETY: `spmm_with` sized `panel` ≥ inp·VMAX·LANES and `yt` ≥ nb·R·T floats,
    // checked `x` has rows·inp and `y` rows·out floats, `r0+rt ≤ rows`,
    // `b1 ≤ row_blocks`, every column < inp; this item alone writes rows
    // `r0..r0+rt` × columns `b0·R..min(b1·R, out)` of `y`.
    unsafe {
        if it.build {
            S::build_panel(it.x.add(it.r0 * it.inp), it.inp, it.rt, t, it.inp, it.panel, stride);
        }
        // A block goes straight to Y at its last chunk when it is whole
        // (all R rows exist, all t tokens are real); others via the tile.
        // Into a panel, every block starts from its (padded) bias and
        // stays in the tile, whose rows are then panel rows.
        let whole = |b: usize| !it.to_panel && it.rt == t && (b + 1) * ROW_BLOCK <= it.out;
        let yts = if it.to_panel { stride } else { t };
        for ch in 0..it.chunks {
            let last = ch + 1 == it.chunks;
            for b in it.b0..it.b1 {
                let k = b * it.chunks + ch;
                let (cs, vs) = *it.starts.add(k);
                let init = if ch == 0 {
                    let with_bias = !it.bias.is_null() && (it.to_panel || whole(b));
                    Init::Bias(if with_bias { it.bias.add(b * ROW_BLOCK) } else { std::ptr::null() })
                } else {
                    Init::Tile
                };
                let direct = if last && whole(b) { it.y.add(it.r0 * it.out + b * ROW_BLOCK) } else { std::ptr::null_mut() };
                let yt = it.yt.add((b - it.b0) * ROW_BLOCK * yts);
                block_kernel::<S, V>(
                    it.panel,
                    it.counts.add(k * 15),
                    it.cols.add(cs as usize),
                    it.vals.add(vs as usize),
                    yt,
                    yts,
                    init,
                    direct,
                    it.out,
                );
            }
        }
        if it.to_panel {
            return;
        }
        // Blocks that were not whole: Y[r0 + i, o] = Yᵀ[o, i] + bias[o].
        for b in it.b0..it.b1 {
            if whole(b) {
                continue;
            }
            for o in b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(it.out) {
                let bo = if it.bias.is_null() { 0.0 } else { *it.bias.add(o) };
                let src = it.yt.add((o - it.b0 * ROW_BLOCK) * t);
                for i in 0..it.rt {
                    *it.y.add((it.r0 + i) * it.out + o) = *src.add(i) + bo;
                }
            }
        }
    }
}

/// Runs one work item with the tile width it asks for (`it.v` registers).
///
/// # Safety
/// As [`item_v`]; `1 ≤ it.v ≤ S::VMAX ≤ 4`.
#[inline(always)]
pub(crate) unsafe fn item_generic<S: Simd>(it: &Item) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match it.v {
            1 => item_v::<S, 1>(it),
            2 => item_v::<S, 2>(it),
            3 => item_v::<S, 3>(it),
            _ => item_v::<S, 4>(it),
        }
    }
}

/// Per-thread scratch, reused across calls (no page faults per call).
struct Scratch {
    buf: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { buf: Vec::new() }) };
}

/// Calls `f` with two 64-byte aligned scratch areas of `a` and `b` floats.
pub(crate) fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(*mut f32, *mut f32) -> R) -> R {
    let round = |n: usize| n.div_ceil(16) * 16;
    let need = round(a) + round(b) + 16;
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.buf.len() < need {
            s.buf = vec![0f32; need];
        }
        let base = s.buf.as_mut_ptr();
        let skip = base.align_offset(64).min(15);
        // SAFETY: `skip < 16` and the buffer holds round(a)+round(b)+16
        // floats, so both areas lie inside it and do not overlap.
        let (pa, pb) = unsafe { (base.add(skip), base.add(skip + round(a))) };
        f(pa, pb)
    })
}

fn lanes_vmax(isa: Isa) -> (usize, usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (super::simd_avx512::Avx512::LANES, super::simd_avx512::Avx512::VMAX),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => (super::simd_avx2::Avx2::LANES, super::simd_avx2::Avx2::VMAX),
        _ => (super::portable::Portable::LANES, super::portable::Portable::VMAX),
    }
}

/// Floats per panel row (the token tile width) of `isa`'s kernel.
pub(crate) fn tile_floats(isa: Isa) -> usize {
    let (lanes, vmax) = lanes_vmax(isa);
    lanes * vmax
}

/// Runs one item with the instruction set `isa`.
fn run_item(isa: Isa, it: &Item) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `spmm_with` checked that the CPU has AVX-512F, AVX2 and FMA and the item's invariants.
        Isa::Avx512 => unsafe { super::simd_avx512::item(it) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `spmm_with` checked that the CPU has AVX2 and FMA and the item's invariants.
        Isa::Avx2Fma => unsafe { super::simd_avx2::item(it) },
        // SAFETY: the portable back-end needs no CPU feature; invariants checked by `spmm_with`.
        _ => unsafe { super::portable::item(it) },
    }
}

/// The checks every kernel entry makes before any work: the instruction
/// set is available, `x` holds `rows·inp` floats, `y` (`y_len`) holds
/// `rows·out`, and a bias (`(len, want)`) has the length it needs.
fn check_io(
    op: &'static str,
    isa: Isa,
    (x, rows, inp): (&[f32], usize, usize),
    (y_len, out): (usize, usize),
    bias: Option<(usize, usize)>,
) -> Result<()> {
    if !isa.is_available() {
        return Err(Error::invalid(op, format!("instruction set {isa:?} is not available on this CPU")));
    }
    if x.len() != rows * inp {
        return Err(Error::ElementCount { op, shape: vec![rows, inp], len: x.len() });
    }
    if y_len != rows * out {
        return Err(Error::ElementCount { op, shape: vec![rows, out], len: y_len });
    }
    if let Some((len, want)) = bias
        && len != want
    {
        return Err(Error::ElementCount { op, shape: vec![want], len });
    }
    Ok(())
}

/// `y = x·Wᵀ + bias` with the fastest instruction set this CPU has: `x`
/// row-major `[rows, in]`, `y` row-major `[rows, out]` (overwritten), `bias`
/// `[out]`. Parallel over rayon's threads.
///
/// # Errors
/// Buffer lengths that do not match `rows`, `in`, `out`.
pub fn spmm(x: &[f32], rows: usize, w: &NmWeight, bias: Option<&[f32]>, y: &mut [f32]) -> Result<()> {
    spmm_with(Isa::best(), x, rows, w, bias, y)
}

/// The two N:M kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NmKernel {
    /// The 4-row pattern kernel of this module: every instruction set.
    Patterns,
    /// The row-wise kernel (`nm_cpu/rowwise.rs`): AVX2 + FMA only, where it
    /// is the faster one (fixed-length rows instead of short pattern runs).
    Rows,
}

impl NmKernel {
    /// Whether the kernel has an implementation for `isa`.
    pub fn runs_on(self, isa: Isa) -> bool {
        match self {
            NmKernel::Patterns => true,
            NmKernel::Rows => isa == Isa::Avx2Fma,
        }
    }

    /// The kernel [`spmm_with`] runs `w` with on `isa`: row-wise on AVX2
    /// (unless `in` is too large for its offsets), the pattern kernel on
    /// AVX-512 (measured faster there, on Zen 4) and on the portable path.
    pub fn for_weight(isa: Isa, w: &NmWeight) -> NmKernel {
        if NmKernel::Rows.runs_on(isa) && super::rowwise::supports(w) { NmKernel::Rows } else { NmKernel::Patterns }
    }
}

/// [`spmm`] with `fuse` into an output that need not be initialised (see
/// [`spmm_uninit`]).
pub(crate) fn spmm_best_uninit(
    x: &[f32],
    rows: usize,
    w: &NmWeight,
    bias: Option<&[f32]>,
    fuse: &NmFuse<'_>,
    y: &mut [MaybeUninit<f32>],
) -> Result<()> {
    let isa = Isa::best();
    kernel_uninit(isa, NmKernel::for_weight(isa, w), x, rows, w, bias, fuse, y)
}

/// [`spmm`] with a chosen instruction set (tests run each path directly),
/// with that instruction set's kernel ([`NmKernel::for_weight`]).
///
/// # Errors
/// As [`spmm`], and an instruction set this CPU does not have.
pub fn spmm_with(isa: Isa, x: &[f32], rows: usize, w: &NmWeight, bias: Option<&[f32]>, y: &mut [f32]) -> Result<()> {
    kernel_uninit(isa, NmKernel::for_weight(isa, w), x, rows, w, bias, &NmFuse::NONE, as_uninit(y))
}

/// [`spmm_with`] with a chosen kernel too (tests and benchmarks compare
/// the two on AVX2).
///
/// # Errors
/// As [`spmm_with`], and a kernel without an implementation for `isa` or
/// (row-wise) a weight with more than 2²⁴ inputs.
pub fn spmm_kernel_with(
    isa: Isa,
    kernel: NmKernel,
    x: &[f32],
    rows: usize,
    w: &NmWeight,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    kernel_uninit(isa, kernel, x, rows, w, bias, &NmFuse::NONE, as_uninit(y))
}

/// [`spmm_kernel_with`] with a norm of the input and a residual added to
/// the output (`nm_cpu/fuse.rs`): `y = norm(x)·Wᵀ + b + residual`. The
/// row-wise kernel fuses both; the pattern kernel runs them apart.
///
/// # Errors
/// As [`spmm_kernel_with`], and affine parts or a residual whose lengths
/// do not fit.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn spmm_fused_with(
    isa: Isa,
    kernel: NmKernel,
    x: &[f32],
    rows: usize,
    w: &NmWeight,
    bias: Option<&[f32]>,
    fuse: &NmFuse<'_>,
    y: &mut [f32],
) -> Result<()> {
    kernel_uninit(isa, kernel, x, rows, w, bias, fuse, as_uninit(y))
}

/// [`spmm_fused_with`] into an output that need not be initialised.
#[allow(clippy::too_many_arguments)]
fn kernel_uninit(
    isa: Isa,
    kernel: NmKernel,
    x: &[f32],
    rows: usize,
    w: &NmWeight,
    bias: Option<&[f32]>,
    fuse: &NmFuse<'_>,
    y: &mut [MaybeUninit<f32>],
) -> Result<()> {
    fuse.check("nm_spmm", rows, w.in_features(), w.out_features())?;
    if kernel == NmKernel::Patterns {
        check_io("nm_spmm", isa, (x, rows, w.in_features()), (y.len(), w.out_features()), bias.map(|b| (b.len(), w.out_features())))?;
        spmm_uninit(isa, slab_bytes(), &fuse.normed(x, w.in_features()), rows, w, bias, y)?;
        // SAFETY: `spmm_uninit` succeeded, so it wrote every element; `check` passed.
        unsafe { fuse.add_residual(y) };
        return Ok(());
    }
    let op = "nm_spmm";
    if !kernel.runs_on(isa) {
        return Err(Error::invalid(op, format!("the row-wise N:M kernel runs on Avx2Fma only, not on {isa:?}")));
    }
    if !super::rowwise::supports(w) {
        return Err(Error::bad_shape(
            op,
            &[w.out_features(), w.in_features()],
            format!("the row-wise N:M kernel takes in <= {}", super::rowwise::MAX_IN),
        ));
    }
    check_io(op, isa, (x, rows, w.in_features()), (y.len(), w.out_features()), bias.map(|b| (b.len(), w.out_features())))?;
    if rows == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `check_io` checked that the CPU has AVX2 + FMA (runs_on: the
    // isa is Avx2Fma) and every buffer length; `supports(w)` holds.
    unsafe {
        super::rowwise::spmm_rows(x, rows, w, bias, fuse, y);
    }
    Ok(())
}

/// The pattern kernel with the bytes of weights per L2 slab given (the
/// default is 512 KiB, or `SPARSEDM_NM_SLAB_BYTES`): tests use tiny slabs
/// to cover many (slab, token tile) items on small weights; benchmarks
/// tune it. Always the pattern kernel, whatever [`spmm_with`] runs.
///
/// # Errors
/// As [`spmm_with`].
#[doc(hidden)]
pub fn spmm_with_slab(
    isa: Isa,
    slab_bytes: usize,
    x: &[f32],
    rows: usize,
    w: &NmWeight,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    spmm_uninit(isa, slab_bytes, x, rows, w, bias, as_uninit(y))
}

/// `y` viewed as possibly uninitialised elements, for the kernels that
/// write every output element without reading it. Sound because they only
/// ever store initialised `f32` values through the view.
pub(crate) fn as_uninit(y: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has f32's layout, the borrow is unique and
    // lives as long as `y`, and callers store only initialised values.
    unsafe { &mut *(std::ptr::from_mut(y) as *mut [MaybeUninit<f32>]) }
}

/// [`spmm_with_slab`] into an output that need not be initialised: every
/// one of its `rows·out` elements is written (none is read), so a fresh
/// allocation needs no zeroing pass first. On an error nothing is written.
pub(crate) fn spmm_uninit(
    isa: Isa,
    slab_bytes: usize,
    x: &[f32],
    rows: usize,
    w: &NmWeight,
    bias: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
) -> Result<()> {
    let (out, inp) = (w.out_features(), w.in_features());
    check_io("nm_spmm", isa, (x, rows, inp), (y.len(), out), bias.map(|b| (b.len(), out)))?;
    if rows == 0 {
        return Ok(());
    }
    let (lanes, vmax) = lanes_vmax(isa);
    let tmax = lanes * vmax;
    let e = w.entries_per_row();
    let pat = w.patterns();
    // Token tiles of tmax rows; the last one narrower (fewer registers).
    let tiles = rows.div_ceil(tmax);
    let nblocks = w.row_blocks();
    // Two-level blocking. A work item takes a group of token tiles, builds
    // their panels once (together about 1 MiB, so they stay in L2), then
    // sweeps its output rows slab by slab (each slab's weights, 512 KiB,
    // stay in L2 while the group's tiles pass over them). Transposing X
    // once per tile, and reading the weights once per group rather than
    // once per tile, keeps both off the critical path.
    let threads = rayon::current_num_threads().max(1);
    let block_bytes = (pat.cols.len() + pat.vals.len()) * 4 / nblocks.max(1);
    let slab = (slab_bytes / block_bytes.max(1)).clamp(1, nblocks);
    let panel_floats = inp * tmax;
    let mut per_group = (PANEL_BUDGET / (panel_floats * 4)).clamp(1, tiles);
    // At least two items per thread when the tiles allow it.
    per_group = per_group.min(tiles.div_ceil(2 * threads)).max(1);
    let groups = tiles.div_ceil(per_group);
    // Few tiles (one image): split the output rows between items too.
    let parts = (2 * threads).div_ceil(groups).min(nblocks).max(1);
    let per_part = nblocks.div_ceil(parts);
    let items: Vec<(usize, usize)> = (0..groups).flat_map(|g| (0..parts).map(move |q| (g, q))).collect();
    let y_ptr = SendPtr(y.as_mut_ptr().cast::<f32>());
    let template = Item::layer(x, inp, pat, bias, out);
    let template = &template;
    let work = |&(g, q): &(usize, usize)| {
        let (pb0, pb1) = ((q * per_part).min(nblocks), ((q + 1) * per_part).min(nblocks));
        let (t0, t1) = (g * per_group, ((g + 1) * per_group).min(tiles));
        if pb0 == pb1 || t0 == t1 {
            return;
        }
        with_scratch((t1 - t0) * panel_floats, slab.min(pb1 - pb0) * ROW_BLOCK * tmax, |panels, yt| {
            let mut s0 = pb0;
            while s0 < pb1 {
                let s1 = (s0 + slab).min(pb1);
                for t in t0..t1 {
                    let r0 = t * tmax;
                    let rt = (rows - r0).min(tmax);
                    let v = rt.div_ceil(lanes);
                    // SAFETY: the scratch holds (t1 - t0) panels of `panel_floats`.
                    let panel = unsafe { panels.add((t - t0) * panel_floats) };
                    let it = Item { r0, rt, v, b0: s0, b1: s1, y: y_ptr.get(), panel, yt, build: s0 == pb0, ..*template };
                    run_item(isa, &it);
                }
                s0 = s1;
            }
        });
    };
    if items.len() == 1 || rows * out * e < (1 << 18) {
        items.iter().for_each(work);
    } else {
        items.par_iter().for_each(work);
    }
    Ok(())
}

/// The fused MLP `y = act(norm(x)·W₁ᵀ + b₁)·W₂ᵀ + b₂ + residual` (`fuse`:
/// the norm and the residual, each optional; `nm_cpu/fuse.rs`) with both
/// weights N:M, one token tile at a time: the tile's panel `Xᵀ` is built once, the first
/// layer's accumulators are stored transposed as the hidden panel `Hᵀ`
/// (which stays in L2), `act` runs on it in place, and the second layer
/// reads `Hᵀ` as its panel. Against two [`spmm`] calls and an element-wise
/// pass this skips storing the hidden activations transposed into a
/// `[rows, hidden]` buffer, the separate activation pass over it and the
/// second layer's panel build. Every output element is written.
///
/// On AVX2 (both weights on the row-wise kernel, [`NmKernel::for_weight`])
/// the row-wise version runs instead (`rowwise::mlp_rows`), same idea, and
/// fuses the norm and the residual too; here they run apart.
///
/// `bias1` is `W₁`'s bias zero-padded to `row_blocks·ROW_BLOCK` floats.
/// Sums run in the same order as [`spmm`]'s except that the first layer's
/// bias starts every accumulator (in [`spmm`] a partial token tile adds it
/// last), so results agree with the separate layers to rounding.
///
/// # Errors
/// An unavailable instruction set, `W₁`'s outputs ≠ `W₂`'s inputs, or
/// buffer lengths that do not match `rows` and the weights.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mlp_uninit(
    isa: Isa,
    x: &[f32],
    rows: usize,
    w1: &NmWeight,
    bias1: Option<&[f32]>,
    act: &(dyn Fn(&mut [f32]) + Sync),
    w2: &NmWeight,
    bias2: Option<&[f32]>,
    fuse: &NmFuse<'_>,
    y: &mut [MaybeUninit<f32>],
) -> Result<()> {
    let op = "nm_mlp";
    let (inp, hidden, out) = (w1.in_features(), w1.out_features(), w2.out_features());
    if w2.in_features() != hidden {
        return Err(Error::ShapeMismatch { op, lhs: vec![hidden, inp], rhs: vec![out, w2.in_features()] });
    }
    let (nb1, nb2) = (w1.row_blocks(), w2.row_blocks());
    check_io(op, isa, (x, rows, inp), (y.len(), out), bias1.map(|b| (b.len(), nb1 * ROW_BLOCK)))?;
    if let Some(b) = bias2
        && b.len() != out
    {
        return Err(Error::ElementCount { op, shape: vec![out], len: b.len() });
    }
    fuse.check(op, rows, inp, out)?;
    if rows == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if NmKernel::for_weight(isa, w1) == NmKernel::Rows && NmKernel::for_weight(isa, w2) == NmKernel::Rows {
        // SAFETY: `check_io` checked AVX2 + FMA (the isa is Avx2Fma) and the
        // lengths of x, y and both biases (bias1 ≥ hidden), `fuse.check`
        // the norm and the residual; w2's inputs are w1's outputs; both
        // weights are supported by the row-wise kernel.
        unsafe { super::rowwise::mlp_rows(x, rows, w1, bias1, act, w2, bias2, fuse, y) };
        return Ok(());
    }
    let xn = fuse.normed(x, inp);
    let x: &[f32] = &xn;
    let (lanes, vmax) = lanes_vmax(isa);
    let stride = lanes * vmax;
    let tiles = rows.div_ceil(stride);
    let (p1, p2) = (w1.patterns(), w2.patterns());
    let panel_floats = inp * stride;
    let h_floats = nb1 * ROW_BLOCK * stride;
    let y_ptr = SendPtr(y.as_mut_ptr().cast::<f32>());
    let (first, second) = (Item::layer(x, inp, p1, bias1, hidden), Item::layer(x, hidden, p2, bias2, out));
    let (first, second) = (&first, &second);
    let work = |tile: usize| {
        let r0 = tile * stride;
        let rt = (rows - r0).min(stride);
        let v = rt.div_ceil(lanes);
        with_scratch(panel_floats + h_floats, nb2 * ROW_BLOCK * stride, |panel, yt| {
            // SAFETY: the first area holds the panel, then `h_floats` more.
            let h = unsafe { panel.add(panel_floats) };
            let it = Item { r0, rt, v, b1: nb1, build: true, panel, yt: h, to_panel: true, ..*first };
            run_item(isa, &it);
            // SAFETY: `h` holds `h_floats` initialised floats of this thread's scratch.
            act(unsafe { std::slice::from_raw_parts_mut(h, hidden * stride) });
            let it = Item { r0, rt, v, b1: nb2, y: y_ptr.get(), build: false, panel: h, yt, ..*second };
            run_item(isa, &it);
        });
    };
    if tiles == 1 {
        work(0);
    } else {
        (0..tiles).into_par_iter().for_each(work);
    }
    // SAFETY: every tile wrote all its rows of `y`; `fuse.check` passed.
    unsafe { fuse.add_residual(y) };
    Ok(())
}
