//! `cublasGemmStridedBatchedEx` on the simulator, with cuBLAS semantics: column-major operands,
//! `op(X)` = X or Xᵀ, leading dimensions, strided batches (stride 0 broadcasts), f32/f16/bf16
//! inputs converted exactly to f32 and accumulated in f32, TF32 rounding of the inputs for
//! `CUBLAS_COMPUTE_32F_FAST_TF32`, `β = 0` never reading C (NaNs in C do not propagate), and the
//! argument checks cuBLAS makes (`CUBLAS_STATUS_INVALID_VALUE`, `..._NOT_SUPPORTED`). Every
//! operand's reachable range is checked against its live buffer before anything is read.
//!
//! The products run on the host through the `gemm` crate (f32), on rayon's threads.

use cudarc::cublas::result::CublasError;
use cudarc::cublas::sys::cublasStatus_t;
use half::{bf16, f16};

use super::memory::SimMemory;
use crate::GpuDType;
use crate::error::{KernelsError, Result};

/// The compute types sparsedm asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compute {
    /// `CUBLAS_COMPUTE_32F`.
    F32,
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`.
    F32FastTf32,
}

/// One matrix argument in cuBLAS terms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat {
    pub(crate) ptr: u64,
    pub(crate) dtype: GpuDType,
    pub(crate) ld: i32,
    pub(crate) stride: i64,
}

/// The arguments of `cublasGemmStridedBatchedEx` (column-major `C = α·op(A)·op(B) + β·C`, `op(A)`
/// `m × k`, `op(B)` `k × n`, `C` `m × n`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GemmCall {
    pub(crate) trans_a: bool,
    pub(crate) trans_b: bool,
    pub(crate) m: i32,
    pub(crate) n: i32,
    pub(crate) k: i32,
    pub(crate) alpha: f32,
    pub(crate) a: Mat,
    pub(crate) b: Mat,
    pub(crate) beta: f32,
    pub(crate) c: Mat,
    pub(crate) batch: i32,
    pub(crate) compute: Compute,
}

fn status(call: &'static str, s: cublasStatus_t) -> KernelsError {
    KernelsError::Cublas { call, source: CublasError(s) }
}

/// Rounds to TF32 (10 explicit mantissa bits), to nearest with ties away from zero, as the
/// tensor cores' `cvt.rna.tf32.f32`. Infinities and NaNs pass unchanged.
pub(crate) fn round_tf32(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    f32::from_bits(x.to_bits().wrapping_add(0x1000) & 0xFFFF_E000)
}

/// Reads element `i` of a `dtype` array at `base` as f32.
///
/// # Safety
/// `base` must point to at least `i + 1` elements of `dtype`.
unsafe fn read(base: u64, dtype: GpuDType, i: usize) -> f32 {
    // SAFETY: guaranteed by the caller; unaligned reads cope with any element offset.
    unsafe {
        match dtype {
            GpuDType::F32 => std::ptr::read_unaligned((base as *const f32).add(i)),
            GpuDType::F16 => std::ptr::read_unaligned((base as *const f16).add(i)).to_f32(),
            GpuDType::BF16 => std::ptr::read_unaligned((base as *const bf16).add(i)).to_f32(),
        }
    }
}

/// Column-major `rows × cols` of `op(X)` copied to a dense f32 column-major matrix (TF32-rounded
/// when asked).
///
/// # Safety
/// Every element `(r, c)` of op(X) at `base` must be readable (the caller checked the range).
unsafe fn gather(base: u64, dtype: GpuDType, ld: usize, trans: bool, rows: usize, cols: usize, tf32: bool) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for c in 0..cols {
        for r in 0..rows {
            // op(X)(r, c) = X(r, c) = X[r + c·ld], or Xᵀ(r, c) = X(c, r) = X[c + r·ld].
            let idx = if trans { c + r * ld } else { r + c * ld };
            // SAFETY: in range by the caller's check.
            let v = unsafe { read(base, dtype, idx) };
            out[r + c * rows] = if tf32 { round_tf32(v) } else { v };
        }
    }
    out
}

/// Simulates `cublasGemmStridedBatchedEx` (see the module docs).
pub(crate) fn gemm_strided_batched(mem: &SimMemory, g: &GemmCall) -> Result<()> {
    const CALL: &str = "cublasGemmStridedBatchedEx";
    let invalid = |_: &str| status(CALL, cublasStatus_t::CUBLAS_STATUS_INVALID_VALUE);
    if g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0 {
        return Err(invalid("negative size"));
    }
    let (m, n, k, batch) = (g.m as usize, g.n as usize, g.k as usize, g.batch as usize);
    // op(A) is m × k: A is stored m × k (lda ≥ m) or k × m (lda ≥ k); likewise B.
    let (a_rows, a_cols) = if g.trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if g.trans_b { (n, k) } else { (k, n) };
    if (g.a.ld as i64) < a_rows.max(1) as i64 || (g.b.ld as i64) < b_rows.max(1) as i64 || (g.c.ld as i64) < m.max(1) as i64 {
        return Err(invalid("leading dimension"));
    }
    if g.a.dtype != g.b.dtype || (g.c.dtype != GpuDType::F32 && g.c.dtype != g.a.dtype) {
        return Err(status(CALL, cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED));
    }
    if g.compute == Compute::F32FastTf32 && g.a.dtype != GpuDType::F32 {
        return Err(status(CALL, cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED));
    }
    if m == 0 || n == 0 || batch == 0 {
        return Ok(());
    }
    let extent = |x: &Mat, rows: usize, cols: usize| -> Result<usize> {
        if x.stride < 0 {
            return Err(invalid("negative stride"));
        }
        if rows == 0 || cols == 0 {
            return Ok(0);
        }
        Ok(((batch - 1) * x.stride as usize + (cols - 1) * x.ld as usize + rows) * x.dtype.size())
    };
    let read_a = k > 0 && g.alpha != 0.0;
    if read_a {
        mem.check("cuBLAS A", g.a.ptr, extent(&g.a, a_rows, a_cols)?)?;
        mem.check("cuBLAS B", g.b.ptr, extent(&g.b, b_rows, b_cols)?)?;
    }
    mem.check("cuBLAS C", g.c.ptr, extent(&g.c, m, n)?)?;
    let tf32 = g.compute == Compute::F32FastTf32;
    let (lda, ldb, ldc) = (g.a.ld as usize, g.b.ld as usize, g.c.ld as usize);
    let par = gemm::Parallelism::Rayon(rayon::current_num_threads().max(1));
    for bi in 0..batch {
        let a_base = g.a.ptr + (bi * g.a.stride as usize * g.a.dtype.size()) as u64;
        let b_base = g.b.ptr + (bi * g.b.stride as usize * g.b.dtype.size()) as u64;
        let c_base = g.c.ptr + (bi * g.c.stride as usize * g.c.dtype.size()) as u64;
        // C (f32, column-major m × n, leading dimension ldc_f) as read and written by the product.
        let f32_c_in_place = g.c.dtype == GpuDType::F32;
        let mut c_tmp: Vec<f32> = Vec::new();
        let (c_ptr, ldc_f) = if f32_c_in_place {
            (c_base as *mut f32, ldc)
        } else {
            c_tmp = vec![0f32; m * n];
            if g.beta != 0.0 {
                for j in 0..n {
                    for i in 0..m {
                        // SAFETY: (i, j) lies in C's checked range.
                        c_tmp[i + j * m] = unsafe { read(c_base, g.c.dtype, i + j * ldc) };
                    }
                }
            }
            (c_tmp.as_mut_ptr(), m)
        };
        if !read_a {
            // C = β·C (cuBLAS does not read A and B when k = 0 or α = 0).
            for j in 0..n {
                for i in 0..m {
                    // SAFETY: (i, j) lies inside C (checked, or the temporary of m × n).
                    unsafe {
                        let p = c_ptr.add(i + j * ldc_f);
                        *p = if g.beta == 0.0 { 0.0 } else { g.beta * *p };
                    }
                }
            }
        } else if g.a.dtype == GpuDType::F32 && !tf32 {
            // f32 operands are read in place through strides: op(X)(r, c) at r·rs + c·cs.
            let (a_rs, a_cs) = if g.trans_a { (lda as isize, 1) } else { (1, lda as isize) };
            let (b_rs, b_cs) = if g.trans_b { (ldb as isize, 1) } else { (1, ldb as isize) };
            // SAFETY: every element of op(A), op(B) and C lies in a checked live range (or the
            // temporary); the gemm crate computes dst = β_gemm·dst + α_gemm·lhs·rhs with our β
            // and α swapped into its argument order, and does not read dst when read_dst is
            // false (β = 0, as cuBLAS).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c_ptr,
                    ldc_f as isize,
                    1,
                    g.beta != 0.0,
                    a_base as *const f32,
                    a_cs,
                    a_rs,
                    b_base as *const f32,
                    b_cs,
                    b_rs,
                    g.beta,
                    g.alpha,
                    false,
                    false,
                    false,
                    par,
                )
            };
        } else {
            // SAFETY: op(A) and op(B) lie in their checked ranges.
            let (a, b) =
                unsafe { (gather(a_base, g.a.dtype, lda, g.trans_a, m, k, tf32), gather(b_base, g.b.dtype, ldb, g.trans_b, k, n, tf32)) };
            // SAFETY: `a` is m × k and `b` k × n column-major; C as above.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c_ptr,
                    ldc_f as isize,
                    1,
                    g.beta != 0.0,
                    a.as_ptr(),
                    m as isize,
                    1,
                    b.as_ptr(),
                    k as isize,
                    1,
                    g.beta,
                    g.alpha,
                    false,
                    false,
                    false,
                    par,
                )
            };
        }
        if !f32_c_in_place {
            for j in 0..n {
                for i in 0..m {
                    let v = c_tmp[i + j * m];
                    // SAFETY: (i, j) lies in C's checked range.
                    unsafe {
                        match g.c.dtype {
                            GpuDType::F16 => std::ptr::write_unaligned((c_base as *mut f16).add(i + j * ldc), f16::from_f32(v)),
                            GpuDType::BF16 => std::ptr::write_unaligned((c_base as *mut bf16).add(i + j * ldc), bf16::from_f32(v)),
                            GpuDType::F32 => std::ptr::write_unaligned((c_base as *mut f32).add(i + j * ldc), v),
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_keeps_ten_mantissa_bits_rounding_to_nearest() {
        assert_eq!(round_tf32(1.0), 1.0);
        let one_ulp = f32::from_bits(1.0f32.to_bits() + 1);
        assert_eq!(round_tf32(one_ulp), 1.0);
        // 1 + 2^-11 is exactly halfway between 1 and 1 + 2^-10: ties away from zero.
        assert_eq!(round_tf32(1.0 + 2f32.powi(-11)), 1.0 + 2f32.powi(-10));
        assert_eq!(round_tf32(-(1.0 + 2f32.powi(-11))), -(1.0 + 2f32.powi(-10)));
        assert!(round_tf32(f32::NAN).is_nan());
        assert_eq!(round_tf32(f32::INFINITY), f32::INFINITY);
    }

    /// Column-major reference: C = α·op(A)·op(B) + β·C in f64.
    fn reference(g: &GemmCall, a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
        let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
        let mut out = c.to_vec();
        for j in 0..n {
            for i in 0..m {
                let mut s = 0f64;
                for p in 0..k {
                    let av = if g.trans_a { a[p + i * g.a.ld as usize] } else { a[i + p * g.a.ld as usize] };
                    let bv = if g.trans_b { b[j + p * g.b.ld as usize] } else { b[p + j * g.b.ld as usize] };
                    s += av as f64 * bv as f64;
                }
                let ci = i + j * g.c.ld as usize;
                out[ci] = (g.alpha as f64 * s + if g.beta == 0.0 { 0.0 } else { g.beta as f64 * c[ci] as f64 }) as f32;
            }
        }
        out
    }

    fn live(mem: &SimMemory, v: &[f32]) -> u64 {
        let p = mem.malloc(v.len() * 4).unwrap();
        mem.mark_live(p, v.len() * 4);
        // SAFETY: the block holds v.len() f32s.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p as *mut f32, v.len()) };
        p
    }

    #[test]
    fn column_major_transposes_and_leading_dimensions_match_a_reference() {
        let mem = SimMemory::default();
        let (m, n, k) = (5usize, 4usize, 3usize);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let lda = if ta { k + 2 } else { m + 1 };
            let ldb = if tb { n + 3 } else { k };
            let ldc = m + 2;
            let a: Vec<f32> = (0..lda * if ta { m } else { k }).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..ldb * if tb { k } else { n }).map(|i| (i as f32 * 0.71).cos()).collect();
            let mut c: Vec<f32> = (0..ldc * n).map(|i| i as f32 * 0.1).collect();
            c[ldc - 1] = f32::NAN; // padding of C is never touched
            let (pa, pb, pc) = (live(&mem, &a), live(&mem, &b), live(&mem, &c));
            let g = GemmCall {
                trans_a: ta,
                trans_b: tb,
                m: m as i32,
                n: n as i32,
                k: k as i32,
                alpha: 1.5,
                a: Mat { ptr: pa, dtype: GpuDType::F32, ld: lda as i32, stride: 0 },
                b: Mat { ptr: pb, dtype: GpuDType::F32, ld: ldb as i32, stride: 0 },
                beta: 0.5,
                c: Mat { ptr: pc, dtype: GpuDType::F32, ld: ldc as i32, stride: 0 },
                batch: 1,
                compute: Compute::F32,
            };
            let want = reference(&g, &a, &b, &c);
            gemm_strided_batched(&mem, &g).unwrap();
            // SAFETY: pc holds ldc·n f32s.
            let got = unsafe { std::slice::from_raw_parts(pc as *const f32, ldc * n) };
            for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                assert!(x.is_nan() && y.is_nan() || (x - y).abs() < 1e-5, "ta={ta} tb={tb} [{i}]: {x} vs {y}");
            }
            let bad = GemmCall { a: Mat { ld: (if ta { k } else { m }) as i32 - 1, ..g.a }, ..g };
            let err = gemm_strided_batched(&mem, &bad).unwrap_err().to_string();
            assert!(err.contains("INVALID_VALUE"), "{err}");
        }
    }

    #[test]
    fn beta_zero_ignores_nan_in_c_and_short_buffers_are_caught() {
        let mem = SimMemory::default();
        let a = live(&mem, &[1.0, 2.0, 3.0, 4.0]);
        let c = live(&mem, &[f32::NAN; 4]);
        let mk = |m: i32| GemmCall {
            trans_a: false,
            trans_b: false,
            m,
            n: 2,
            k: 2,
            alpha: 1.0,
            a: Mat { ptr: a, dtype: GpuDType::F32, ld: m, stride: 0 },
            b: Mat { ptr: a, dtype: GpuDType::F32, ld: 2, stride: 0 },
            beta: 0.0,
            c: Mat { ptr: c, dtype: GpuDType::F32, ld: m, stride: 0 },
            batch: 1,
            compute: Compute::F32,
        };
        gemm_strided_batched(&mem, &mk(2)).unwrap();
        // SAFETY: c holds 4 f32s.
        let got = unsafe { std::slice::from_raw_parts(c as *const f32, 4) };
        assert_eq!(got, [7.0, 10.0, 15.0, 22.0]);
        let err = gemm_strided_batched(&mem, &mk(3)).unwrap_err().to_string();
        assert!(err.contains("out of bounds"), "{err}");
    }
}
