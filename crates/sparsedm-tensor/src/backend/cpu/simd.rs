//! Run-time choice of the vector instruction set for the CPU kernels' own
//! loops (element-wise maps, softmax and norm rows, the attention softmax,
//! reductions over rows, the fused optimizer updates).
//!
//! The workspace builds for baseline x86-64 (SSE2), so without this the
//! compiler vectorises those loops 4 floats wide at most, while the GEMM
//! (the `gemm` crate) already picks AVX-512 or AVX2 at run time.
//! [`vectorized`] runs a closure through a function compiled with AVX-512
//! (or AVX2 + FMA) enabled, so the closure — inlined into it — is
//! vectorised 16 (or 8) floats wide. Only the instruction selection
//! changes: Rust never contracts `a·b + c` into an FMA and the loops keep
//! their order of operations, so results are bit-identical to the
//! baseline path (tested in `tests/simd_tests.rs` of this crate by forcing
//! each level).
//!
//! The widening only happens when LLVM inlines the work into
//! `with_avx512`/`with_avx2`. A closure with a large body is called from
//! three places (the two wrappers and the baseline path) and LLVM may keep
//! it out of line at baseline width: a profile of the release binary (demo
//! U-ViT) showed that for `elementwise.rs`'s `map`/`map2` runs (GELU's erf
//! at ~6 ns an element), and a function item's `FnOnce` shim fares no
//! better. [`vectorized_with`] takes a [`Kernel`] instead, whose
//! `#[inline(always)]` `run` is inlined into each wrapper whatever its
//! size; use it for loop kernels, [`vectorized`] for small closures.

use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction set [`vectorized`] compiles for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// Baseline x86-64 (SSE2), or a non-x86 target.
    Base = 1,
    /// AVX2 + FMA.
    Avx2 = 2,
    /// AVX-512 (F, VL, DQ, BW) with AVX2 + FMA.
    Avx512 = 3,
}

/// 0: not yet detected; otherwise a `SimdLevel` discriminant.
static LEVEL: AtomicU8 = AtomicU8::new(0);

fn detect() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512 = avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512bw");
        if avx512 {
            return SimdLevel::Avx512;
        }
        if avx2 {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Base
}

/// The level in use: the best the CPU has, unless [`force_simd_level`]
/// chose another.
pub fn simd_level() -> SimdLevel {
    match LEVEL.load(Ordering::Relaxed) {
        3 => SimdLevel::Avx512,
        2 => SimdLevel::Avx2,
        1 => SimdLevel::Base,
        _ => {
            let l = detect();
            LEVEL.store(l as u8, Ordering::Relaxed);
            l
        }
    }
}

/// Uses `level` from now on (tests and benchmarks comparing the paths), or
/// the detected best again with `None`. A level the CPU lacks is refused:
/// the returned level is the one in use.
pub fn force_simd_level(level: Option<SimdLevel>) -> SimdLevel {
    let best = detect();
    let l = match level {
        Some(l) if (l as u8) <= (best as u8) => l,
        _ => best,
    };
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}

/// Runs `f` compiled for the level in use (see the module doc).
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match simd_level() {
            // SAFETY: the level is only ever one the CPU was detected to
            // support (`detect`, `force_simd_level`).
            SimdLevel::Avx512 => return unsafe { with_avx512(f) },
            // SAFETY: as above.
            SimdLevel::Avx2 => return unsafe { with_avx2(f) },
            SimdLevel::Base => {}
        }
    }
    f()
}

/// A loop kernel for [`vectorized_with`]: its arguments as fields and the
/// loop in [`Kernel::run`], which implementations mark `#[inline(always)]`
/// so that each instruction set's wrapper gets its own inlined, vectorised
/// copy of the loop whatever its size (see the module doc).
pub(crate) trait Kernel {
    type Output;
    /// The loop; implementations are `#[inline(always)]`.
    fn run(self) -> Self::Output;
}

/// Runs `kernel` compiled for the level in use.
#[inline(always)]
pub(crate) fn vectorized_with<K: Kernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        match simd_level() {
            // SAFETY: the level is only ever one the CPU was detected to
            // support (`detect`, `force_simd_level`).
            SimdLevel::Avx512 => return unsafe { run_avx512(kernel) },
            // SAFETY: as above.
            SimdLevel::Avx2 => return unsafe { run_avx2(kernel) },
            SimdLevel::Base => {}
        }
    }
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
