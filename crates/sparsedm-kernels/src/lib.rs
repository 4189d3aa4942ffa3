//! The safe GPU layer of sparsedm, usable on its own by crates that want only the kernels.
//!
//! - [`Gpu`] (`device.rs`): one shared handle per device — context, one stream, the PTX modules
//!   of `kernels/` (embedded at build time by [`ptx`]), a cuBLAS handle and a caching allocator
//!   (`pool.rs`, [`DeviceBuffer`]).
//! - [`ops`]: typed launchers, one file per kernel module of `kernels/ABI.md`; each checks that
//!   every buffer holds what the kernel will touch before launching, so the API is safe.
//! - [`gemm`]: row-major (batched) GEMM through cuBLAS, f32/f16/bf16 in, f32 accumulate.
//! - [`sparse24`]: cuSPARSELt 2:4 SpMM (weights compressed once, plans cached per row count);
//!   [`linear24`]: a 2:4 Linear that takes the faster of SpMM and cuBLAS per problem, timed once
//!   and remembered on disk by [`dispatch`]; [`timing`]: CUDA-event timing. Models reach
//!   cuSPARSELt through `sparsedm-tensor`'s `nm_cuda` (the layers' deployed path); the paper's
//!   Table 3 is measured on the model's own block by `sparsedm repro table3`.
//! - [`abi`]: the Rust mirror of the kernels' structs and op codes.
//! - [`sim`]: the CUDA simulator, a second driver behind [`Gpu`] selected by
//!   `SPARSEDM_CUDA_SIM=1`: the same kernels compiled for the CPU, cuBLAS and cuSPARSELt computed
//!   on the host, with the checks a real GPU would fail on.
//!
//! Nothing here links CUDA at build time: cudarc opens the driver and libraries when a [`Gpu`]
//! is first requested, and a machine without them gets [`KernelsError::Unavailable`].

pub mod abi;
mod device;
pub mod dispatch;
mod dtype;
mod error;
pub mod gemm;
mod launch;
pub mod linear24;
pub mod ops;
mod pool;
pub mod ptx;
pub mod sim;
pub mod sparse24;
pub mod testing;
pub mod timing;

pub use device::{BLOCK, Gpu, MAX_GRID, device_count, grid_for, grid_rows, is_available};
pub use dtype::GpuDType;
pub use error::{KernelsError, Result};
pub use pool::{DeviceBuffer, PoolStats};
