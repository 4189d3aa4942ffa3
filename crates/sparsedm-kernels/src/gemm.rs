//! Dense GEMM through cuBLAS (`cublasGemmStridedBatchedEx`), in row-major terms.
//!
//! `C[b] = α·op(A[b])·op(B[b]) + β·C[b]` with `op(A)` `[m, k]`, `op(B)` `[k, n]`, `C` `[m, n]`,
//! all row-major with leading dimensions `lda`, `ldb`, `ldc` (elements between rows) and batch
//! strides in elements (0 broadcasts an operand over the batch). cuBLAS is column-major, so the
//! call computes `Cᵀ = op(B)ᵀ·op(A)ᵀ`: the operands swap and no data moves. Inputs may be f32,
//! f16 or bf16 (both the same); C is f32 or the input type; accumulation is always f32.

use cudarc::cublas::result as blas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t};

use crate::error::{KernelsError, Result, cublas};
use crate::{DeviceBuffer, Gpu, GpuDType};

/// One operand: buffer, element offset, leading dimension, batch stride, transposed or not.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    pub buf: &'a DeviceBuffer,
    pub offset: usize,
    pub ld: usize,
    pub batch_stride: usize,
    /// `op(X) = Xᵀ`: the stored matrix is `[cols, rows]` of op(X).
    pub trans: bool,
}

/// f32 GEMMs may use TF32 tensor cores (PyTorch's `allow_tf32`); off by default for parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum F32Math {
    #[default]
    Exact,
    Tf32,
}

/// Shape and types of a (batched) GEMM.
#[derive(Debug, Clone, Copy)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub input: GpuDType,
    pub output: GpuDType,
    pub f32_math: F32Math,
}

fn i32_of(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelsError::invalid("gemm", format!("{what} = {v} exceeds cuBLAS' int range")))
}

/// Checks that an operand stored as `rows × cols` (row-major, leading dimension `ld`) fits.
fn check_operand(what: &str, o: &Operand, rows: usize, cols: usize, batch: usize, elem: usize) -> Result<()> {
    if o.ld < cols.max(1) {
        return Err(KernelsError::invalid("gemm", format!("{what}: leading dimension {} < {cols} columns", o.ld)));
    }
    if rows == 0 || cols == 0 || batch == 0 {
        return Ok(());
    }
    let last = o.offset + (batch - 1) * o.batch_stride + (rows - 1) * o.ld + cols;
    o.buf.check_fits("gemm", what, last, elem)
}

/// `C = α·op(A)·op(B) + β·C` (see the module docs).
pub fn gemm(
    gpu: &Gpu,
    s: &GemmShape,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: &mut DeviceBuffer,
    c_offset: usize,
    ldc: usize,
    c_batch_stride: usize,
) -> Result<()> {
    if s.output != GpuDType::F32 && s.output != s.input {
        return Err(KernelsError::invalid("gemm", format!("output {} must be f32 or the input type {}", s.output, s.input)));
    }
    let (ar, ac) = if a.trans { (s.k, s.m) } else { (s.m, s.k) };
    let (br, bc) = if b.trans { (s.n, s.k) } else { (s.k, s.n) };
    check_operand("A", &a, ar, ac, s.batch, s.input.size())?;
    check_operand("B", &b, br, bc, s.batch, s.input.size())?;
    if ldc < s.n.max(1) {
        return Err(KernelsError::invalid("gemm", format!("C: leading dimension {ldc} < {} columns", s.n)));
    }
    if s.m == 0 || s.n == 0 || s.batch == 0 {
        return Ok(());
    }
    c.check_fits("gemm", "C", c_offset + (s.batch - 1) * c_batch_stride + (s.m - 1) * ldc + s.n, s.output.size())?;
    let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
    let compute = match (s.input, s.f32_math) {
        (GpuDType::F32, F32Math::Tf32) => cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        _ => cublasComputeType_t::CUBLAS_COMPUTE_32F,
    };
    let (m, n, k, batch) = (i32_of("m", s.m)?, i32_of("n", s.n)?, i32_of("k", s.k)?, i32_of("batch", s.batch)?);
    let (lda, ldb, ldc) = (i32_of("lda", a.ld)?, i32_of("ldb", b.ld)?, i32_of("ldc", ldc)?);
    let esz = s.input.size() as u64;
    let a_ptr = a.buf.device_ptr() + a.offset as u64 * esz;
    let b_ptr = b.buf.device_ptr() + b.offset as u64 * esz;
    let c_ptr = c.device_ptr() + c_offset as u64 * s.output.size() as u64;
    if let Some(sim) = gpu.sim() {
        // The same cuBLAS call, simulated on the host (column-major, operands swapped as below).
        use crate::sim::blas::{Compute, GemmCall, Mat, gemm_strided_batched};
        let compute = if compute == cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32 { Compute::F32FastTf32 } else { Compute::F32 };
        let call = GemmCall {
            trans_a: b.trans,
            trans_b: a.trans,
            m: n,
            n: m,
            k,
            alpha,
            a: Mat { ptr: b_ptr, dtype: s.input, ld: ldb, stride: b.batch_stride as i64 },
            b: Mat { ptr: a_ptr, dtype: s.input, ld: lda, stride: a.batch_stride as i64 },
            beta,
            c: Mat { ptr: c_ptr, dtype: s.output, ld: ldc, stride: c_batch_stride as i64 },
            batch,
            compute,
        };
        return gemm_strided_batched(&sim.memory, &call);
    }
    gpu.bind()?;
    gpu.with_blas(|h| {
        // SAFETY: every operand's reachable range was checked against its buffer above; alpha
        // and beta are f32 host scalars as the f32 compute type requires; the handle is bound
        // to this device's stream, so the GEMM is ordered with our kernels. Row-major C = A·B
        // is computed as column-major Cᵀ = Bᵀ·Aᵀ (operands swapped).
        unsafe {
            blas::gemm_strided_batched_ex(
                *h.handle(),
                op(b.trans),
                op(a.trans),
                n,
                m,
                k,
                (&alpha) as *const f32 as *const _,
                b_ptr as *const _,
                s.input.cuda_data_type(),
                ldb,
                b.batch_stride as i64,
                a_ptr as *const _,
                s.input.cuda_data_type(),
                lda,
                a.batch_stride as i64,
                (&beta) as *const f32 as *const _,
                c_ptr as *mut _,
                s.output.cuda_data_type(),
                ldc,
                c_batch_stride as i64,
                batch,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(cublas("cublasGemmStridedBatchedEx"))
    })
}
