//! Element-wise CUDA ops: unary maps, broadcasting binary maps and `where`,
//! each one kernel reading strided (and zero-stride broadcast) inputs in
//! place and writing a contiguous f32 output.

use sparsedm_kernels::abi::{binary as b, unary as u};
use sparsedm_kernels::{GpuDType, ops};

use crate::cuda::kl;
use crate::cuda::storage::{CudaStorage, cuda_ref};
use crate::layout::broadcast_shapes;
use crate::ops::elementwise::{BinaryKind, UnaryKind};
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};

fn check_f32(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    for t in ts {
        if t.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: t.dtype(), expected: "f32" });
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
        UnaryKind::Step => (u::STEP, 0.0, 0.0),
    }
}

fn binary_code(k: BinaryKind) -> i32 {
    match k {
        BinaryKind::Add => b::ADD,
        BinaryKind::Sub => b::SUB,
        BinaryKind::Mul => b::MUL,
        BinaryKind::Div => b::DIV,
        BinaryKind::Max => b::MAX,
        BinaryKind::GeluBwd => b::GELU_BWD,
        BinaryKind::SiluBwd => b::SILU_BWD,
        BinaryKind::TanhBwd => b::TANH_BWD,
        BinaryKind::SigmoidBwd => b::SIGMOID_BWD,
        BinaryKind::ReluBwd => b::RELU_BWD,
        BinaryKind::Ge => b::GE,
        BinaryKind::Eq => b::EQ,
    }
}

/// `kind(x)` into new contiguous f32 storage of `x`'s shape.
pub(crate) fn unary(x: &Tensor, op: &'static str, kind: UnaryKind) -> Result<Storage> {
    let gpu = crate::cuda::same_gpu(op, &[x])?;
    check_f32(op, &[x])?;
    let l = x.layout();
    let [xl] = kl::layouts(op, l.shape(), [l.strides()], [l.offset()])?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, l.elem_count(), op)?;
    let (code, a, b) = unary_code(kind);
    {
        let s = x.storage();
        ops::elementwise::unary(&gpu, GpuDType::F32, code, a, b, cuda_ref(&s, op)?.buffer(), &xl, out.buffer_mut())
            .map_err(crate::cuda::kerr(op))?;
    }
    Ok(Storage::Cuda(out))
}

/// `kind(a, b)` with NumPy broadcasting; returns the storage and the shape.
pub(crate) fn binary(a: &Tensor, rhs: &Tensor, op: &'static str, kind: BinaryKind) -> Result<(Storage, Vec<usize>)> {
    let gpu = crate::cuda::same_gpu(op, &[a, rhs])?;
    check_f32(op, &[a, rhs])?;
    let shape = broadcast_shapes(op, a.shape(), rhs.shape())?;
    let (la, lb) = (a.layout().broadcast_as(&shape)?, rhs.layout().broadcast_as(&shape)?);
    let [ka, kb] = kl::layouts(op, &shape, [la.strides(), lb.strides()], [la.offset(), lb.offset()])?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, shape.iter().product(), op)?;
    {
        let (sa, sb) = (a.storage(), rhs.storage());
        let (ba, bb) = (cuda_ref(&sa, op)?.buffer(), cuda_ref(&sb, op)?.buffer());
        ops::elementwise::binary(&gpu, GpuDType::F32, binary_code(kind), ba, &ka, bb, &kb, out.buffer_mut())
            .map_err(crate::cuda::kerr(op))?;
    }
    Ok((Storage::Cuda(out), shape))
}

/// `cond != 0 ? a : b` over the broadcast `shape`.
pub(crate) fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor, shape: &[usize]) -> Result<Storage> {
    let op = "where_cond";
    let gpu = crate::cuda::same_gpu(op, &[cond, a, b])?;
    check_f32(op, &[cond, a, b])?;
    let (lc, la, lb) = (cond.layout().broadcast_as(shape)?, a.layout().broadcast_as(shape)?, b.layout().broadcast_as(shape)?);
    let [kc, ka, kb] = kl::layouts(op, shape, [lc.strides(), la.strides(), lb.strides()], [lc.offset(), la.offset(), lb.offset()])?;
    let mut out = CudaStorage::alloc(&gpu, DType::F32, shape.iter().product(), op)?;
    {
        let (sc, sa, sb) = (cond.storage(), a.storage(), b.storage());
        let (bc, ba, bb) = (cuda_ref(&sc, op)?.buffer(), cuda_ref(&sa, op)?.buffer(), cuda_ref(&sb, op)?.buffer());
        ops::elementwise::where_cond(&gpu, GpuDType::F32, bc, &kc, ba, &ka, bb, &kb, out.buffer_mut()).map_err(crate::cuda::kerr(op))?;
    }
    Ok(Storage::Cuda(out))
}
