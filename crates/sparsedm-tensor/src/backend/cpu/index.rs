//! CPU data movement: writing views into boxes of a new buffer (`cat`,
//! `pad`) and `index_select` with its gradient.

use crate::backend::cpu::strided::{PAR_CHUNK, SendPtr, Walk, written_vec};
use crate::{Layout, Result};
use rayon::prelude::*;

/// Copies the strided source view into the box `dst_box` (a view of the
/// contiguous `dst` of `dst_len` floats, same shape as the source), rows of
/// the box in parallel when it is large.
///
/// # Safety
/// `dst` points to `dst_len` writable floats, no other thread writes the
/// box meanwhile, and the box's rows do not overlap (a box of a fresh
/// contiguous buffer built by `cat`/`pad`). The box is bounds-checked here.
unsafe fn copy_into_box(src: &[f32], src_layout: &Layout, dst: *mut f32, dst_len: usize, dst_box: &Layout) {
    let shape = src_layout.shape();
    if shape.contains(&0) {
        return;
    }
    let last = dst_box.offset() + shape.iter().zip(dst_box.strides()).map(|(&d, &s)| (d - 1) * s).sum::<usize>();
    assert!(last < dst_len, "copy_into_box: box past the end of the output");
    let walk = Walk::new(shape, [src_layout.strides(), dst_box.strides()]);
    let inner = walk.inner();
    let [is, id] = walk.inner_strides();
    let rows = shape.iter().product::<usize>() / inner.max(1);
    let dst = SendPtr(dst);
    let row = |r: usize| {
        let [os, od] = walk.row_offsets(r);
        let (os, od) = (os + src_layout.offset(), od + dst_box.offset());
        let d = dst.get();
        for i in 0..inner {
            // SAFETY: od + i·id ≤ last < dst_len (checked above); rows
            // write disjoint elements (caller).
            unsafe { *d.add(od + i * id) = src[os + i * is] };
        }
    };
    if rows * inner >= PAR_CHUNK && rows > 1 {
        (0..rows).into_par_iter().with_min_len((PAR_CHUNK / inner.max(1)).max(1)).for_each(row);
    } else {
        (0..rows).for_each(row);
    }
}

/// A new `shape` buffer with each part's view written into its box, the
/// rest filled with `fill`. `None` is `cat`'s case: the boxes tile the
/// whole output, so it is not pre-filled at all.
pub(crate) fn assemble(parts: &[(&[f32], &Layout, &Layout)], shape: &[usize], fill: Option<f32>) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let copy_all = |dst: *mut f32| {
        for (src, l, b) in parts {
            // SAFETY: `dst` holds n floats; the boxes are disjoint views of it.
            unsafe { copy_into_box(src, l, dst, n, b) };
        }
    };
    match fill {
        Some(v) => {
            let mut out = vec![v; n];
            copy_all(out.as_mut_ptr());
            out
        }
        None => {
            let covered: usize = parts.iter().map(|(_, l, _)| l.elem_count()).sum();
            assert_eq!(covered, n, "assemble without a fill: the parts must tile the output");
            // SAFETY: the disjoint boxes cover all n elements (their sizes
            // add up to n), and each is written in full.
            unsafe { written_vec(n, |o| copy_all(o.as_mut_ptr().cast::<f32>())) }
        }
    }
}

/// `[outer, size, inner]` around `dim` of `shape`.
fn around(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product())
}

/// Entries `idx` (validated) along `dim` of the contiguous `x` of `shape`.
pub(crate) fn index_select(x: &[f32], shape: &[usize], dim: usize, idx: &[i64]) -> Vec<f32> {
    let (outer, size, inner) = around(shape, dim);
    let mut out = vec![0f32; outer * idx.len() * inner];
    for o in 0..outer {
        for (j, &i) in idx.iter().enumerate() {
            let from = (o * size + i as usize) * inner;
            let to = (o * idx.len() + j) * inner;
            out[to..to + inner].copy_from_slice(&x[from..from + inner]);
        }
    }
    out
}

/// Gradient of [`index_select`]: the contiguous gradient rows added into
/// zeros of `in_shape`.
pub(crate) fn index_select_backward(g: &[f32], idx: &[i64], in_shape: &[usize], dim: usize) -> Result<Vec<f32>> {
    let (outer, size, inner) = around(in_shape, dim);
    let mut acc = vec![0f32; in_shape.iter().product()];
    for o in 0..outer {
        for (j, &i) in idx.iter().enumerate() {
            let to = (o * size + i as usize) * inner;
            let from = (o * idx.len() + j) * inner;
            for (a, &x) in acc[to..to + inner].iter_mut().zip(&g[from..from + inner]) {
                *a += x;
            }
        }
    }
    Ok(acc)
}
