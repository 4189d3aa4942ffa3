//! Module `softmax`: softmax and log-softmax over rows of `cols` contiguous elements.

use crate::device::{BLOCK, grid_rows};
use crate::error::Result;
use crate::launch::{i64_of, launch};
use crate::{DeviceBuffer, Gpu, GpuDType};

fn check(op: &'static str, dt: GpuDType, rows: usize, cols: usize, bufs: &[(&str, &DeviceBuffer)]) -> Result<()> {
    for (what, b) in bufs {
        b.check_fits(op, what, rows * cols, dt.size())?;
    }
    Ok(())
}

/// `y = softmax(x)` (`log = false`) or `log_softmax(x)` per row.
pub fn softmax(gpu: &Gpu, dt: GpuDType, log: bool, rows: usize, cols: usize, x: &DeviceBuffer, y: &mut DeviceBuffer) -> Result<()> {
    check("softmax", dt, rows, cols, &[("input", x), ("output", y)])?;
    if rows * cols == 0 {
        return Ok(());
    }
    let name = if log { format!("log_softmax_{dt}") } else { format!("softmax_{dt}") };
    let (r, c, xp, yp) = (i64_of(rows), i64_of(cols), x.device_ptr(), y.device_ptr());
    launch!(gpu, "softmax", name, grid_rows(rows, BLOCK), r, c, xp, yp)
}

/// Gradient of [`softmax`] from its output `y` and the output gradient `gy`.
pub fn softmax_bwd(
    gpu: &Gpu,
    dt: GpuDType,
    log: bool,
    rows: usize,
    cols: usize,
    y: &DeviceBuffer,
    gy: &DeviceBuffer,
    gx: &mut DeviceBuffer,
) -> Result<()> {
    check("softmax_bwd", dt, rows, cols, &[("output", y), ("output gradient", gy), ("input gradient", gx)])?;
    if rows * cols == 0 {
        return Ok(());
    }
    let name = if log { format!("log_softmax_bwd_{dt}") } else { format!("softmax_bwd_{dt}") };
    let (r, c, yp, gyp, gxp) = (i64_of(rows), i64_of(cols), y.device_ptr(), gy.device_ptr(), gx.device_ptr());
    launch!(gpu, "softmax", name, grid_rows(rows, BLOCK), r, c, yp, gyp, gxp)
}
