//! Random draws on the CPU: the host Philox stream of [`Rng`].

use crate::Rng;
use crate::op_kinds::Draw;

/// `n` values of `what`, advancing `rng`.
pub(crate) fn draw(n: usize, rng: &mut Rng, what: Draw) -> Vec<f32> {
    match what {
        Draw::Normal => rng.normal_vec(n),
        Draw::Uniform(lo, hi) => rng.uniform_vec(n, lo, hi),
        Draw::Dropout(p, scale) => rng.uniform_vec(n, 0.0, 1.0).into_iter().map(|u| if u < p { 0.0 } else { scale }).collect(),
    }
}
