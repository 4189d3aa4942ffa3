//! cuSPARSELt on the simulator: the calls `crate::sparse24` makes, with the library's constraints
//! and errors, computed on the host.
//!
//! - Structured descriptor (the weight `A`, row-major `rows × cols`, 2:4 along `cols` = K): f16 or
//!   bf16 only (f32 has no 2:4 mode), `rows` and `cols` multiples of 16, `ld ≥ cols`, alignment a
//!   multiple of 16 bytes — the minimums PyTorch encodes for cuSPARSELt's 16-bit types
//!   (../shared/reference/SPARSE_GEMM_AND_FID.md §A1.6).
//! - Dense descriptors (column-major `B` and `D`): `rows` and `cols` multiples of 8, `ld ≥ rows`.
//! - Prune check: every aligned group of 4 along K holds at most 2 non-zeros (NaN counts as
//!   non-zero), else the valid flag is 1.
//! - Compressed form (this simulator's own layout; the real one is opaque): the 2 kept values of
//!   each group (`rows × cols/2` elements), then 4 bits per group holding the two 2-bit
//!   positions (group `g` in the low nibble of byte `g/2` when `g` is even, else the high one) —
//!   `rows·cols·9/16` elements for 16-bit types, the size PyTorch allocates.
//! - Matmul `D = α·A·B + β·C + bias` (bias per row of D), f32 accumulation, D rounded once;
//!   operand shapes must agree with the plan's descriptors and every pointer must be 16-byte
//!   aligned and inside a live buffer of the needed size.
//!
//! Errors are [`KernelsError::Sparse`] naming the cuSPARSELt call and the status the library
//! returns (`CUSPARSE_STATUS_INVALID_VALUE`, `..._NOT_SUPPORTED`).

use half::{bf16, f16};
use rayon::prelude::*;

use super::memory::SimMemory;
use crate::GpuDType;
use crate::error::{KernelsError, Result};

fn status(call: &'static str, status: &str, why: String) -> KernelsError {
    KernelsError::Sparse { call, reason: format!("{status} (simulated): {why}") }
}

/// Required alignment of every operand's address and of the descriptors' alignment argument.
const ALIGN: u64 = 16;

fn check_ptr(mem: &SimMemory, call: &'static str, what: &str, ptr: u64, bytes: usize) -> Result<()> {
    if !ptr.is_multiple_of(ALIGN) {
        return Err(status(call, "CUSPARSE_STATUS_INVALID_VALUE", format!("{what} at {ptr:#x} is not {ALIGN}-byte aligned")));
    }
    mem.check(&format!("cuSPARSELt {call} {what}"), ptr, bytes)
}

/// A structured (2:4) matrix descriptor: row-major `rows × cols`, sparse along `cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Structured {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) ld: usize,
    pub(crate) dtype: GpuDType,
}

/// `cusparseLtStructuredDescriptorInit` (row-major, 50 % sparsity).
pub(crate) fn structured(rows: usize, cols: usize, ld: usize, alignment: u32, dtype: GpuDType) -> Result<Structured> {
    const CALL: &str = "cusparseLtStructuredDescriptorInit";
    if dtype == GpuDType::F32 {
        return Err(status(CALL, "CUSPARSE_STATUS_NOT_SUPPORTED", "f32 has no 2:4 mode (cuSPARSELt uses 1:2 for it)".into()));
    }
    if rows == 0 || cols == 0 || !rows.is_multiple_of(16) || !cols.is_multiple_of(16) {
        return Err(status(
            CALL,
            "CUSPARSE_STATUS_INVALID_VALUE",
            format!("structured {rows} × {cols} {dtype}: rows and columns must be positive multiples of 16"),
        ));
    }
    if ld < cols || !(alignment as u64).is_multiple_of(ALIGN) {
        return Err(status(CALL, "CUSPARSE_STATUS_INVALID_VALUE", format!("ld {ld} < {cols} columns or alignment {alignment}")));
    }
    Ok(Structured { rows, cols, ld, dtype })
}

/// A dense column-major matrix descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dense {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) ld: usize,
    pub(crate) dtype: GpuDType,
}

/// `cusparseLtDenseDescriptorInit` (column-major).
pub(crate) fn dense(rows: usize, cols: usize, ld: usize, alignment: u32, dtype: GpuDType) -> Result<Dense> {
    const CALL: &str = "cusparseLtDenseDescriptorInit";
    if rows == 0 || cols == 0 || !rows.is_multiple_of(8) || !cols.is_multiple_of(8) {
        return Err(status(
            CALL,
            "CUSPARSE_STATUS_INVALID_VALUE",
            format!("dense {rows} × {cols} {dtype}: rows and columns must be positive multiples of 8"),
        ));
    }
    if ld < rows || !(alignment as u64).is_multiple_of(ALIGN) {
        return Err(status(CALL, "CUSPARSE_STATUS_INVALID_VALUE", format!("ld {ld} < {rows} rows or alignment {alignment}")));
    }
    Ok(Dense { rows, cols, ld, dtype })
}

/// Reads element `i` of a 16-bit array as f32.
///
/// # Safety
/// `base` must point to at least `i + 1` elements of `dtype`.
unsafe fn read16(base: u64, dtype: GpuDType, i: usize) -> f32 {
    // SAFETY: guaranteed by the caller.
    unsafe {
        match dtype {
            GpuDType::F16 => std::ptr::read_unaligned((base as *const f16).add(i)).to_f32(),
            GpuDType::BF16 => std::ptr::read_unaligned((base as *const bf16).add(i)).to_f32(),
            GpuDType::F32 => std::ptr::read_unaligned((base as *const f32).add(i)),
        }
    }
}

/// Writes `v` rounded to `dtype` as element `i`.
///
/// # Safety
/// `base` must point to at least `i + 1` writable elements of `dtype`.
unsafe fn write16(base: u64, dtype: GpuDType, i: usize, v: f32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        match dtype {
            GpuDType::F16 => std::ptr::write_unaligned((base as *mut f16).add(i), f16::from_f32(v)),
            GpuDType::BF16 => std::ptr::write_unaligned((base as *mut bf16).add(i), bf16::from_f32(v)),
            GpuDType::F32 => std::ptr::write_unaligned((base as *mut f32).add(i), v),
        }
    }
}

fn matrix_bytes(a: &Structured) -> usize {
    ((a.rows - 1) * a.ld + a.cols) * a.dtype.size()
}

/// `cusparseLtSpMMAPruneCheck2`: whether the matrix at `ptr` is 2:4 along its columns.
pub(crate) fn prune_check(mem: &SimMemory, a: &Structured, ptr: u64) -> Result<bool> {
    check_ptr(mem, "cusparseLtSpMMAPruneCheck2", "matrix", ptr, matrix_bytes(a))?;
    for r in 0..a.rows {
        for g in 0..a.cols / 4 {
            // SAFETY: row r, columns 4g..4g+4 lie in the checked range.
            let nz = (0..4).filter(|&j| unsafe { read16(ptr, a.dtype, r * a.ld + 4 * g + j) } != 0.0).count();
            if nz > 2 {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// `cusparseLtSpMMACompressedSize2`: bytes of the compressed matrix (values, then metadata).
pub(crate) fn compressed_size(a: &Structured) -> usize {
    a.rows * a.cols / 2 * a.dtype.size() + (a.rows * a.cols / 4).div_ceil(2)
}

/// `cusparseLtSpMMACompress2`: writes the compressed form of the matrix at `src` to `dst`. A
/// group with fewer than 2 non-zeros keeps zeros at its first free positions; a group with more
/// keeps its first two non-zeros (what the hardware would compute on, after a failed check).
pub(crate) fn compress(mem: &SimMemory, a: &Structured, src: u64, dst: u64) -> Result<()> {
    const CALL: &str = "cusparseLtSpMMACompress2";
    check_ptr(mem, CALL, "matrix", src, matrix_bytes(a))?;
    check_ptr(mem, CALL, "compressed matrix", dst, compressed_size(a))?;
    let groups = a.rows * a.cols / 4;
    let meta = dst + (groups * 2 * a.dtype.size()) as u64;
    for r in 0..a.rows {
        for g in 0..a.cols / 4 {
            let base = r * a.ld + 4 * g;
            // SAFETY: in the checked source range.
            let vals: [f32; 4] = std::array::from_fn(|j| unsafe { read16(src, a.dtype, base + j) });
            let mut keep: Vec<usize> = (0..4).filter(|&j| vals[j] != 0.0).take(2).collect();
            for j in 0..4 {
                if keep.len() == 2 {
                    break;
                }
                if !keep.contains(&j) {
                    keep.push(j);
                }
            }
            keep.sort_unstable();
            let gi = r * (a.cols / 4) + g;
            // SAFETY: value slots 2·gi, 2·gi + 1 and metadata byte gi lie in the checked
            // destination range (compressed_size).
            unsafe {
                write16(dst, a.dtype, 2 * gi, vals[keep[0]]);
                write16(dst, a.dtype, 2 * gi + 1, vals[keep[1]]);
                let byte = (meta + (gi / 2) as u64) as *mut u8;
                let nibble = (keep[0] as u8) | ((keep[1] as u8) << 2);
                *byte = if gi.is_multiple_of(2) { (*byte & 0xF0) | nibble } else { (*byte & 0x0F) | (nibble << 4) };
            }
        }
    }
    Ok(())
}

/// A matmul plan: `D (rows(A) × cols(B)) = α·A·B + β·C + bias`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) a: Structured,
    pub(crate) b: Dense,
    pub(crate) d: Dense,
}

/// `cusparseLtMatmulDescriptorInit` + `AlgSelectionInit` + `PlanInit`: the shapes must chain.
pub(crate) fn plan(a: Structured, b: Dense, d: Dense) -> Result<Plan> {
    const CALL: &str = "cusparseLtMatmulDescriptorInit";
    if a.cols != b.rows || a.rows != d.rows || b.cols != d.cols {
        return Err(status(
            CALL,
            "CUSPARSE_STATUS_INVALID_VALUE",
            format!("A {}×{} · B {}×{} does not give D {}×{}", a.rows, a.cols, b.rows, b.cols, d.rows, d.cols),
        ));
    }
    if a.dtype != b.dtype || b.dtype != d.dtype {
        return Err(status(CALL, "CUSPARSE_STATUS_NOT_SUPPORTED", format!("mixed types {} {} {}", a.dtype, b.dtype, d.dtype)));
    }
    Ok(Plan { a, b, d })
}

/// `cusparseLtMatmul` with C = D: `D = α·A·B + β·D + bias`, A given by its compressed form.
pub(crate) fn matmul(mem: &SimMemory, p: &Plan, alpha: f32, compressed: u64, b: u64, beta: f32, d: u64, bias: Option<u64>) -> Result<()> {
    const CALL: &str = "cusparseLtMatmul";
    let (a, bd, dd) = (&p.a, &p.b, &p.d);
    let esz = a.dtype.size();
    check_ptr(mem, CALL, "compressed A", compressed, compressed_size(a))?;
    check_ptr(mem, CALL, "B", b, ((bd.cols - 1) * bd.ld + bd.rows) * esz)?;
    check_ptr(mem, CALL, "D", d, ((dd.cols - 1) * dd.ld + dd.rows) * esz)?;
    if let Some(bias) = bias {
        check_ptr(mem, CALL, "bias", bias, a.rows * esz)?;
    }
    let (n, k, m) = (a.rows, a.cols, bd.cols);
    let groups = k / 4;
    let meta = compressed + (n * groups * 2 * esz) as u64;
    // The compressed weight as f32 values and absolute column indices, row by row.
    let mut w = vec![0f32; n * groups * 2];
    let mut col = vec![0usize; n * groups * 2];
    for gi in 0..n * groups {
        // SAFETY: in the checked compressed range.
        let byte = unsafe { *((meta + (gi / 2) as u64) as *const u8) } >> (4 * (gi % 2));
        let g = gi % groups;
        for s in 0..2 {
            // SAFETY: as above.
            w[2 * gi + s] = unsafe { read16(compressed, a.dtype, 2 * gi + s) };
            col[2 * gi + s] = 4 * g + ((byte >> (2 * s)) & 3) as usize;
        }
    }
    let bias_v: Vec<f32> = match bias {
        // SAFETY: the bias range was checked.
        Some(bp) => (0..n).map(|i| unsafe { read16(bp, a.dtype, i) }).collect(),
        None => vec![0.0; n],
    };
    let (bld, dld, dt) = (bd.ld, dd.ld, a.dtype);
    // One task per column j of D (a row of the row-major activations); columns are disjoint.
    (0..m).into_par_iter().for_each(|j| {
        // SAFETY: column j of B (k elements) lies in B's checked range.
        let bcol: Vec<f32> = (0..k).map(|p| unsafe { read16(b, dt, p + j * bld) }).collect();
        for i in 0..n {
            let row = &w[i * groups * 2..(i + 1) * groups * 2];
            let cols = &col[i * groups * 2..(i + 1) * groups * 2];
            let acc: f32 = row.iter().zip(cols).map(|(&v, &c)| v * bcol[c]).sum();
            let idx = i + j * dld;
            // SAFETY: (i, j) lies in D's checked range; each task writes only its column j.
            let old = if beta == 0.0 { 0.0 } else { unsafe { read16(d, dt, idx) } };
            let v = alpha * acc + if beta == 0.0 { 0.0 } else { beta * old } + bias_v[i];
            // SAFETY: as above.
            unsafe { write16(d, dt, idx, v) };
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(mem: &SimMemory, bytes: usize) -> u64 {
        let p = mem.malloc(bytes).unwrap();
        mem.mark_live(p, bytes);
        p
    }

    #[test]
    fn descriptor_constraints_are_enforced() {
        assert!(structured(64, 128, 128, 16, GpuDType::F16).is_ok());
        for (r, c, ld, al, dt) in [
            (60, 128, 128, 16, GpuDType::F16),
            (64, 100, 100, 16, GpuDType::BF16),
            (64, 128, 127, 16, GpuDType::F16),
            (64, 128, 128, 8, GpuDType::F16),
        ] {
            let e = structured(r, c, ld, al, dt).unwrap_err().to_string();
            assert!(e.contains("INVALID_VALUE"), "{r} {c} {ld} {al}: {e}");
        }
        assert!(structured(64, 128, 128, 16, GpuDType::F32).unwrap_err().to_string().contains("NOT_SUPPORTED"));
        assert!(dense(128, 12, 128, 16, GpuDType::F16).is_err());
        let (a, b, d) = (
            structured(32, 64, 64, 16, GpuDType::F16).unwrap(),
            dense(64, 8, 64, 16, GpuDType::F16).unwrap(),
            dense(32, 8, 32, 16, GpuDType::F16).unwrap(),
        );
        assert!(plan(a, b, d).is_ok());
        assert!(plan(a, dense(32, 8, 32, 16, GpuDType::F16).unwrap(), d).is_err());
    }

    #[test]
    fn prune_check_compress_and_matmul_agree_with_a_dense_product() {
        let mem = SimMemory::default();
        let (n, k, m) = (16usize, 32usize, 8usize);
        // 2:4 weight with one group holding a single non-zero and one holding none.
        let mut wv = vec![0f32; n * k];
        for r in 0..n {
            for g in 0..k / 4 {
                let (p, q) = ((r + g) % 4, (r + 2 * g + 1) % 4);
                wv[r * k + 4 * g + p] = (r * 7 + g) as f32 * 0.25 - 3.0;
                if p != q && g != 3 {
                    wv[r * k + 4 * g + q] = 1.0 + g as f32 * 0.5;
                }
            }
            wv[r * k + 4] = 0.0;
            wv[r * k + 5] = 0.0;
            wv[r * k + 6] = 0.0;
            wv[r * k + 7] = 0.0;
        }
        let w = live(&mem, n * k * 2);
        for (i, &v) in wv.iter().enumerate() {
            // SAFETY: w holds n·k f16.
            unsafe { write16(w, GpuDType::F16, i, v) };
        }
        let a = structured(n, k, k, 16, GpuDType::F16).unwrap();
        assert!(prune_check(&mem, &a, w).unwrap());
        let c = live(&mem, compressed_size(&a));
        assert_eq!(compressed_size(&a), n * k * 9 / 16 * 2);
        compress(&mem, &a, w, c).unwrap();
        let xv: Vec<f32> = (0..m * k).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
        let x = live(&mem, m * k * 2);
        for (i, &v) in xv.iter().enumerate() {
            // SAFETY: x holds m·k f16.
            unsafe { write16(x, GpuDType::F16, i, v) };
        }
        let y = live(&mem, m * n * 2);
        let b = dense(k, m, k, 16, GpuDType::F16).unwrap();
        let d = dense(n, m, n, 16, GpuDType::F16).unwrap();
        let bias = live(&mem, n * 2);
        for i in 0..n {
            // SAFETY: bias holds n f16.
            unsafe { write16(bias, GpuDType::F16, i, i as f32) };
        }
        matmul(&mem, &plan(a, b, d).unwrap(), 1.0, c, x, 0.0, y, Some(bias)).unwrap();
        for j in 0..m {
            for i in 0..n {
                let want: f32 = (0..k).map(|p| f16::from_f32(wv[i * k + p]).to_f32() * xv[j * k + p]).sum::<f32>() + i as f32;
                // SAFETY: y holds m·n f16.
                let got = unsafe { read16(y, GpuDType::F16, j * n + i) };
                assert!((got - want).abs() <= 1e-3 * (1.0 + want.abs()), "Y[{j}][{i}] = {got}, want {want}");
            }
        }
        // A dense weight fails the check; a short output buffer is caught.
        for i in 4..7 {
            // SAFETY: w holds n·k f16.
            unsafe { write16(w, GpuDType::F16, i, 1.0) };
        }
        assert!(!prune_check(&mem, &a, w).unwrap());
        let short = live(&mem, m * n * 2 - 2);
        let e = matmul(&mem, &plan(a, b, d).unwrap(), 1.0, c, x, 0.0, short, None).unwrap_err().to_string();
        assert!(e.contains("out of bounds"), "{e}");
    }
}
