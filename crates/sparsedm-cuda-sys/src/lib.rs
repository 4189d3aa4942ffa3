//! Raw CUDA bindings of sparsedm. Nothing here needs a CUDA toolkit to build, and nothing is
//! linked at build time: every NVIDIA library is opened at run time, so the workspace builds and
//! tests on machines without a GPU (see shared/GPU.md §1 and §3).
//!
//! - [`cudarc`]: re-exported so that upper crates use this crate's exactly pinned version
//!   (`=0.19.10`, driver/cuBLAS/cuBLASLt/NVRTC, dynamic loading, CUDA 13.0 API).
//! - [`cusparselt`]: bindgen bindings of cuSPARSELt 0.8 (committed; `cargo xtask bindgen`
//!   regenerates them) and a loader that checks the library's version against the bindings'.
//! - [`probe`]: presence checks of the driver, cuBLAS and NVRTC that return an [`Error`] instead of
//!   letting cudarc panic on a missing library.
//!
//! Safe wrappers live in upper crates; this one only makes loading fail cleanly.

pub use cudarc;

pub mod cusparselt;
mod error;
pub mod probe;

pub use error::Error;

/// The bindgen output (see the file's header for how it is regenerated). Kept private: its items
/// are re-exported by [`cusparselt`]. Generated code: C naming, no `// SAFETY:` comments on its
/// mechanical `unsafe` blocks (each only forwards to a function pointer of the same signature),
/// and the loader struct holds a `libloading::Library`, which has no useful `Debug`.
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_debug_implementations,
    clippy::missing_safety_doc,
    clippy::undocumented_unsafe_blocks,
    clippy::useless_transmute,
    clippy::ptr_offset_with_cast
)]
mod cusparselt_bindings;
