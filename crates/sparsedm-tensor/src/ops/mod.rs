//! Tensor operations, one family per file. Each op computes its forward
//! value with a CPU kernel and records a backward rule written with other
//! tensor ops (or a dedicated backward kernel where that is much faster).

pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod reduce;
pub(crate) mod softmax;
pub(crate) mod view;
