//! The CUDA simulator: a second driver behind [`crate::Gpu`], selected by `SPARSEDM_CUDA_SIM=1`,
//! so that everything above the driver (launchers, allocator, GEMM, 2:4 SpMM, CUDA tensors and
//! all that uses them) runs and is tested on a machine without a GPU, as Numba's
//! `NUMBA_ENABLE_CUDASIM` and Triton's `TRITON_INTERPRET` do for theirs.
//!
//! - Device memory is host memory ([`memory`]): bounds and use-after-free checks, NaN poisoning.
//! - Launches run the kernels of `kernels/*.cu` compiled for the CPU under `kernels/emu/cuda_emu.h`
//!   ([`compile`], [`launch`], [`catalog`]): blocks in parallel, a block's threads as fibers.
//! - cuBLAS ([`blas`]) and cuSPARSELt ([`sparselt`]) are computed on the host with the libraries'
//!   semantics and argument checks.
//! - Everything is synchronous: a call returns when its work is done.
//!
//! A simulated device says so: once on stderr, in its name ([`DEVICE_NAME`]) and through
//! [`crate::Gpu::is_simulated`]; device timing ([`crate::timing`]) refuses to run on it, so a
//! simulated run cannot pass for GPU measurements.

pub(crate) mod blas;
pub(crate) mod catalog;
pub(crate) mod compile;
pub(crate) mod launch;
pub(crate) mod memory;
pub(crate) mod sparselt;

use std::sync::{Arc, Once};

pub use launch::SimArg;

/// The environment variable that selects the simulator.
pub const SIM_ENV: &str = "SPARSEDM_CUDA_SIM";

/// The name a simulated device reports (never the name of a GPU).
pub const DEVICE_NAME: &str = "CUDA simulator (CPU) — not a GPU";

/// Whether `SPARSEDM_CUDA_SIM` asks for the simulator (`1` or `true`).
pub fn enabled() -> bool {
    std::env::var(SIM_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The state of one simulated device.
#[derive(Debug, Default)]
pub(crate) struct SimDevice {
    pub(crate) memory: Arc<memory::SimMemory>,
    pub(crate) modules: launch::Modules,
}

impl SimDevice {
    /// A simulated device, or why there cannot be one (no C++ compiler). Announces itself on
    /// stderr once per process.
    pub(crate) fn open() -> std::result::Result<SimDevice, String> {
        compile::compiler()?;
        static BANNER: Once = Once::new();
        BANNER.call_once(|| {
            eprintln!(
                "sparsedm: {SIM_ENV}=1: CUDA device 0 is a simulator running the kernels on the CPU — not a GPU; \
                 its results test correctness only, never speed"
            )
        });
        Ok(SimDevice::default())
    }
}

#[cfg(test)]
mod tests;
