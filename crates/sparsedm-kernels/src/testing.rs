//! Test support shared by every crate with GPU tests: a GPU test asks [`gpu_or_skip`] for the
//! device; on a machine without one it prints why and the test returns early, unless
//! `SPARSEDM_REQUIRE_GPU=1` is set, in which case a missing GPU fails the test (the H200 runs set
//! it, so a silently skipped suite cannot pass there).
//!
//! With `SPARSEDM_CUDA_SIM=1` device 0 is the CUDA simulator ([`crate::sim`]): the GPU tests run
//! on the CPU (CI does this); its name and [`crate::Gpu::is_simulated`] say it is not a GPU.

use std::sync::Arc;

use crate::Gpu;

/// The environment variable that turns a skip into a failure.
pub const REQUIRE_GPU_ENV: &str = "SPARSEDM_REQUIRE_GPU";

/// Whether `SPARSEDM_REQUIRE_GPU` asks for a GPU.
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Device 0, or `None` after printing the reason the test is skipped.
///
/// # Panics
/// When no GPU is usable and `SPARSEDM_REQUIRE_GPU=1`: that is the point of the variable.
pub fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    match Gpu::get(0) {
        Ok(g) => Some(g),
        Err(e) if gpu_required() => panic!("{test}: {REQUIRE_GPU_ENV}=1 but no GPU is usable: {e}"),
        Err(e) => {
            eprintln!("skipped {test}: no usable GPU ({e})");
            None
        }
    }
}
