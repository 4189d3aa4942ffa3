//! CPU matrix products through the `gemm` crate (packed, SIMD,
//! rayon-parallel kernels): batched products of broadcast, possibly
//! transposed views read through their strides without copying, and
//! `linear` as one GEMM onto rows pre-filled with the bias.

use crate::Layout;
use crate::backend::cpu::strided::{PAR_CHUNK, gather, written_vec};
use rayon::prelude::*;

/// Work (m·n·k) above which one product is worth gemm's own threads.
const PAR_GEMM_WORK: usize = 1 << 18;

/// `out[m,n] = lhs[m,k] · rhs[k,n]` for one matrix, given element strides
/// (row, col) of each operand; `out` is row-major.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32(
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    accumulate: bool,
    parallel: bool,
) {
    // SAFETY: `out` is an initialised, uniquely borrowed slice.
    unsafe { gemm_f32_raw(out.as_mut_ptr(), out.len(), n, m, n, k, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, accumulate, parallel) }
}

/// [`gemm_f32`] with output rows `out_rs ≥ n` floats apart (the floats
/// between a row's `n` and the next row are left untouched): a product
/// written into a padded tile. Single-threaded.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32_padded(
    out: &mut [f32],
    out_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    assert!(out_rs >= n, "gemm_f32_padded: output row stride {out_rs} below the row length {n}");
    // SAFETY: `out` is an initialised, uniquely borrowed slice.
    unsafe { gemm_f32_raw(out.as_mut_ptr(), out.len(), out_rs, m, n, k, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, false, false) }
}

/// [`gemm_f32`] into `m·n` uninitialised floats (the product overwrites
/// them all without reading them: no zeroing pass first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32_uninit(
    out: &mut [std::mem::MaybeUninit<f32>],
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    parallel: bool,
) {
    if k == 0 {
        out[..m * n].iter_mut().for_each(|o| {
            o.write(0.0);
        });
        return;
    }
    // SAFETY: without `accumulate` gemm only writes `out` (never reads it),
    // and MaybeUninit<f32> has f32's layout; the slice is uniquely borrowed.
    unsafe {
        gemm_f32_raw(out.as_mut_ptr().cast::<f32>(), out.len(), n, m, n, k, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, false, parallel)
    }
}

/// The body of [`gemm_f32`] on a raw output of `out_len` floats whose rows
/// are `out_rs` floats apart.
///
/// # Safety
/// `out` points to `out_len` writable floats that alias neither input; when
/// `accumulate` they must be initialised.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32_raw(
    out: *mut f32,
    out_len: usize,
    out_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(out_rs >= n && out_len >= (m - 1) * out_rs + n, "gemm_f32: output buffer too small");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i lies inside the out_len writable floats (assert).
                unsafe { std::slice::from_raw_parts_mut(out.add(i * out_rs), n) }.fill(0.0);
            }
        }
        return;
    }
    // Bounds of the strided operands must lie inside the slices.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len() && last(k, n, rhs_rs, rhs_cs) < rhs.len(), "gemm_f32: operand out of bounds");
    let par = if parallel && m * n * k >= PAR_GEMM_WORK {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above guarantee that every element addressed
    // through (rows, cols, strides) lies inside `out`, `lhs` and `rhs`; `out`
    // does not alias the inputs (caller).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            1,
            out_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Batched product of two broadcast layouts of equal batch shape.
pub(crate) fn bmm(a: &[f32], la: &Layout, b: &[f32], lb: &Layout, m: usize, k: usize, n: usize) -> Vec<f32> {
    let r = la.rank();
    let batch_shape = &la.shape()[..r - 2];
    let batch: usize = batch_shape.iter().product();
    let (ars, acs) = (la.strides()[r - 2], la.strides()[r - 1]);
    let (brs, bcs) = (lb.strides()[r - 2], lb.strides()[r - 1]);
    let offsets = |l: &Layout, i: usize| {
        let mut rem = i;
        let mut off = l.offset();
        for d in (0..r - 2).rev() {
            off += (rem % l.shape()[d]) * l.strides()[d];
            rem /= l.shape()[d];
        }
        off
    };
    let mut out = vec![0f32; batch * m * n];
    if m * n == 0 {
        return out;
    }
    let one = |i: usize, o: &mut [f32], parallel: bool| {
        let (oa, ob) = (offsets(la, i), offsets(lb, i));
        gemm_f32(o, m, n, k, &a[oa..], ars, acs, &b[ob..], brs, bcs, false, parallel);
    };
    if batch == 1 || m * n * k >= PAR_GEMM_WORK * 8 {
        out.chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, true));
    } else {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, false));
    }
    out
}

/// `x [m, k] · wᵀ + bias`: one GEMM onto rows pre-filled with the bias.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear(
    x: &[f32],
    lx: &Layout,
    w: &[f32],
    lw: &Layout,
    bias: Option<(&[f32], &Layout)>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let (xv, wv) = (&x[lx.offset()..], &w[lw.offset()..]);
    let (xr, xc, wr, wc) = (lx.strides()[0], lx.strides()[1], lw.strides()[1], lw.strides()[0]);
    // rhs[kk, j] = W[j, kk]
    match bias {
        Some((b, lb)) => {
            // Rows pre-filled with the bias (one write, no zeroing first,
            // shared by the threads), then accumulated onto.
            let bv = gather(b, lb.shape(), lb.strides(), lb.offset());
            let rows_per_task = (PAR_CHUNK / n.max(1)).max(1);
            // SAFETY: every row of n elements is written from the n-element bias.
            let mut out = unsafe {
                written_vec(m * n, |o| {
                    o.par_chunks_mut(rows_per_task * n.max(1)).for_each(|rows| {
                        for row in rows.chunks_mut(n.max(1)) {
                            for (d, &v) in row.iter_mut().zip(&bv) {
                                d.write(v);
                            }
                        }
                    })
                })
            };
            gemm_f32(&mut out, m, n, k, xv, xr, xc, wv, wr, wc, true, true);
            out
        }
        // SAFETY: the product writes all m·n outputs.
        None => unsafe { written_vec(m * n, |o| gemm_f32_uninit(o, m, n, k, xv, xr, xc, wv, wr, wc, true)) },
    }
}
