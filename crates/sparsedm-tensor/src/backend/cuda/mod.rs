//! The GPU backend. With the `cuda` feature (the default) a CUDA tensor's
//! buffer is a [`CudaStorage`] on a `sparsedm_kernels::Gpu`, and
//! `Storage` (storage.rs) dispatches here when its buffers live on a GPU
//! (`backend.rs` is the table of primitives); functions take buffers and
//! layouts, never a `Tensor`. The kernels and
//! cuBLAS come from `sparsedm-kernels` (see `kernels/ABI.md`). cudarc opens
//! the driver at run time, so a build with the feature still runs on machines
//! without CUDA: asking for a CUDA device there is
//! [`crate::Error::CudaUnavailable`], never a panic. Without the feature the
//! storage type is uninhabited and every CUDA request is that same error.
//!
//! One file per concern: `backend` (the `BackendStorage` table), `storage`
//! (buffers, transfers, copies, casts),
//! `kl` (tensor layouts → kernel layouts), `elementwise`, `reduce`, `gemm`
//! (matmul, linear), `nn` (softmax, normalisation), `conv`, `pool`, `index`
//! (gathers, cat, pad), `random` (Philox draws), `sparse24` (deployed 2:4 Linear weights
//! compressed by cuSPARSELt) and `fused` (the in-place
//! AdamW and EMA updates and the N:M mask, device
//! synchronisation and the allocator's peak).

mod precision;
pub use precision::{MatmulPrecision, matmul_precision, set_matmul_precision};

#[cfg(not(feature = "cuda"))]
mod disabled;
#[cfg(not(feature = "cuda"))]
pub use disabled::{CudaStorage, Sparse24, ensure_available, is_available, sparse24_compressions};
#[cfg(not(feature = "cuda"))]
pub(crate) use disabled::{peak_memory_bytes, synchronize};

#[cfg(feature = "cuda")]
mod backend;
#[cfg(feature = "cuda")]
mod conv;
#[cfg(feature = "cuda")]
mod elementwise;
#[cfg(feature = "cuda")]
mod fused;
#[cfg(feature = "cuda")]
pub(crate) use fused::{peak_memory_bytes, synchronize};
#[cfg(feature = "cuda")]
mod gemm;
#[cfg(feature = "cuda")]
mod index;
#[cfg(feature = "cuda")]
mod kl;
#[cfg(feature = "cuda")]
mod nn;
#[cfg(feature = "cuda")]
mod pool;
#[cfg(feature = "cuda")]
mod random;
#[cfg(feature = "cuda")]
mod reduce;
#[cfg(feature = "cuda")]
mod sparse24;
#[cfg(feature = "cuda")]
pub use sparse24::{Sparse24, sparse24_compressions};
#[cfg(feature = "cuda")]
mod storage;
#[cfg(feature = "cuda")]
pub use storage::{CudaStorage, ensure_available, is_available};
