//! The AVX2 + FMA back-end: 8 lanes, tiles of up to 3 × 8 = 24 tokens
//! (4 row × 3 register accumulators of the 16 ymm registers).

use super::spmm::{Item, Simd, item_generic};
use std::arch::x86_64::{__m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps};

/// Marker type of the AVX2 + FMA register set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2;

impl Simd for Avx2 {
    const LANES: usize = 8;
    const VMAX: usize = 3;
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
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller guarantees FMA (trait contract).
        unsafe { _mm256_fmadd_ps(a, b, c) }
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
