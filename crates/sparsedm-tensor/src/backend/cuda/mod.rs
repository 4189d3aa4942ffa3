//! The GPU backend. With the `cuda` feature (the default) a CUDA tensor's
//! buffer is a [`CudaStorage`] on a `sparsedm_kernels::Gpu`, and the ops of
//! `crate::ops` branch here when their inputs live on a GPU; the kernels and
//! cuBLAS come from `sparsedm-kernels` (see `kernels/ABI.md`). cudarc opens
//! the driver at run time, so a build with the feature still runs on machines
//! without CUDA: asking for a CUDA device there is
//! [`crate::Error::CudaUnavailable`], never a panic. Without the feature the
//! storage type is uninhabited and every CUDA request is that same error.
//!
//! One file per concern: `storage` (buffers, transfers, copies, casts),
//! `kl` (tensor layouts → kernel layouts), `elementwise`, `reduce`, `gemm`
//! (matmul, linear), `nn` (softmax, normalisation), `conv`, `pool`, `index`
//! (gathers, cat, pad), `random` (Philox draws) and `fused` (the in-place
//! AdamW and EMA updates and the N:M mask behind [`crate::fused`], device
//! synchronisation and the allocator's peak).

mod precision;
pub use precision::{MatmulPrecision, matmul_precision, set_matmul_precision};

#[cfg(not(feature = "cuda"))]
mod disabled;
#[cfg(not(feature = "cuda"))]
pub use disabled::{CudaStorage, ensure_available, is_available};
#[cfg(not(feature = "cuda"))]
pub(crate) use disabled::{peak_memory_bytes, synchronize};

#[cfg(feature = "cuda")]
pub(crate) mod conv;
#[cfg(feature = "cuda")]
pub(crate) mod elementwise;
#[cfg(feature = "cuda")]
pub(crate) mod fused;
#[cfg(feature = "cuda")]
pub(crate) use fused::{peak_memory_bytes, synchronize};
#[cfg(feature = "cuda")]
pub(crate) mod gemm;
#[cfg(feature = "cuda")]
pub(crate) mod index;
#[cfg(feature = "cuda")]
pub(crate) mod kl;
#[cfg(feature = "cuda")]
pub(crate) mod nn;
#[cfg(feature = "cuda")]
pub(crate) mod pool;
#[cfg(feature = "cuda")]
pub(crate) mod random;
#[cfg(feature = "cuda")]
pub(crate) mod reduce;
#[cfg(feature = "cuda")]
mod storage;
#[cfg(feature = "cuda")]
pub use storage::{CudaStorage, ensure_available, is_available};
#[cfg(feature = "cuda")]
pub(crate) use storage::{gpu_of, kerr, same_gpu};
