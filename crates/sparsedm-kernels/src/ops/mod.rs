//! Typed, checked launchers: one function per kernel family of kernels/ABI.md, one file per PTX
//! module. Each checks its buffers against the elements the kernel will touch, then launches on
//! the device's stream (asynchronously: errors of the kernel itself surface at the next
//! synchronizing call).

pub mod conv;
pub mod copy;
pub mod elementwise;
pub mod index;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod rng;
pub mod softmax;
pub mod sparse;
