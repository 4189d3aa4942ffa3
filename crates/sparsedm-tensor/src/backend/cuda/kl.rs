//! Tensor layouts as the kernels' `SdmLayout`s. Adjacent dims that are
//! contiguous for every operand are merged first (the CPU walker's rule), so
//! any view whose merged rank is at most 6 reaches the kernels without a copy.

use sparsedm_kernels::abi::{MAX_DIMS, SdmLayout};

use crate::backend::cpu::strided::Walk;
use crate::{Error, Result};

/// The kernel layouts of `K` operands iterated over one logical `shape`
/// (operand `k` has `strides[k]` and `offsets[k]`), dims merged jointly.
pub(crate) fn layouts<const K: usize>(
    op: &'static str,
    shape: &[usize],
    strides: [&[usize]; K],
    offsets: [usize; K],
) -> Result<[SdmLayout; K]> {
    let w = Walk::new(shape, strides);
    let mut out = [SdmLayout::default(); K];
    for (k, o) in out.iter_mut().enumerate() {
        let st: Vec<usize> = w.strides.iter().map(|s| s[k]).collect();
        *o = SdmLayout::new(&w.dims, &st, offsets[k]).ok_or_else(|| {
            Error::bad_shape(op, shape, format!("the view has more than {MAX_DIMS} non-mergeable dims, the most a CUDA kernel takes"))
        })?;
    }
    Ok(out)
}
