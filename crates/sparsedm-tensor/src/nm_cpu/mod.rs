//! N:M sparse inference on the CPU: a compressed weight format and SpMM
//! kernels for `Y = X·Wᵀ + b` (AVX-512, AVX2+FMA chosen at run time, a
//! portable fallback), and a per-shape choice between them and the dense
//! GEMM.
//!
//! - [`NmWeight`]: the `n` kept values of every group of `m` input columns
//!   (`m ≤ 32`) and their columns, blocked over output rows for the kernel;
//!   built from a masked dense weight (a non-N:M weight is refused, naming
//!   row and group) and expanded back.
//! - [`spmm`] / [`spmm_with`]: the kernel, with the best or a chosen [`Isa`].
//! - [`NmLinear`]: what an eval-mode Linear with an N:M weight calls; its
//!   [`NmLinear::forward`] picks the faster of [`dense_linear`] and [`spmm`]
//!   once per shape and caches the choice.
//! - [`NmConv2d`]: an eval-mode Conv2d with an N:M weight (groups along
//!   input channels): on AVX2 the row-wise kernel straight from and to
//!   NCHW (`conv_rows.rs`), elsewhere im2col in channel-last order and the
//!   same kernel as a Linear; its own per-shape choice against the dense
//!   convolution.
//! - [`nm_mlp_forward`]: two N:M Linears with an activation between them
//!   (U-ViT's MLP), fused tile by tile when that is faster than running
//!   them apart.
//! - [`NmFuse`]: a pre-norm block's layer norm (of the input) and residual
//!   (added to the output) taken into one call
//!   ([`NmLinear::forward_tensor_fused`], [`nm_mlp_forward_fused`]); the
//!   row-wise kernel does both tile by tile, with the same bits as the
//!   separate ops.
//! - [`force_path`]: pins every choice to one path (tests, benchmarks).
//! - [`nm_checkpoint_bytes`] / [`load_nm_checkpoint_bytes`]: compressed N:M
//!   checkpoints (kept values + packed positions in safetensors).
//!
//! ```
//! use sparsedm_tensor::nm_cpu::{NmLinear, NmWeight};
//! // 2 outputs, 4 inputs, 2:4: at most two non-zeros per group of 4.
//! let w = [1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 0.0, 0.0];
//! let layer = NmLinear::new(&w, 2, 4, Some(&[0.5, -0.5]), 2, 4)?;
//! let mut y = [0.0; 2];
//! layer.forward(&[1.0, 1.0, 1.0, 1.0], 1, &mut y)?;
//! assert_eq!(y, [3.5, 2.5]);
//! assert_eq!(layer.weight().expand(), w);
//! assert!(NmWeight::compress(&[1.0, 1.0, 1.0, 0.0], 1, 4, 2, 4).is_err());
//! # Ok::<(), sparsedm_tensor::Error>(())
//! ```

mod checkpoint;
mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_rows;
mod dispatch;
mod format;
mod fuse;
mod portable;
mod rowwise;
#[cfg(target_arch = "x86_64")]
mod simd_avx2;
#[cfg(target_arch = "x86_64")]
mod simd_avx512;
/// The 8×8-transposing panel build, shared with the short-sequence attention.
#[cfg(target_arch = "x86_64")]
pub(crate) use simd_avx2::panel_avx;
mod spmm;

pub use checkpoint::{
    NM_CHECKPOINT_KEY, NmLoaded, NmValueDtype, is_nm_checkpoint, is_nm_checkpoint_file, load_nm_checkpoint, load_nm_checkpoint_bytes,
    nm_checkpoint_bytes, nm_checkpoint_bytes_with_metadata, save_nm_checkpoint,
};
pub use conv::{NmConv2d, chosen_conv_path};
pub use dispatch::{
    LayerCalls, MlpActivation, NmLinear, NmPath, ShapeKey, chosen_path, clear_choices, dense_linear, file_choice, force_path, forced_path,
    layer_calls, nm_mlp_forward, nm_mlp_forward_fused, nm_mlp_fused_with, nm_mlp_with, shape_key,
};
pub use format::{MAX_M, NmWeight, ROW_BLOCK};
pub use fuse::{NmFuse, NormParams, RowNorm};
pub use spmm::{Isa, NmKernel, spmm, spmm_fused_with, spmm_kernel_with, spmm_with, spmm_with_slab};
