//! The portable back-end: arrays of 8 floats that the compiler vectorises
//! for the build's baseline target (SSE2 on x86-64, NEON on aarch64).
//! Multiply and add are separate (a fused `mul_add` without hardware FMA
//! would call into libm), so results differ from the FMA paths only by
//! rounding.

use super::spmm::{Item, Simd, item_generic};

/// Marker type of the portable "register" of 8 floats.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    const VMAX: usize = 2;
    /// Not tuned (the fallback).
    const CHAINS: usize = 8;
    type V = [f32; 8];
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        // SAFETY: 8 floats readable at `p` (trait contract).
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        // SAFETY: 8 floats writable at `p` (trait contract).
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn add(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    unsafe fn fma(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
}

/// One work item with the portable back-end.
///
/// # Safety
/// `it` satisfies the invariants of [`Item`].
pub(crate) unsafe fn item(it: &Item) {
    // SAFETY: forwarded from the caller; no CPU feature is required.
    unsafe { item_generic::<Portable>(it) }
}
