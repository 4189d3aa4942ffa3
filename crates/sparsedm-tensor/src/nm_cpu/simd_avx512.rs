//! The AVX-512F back-end: 16 lanes, tiles of up to 4 × 16 = 64 tokens
//! (4 row × 4 register accumulators of the 32 zmm registers).

use super::simd_avx2::panel_avx;
use super::spmm::{Item, Simd, item_generic};
use std::arch::x86_64::{
    __m512, _mm_storeu_ps, _mm512_add_ps, _mm512_castps512_ps128, _mm512_extractf32x4_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps,
    _mm512_shuffle_ps, _mm512_storeu_ps, _mm512_unpackhi_ps, _mm512_unpacklo_ps,
};

/// Marker type of the AVX-512F register set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512;

impl Simd for Avx512 {
    const LANES: usize = 16;
    const VMAX: usize = 4;
    /// Zen 4 runs one 512-bit FMA per cycle at 4 cycles of latency, so a
    /// full tile's 4 registers per row already keep it busy and full tiles
    /// are not unrolled, as tuned there (Intel's two 512-bit FMA pipes
    /// would want 8: not measured).
    const CHAINS: usize = 4;
    type V = __m512;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: AVX-512F available and 16 floats readable at `p` (trait contract).
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: AVX-512F available and 16 floats writable at `p` (trait contract).
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn store_t4(a: [__m512; 4], y: *mut f32, ldy: usize) {
        // SAFETY: AVX-512F available (trait contract); the 16 runs of 4
        // floats at `y + i·ldy` are writable (trait contract).
        unsafe {
            // Per 128-bit lane L, output j = (a0, a1, a2, a3) at token 4L + j.
            let t0 = _mm512_unpacklo_ps(a[0], a[1]);
            let t1 = _mm512_unpackhi_ps(a[0], a[1]);
            let t2 = _mm512_unpacklo_ps(a[2], a[3]);
            let t3 = _mm512_unpackhi_ps(a[2], a[3]);
            let u = [
                _mm512_shuffle_ps::<0x44>(t0, t2),
                _mm512_shuffle_ps::<0xEE>(t0, t2),
                _mm512_shuffle_ps::<0x44>(t1, t3),
                _mm512_shuffle_ps::<0xEE>(t1, t3),
            ];
            for (j, u) in u.into_iter().enumerate() {
                _mm_storeu_ps(y.add(j * ldy), _mm512_castps512_ps128(u));
                _mm_storeu_ps(y.add((4 + j) * ldy), _mm512_extractf32x4_ps::<1>(u));
                _mm_storeu_ps(y.add((8 + j) * ldy), _mm512_extractf32x4_ps::<2>(u));
                _mm_storeu_ps(y.add((12 + j) * ldy), _mm512_extractf32x4_ps::<3>(u));
            }
        }
    }
    #[inline(always)]
    unsafe fn build_panel(x: *const f32, ldx: usize, rt: usize, nt: usize, inp: usize, p: *mut f32, t: usize) {
        // SAFETY: AVX (implied by the AVX2 this back-end's entry point
        // enables) and the extents of the trait contract.
        unsafe { panel_avx(x, ldx, rt, nt, inp, p, t) }
    }
}

/// One work item compiled for AVX-512F.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA and `it` satisfies the invariants of [`Item`].
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn item(it: &Item) {
    // SAFETY: forwarded from the caller; this function enables AVX-512F
    // (and AVX2, FMA) for the inlined generic kernel.
    unsafe { item_generic::<Avx512>(it) }
}
