//! `sparsedm-tensor`: n-dimensional f32 tensors with reverse-mode autograd,
//! the engine every other sparsedm crate is written on.
//!
//! - [`Tensor`]: shared flat storage plus a [`Layout`] (shape, strides,
//!   offset); views (transpose, permute, narrow, broadcast, reshape of
//!   contiguous data) never copy.
//! - Devices: ops (`ops/`) are device-free; [`storage::Storage`] is the one
//!   place that dispatches on the device, to a backend ([`backend`]) that
//!   sees buffers, layouts and op kinds, never a `Tensor`. The CPU backend
//!   (rayon, the `gemm` crate) is always there; the CUDA backend ([`cuda`],
//!   feature `cuda`, on by default) runs the same primitives on a GPU through
//!   `sparsedm-kernels` and reports itself unavailable, as an error, on
//!   machines without one. [`set_matmul_precision`] picks f32, TF32 or bf16
//!   CUDA matrix products. [`Tensor::adamw_step_`], [`Tensor::ema_update_`]
//!   and [`Tensor::nm_mask`] are fused in-place updates and the N:M mask on
//!   any device; [`nm`] is the N:M rule on plain slices.
//! - Deployed N:M inference: [`nm_cpu`] (compressed N:M weights and SpMM
//!   kernels, any N:M with M ≤ 32, Linear and Conv2d) and [`nm_cuda`] (2:4
//!   through cuSPARSELt); [`Tensor::version`] stamps a buffer's contents so
//!   the layers can keep a compressed weight until the weight changes.
//! - Autograd: ops on tracked tensors record a node; [`Tensor::backward`]
//!   returns a [`GradStore`] of the variables' gradients. [`no_grad`] turns
//!   recording off (inference, optimizer and EMA updates).
//! - Randomness is explicit: a counter-based Philox [`Rng`] is passed in.
//! - Every fallible op returns [`Result`]; a shape mismatch is an
//!   [`Error`] naming the op and the shapes, never a panic.
//!
//! ```
//! use sparsedm_tensor::{Device, Tensor};
//! let dev = Device::Cpu;
//! let w = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], &dev)?.to_var();
//! let x = Tensor::from_vec(vec![1.0, -1.0], &[1, 2], &dev)?;
//! let loss = x.matmul(&w)?.relu()?.sum_all()?;
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().to_vec_f32()?, vec![0.0, 0.0, 0.0, 0.0]);
//! # Ok::<(), sparsedm_tensor::Error>(())
//! ```

pub mod autograd;
pub mod backend;
mod device;
mod dtype;
pub mod error;
pub mod host_alloc;
pub mod host_threads;
pub mod io;
mod layout;
pub mod nm_cpu;
pub mod nm_cuda;
pub mod nm_cuda_conv;
pub(crate) mod op_kinds;
mod ops;
pub mod pth;
pub mod rng;
pub mod storage;
mod tensor;
pub mod testing;
mod weights;

/// The one CPU implementation of the N:M magnitude mask (plain slices).
pub use backend::cpu::nm;
/// The vector instruction set of the CPU kernels' own loops (chosen at run time).
pub use backend::cpu::simd;
/// The GPU backend's public face (availability, matmul precision).
pub use backend::cuda;

pub use autograd::{GradStore, NoGradGuard, is_grad_enabled, no_grad};
pub use cuda::{MatmulPrecision, matmul_precision, set_matmul_precision};
pub use device::Device;
pub use dtype::DType;
pub use error::{Error, Result};
pub use io::{load_safetensors, load_safetensors_metadata, safetensors_bytes, safetensors_len, save_safetensors, write_atomic};
pub use layout::{Layout, broadcast_shapes, contiguous_strides};
pub use op_kinds::AdamWScalars;
pub use rng::Rng;
pub use tensor::Tensor;
pub use weights::{WeightsFormat, load_weights, load_weights_metadata, weights_format};
