//! The device backends, behind `Storage` (storage.rs) (the only place
//! that chooses between them). A backend knows buffers, [`crate::Layout`]s
//! and op kinds (op_kinds.rs), never a `Tensor`:
//!
//! - `api`: the [`api::BackendStorage`] contract both buffer types fulfil.
//! - [`cpu`]: host buffers and kernels (rayon, the `gemm` crate), one file
//!   per op family, plus [`cpu::nm`], the one CPU N:M mask.
//! - [`cuda`]: GPU buffers and launches through `sparsedm-kernels` with the
//!   `cuda` feature; without it an uninhabited buffer type whose device
//!   requests are [`crate::Error::CudaUnavailable`].

pub(crate) mod api;
pub mod cpu;
pub mod cuda;
