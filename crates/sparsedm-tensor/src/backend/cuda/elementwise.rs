//! Element-wise CUDA ops: unary maps, broadcasting binary maps and `where`,
//! each one kernel reading strided (and zero-stride broadcast) inputs in
//! place and writing a contiguous f32 output. The fused backward kinds the
//! kernels have no op code for are composed here from two or three kernels.

use sparsedm_kernels::abi::{binary as b, unary as u};
use sparsedm_kernels::{GpuDType, ops};

use crate::backend::cuda::kl;
use crate::backend::cuda::storage::{CudaStorage, kerr, same_gpu};
use crate::op_kinds::{BinaryKind, UnaryKind};
use crate::{DType, Error, Layout, Result};

fn check_f32(op: &'static str, bufs: &[&CudaStorage]) -> Result<()> {
    for s in bufs {
        if s.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: s.dtype(), expected: "f32" });
        }
    }
    Ok(())
}

/// Op code and scalar parameters of a unary kernel.
fn unary_code(k: UnaryKind) -> (i32, f32, f32) {
    match k {
        UnaryKind::Neg => (u::NEG, 0.0, 0.0),
        UnaryKind::Exp => (u::EXP, 0.0, 0.0),
        UnaryKind::Log => (u::LOG, 0.0, 0.0),
        UnaryKind::Sqrt => (u::SQRT, 0.0, 0.0),
        UnaryKind::Rsqrt => (u::RSQRT, 0.0, 0.0),
        UnaryKind::Powf(p) => (u::POWF, p, 0.0),
        UnaryKind::Sqr => (u::SQR, 0.0, 0.0),
        UnaryKind::Abs => (u::ABS, 0.0, 0.0),
        UnaryKind::Tanh => (u::TANH, 0.0, 0.0),
        UnaryKind::Sigmoid => (u::SIGMOID, 0.0, 0.0),
        UnaryKind::Relu => (u::RELU, 0.0, 0.0),
        UnaryKind::Gelu => (u::GELU, 0.0, 0.0),
        UnaryKind::Silu => (u::SILU, 0.0, 0.0),
        UnaryKind::Affine(m, a) => (u::AFFINE, m, a),
        UnaryKind::Clamp(lo, hi) => (u::CLAMP, lo, hi),
    }
}

/// One unary kernel (`code`, scalars `a`, `b`) over the view `l`.
fn unary_kernel(x: &CudaStorage, l: &Layout, (code, a, b): (i32, f32, f32), op: &'static str) -> Result<CudaStorage> {
    let gpu = same_gpu(op, &[x])?;
    check_f32(op, &[x])?;
    let [xl] = kl::layouts(op, l.shape(), [l.strides()], [l.offset()])?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, l.elem_count(), op)?;
    ops::elementwise::unary(&gpu, GpuDType::F32, code, a, b, x.buffer(), &xl, out.buffer_mut()).map_err(kerr(op))?;
    Ok(out)
}

/// One binary kernel `code` over two views of the output shape.
fn binary_kernel(a: &CudaStorage, la: &Layout, rhs: &CudaStorage, lb: &Layout, code: i32, op: &'static str) -> Result<CudaStorage> {
    let gpu = same_gpu(op, &[a, rhs])?;
    check_f32(op, &[a, rhs])?;
    let shape = la.shape();
    let [ka, kb] = kl::layouts(op, shape, [la.strides(), lb.strides()], [la.offset(), lb.offset()])?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, la.elem_count(), op)?;
    ops::elementwise::binary(&gpu, GpuDType::F32, code, a.buffer(), &ka, rhs.buffer(), &kb, out.buffer_mut()).map_err(kerr(op))?;
    Ok(out)
}

/// `kind(x)` into new contiguous f32 storage.
pub(crate) fn unary(x: &CudaStorage, l: &Layout, kind: UnaryKind, op: &'static str) -> Result<CudaStorage> {
    unary_kernel(x, l, unary_code(kind), op)
}

/// `kind(a, b)` over two views of the output shape.
pub(crate) fn binary(
    a: &CudaStorage,
    la: &Layout,
    rhs: &CudaStorage,
    lb: &Layout,
    kind: BinaryKind,
    op: &'static str,
) -> Result<CudaStorage> {
    let dense = Layout::contiguous(la.shape());
    // `a ∘ t(b)`: a unary recipe `t` on `b`, then one binary kernel.
    let on_b = |steps: &[(i32, f32, f32)], code: i32| -> Result<CudaStorage> {
        let mut t = unary_kernel(rhs, lb, steps[0], op)?;
        for &s in &steps[1..] {
            t = unary_kernel(&t, &dense, s, op)?;
        }
        binary_kernel(a, la, &t, &dense, code, op)
    };
    match kind {
        BinaryKind::Add => binary_kernel(a, la, rhs, lb, b::ADD, op),
        BinaryKind::Sub => binary_kernel(a, la, rhs, lb, b::SUB, op),
        BinaryKind::Mul => binary_kernel(a, la, rhs, lb, b::MUL, op),
        BinaryKind::Div => binary_kernel(a, la, rhs, lb, b::DIV, op),
        BinaryKind::Max => binary_kernel(a, la, rhs, lb, b::MAX, op),
        BinaryKind::Ge => binary_kernel(a, la, rhs, lb, b::GE, op),
        BinaryKind::GeluBwd => binary_kernel(a, la, rhs, lb, b::GELU_BWD, op),
        BinaryKind::SiluBwd => binary_kernel(a, la, rhs, lb, b::SILU_BWD, op),
        BinaryKind::TanhBwd => binary_kernel(a, la, rhs, lb, b::TANH_BWD, op),
        BinaryKind::SigmoidBwd => binary_kernel(a, la, rhs, lb, b::SIGMOID_BWD, op),
        BinaryKind::ReluBwd => binary_kernel(a, la, rhs, lb, b::RELU_BWD, op),
        // −a/b = neg(a/b)
        BinaryKind::NegDiv => unary_kernel(&binary_kernel(a, la, rhs, lb, b::DIV, op)?, &dense, (u::NEG, 0.0, 0.0), op),
        // a·(1 − b)
        BinaryKind::MulComplement => on_b(&[(u::AFFINE, -1.0, 1.0)], b::MUL),
        // 0.5·a/y
        BinaryKind::SqrtBwd => unary_kernel(&binary_kernel(a, la, rhs, lb, b::DIV, op)?, &dense, (u::AFFINE, 0.5, 0.0), op),
        // a·(−0.5·y³)
        BinaryKind::RsqrtBwd => on_b(&[(u::POWF, 3.0, 0.0), (u::AFFINE, -0.5, 0.0)], b::MUL),
        // a·(p·x^(p−1))
        BinaryKind::PowfBwd(p) => on_b(&[(u::POWF, p - 1.0, 0.0), (u::AFFINE, p, 0.0)], b::MUL),
        // 2·(a·x)
        BinaryKind::SqrBwd => unary_kernel(&binary_kernel(a, la, rhs, lb, b::MUL, op)?, &dense, (u::AFFINE, 2.0, 0.0), op),
        BinaryKind::AbsBwd => {
            // sign(x) = step(x) − step(−x): 0 at 0 and at NaN.
            let pos = unary_kernel(rhs, lb, (u::STEP, 0.0, 0.0), op)?;
            let neg = unary_kernel(&unary_kernel(rhs, lb, (u::NEG, 0.0, 0.0), op)?, &dense, (u::STEP, 0.0, 0.0), op)?;
            let sign = binary_kernel(&pos, &dense, &neg, &dense, b::SUB, op)?;
            binary_kernel(a, la, &sign, &dense, b::MUL, op)
        }
        BinaryKind::ClampBwd(lo, hi) => {
            // In range ⇔ clamp(x) == x (false for NaN).
            let c = unary_kernel(rhs, lb, (u::CLAMP, lo, hi), op)?;
            let inside = binary_kernel(&c, &dense, rhs, lb, b::EQ, op)?;
            binary_kernel(a, la, &inside, &dense, b::MUL, op)
        }
    }
}

/// `cond != 0 ? a : b` over three views of the output shape.
pub(crate) fn where_cond(c: &CudaStorage, lc: &Layout, a: &CudaStorage, la: &Layout, bs: &CudaStorage, lb: &Layout) -> Result<CudaStorage> {
    let op = "where_cond";
    let gpu = same_gpu(op, &[c, a, bs])?;
    check_f32(op, &[c, a, bs])?;
    let shape = lc.shape();
    let [kc, ka, kb] = kl::layouts(op, shape, [lc.strides(), la.strides(), lb.strides()], [lc.offset(), la.offset(), lb.offset()])?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, lc.elem_count(), op)?;
    ops::elementwise::where_cond(&gpu, GpuDType::F32, c.buffer(), &kc, a.buffer(), &ka, bs.buffer(), &kb, out.buffer_mut())
        .map_err(kerr(op))?;
    Ok(out)
}
