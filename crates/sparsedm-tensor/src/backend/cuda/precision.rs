//! The precision of CUDA matrix products, one setting for the whole crate.
//!
//! Mixed-precision training keeps f32 master weights, f32 activations and f32
//! reductions, and runs only the GEMMs (matmul, linear, attention, conv2d) in
//! bf16 with f32 accumulation and an f32 result: that is where tensor cores
//! pay, and where bf16's 8-bit mantissa costs least. The setting is global
//! (not per tensor) so that a model runs in either mode without changes. CPU
//! products always compute in f32 and ignore it.

use std::sync::atomic::{AtomicU8, Ordering};

/// How CUDA GEMMs treat their f32 operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulPrecision {
    /// Exact f32 (no TF32): bit-for-bit stable, the parity reference.
    #[default]
    F32,
    /// f32 operands on TF32 tensor cores (10-bit mantissa products), f32 out.
    Tf32,
    /// Operands cast to bf16 (round to nearest even), f32 accumulation and
    /// output: PyTorch's autocast for matmuls.
    Bf16,
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of every later CUDA matrix product (all threads).
pub fn set_matmul_precision(p: MatmulPrecision) {
    let v = match p {
        MatmulPrecision::F32 => 0,
        MatmulPrecision::Tf32 => 1,
        MatmulPrecision::Bf16 => 2,
    };
    PRECISION.store(v, Ordering::Relaxed);
}

/// The current CUDA matrix-product precision (default [`MatmulPrecision::F32`]).
pub fn matmul_precision() -> MatmulPrecision {
    match PRECISION.load(Ordering::Relaxed) {
        1 => MatmulPrecision::Tf32,
        2 => MatmulPrecision::Bf16,
        _ => MatmulPrecision::F32,
    }
}
