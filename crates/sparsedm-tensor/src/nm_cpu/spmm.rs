//! `Y = X·Wᵀ + b` with an N:M compressed `W` ([`NmWeight`]), by the "Xᵀ
//! panel" method.
//!
//! Why this shape of kernel: each output row of `W` keeps different columns,
//! so vectorising over output features would need a gather per multiply.
//! Instead a tile of `T` rows of `X` (tokens) is transposed once into a panel
//! `Xᵀ[in, T]`, and every kept entry `(w, c)` of an output row does
//! `Yᵀ[o, :] += w · Xᵀ[c, :]`: one broadcast, `T / lanes` contiguous loads
//! and fused multiply-adds, no gather. [`ROW_BLOCK`] output rows advance in
//! lockstep (every row has the same number of entries), each with `T / lanes`
//! accumulator registers, so 4 × 4 zmm registers on AVX-512 hide the FMA
//! latency. The columns are visited in chunks so that the part of the panel
//! in use stays in L1 while the accumulators go back to a small `Yᵀ` tile
//! between chunks. Work items are (token tile × range of row blocks),
//! spread over rayon's threads; each builds its own panel in thread-local,
//! 64-byte aligned scratch and writes its own rectangle of `Y`.

use super::format::{NmWeight, ROW_BLOCK};
use crate::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;
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

/// Bytes of the panel kept hot per column chunk (at least 16 entries per
/// row; the L1 of current x86 cores holds 32 to 48 KiB).
fn chunk_bytes() -> usize {
    static KC: OnceLock<usize> = OnceLock::new();
    // SPARSEDM_NM_CHUNK_BYTES: a benchmarking knob (0 = no chunking).
    *KC.get_or_init(|| std::env::var("SPARSEDM_NM_CHUNK_BYTES").ok().and_then(|s| s.parse().ok()).unwrap_or(32 * 1024))
}

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
    /// Blocked values / columns of `W`, `e` entries per row.
    pub vals: *const f32,
    pub cols: *const u32,
    pub e: usize,
    /// Entries per row per column chunk.
    pub chunk_e: usize,
    /// Bias `[out]` or null.
    pub bias: *const f32,
    /// `Y`, row-major `[rows, out]`.
    pub y: *mut f32,
    pub out: usize,
    /// Scratch: panel `[inp, VMAX·LANES]` and `Yᵀ` tile `[(b1-b0)·R, T]`, 64-byte aligned.
    pub panel: *mut f32,
    pub yt: *mut f32,
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

/// Accumulates the entries `0..nnz` of one row block: accumulators from
/// `init`, then either back into its `Yᵀ` tile `yt` (`direct` null) or, at
/// the last chunk of a full block and full token tile, transposed straight
/// into `Y` at `direct` (row stride `ldy`).
///
/// # Safety
/// `S`'s instruction set is available; `vals`/`cols` hold `nnz·R` entries;
/// every column `c` satisfies `c < inp` with `panel` holding `inp·VMAX·LANES`
/// floats; `yt` holds `R·V·LANES` floats; a bias pointer `R` floats; a
/// `direct` pointer `V·LANES` rows of `R` writable floats at stride `ldy`.
#[inline(always)]
unsafe fn block_kernel<S: Simd, const V: usize>(
    panel: *const f32,
    vals: *const f32,
    cols: *const u32,
    nnz: usize,
    yt: *mut f32,
    init: Init,
    direct: *mut f32,
    ldy: usize,
) {
    const R: usize = ROW_BLOCK;
    let t = V * S::LANES;
    // Panel rows are VMAX·LANES floats apart: `scale` × the stored offset.
    let scale = S::VMAX * S::LANES / 16;
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
        for j in 0..nnz {
            let (vj, cj) = (vals.add(j * R), cols.add(j * R));
            for r in 0..R {
                let w = S::splat(*vj.add(r));
                let p = panel.add(*cj.add(r) as usize * scale).cast::<f32>();
                for v in 0..V {
                    acc[r][v] = S::fma(w, S::load(p.add(v * S::LANES)), acc[r][v]);
                }
            }
        }
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
        S::build_panel(it.x.add(it.r0 * it.inp), it.inp, it.rt, t, it.inp, it.panel, stride);
        // A block goes straight to Y at its last chunk when it is whole
        // (all R rows exist, all t tokens are real); others via the tile.
        let whole = |b: usize| it.rt == t && (b + 1) * ROW_BLOCK <= it.out;
        let mut c0 = 0;
        loop {
            let c1 = (c0 + it.chunk_e).min(it.e);
            for b in it.b0..it.b1 {
                let base = (b * it.e + c0) * ROW_BLOCK;
                let init = if c0 == 0 {
                    Init::Bias(if it.bias.is_null() || !whole(b) { std::ptr::null() } else { it.bias.add(b * ROW_BLOCK) })
                } else {
                    Init::Tile
                };
                let direct =
                    if c1 == it.e && whole(b) { it.y.add(it.r0 * it.out + b * ROW_BLOCK) } else { std::ptr::null_mut() };
                let yt = it.yt.add((b - it.b0) * ROW_BLOCK * t);
                block_kernel::<S, V>(it.panel, it.vals.add(base), it.cols.add(base), c1 - c0, yt, init, direct, it.out);
            }
            if c1 == it.e {
                break;
            }
            c0 = c1;
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
fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(*mut f32, *mut f32) -> R) -> R {
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

/// `y = x·Wᵀ + bias` with the fastest instruction set this CPU has: `x`
/// row-major `[rows, in]`, `y` row-major `[rows, out]` (overwritten), `bias`
/// `[out]`. Parallel over rayon's threads.
///
/// # Errors
/// Buffer lengths that do not match `rows`, `in`, `out`.
pub fn spmm(x: &[f32], rows: usize, w: &NmWeight, bias: Option<&[f32]>, y: &mut [f32]) -> Result<()> {
    spmm_with(Isa::best(), x, rows, w, bias, y)
}

/// [`spmm`] with a chosen instruction set (tests run each path directly).
///
/// # Errors
/// As [`spmm`], and an instruction set this CPU does not have.
pub fn spmm_with(isa: Isa, x: &[f32], rows: usize, w: &NmWeight, bias: Option<&[f32]>, y: &mut [f32]) -> Result<()> {
    let op = "nm_spmm";
    let (out, inp) = (w.out_features(), w.in_features());
    if !isa.is_available() {
        return Err(Error::invalid(op, format!("instruction set {isa:?} is not available on this CPU")));
    }
    if x.len() != rows * inp {
        return Err(Error::ElementCount { op, shape: vec![rows, inp], len: x.len() });
    }
    if y.len() != rows * out {
        return Err(Error::ElementCount { op, shape: vec![rows, out], len: y.len() });
    }
    if let Some(b) = bias
        && b.len() != out
    {
        return Err(Error::ElementCount { op, shape: vec![out], len: b.len() });
    }
    if rows == 0 {
        return Ok(());
    }
    let (lanes, vmax) = lanes_vmax(isa);
    let tmax = lanes * vmax;
    let e = w.entries_per_row();
    let (n, m) = w.pattern();
    let chunk_e = match chunk_bytes() {
        0 => e,
        cb => ((cb / (tmax * 4)).max(m) / m * n).max(16),
    };
    // Token tiles of tmax rows; the last one narrower (fewer registers).
    let tiles = rows.div_ceil(tmax);
    let nblocks = w.row_blocks();
    // Split the output rows too when there are few tiles for the threads.
    let threads = rayon::current_num_threads().max(1);
    let splits = if tiles >= 2 * threads { 1 } else { (2 * threads).div_ceil(tiles).min(nblocks.div_ceil(4)).max(1) };
    let per_split = nblocks.div_ceil(splits);
    let items: Vec<(usize, usize)> = (0..tiles).flat_map(|t| (0..splits).map(move |s| (t, s))).collect();
    let bias_ptr = bias.map_or(std::ptr::null(), |b| b.as_ptr());
    let y_ptr = SendPtr(y.as_mut_ptr());
    let template = Item {
        x: x.as_ptr(),
        inp,
        r0: 0,
        rt: 0,
        v: 0,
        b0: 0,
        b1: 0,
        vals: w.blocked_values().as_ptr(),
        cols: w.blocked_cols().as_ptr(),
        e,
        chunk_e,
        bias: bias_ptr,
        y: std::ptr::null_mut(),
        out,
        panel: std::ptr::null_mut(),
        yt: std::ptr::null_mut(),
    };
    let template = &template;
    let work = |&(t, s): &(usize, usize)| {
        let r0 = t * tmax;
        let rt = (rows - r0).min(tmax);
        let v = rt.div_ceil(lanes);
        let b0 = (s * per_split).min(nblocks);
        let b1 = ((s + 1) * per_split).min(nblocks);
        if b0 == b1 {
            return;
        }
        let tw = v * lanes;
        with_scratch(inp * tmax, (b1 - b0) * ROW_BLOCK * tw, |panel, yt| {
            let it = Item { r0, rt, v, b0, b1, y: y_ptr.get(), panel, yt, ..*template };
            run_item(isa, &it);
        });
    };
    if items.len() == 1 || rows * out * e < (1 << 18) {
        items.iter().for_each(work);
    } else {
        items.par_iter().for_each(work);
    }
    Ok(())
}

/// A raw output pointer shared by the work items (each writes its own rectangle).
#[derive(Debug, Clone, Copy)]
struct SendPtr(*mut f32);
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: work items write disjoint rectangles of the buffer behind the
// pointer, which outlives the parallel loop.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
