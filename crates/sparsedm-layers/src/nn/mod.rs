//! The layers the models are built from, and where their parameters live.
//!
//! * [`linear`], [`conv2d`]: the layers whose weight can be N:M sparse;
//!   each owns its weight through a [`SparseSlot`](sparse::SparseSlot);
//! * [`sparse`]: the sparse slot and the training modes ([`SparseMode`](sparse::SparseMode):
//!   SR-STE, STE, ASP's fixed mask, untrained masks) that turn the dense weight
//!   into the one the forward pass uses;
//! * `deployed`: inference (no grad) with an N:M weight runs the N:M kernels
//!   on a weight compressed once per weight version (CPU: `nm_cpu`; CUDA:
//!   cuSPARSELt 2:4);
//! * [`norm`], [`attention`]: the dense layers (norms, embedding, attention);
//! * [`init`]: parameter initialisers;
//! * [`store`]: the [`ParamStore`](store::ParamStore) naming every parameter like
//!   the reference `state_dict()` and loading checkpoints strictly.

pub mod attention;
pub mod conv2d;
pub mod deployed;
pub mod init;
pub mod linear;
pub mod norm;
pub mod sparse;
pub mod store;
