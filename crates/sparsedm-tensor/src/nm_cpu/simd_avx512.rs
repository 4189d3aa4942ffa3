//! The AVX-512F back-end: 16 lanes, tiles of up to 4 × 16 = 64 tokens
//! (4 row × 4 register accumulators of the 32 zmm registers).

use super::spmm::{Item, Simd, item_generic};
use std::arch::x86_64::{__m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps};

/// Marker type of the AVX-512F register set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512;

impl Simd for Avx512 {
    const LANES: usize = 16;
    const VMAX: usize = 4;
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
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
}

/// One work item compiled for AVX-512F.
///
/// # Safety
/// The CPU has AVX-512F and `it` satisfies the invariants of [`Item`].
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn item(it: &Item) {
    // SAFETY: forwarded from the caller; this function enables AVX-512F for
    // the inlined generic kernel.
    unsafe { item_generic::<Avx512>(it) }
}
