//! Philox draws on CUDA: the same (seed, counter) stream as the CPU
//! [`Rng`], generated on the device, with the host generator's counter
//! advanced by exactly the blocks the CPU draw would consume (⌈n/4⌉), so CPU
//! and GPU runs stay in step. Uniforms are bit-identical to the CPU's;
//! normals may differ by a few ulp (device `logf`/`sincosf`).

use sparsedm_kernels::ops::rng;

use crate::backend::cuda::storage::{CudaStorage, gpu_of, kerr};
use crate::op_kinds::Draw;
use crate::{DType, Result, Rng};

/// `n` values of `what` on device `ordinal`, advancing `r`.
pub(crate) fn draw(ordinal: usize, n: usize, r: &mut Rng, what: Draw) -> Result<CudaStorage> {
    let op = "rng";
    let gpu = gpu_of(ordinal)?;
    let (seed, counter) = r.state();
    let mut out = CudaStorage::alloc(&gpu, DType::F32, n, op)?;
    match what {
        Draw::Normal => rng::normal(&gpu, n, seed, counter, out.buffer_mut()),
        Draw::Uniform(lo, hi) => rng::uniform(&gpu, n, seed, counter, lo, hi, out.buffer_mut()),
        Draw::Dropout(p, scale) => rng::dropout_mask(&gpu, n, seed, counter, p, scale, out.buffer_mut()),
    }
    .map_err(kerr(op))?;
    *r = Rng::from_state(seed, counter.wrapping_add(rng::blocks_used(n)));
    Ok(out)
}
