//! Tensor operations, one family per file, device-free: each op checks
//! shapes, broadcasts layouts, calls one backend primitive through
//! `Storage` (storage.rs) and records one autograd node whose backward
//! rule is built from tensor ops or backend primitives.

pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod fused;
pub(crate) mod index;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod random;
pub(crate) mod reduce;
pub(crate) mod softmax;
pub(crate) mod view;
