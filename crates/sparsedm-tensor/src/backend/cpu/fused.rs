//! The CPU versions of the fused in-place training updates: one AdamW step
//! over a parameter and its two moments, and the EMA of weights. The
//! arithmetic is `sparsedm-train`'s CPU optimizer's, operation by operation
//! (and that of `kernels/optim.cu`), so every device computes the same
//! update. Parallel over chunks of the parameter.

use crate::backend::cpu::simd::vectorized;
use crate::op_kinds::AdamWScalars;
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `p`, `m`, `v` updated in place from the gradient `g` (all the same length).
pub(crate) fn adamw_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWScalars) {
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| vectorized(|| adamw_chunk(p, g, m, v, s)));
}

/// One chunk of [`adamw_step`]; always inlined so [`vectorized`] compiles it
/// for the chosen instructions.
#[inline(always)]
fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWScalars) {
    let AdamWScalars { beta1: b1, beta2: b2, eps, decay, step_size, bc2_sqrt, .. } = *s;
    for i in 0..p.len() {
        let gi = g[i];
        p[i] *= decay;
        m[i] += (1.0 - b1) * (gi - m[i]);
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        p[i] -= step_size * m[i] / denom;
    }
}

#[inline(always)]
fn ema_chunk(e: &mut [f32], x: &[f32], d: f32) {
    for (e, &c) in e.iter_mut().zip(x) {
        *e = d * *e + (1.0 - d) * c;
    }
}

/// `e ← d·e + (1 − d)·x` element-wise.
pub(crate) fn ema_update(e: &mut [f32], x: &[f32], d: f32) {
    e.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(e, x)| vectorized(|| ema_chunk(e, x, d)));
}
