//! CPU data movement: writing views into boxes of a new buffer (`cat`,
//! `pad`) and `index_select` with its gradient.

use crate::backend::cpu::strided::Walk;
use crate::{Layout, Result};

/// Copies the strided source view into the box `dst_box` (a view of the
/// contiguous `dst`, same shape as the source).
fn copy_into_box(src: &[f32], src_layout: &Layout, dst: &mut [f32], dst_box: &Layout) {
    let shape = src_layout.shape();
    let walk = Walk::new(shape, [src_layout.strides(), dst_box.strides()]);
    let inner = walk.inner();
    let [is, id] = walk.inner_strides();
    let rows = shape.iter().product::<usize>() / inner.max(1);
    for r in 0..rows {
        let [os, od] = walk.row_offsets(r);
        let (os, od) = (os + src_layout.offset(), od + dst_box.offset());
        for i in 0..inner {
            dst[od + i * id] = src[os + i * is];
        }
    }
}

/// A new `shape` buffer filled with `fill` (zeros when `None`) with each
/// part's view written into its box.
pub(crate) fn assemble(parts: &[(&[f32], &Layout, &Layout)], shape: &[usize], fill: Option<f32>) -> Vec<f32> {
    let mut out = vec![fill.unwrap_or(0.0); shape.iter().product()];
    for (src, l, b) in parts {
        copy_into_box(src, l, &mut out, b);
    }
    out
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
