//! Module `rng`: Philox4x32-10 streams identical to `sparsedm-tensor`'s CPU `Rng`.
//!
//! The caller passes the generator's (seed, counter) and advances its counter by
//! [`blocks_used`] afterwards, exactly as the CPU generator does for the same draw.

use crate::device::{BLOCK, grid_for};
use crate::error::Result;
use crate::launch::{i64_of, launch};
use crate::{DeviceBuffer, Gpu};

/// Philox blocks (4 outputs each) consumed by a draw of `n` values.
pub fn blocks_used(n: usize) -> u64 {
    n.div_ceil(4) as u64
}

fn key(seed: u64) -> (u32, u32) {
    (seed as u32, (seed >> 32) as u32)
}

/// `n` uniforms in `[lo, hi)`.
pub fn uniform(gpu: &Gpu, n: usize, seed: u64, counter: u64, lo: f32, hi: f32, y: &mut DeviceBuffer) -> Result<()> {
    y.check_fits("rng_uniform", "output", n, 4)?;
    if n == 0 {
        return Ok(());
    }
    let ((s0, s1), n64, yp) = (key(seed), i64_of(n), y.device_ptr());
    launch!(gpu, "rng", "philox_uniform", grid_for(blocks_used(n) as usize, BLOCK), n64, s0, s1, counter, lo, hi, yp)
}

/// `n` standard normals (Box–Muller).
pub fn normal(gpu: &Gpu, n: usize, seed: u64, counter: u64, y: &mut DeviceBuffer) -> Result<()> {
    y.check_fits("rng_normal", "output", n, 4)?;
    if n == 0 {
        return Ok(());
    }
    let ((s0, s1), n64, yp) = (key(seed), i64_of(n), y.device_ptr());
    launch!(gpu, "rng", "philox_normal", grid_for(blocks_used(n) as usize, BLOCK), n64, s0, s1, counter, yp)
}

/// Dropout multipliers: `u < p ? 0 : scale` from the uniform stream.
pub fn dropout_mask(gpu: &Gpu, n: usize, seed: u64, counter: u64, p: f32, scale: f32, y: &mut DeviceBuffer) -> Result<()> {
    y.check_fits("rng_dropout", "output", n, 4)?;
    if n == 0 {
        return Ok(());
    }
    let ((s0, s1), n64, yp) = (key(seed), i64_of(n), y.device_ptr());
    launch!(gpu, "rng", "philox_dropout", grid_for(blocks_used(n) as usize, BLOCK), n64, s0, s1, counter, p, scale, yp)
}
