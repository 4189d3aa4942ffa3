//! The pure N:M mask algorithms.
//!
//! They work on plain `&[f32]` weight buffers in PyTorch layout plus a
//! [`WeightLayout`](layout::WeightLayout) and know nothing of the tensor
//! engine, layers or training, so the sparse layers (SR-STE, ASP), the
//! checkpoint checks and the GPU kernel tests can all call them on whatever
//! storage they use. Masks are `Vec<f32>` of 0.0/1.0 so a layer can multiply
//! them with the weight directly.
//!
//! * [`pattern`]: a validated `N:M` pattern;
//! * [`layout`]: Linear / Conv2d weight layouts and the axis the groups run along;
//! * [`mask`]: magnitude masks (keep the N largest `|w|` per group of M);
//! * [`validate`]: checking a mask or weight against a pattern, sparsity;
//! * [`transposable`]: transposable 2:4 masks (valid along both dimensions).

pub mod layout;
pub mod mask;
pub mod pattern;
pub mod transposable;
pub mod validate;
