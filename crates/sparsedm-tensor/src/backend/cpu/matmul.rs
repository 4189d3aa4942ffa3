//! CPU matrix products through the `gemm` crate (packed, SIMD,
//! rayon-parallel kernels): batched products of broadcast, possibly
//! transposed views read through their strides without copying, and
//! `linear` as one GEMM per band of rows, each onto its rows pre-filled with
//! the bias.

use crate::Layout;
use crate::backend::cpu::strided::{SendPtr, gather, written_vec};
use rayon::prelude::*;

/// Work (m·n·k) above which one product is worth several threads.
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
    unsafe { gemm_f32_raw(out.as_mut_ptr(), out.len(), n, m, n, k, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, accumulate, parallel, None) }
}

/// [`gemm_f32`] with output rows `out_rs ≥ n` floats apart (the floats
/// between a row's `n` and the next row are left untouched): a product
/// written into a padded tile, or a column block of a wider matrix.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32_rows(
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
    accumulate: bool,
    parallel: bool,
) {
    assert!(out_rs >= n, "gemm_f32_rows: output row stride {out_rs} below the row length {n}");
    // SAFETY: `out` is an initialised, uniquely borrowed slice.
    unsafe {
        gemm_f32_raw(out.as_mut_ptr(), out.len(), out_rs, m, n, k, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, accumulate, parallel, None)
    }
}

/// [`gemm_f32`] into `m·n` uninitialised floats (the product overwrites
/// them all without reading them: no zeroing pass first), from the `n`
/// floats of `bias` in every row when given.
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
    bias: Option<&[f32]>,
) {
    // SAFETY: without `accumulate` gemm only writes `out` (never reads it;
    // with a bias, each row is written from it before the product reads
    // it), and MaybeUninit<f32> has f32's layout; the slice is uniquely borrowed.
    unsafe {
        gemm_f32_raw(out.as_mut_ptr().cast::<f32>(), out.len(), n, m, n, k, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, false, parallel, bias)
    }
}

/// The body of [`gemm_f32`] on a raw output of `out_len` floats whose rows
/// are `out_rs` floats apart. With `bias` (`n` floats, `accumulate` off)
/// every row starts from it: `out = bias + lhs·rhs`.
///
/// Threads: a product worth it is split into one band of rows per thread,
/// each band a single-threaded GEMM (which packs its own operands), rather
/// than handed to the gemm crate's own rayon split. On a 2-core Zen 2 the
/// bands ran the demo model's products (4160 rows, inner dimension 128)
/// at 160-180 GFLOP/s against 115-140 through gemm's split, its weight
/// gradient (512 × 128, inner 4160) at 145 against 80-90, and U-ViT-S/2's
/// at about the same or a few percent faster (`examples/gemm_layouts.rs`).
/// A band's bias rows are written just before its product reads them,
/// while they are still in cache.
///
/// # Safety
/// `out` points to `out_len` writable floats that alias neither input; when
/// `accumulate` they must be initialised.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32_raw(
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
    bias: Option<&[f32]>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(out_rs >= n && out_len >= (m - 1) * out_rs + n, "gemm_f32: output buffer too small");
    assert!(bias.is_none_or(|b| b.len() == n && !accumulate), "gemm_f32: a bias needs n floats and no accumulation");
    // Bounds of the strided operands must lie inside the slices.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols.max(1) - 1) * cs;
    assert!(
        k == 0 || (last(m, k, lhs_rs, lhs_cs) < lhs.len() && last(k, n, rhs_rs, rhs_cs) < rhs.len()),
        "gemm_f32: operand out of bounds"
    );
    let out = SendPtr(out);
    // Rows r0..r0+rows of the product (from the bias rows when there is
    // one), one gemm call threaded as `par`.
    let band = |r0: usize, rows: usize, par: gemm::Parallelism| {
        // SAFETY: the asserts above put rows r0..r0+rows (< m) of `out`
        // inside its `out_len` writable floats; concurrent calls get
        // disjoint rows.
        let dst = unsafe { out.get().add(r0 * out_rs) };
        if bias.is_some() || (k == 0 && !accumulate) {
            for i in 0..rows {
                // SAFETY: row i of the band lies inside `out` (as above).
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(i * out_rs), n) };
                match bias {
                    Some(b) => row.copy_from_slice(b),
                    None => row.fill(0.0),
                }
            }
        }
        if k == 0 {
            return;
        }
        // SAFETY: the asserts above guarantee that every element addressed
        // through (rows, cols, strides) lies inside `out`, `lhs` and `rhs`
        // (the band's lhs rows start at r0·lhs_rs); `out` does not alias
        // the inputs (caller).
        unsafe {
            gemm::gemm(
                rows,
                n,
                k,
                dst,
                1,
                out_rs as isize,
                accumulate || bias.is_some(),
                lhs.as_ptr().add(r0 * lhs_rs),
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
    };
    let threads = rayon::current_num_threads().max(1);
    let parallel = parallel && m * n * k >= PAR_GEMM_WORK;
    if parallel && threads > 1 && m >= threads * MIN_BAND_ROWS {
        let rows = m.div_ceil(threads).div_ceil(16) * 16;
        (0..m.div_ceil(rows)).into_par_iter().for_each(|i| band(i * rows, rows.min(m - i * rows), gemm::Parallelism::None));
    } else {
        band(0, m, if parallel && threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None });
    }
}

/// Fewest rows per thread for which [`gemm_f32_raw`] splits a product into
/// bands of rows (below, the gemm crate splits it).
const MIN_BAND_ROWS: usize = 64;

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
    if batch * m * n == 0 {
        return vec![0f32; batch * m * n];
    }
    let one = |i: usize, o: &mut [std::mem::MaybeUninit<f32>], parallel: bool| {
        let (oa, ob) = (offsets(la, i), offsets(lb, i));
        gemm_f32_uninit(o, m, n, k, &a[oa..], ars, acs, &b[ob..], brs, bcs, parallel, None);
    };
    // SAFETY: each of the batch products writes all m·n floats of its chunk
    // (no zero-filling first).
    unsafe {
        written_vec(batch * m * n, |out| {
            if batch == 1 || m * n * k >= PAR_GEMM_WORK * 8 {
                out.chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, true));
            } else {
                out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, false));
            }
        })
    }
}

/// `x [m, k] · wᵀ + bias`: GEMMs onto rows pre-filled with the bias.
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
    let bv = bias.map(|(b, lb)| gather(b, lb.shape(), lb.strides(), lb.offset()));
    // SAFETY: the product writes all m·n outputs (from the bias rows when there is one).
    unsafe { written_vec(m * n, |o| gemm_f32_uninit(o, m, n, k, xv, xr, xc, wv, wr, wc, true, bv.as_deref())) }
}

/// `cat(xs, last) · wᵀ + bias` without the concatenation: the first part's
/// product onto rows pre-filled with the bias, then each further part's
/// product added into the same output (`parts[i]` is `[m, ks[i]]`, `w` is
/// `[n, Σks]`, read part by part through its column offset). Each product
/// is banded over threads as [`gemm_f32_raw`] does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_cat(
    parts: &[(&[f32], &Layout)],
    w: &[f32],
    lw: &Layout,
    bias: Option<(&[f32], &Layout)>,
    m: usize,
    ks: &[usize],
    n: usize,
) -> Vec<f32> {
    assert_eq!(parts.len(), ks.len(), "linear_cat: one width per part");
    let (wr, wc) = (lw.strides()[1], lw.strides()[0]);
    let bv = bias.map(|(b, lb)| gather(b, lb.shape(), lb.strides(), lb.offset()));
    // SAFETY: the first product writes all m·n outputs (from the bias rows
    // when there is one, from zeros when it has no columns); later ones
    // accumulate into them.
    unsafe {
        written_vec(m * n, |o| {
            let (ptr, len) = (o.as_mut_ptr().cast::<f32>(), o.len());
            let mut col = 0;
            for (i, (&(x, lx), &k)) in parts.iter().zip(ks).enumerate() {
                let (xv, wv) = (&x[lx.offset()..], &w[lw.offset() + col * wr..]);
                let (xr, xc) = (lx.strides()[0], lx.strides()[1]);
                if i == 0 {
                    // Zeros first when there is no bias: the accumulating
                    // products below read the output.
                    let zeros = bv.is_none().then(|| vec![0f32; n]);
                    gemm_f32_raw(ptr, len, n, m, n, k, xv, xr, xc, wv, wr, wc, false, true, bv.as_deref().or(zeros.as_deref()));
                } else {
                    gemm_f32_raw(ptr, len, n, m, n, k, xv, xr, xc, wv, wr, wc, true, true, None);
                }
                col += k;
            }
        })
    }
}
