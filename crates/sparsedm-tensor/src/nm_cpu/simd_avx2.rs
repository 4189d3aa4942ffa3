//! The AVX2 + FMA back-end: 8 lanes, tiles of up to 2 × 8 = 16 tokens
//! (4 row × 2 register accumulators of the 16 ymm registers).

use super::spmm::{Item, Simd, item_generic, panel_scalar};
use std::arch::x86_64::{
    __m256, _mm_storeu_ps, _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
    _mm256_permute2f128_ps, _mm256_set1_ps, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
};

/// Marker type of the AVX2 + FMA register set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2;

impl Simd for Avx2 {
    const LANES: usize = 8;
    const VMAX: usize = 2;
    /// Two FMA pipes × 5 cycles of latency on Zen 2 (4 on Intel's AVX2
    /// cores). On a 2-core Zen 2 the unrolled runs lifted U-ViT-S/2's layer
    /// shapes from 57-78 to 82-88 GFLOP/s at 2:4 and from 34-47 to 49-54 at
    /// 1:8 (`nm_spmm_table`, noisy machine); the demo model's in=128
    /// shapes, whose runs are short, stayed alike.
    const CHAINS: usize = 10;
    type V = __m256;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: the caller guarantees AVX (trait contract).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: AVX available and 8 floats readable at `p` (trait contract).
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: AVX available and 8 floats writable at `p` (trait contract).
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX (trait contract).
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller guarantees FMA (trait contract).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn store_t4(a: [__m256; 4], y: *mut f32, ldy: usize) {
        // SAFETY: AVX available (trait contract); the 8 runs of 4 floats at
        // `y + i·ldy` are writable (trait contract).
        unsafe {
            let [u0, u1, u2, u3] = transpose4_in_lanes(a);
            for (j, u) in [u0, u1, u2, u3].into_iter().enumerate() {
                _mm_storeu_ps(y.add(j * ldy), _mm256_castps256_ps128(u));
                _mm_storeu_ps(y.add((4 + j) * ldy), _mm256_extractf128_ps::<1>(u));
            }
        }
    }
    #[inline(always)]
    unsafe fn build_panel(x: *const f32, ldx: usize, rt: usize, nt: usize, inp: usize, p: *mut f32, t: usize) {
        // SAFETY: AVX available and the extents of the trait contract.
        unsafe { panel_avx(x, ldx, rt, nt, inp, p, t) }
    }
}

/// Within each 128-bit lane, the 4×4 transpose of 4 registers: output `j`
/// holds `(a0[i], a1[i], a2[i], a3[i])` in the lane of token `i = 4·lane + j`.
///
/// # Safety
/// The CPU has AVX.
#[inline(always)]
pub(crate) unsafe fn transpose4_in_lanes(a: [__m256; 4]) -> [__m256; 4] {
    // SAFETY: register-only AVX shuffles; the caller guarantees AVX.
    unsafe {
        let t0 = _mm256_unpacklo_ps(a[0], a[1]);
        let t1 = _mm256_unpackhi_ps(a[0], a[1]);
        let t2 = _mm256_unpacklo_ps(a[2], a[3]);
        let t3 = _mm256_unpackhi_ps(a[2], a[3]);
        [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ]
    }
}

/// [`Simd::build_panel`] by 8×8 register transposes (8 tokens × 8
/// columns per step), scalar for the ragged edges and zero padding.
///
/// Columns outer, tokens inner: each step of 8 columns fills 8 whole panel
/// rows (`8·t` contiguous floats) while the `x` lines it reads (one per
/// token, used again by the next step) stay in L1. The other order wrote
/// 32-byte pieces scattered over the whole panel (larger than L1) and was
/// half of the kernel's time at the demo model's fc2 (in 512, out 128).
///
/// # Safety
/// The CPU has AVX; extents as [`Simd::build_panel`].
#[inline(always)]
pub(crate) unsafe fn panel_avx(x: *const f32, ldx: usize, rt: usize, nt: usize, inp: usize, p: *mut f32, t: usize) {
    let (i8, k8) = (rt / 8 * 8, inp / 8 * 8);
    // SAFETY: loads read rows `i < i8 ≤ rt`, columns `k < k8 ≤ inp`; stores
    // write `p[k·t + i]` with `k < inp`, `i < nt ≤ t`: inside the caller's extents.
    unsafe {
        for k in (0..k8).step_by(8) {
            for i in (0..i8).step_by(8) {
                let r: [__m256; 8] = std::array::from_fn(|q| _mm256_loadu_ps(x.add((i + q) * ldx + k)));
                let lo = transpose4_in_lanes([r[0], r[1], r[2], r[3]]);
                let hi = transpose4_in_lanes([r[4], r[5], r[6], r[7]]);
                for j in 0..4 {
                    // Column k+j: tokens i..i+4 from lo's lane 0, i+4..i+8 from hi's lane 0.
                    _mm256_storeu_ps(p.add((k + j) * t + i), _mm256_permute2f128_ps::<0x20>(lo[j], hi[j]));
                    _mm256_storeu_ps(p.add((k + 4 + j) * t + i), _mm256_permute2f128_ps::<0x31>(lo[j], hi[j]));
                }
            }
        }
        // The columns past the last multiple of 8, for the full token blocks.
        panel_scalar(x, ldx, i8, i8, k8, inp, p, t);
        // Remaining real tokens, then the zero padding.
        panel_scalar(x.add(i8 * ldx), ldx, rt - i8, rt - i8, 0, inp, p.add(i8), t);
        panel_scalar(x, ldx, 0, nt - rt, 0, inp, p.add(rt), t);
    }
}

/// One work item compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA and `it` satisfies the invariants of [`Item`].
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn item(it: &Item) {
    // SAFETY: forwarded from the caller; this function enables AVX2 and FMA
    // for the inlined generic kernel.
    unsafe { item_generic::<Avx2>(it) }
}
