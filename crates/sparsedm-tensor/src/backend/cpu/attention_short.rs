//! Attention for short sequences, AVX2 + FMA: one query tile of one batch
//! element (one head of one image) in registers-sized blocks, without the
//! GEMM crate — in inference, and in the training forward, where it also
//! writes the softmax probabilities that the backward pass reads. The demo
//! model's attention in training, batch 64, 2 threads, a layer: forward
//! 3.3 → 2.5 ms (0.2 of it this kernel, 0.6 no longer zeroing the 17 MB
//! probability buffer before it is written), forward + backward 6.7-7.0 →
//! 5.9 ms.
//!
//! Why: at the demo model's heads (65 tokens, 32 channels) each of
//! [`super::attention`]'s two products is a 65 × 65 × 32 GEMM, so the
//! `gemm` crate's packing of both operands and its per-call set-up cost as
//! much as its multiply-adds, and the column softmax ran over 80 columns
//! (multiples of 16) for 65 queries: ~12 ms of the demo model's 1:8 N:M
//! forward of ~42 (and of the dense one). Here (timings at [`MAX_KEYS`])
//! the queries lie in the lanes throughout:
//! - `qᵀ` is packed once (8×8 register transposes), k and v copied into
//!   contiguous rows; `sᵀ[key][query]` is computed 3 keys × 3 registers
//!   at a time with `k` broadcast, scaled, and the column maxima updated
//!   as the block is stored;
//! - the softmax runs down each register column of `sᵀ` (8 queries), on
//!   72 columns for 65 queries where the old path computed 80;
//! - `o = p·v` is computed 2 queries × 4 registers of channels at a time,
//!   `p` broadcast from `sᵀ`, and stored straight into the output rows.
//!
//! Bits: every score and output is one chain of fused multiply-adds from
//! zero in the inner index's order, as the `gemm` crate's micro-kernels
//! compute them for an inner dimension of at most 512 (one depth block;
//! gemm-common 0.19 `kernel_params`, `kc ≥ 512`), and the softmax is
//! [`super::attention`]'s column softmax operation for operation (`exp8` is
//! [`fast_exp`](crate::backend::cpu::math::fast_exp) lane for lane; the sum in 16 partials halved pairwise).
//! So the output equals the training path's to the bit, as the other
//! inference path's does — where the training path's products take that
//! micro-kernel path, which [`applies`] checks (the `gemm` crate computes
//! tiny products, `k ≤ 2` and vector products differently).

use crate::backend::cpu::simd::{SimdLevel, simd_level};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Queries (floats) per register.
const LANES: usize = 8;
/// Keys per score block.
const KB: usize = 3;
/// Query registers per score block: `KB × QV` accumulators (enough
/// independent chains to cover the FMA latency on two pipes), `QV` query
/// registers and a broadcast, 13 of the 16 ymm registers (4 × 3 needs all
/// 16 and LLVM spilled an accumulator to the stack in the inner loop:
/// slower than the `gemm` crate).
const QV: usize = 3;
/// Queries per output block.
const QB: usize = 2;
/// Channel registers per output block: `QB × DV` accumulators, `DV` value
/// registers and a broadcast (13 registers).
const DV: usize = 4;
// [`tile`]'s dispatches list the block shapes up to these sizes.
const _: () = assert!(KB == 3 && QV == 3 && QB == 2 && DV == 4 && MAX_KEYS <= MAX_INNER);
/// Largest inner dimension (`d` of the scores, the key count of `p·v`)
/// for which the `gemm` crate accumulates in one chain.
const MAX_INNER: usize = 512;
/// Most keys the kernel takes: beyond ~100 the products are long enough
/// for the `gemm` crate's packing to pay. One Zen 3 core, heads of a packed
/// qkv, best of 60 interleaved (`examples/att_speed.rs`), µs a head, this
/// kernel against the `gemm` path: 65 keys × 32 channels 10.2-10.4 against
/// 12.9-13.2, 96 × 32 19.7-20.1 against 22.2-22.8, 80 × 64 24.5-27.4
/// against 27.0-29.1, 128 × 32 42.0-42.3 against 40.2-40.7, 128 × 64 74-78
/// against 69-73, 257 × 64 284-286 against 274.
const MAX_KEYS: usize = 96;

/// Whether the kernel may be used at all (on unless a benchmark or test
/// turned it off to compare with the `gemm` path).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the short-sequence inference attention on or off (on by
/// default) and returns the previous setting: for benchmarks and tests
/// that compare it with the `gemm` path, which gives the same bits.
pub fn set_short_attention(on: bool) -> bool {
    ENABLED.swap(on, Ordering::Relaxed)
}

/// Whether [`tile`] computes this problem, tiled into query tiles of
/// `tile_rows` rows (the last one shorter), and gives the training path's
/// bits: enabled, AVX2 + FMA in use, q and v with unit channel strides,
/// `dv` a multiple of 8, at most [`MAX_KEYS`] keys, `d` within one `gemm`
/// depth block, and
/// products that the `gemm` crate runs through its micro-kernels in the
/// training path (`gemm-common` 0.19 `gemm_basic_generic`: inner dimension
/// above 2, more than one row and column, and no horizontal kernel — those
/// take `lhs_cs = rhs_rs = 1` and `m·n ≤ 256`: for `q·kᵀ` that is
/// `q_cs = k_cs = 1` and `rows·nk ≤ 256`, for `p·v` `v_rs = 1`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn applies(nq: usize, nk: usize, d: usize, dv: usize, tile_rows: usize, q_cs: usize, v_rs: usize, v_cs: usize) -> bool {
    if !cfg!(target_arch = "x86_64") || !ENABLED.load(Ordering::Relaxed) || !matches!(simd_level(), SimdLevel::Avx2 | SimdLevel::Avx512) {
        return false;
    }
    let last = match nq % tile_rows.max(1) {
        0 => tile_rows,
        r => r,
    };
    let rows_ok = |rows: usize| rows >= 2 && rows * nk > 256;
    q_cs == 1
        && v_cs == 1
        && v_rs != 1
        && dv > 0
        && dv.is_multiple_of(LANES)
        && (3..=MAX_INNER).contains(&d)
        && (3..=MAX_KEYS).contains(&nk)
        && rows_ok(tile_rows.min(nq))
        && rows_ok(last)
}

/// Floats of scratch [`tile`] needs for a tile of up to `rows` queries.
pub(crate) fn scratch_len(rows: usize, nk: usize, d: usize, dv: usize) -> usize {
    (d + nk + 1) * rows.div_ceil(LANES) * LANES + nk * (d + dv)
}

/// `o[i] = softmax(q[i]·kᵀ·scale)·v` for the `rows` queries at `q` (rows
/// `q_rs` apart, unit channel stride), the `nk` keys at `k` (`k_rs`,
/// `k_cs`) and values at `v` (`v_rs`, unit channel stride), into the rows
/// at `o` (`o_rs` apart, `dv` floats each); unless `p` is null, also the
/// probabilities `softmax(q[i]·kᵀ·scale)` into `p` (`rows` rows of `nk`,
/// contiguous), which the training path keeps for the backward pass.
///
/// # Safety
/// [`applies`] held for the problem; `q`, `k`, `v` readable at every
/// element their strides address; `o` writable for `rows` rows of `dv`;
/// `p` null or writable for `rows·nk` floats; `buf` holds
/// [`scratch_len`]`(rows, nk, d, dv)` floats.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile(
    (q, q_rs): (*const f32, usize),
    (k, k_rs, k_cs): (*const f32, usize, usize),
    (v, v_rs): (*const f32, usize),
    (rows, nk, d, dv): (usize, usize, usize, usize),
    scale: f32,
    (o, o_rs): (*mut f32, usize),
    p: *mut f32,
    buf: *mut f32,
) {
    let ld = rows.div_ceil(LANES) * LANES;
    let nv = ld / LANES;
    // SAFETY: the scratch areas are disjoint parts of `buf`; every access
    // below stays inside its area or inside the caller's extents.
    unsafe {
        let (qt, st, mx) = (buf, buf.add(d * ld), buf.add((d + nk) * ld));
        crate::nm_cpu::panel_avx(q, q_rs, rows, ld, d, qt, ld);
        // k and v copied into contiguous rows (k's channels from any
        // stride): in U-ViT's packed qkv their rows are 3·H·D floats apart
        // (1536 bytes at the demo model's heads, 6 KiB at U-ViT-S/2's), so a
        // head's rows fall on few L1 sets. At 257 keys × 64 channels the
        // copies made the kernel ~8 % faster; at 65 × 32 no different.
        let (kc, vc) = (mx.add(ld), mx.add(ld + nk * d));
        let d8 = if k_cs == 1 { d / LANES * LANES } else { 0 };
        for j in 0..nk {
            for c in (0..d8).step_by(LANES) {
                _mm256_storeu_ps(kc.add(j * d + c), _mm256_loadu_ps(k.add(j * k_rs + c)));
            }
            for c in d8..d {
                *kc.add(j * d + c) = *k.add(j * k_rs + c * k_cs);
            }
            for c in (0..dv).step_by(LANES) {
                _mm256_storeu_ps(vc.add(j * dv + c), _mm256_loadu_ps(v.add(j * v_rs + c)));
            }
        }
        let (k, k_rs, k_cs, v, v_rs) = (kc.cast_const(), d, 1, vc.cast_const(), dv);
        for c in 0..ld {
            *mx.add(c) = f32::NEG_INFINITY;
        }
        let mut c = 0;
        while c < nv {
            let cv = (nv - c).min(QV);
            let mut j = 0;
            while j < nk {
                let kb = (nk - j).min(KB);
                let args = (
                    qt.add(c * LANES).cast_const(),
                    ld,
                    d,
                    k.add(j * k_rs),
                    k_rs,
                    k_cs,
                    scale,
                    st.add(j * ld + c * LANES),
                    mx.add(c * LANES),
                );
                match (kb, cv) {
                    (3, 3) => scores::<3, 3>(args),
                    (3, 2) => scores::<3, 2>(args),
                    (3, _) => scores::<3, 1>(args),
                    (2, 3) => scores::<2, 3>(args),
                    (2, 2) => scores::<2, 2>(args),
                    (2, _) => scores::<2, 1>(args),
                    (_, 3) => scores::<1, 3>(args),
                    (_, 2) => scores::<1, 2>(args),
                    _ => scores::<1, 1>(args),
                }
                j += kb;
            }
            c += cv;
        }
        exps(st, ld, nk, nv, mx);
        for c in 0..nv {
            normalize_column(st.add(c * LANES), ld, nk);
        }
        if !p.is_null() {
            // pᵀ's first `rows` columns transposed into p's rows: the panel
            // transpose with keys as its tokens and queries as its columns.
            crate::nm_cpu::panel_avx(st, ld, nk, nk, rows, p, nk);
        }
        let mut x = 0;
        while x < dv / LANES {
            let xv = (dv / LANES - x).min(DV);
            let mut i = 0;
            while i < rows {
                let qb = (rows - i).min(QB);
                let args = (st.add(i).cast_const(), ld, nk, v.add(x * LANES), v_rs, o.add(i * o_rs + x * LANES), o_rs);
                match (qb, xv) {
                    (2, 4) => values::<2, 4>(args),
                    (2, 3) => values::<2, 3>(args),
                    (2, 2) => values::<2, 2>(args),
                    (2, _) => values::<2, 1>(args),
                    (_, 4) => values::<1, 4>(args),
                    (_, 3) => values::<1, 3>(args),
                    (_, 2) => values::<1, 2>(args),
                    _ => values::<1, 1>(args),
                }
                i += qb;
            }
            x += xv;
        }
    }
}

/// Scores of `K` keys × `V` registers of queries: `sᵀ[j][i] = scale ·
/// Σ_dd qᵀ[dd][i]·k[j][dd]` (one FMA chain from zero over `dd`), stored at
/// `st` (rows `ld` apart), and the column maxima at `mx` raised to them.
///
/// # Safety
/// AVX2 + FMA; `qt` holds `d` rows of `ld` floats (`V·8` read from each),
/// `k` `K` keys at `k_rs` of `d` channels at `k_cs`, `st` `K` rows of
/// `V·8` writable floats `ld` apart, `mx` `V·8` floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn scores<const K: usize, const V: usize>(
    (qt, ld, d, k, k_rs, k_cs, scale, st, mx): (*const f32, usize, usize, *const f32, usize, usize, f32, *mut f32, *mut f32),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); V]; K];
        for dd in 0..d {
            let qv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(qt.add(dd * ld + v * LANES)));
            for (kk, row) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*k.add(kk * k_rs + dd * k_cs));
                for (a, &x) in row.iter_mut().zip(&qv) {
                    *a = _mm256_fmadd_ps(x, b, *a);
                }
            }
        }
        let s = _mm256_set1_ps(scale);
        let mut m: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(mx.add(v * LANES)));
        for (kk, row) in acc.iter().enumerate() {
            for (v, (a, mv)) in row.iter().zip(m.iter_mut()).enumerate() {
                let x = _mm256_mul_ps(*a, s);
                _mm256_storeu_ps(st.add(kk * ld + v * LANES), x);
                // `x > max ? x : max`, the column softmax's maximum (a NaN
                // score leaves it).
                *mv = _mm256_max_ps(x, *mv);
            }
        }
        for (v, mv) in m.iter().enumerate() {
            _mm256_storeu_ps(mx.add(v * LANES), *mv);
        }
    }
}

/// `sᵀ ← exp(sᵀ − max)` over the tile's `nk` rows of `nv` registers, the
/// first step of [`super::attention`]'s column softmax: the tile's
/// registers as one run, [`EXP_BLOCK`] at a time (block by block within
/// each row left the demo heads' 9-register rows one unstaged exponential
/// each: demo heads 2.1 → 1.9 µs of exponentials a head, one Zen 3 core).
///
/// # Safety
/// AVX2 + FMA; `s` holds `nk` rows of `nv·8` floats, `ld = nv·8` apart;
/// `mx` `nv·8` floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exps(s: *mut f32, ld: usize, nk: usize, nv: usize, mx: *const f32) {
    // SAFETY: forwarded from the caller.
    unsafe {
        // A macro, not a closure: a closure would not inherit the AVX2
        // target feature and its intrinsics would become calls.
        macro_rules! one {
            ($p:expr, $g:expr, $c:expr) => {
                _mm256_sub_ps(_mm256_loadu_ps($p.add($g * LANES)), _mm256_loadu_ps(mx.add($c * LANES)))
            };
        }
        // The tile's rows are `ld = nv·8` floats apart: its `nk·nv`
        // registers are contiguous, register `g` in column `g mod nv`.
        debug_assert_eq!(ld, nv * LANES);
        let total = nk * nv;
        let (mut g, mut c) = (0, 0);
        while g + EXP_BLOCK <= total {
            let mut x = [_mm256_setzero_ps(); EXP_BLOCK];
            for (u, x) in x.iter_mut().enumerate() {
                *x = one!(s, g + u, c);
                c = if c + 1 == nv { 0 } else { c + 1 };
            }
            for (u, e) in exp8_block(x).into_iter().enumerate() {
                _mm256_storeu_ps(s.add((g + u) * LANES), e);
            }
            g += EXP_BLOCK;
        }
        while g < total {
            _mm256_storeu_ps(s.add(g * LANES), exp8(one!(s, g, c)));
            c = if c + 1 == nv { 0 } else { c + 1 };
            g += 1;
        }
    }
}

/// Registers per [`exp8_block`].
const EXP_BLOCK: usize = 4;

/// [`exp8`] of [`EXP_BLOCK`] registers of scores minus their column's
/// maximum, each step for every register before the next: [`exp8`] is a
/// chain of ~55 cycles of latency, and one register at a time — even four
/// written side by side — Zen 3's schedulers held too few independent
/// operations to fill the pipes (~12 cycles a register).
///
/// Such inputs are ≤ 0 or NaN (a score minus a maximum that is at least
/// that score), so [`exp8`]'s two upper bounds — `min(88.7, ·)` of the
/// input and `min(n, 127)` of the power — change nothing and are left
/// out (NaN stays NaN without them: the result is the polynomial's NaN
/// times the power): the same bits with 2 of ~22 operations fewer a
/// register (a demo head's exponentials, one core: see `att_speed`).
///
/// # Safety
/// AVX2 + FMA; every lane of `x` is ≤ 0 or NaN.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp8_block(x: [__m256; EXP_BLOCK]) -> [__m256; EXP_BLOCK] {
    const MAGIC: f32 = 12_582_912.0;
    // SAFETY: register-only AVX2/FMA operations; the caller guarantees them.
    unsafe {
        let m = _mm256_set1_ps(MAGIC);
        // Loops, not `map`: a closure would not inherit the AVX2 target
        // feature.
        let mut n = [_mm256_setzero_ps(); EXP_BLOCK];
        let mut x = x;
        for u in 0..EXP_BLOCK {
            x[u] = _mm256_max_ps(_mm256_set1_ps(-87.3), x[u]);
            n[u] = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x[u], _mm256_set1_ps(std::f32::consts::LOG2_E)), m), m);
        }
        let mut r = [_mm256_setzero_ps(); EXP_BLOCK];
        let mut q = [_mm256_setzero_ps(); EXP_BLOCK];
        for u in 0..EXP_BLOCK {
            r[u] = _mm256_fmadd_ps(n[u], _mm256_set1_ps(2.121_944_4e-4), _mm256_fnmadd_ps(n[u], _mm256_set1_ps(0.693_359_4), x[u]));
            q[u] = _mm256_fmadd_ps(_mm256_set1_ps(1.987_569_1e-4), r[u], _mm256_set1_ps(1.398_2e-3));
        }
        for c in [8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            for u in 0..EXP_BLOCK {
                q[u] = _mm256_fmadd_ps(q[u], r[u], _mm256_set1_ps(c));
            }
        }
        let mut e = [_mm256_setzero_ps(); EXP_BLOCK];
        for u in 0..EXP_BLOCK {
            let z = _mm256_mul_ps(r[u], r[u]);
            let p = _mm256_add_ps(_mm256_fmadd_ps(q[u], z, r[u]), _mm256_set1_ps(1.0));
            let n_int = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(n[u], m)), _mm256_set1_epi32(MAGIC.to_bits() as i32));
            let pow = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n_int, _mm256_set1_epi32(127))));
            e[u] = _mm256_mul_ps(p, pow);
        }
        e
    }
}

/// The rest of the softmax of one register column of `sᵀ` (8 queries,
/// `nk` keys in rows `ld` apart) after [`exps`]: the sum in 16 partials
/// (key `j` into partial `j mod 16`, then halved pairwise) and
/// `e · (1 / sum)`, as [`super::attention`]'s column softmax.
///
/// # Safety
/// AVX2 + FMA; `s` holds `nk` rows of 8 floats `ld` apart.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn normalize_column(s: *mut f32, ld: usize, nk: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        // 8 partials (8 registers) at a time.
        let mut part = [_mm256_setzero_ps(); 16];
        for half in [0, 8] {
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut j0 = 0;
            while j0 + half < nk {
                for (u, a) in acc.iter_mut().enumerate() {
                    let j = j0 + half + u;
                    if j < nk {
                        *a = _mm256_add_ps(*a, _mm256_loadu_ps(s.add(j * ld)));
                    }
                }
                j0 += 16;
            }
            part[half..half + 8].copy_from_slice(&acc);
        }
        for w in [8, 4, 2, 1] {
            for i in 0..w {
                part[i] = _mm256_add_ps(part[i], part[i + w]);
            }
        }
        let inv = _mm256_div_ps(_mm256_set1_ps(1.0), part[0]);
        for j in 0..nk {
            let p = s.add(j * ld);
            _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), inv));
        }
    }
}

/// [`fast_exp`](crate::backend::cpu::math::fast_exp) on 8 lanes, operation
/// for operation (the same bits, NaN included: `max(lo, x)` and
/// `min(hi, ·)` keep a NaN as `clamp` does, `min(n, 127)` drops it as
/// `f32::min` does).
///
/// # Safety
/// AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
    const MAGIC: f32 = 12_582_912.0;
    // SAFETY: register-only AVX2/FMA operations; the caller guarantees them.
    unsafe {
        let x = _mm256_min_ps(_mm256_set1_ps(88.7), _mm256_max_ps(_mm256_set1_ps(-87.3), x));
        let m = _mm256_set1_ps(MAGIC);
        let t = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)), m), m);
        let n = _mm256_min_ps(t, _mm256_set1_ps(127.0));
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.121_944_4e-4), _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x));
        let z = _mm256_mul_ps(r, r);
        let mut q = _mm256_fmadd_ps(_mm256_set1_ps(1.987_569_1e-4), r, _mm256_set1_ps(1.398_2e-3));
        for c in [8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(c));
        }
        let p = _mm256_add_ps(_mm256_fmadd_ps(q, z, r), _mm256_set1_ps(1.0));
        let n_int = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(n, m)), _mm256_set1_epi32(MAGIC.to_bits() as i32));
        let pow = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n_int, _mm256_set1_epi32(127))));
        _mm256_mul_ps(p, pow)
    }
}

/// Outputs of `Q` queries × `X` registers of channels: `o[i][c] = Σ_j
/// p[i][j]·v[j][c]` (one FMA chain from zero over `j`), `p[i][j]` read
/// from `sᵀ[j][i]`.
///
/// # Safety
/// AVX2 + FMA; `st` holds `nk` rows `ld` apart with `Q` floats each, `v`
/// `nk` rows `v_rs` apart with `X·8` floats each, `o` `Q` rows `o_rs`
/// apart with `X·8` writable floats each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn values<const Q: usize, const X: usize>(
    (st, ld, nk, v, v_rs, o, o_rs): (*const f32, usize, usize, *const f32, usize, *mut f32, usize),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); X]; Q];
        for j in 0..nk {
            let (sr, vr) = (st.add(j * ld), v.add(j * v_rs));
            for (i, row) in acc.iter_mut().enumerate() {
                let p = _mm256_broadcast_ss(&*sr.add(i));
                for (x, a) in row.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr.add(x * LANES)), *a);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (x, a) in row.iter().enumerate() {
                _mm256_storeu_ps(o.add(i * o_rs + x * LANES), *a);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use crate::backend::cpu::math::fast_exp;

    /// The kernel takes the demo model's heads (65 tokens × 32 channels of
    /// a packed qkv, rows 384 floats apart) wherever the CPU has AVX2 +
    /// FMA, and refuses what it cannot compute to the `gemm` path's bits.
    #[test]
    fn applies_to_the_demo_models_heads_only_where_it_gives_the_same_bits() {
        use super::applies;
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("skipped: the CPU has no AVX2 + FMA");
            return;
        }
        assert!(applies(65, 65, 32, 32, 65, 1, 384, 1));
        assert!(applies(96, 96, 64, 64, 96, 1, 1536, 1));
        // Too many keys, q or v strided across channels, dv off the lanes,
        // d or nk within the gemm crate's tiny paths, one-row tiles,
        // products small enough for its horizontal kernels.
        assert!(!applies(257, 257, 64, 64, 257, 1, 1536, 1));
        assert!(!applies(65, 65, 32, 32, 65, 2, 384, 1));
        assert!(!applies(65, 65, 32, 32, 65, 1, 384, 2));
        assert!(!applies(65, 65, 32, 30, 65, 1, 384, 1));
        assert!(!applies(65, 65, 2, 32, 65, 1, 384, 1));
        assert!(!applies(65, 2, 32, 32, 65, 1, 384, 1));
        assert!(!applies(65, 65, 32, 32, 1, 1, 384, 1));
        assert!(!applies(10, 20, 32, 32, 10, 1, 384, 1));
        assert!(!applies(65, 65, 32, 8, 65, 1, 1, 1));
    }

    /// `exp8` is `fast_exp` to the bit, over the clamp range, its edges,
    /// the tails and the special values.
    #[test]
    fn exp8_is_fast_exp_lane_for_lane() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("skipped: the CPU has no AVX2 + FMA");
            return;
        }
        let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 5e-4).collect();
        xs.extend([
            -87.3,
            88.7,
            -87.31,
            88.71,
            88.03,
            -1e30,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -0.0,
            0.0,
            f32::MIN_POSITIVE,
        ]);
        for c in xs.chunks(8) {
            let mut a = [0f32; 8];
            a[..c.len()].copy_from_slice(c);
            let mut out = [0f32; 8];
            // SAFETY: AVX2 + FMA checked above; 8 floats each.
            unsafe {
                use std::arch::x86_64::{_mm256_loadu_ps, _mm256_storeu_ps};
                _mm256_storeu_ps(out.as_mut_ptr(), super::exp8(_mm256_loadu_ps(a.as_ptr())));
            }
            for (x, y) in a.iter().zip(out) {
                assert_eq!(y.to_bits(), fast_exp(*x).to_bits(), "exp8({x}) = {y}, fast_exp gives {}", fast_exp(*x));
            }
        }
    }

    /// `exp8_block` (no upper bounds) gives `fast_exp`'s bits on what it is
    /// given, inputs ≤ 0 or NaN: 0 down to past the lower clamp, -0.0,
    /// −∞, NaN and the smallest negatives.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp8_block_gives_fast_exp_bits_on_non_positive_inputs() {
        use super::{EXP_BLOCK, LANES};
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("skipped: the CPU has no AVX2 + FMA");
            return;
        }
        let mut xs: Vec<f32> = (0..=400_000).map(|i| i as f32 * -2.5e-4).collect();
        xs.extend([-87.3, -87.31, -1e30, f32::NEG_INFINITY, f32::NAN, -f32::NAN, -0.0, -f32::MIN_POSITIVE, -1e-45, -1e-20]);
        for c in xs.chunks(EXP_BLOCK * LANES) {
            let mut a = [0f32; EXP_BLOCK * LANES];
            a[..c.len()].copy_from_slice(c);
            let mut out = [0f32; EXP_BLOCK * LANES];
            // SAFETY: AVX2 + FMA checked above; EXP_BLOCK registers each way.
            unsafe {
                use std::arch::x86_64::{__m256, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps};
                let mut x: [__m256; EXP_BLOCK] = [_mm256_setzero_ps(); EXP_BLOCK];
                for (u, x) in x.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(a.as_ptr().add(u * LANES));
                }
                for (u, e) in super::exp8_block(x).into_iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(u * LANES), e);
                }
            }
            for (x, y) in a.iter().zip(out) {
                assert_eq!(y.to_bits(), fast_exp(*x).to_bits(), "exp8_block({x}) = {y}, fast_exp gives {}", fast_exp(*x));
            }
        }
    }
}
