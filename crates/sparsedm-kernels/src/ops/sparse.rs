//! Module `sparse`: N:M magnitude masks, SR-STE's weight gradient and the masked forward weight.

use crate::device::{BLOCK, grid_for};
use crate::error::{KernelsError, Result};
use crate::launch::{i64_of, launch};
use crate::{DeviceBuffer, Gpu, GpuDType};

/// Mask of weight `[rows, inp, k]` keeping the `n` largest `|w|` of every `m` consecutive input
/// channels at each (row, kernel position) — the rule of `sparsedm-layers`' `mask.rs`.
pub fn nm_mask(gpu: &Gpu, rows: usize, inp: usize, k: usize, n: usize, m: usize, w: &DeviceBuffer, mask: &mut DeviceBuffer) -> Result<()> {
    if m == 0 || m > 32 || n > m || !inp.is_multiple_of(m) {
        return Err(KernelsError::invalid("nm_mask", format!("pattern {n}:{m} on {inp} input channels (need m ≤ 32, n ≤ m, m | inputs)")));
    }
    let total = rows * inp * k;
    w.check_fits("nm_mask", "weight", total, 4)?;
    mask.check_fits("nm_mask", "mask", total, 4)?;
    if total == 0 {
        return Ok(());
    }
    let (r, i, kk, n32, m32, wp, mp) = (i64_of(rows), i64_of(inp), i64_of(k), n as i32, m as i32, w.device_ptr(), mask.device_ptr());
    launch!(gpu, "sparse", "nm_mask", grid_for(total / m, BLOCK), r, i, kk, n32, m32, wp, mp)
}

/// `out = g + λ·(1 − mask)·w`: SR-STE's gradient of the dense weights.
pub fn srste_grad(
    gpu: &Gpu,
    n: usize,
    lambda: f32,
    g: &DeviceBuffer,
    w: &DeviceBuffer,
    mask: &DeviceBuffer,
    out: &mut DeviceBuffer,
) -> Result<()> {
    for (what, b) in [("gradient", g), ("weight", w), ("mask", mask), ("output", &*out)] {
        b.check_fits("srste_grad", what, n, 4)?;
    }
    if n == 0 {
        return Ok(());
    }
    let (n64, gp, wp, mp, op) = (i64_of(n), g.device_ptr(), w.device_ptr(), mask.device_ptr(), out.device_ptr());
    launch!(gpu, "sparse", "srste_grad", grid_for(n, BLOCK), n64, lambda, gp, wp, mp, op)
}

/// `y = w ⊙ mask`, stored as `dt` (the GEMM's input type).
pub fn masked_weight(gpu: &Gpu, dt: GpuDType, n: usize, w: &DeviceBuffer, mask: &DeviceBuffer, y: &mut DeviceBuffer) -> Result<()> {
    w.check_fits("masked_weight", "weight", n, 4)?;
    mask.check_fits("masked_weight", "mask", n, 4)?;
    y.check_fits("masked_weight", "output", n, dt.size())?;
    if n == 0 {
        return Ok(());
    }
    let (n64, wp, mp, yp) = (i64_of(n), w.device_ptr(), mask.device_ptr(), y.device_ptr());
    launch!(gpu, "sparse", format!("masked_weight_{dt}"), grid_for(n, BLOCK), n64, wp, mp, yp)
}
