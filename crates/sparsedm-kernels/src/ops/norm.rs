//! Module `norm`: row standardization, the core of LayerNorm and GroupNorm (rows = N·G).

use crate::device::{BLOCK, grid_rows};
use crate::error::{KernelsError, Result};
use crate::launch::{i64_of, launch};
use crate::{DeviceBuffer, Gpu, GpuDType};

/// `y = (x − mean)·rstd` per row; writes f32 `mean` and `rstd` (one per row) for the backward.
pub fn standardize_fwd(
    gpu: &Gpu,
    dt: GpuDType,
    rows: usize,
    cols: usize,
    eps: f32,
    x: &DeviceBuffer,
    y: &mut DeviceBuffer,
    mean: &mut DeviceBuffer,
    rstd: &mut DeviceBuffer,
) -> Result<()> {
    if cols == 0 {
        return Err(KernelsError::invalid("standardize", "rows of zero elements"));
    }
    x.check_fits("standardize", "input", rows * cols, dt.size())?;
    y.check_fits("standardize", "output", rows * cols, dt.size())?;
    mean.check_fits("standardize", "mean", rows, 4)?;
    rstd.check_fits("standardize", "rstd", rows, 4)?;
    if rows == 0 {
        return Ok(());
    }
    let (r, c, xp, yp, mp, sp) = (i64_of(rows), i64_of(cols), x.device_ptr(), y.device_ptr(), mean.device_ptr(), rstd.device_ptr());
    launch!(gpu, "norm", format!("standardize_fwd_{dt}"), grid_rows(rows, BLOCK), r, c, eps, xp, yp, mp, sp)
}

/// `gx = rstd·(gy − mean(gy) − y·mean(gy⊙y))` from the standardized output `y`.
pub fn standardize_bwd(
    gpu: &Gpu,
    dt: GpuDType,
    rows: usize,
    cols: usize,
    y: &DeviceBuffer,
    rstd: &DeviceBuffer,
    gy: &DeviceBuffer,
    gx: &mut DeviceBuffer,
) -> Result<()> {
    y.check_fits("standardize_bwd", "output", rows * cols, dt.size())?;
    gy.check_fits("standardize_bwd", "output gradient", rows * cols, dt.size())?;
    gx.check_fits("standardize_bwd", "input gradient", rows * cols, dt.size())?;
    rstd.check_fits("standardize_bwd", "rstd", rows, 4)?;
    if rows * cols == 0 {
        return Ok(());
    }
    let (r, c, yp, sp, gyp, gxp) = (i64_of(rows), i64_of(cols), y.device_ptr(), rstd.device_ptr(), gy.device_ptr(), gx.device_ptr());
    launch!(gpu, "norm", format!("standardize_bwd_{dt}"), grid_rows(rows, BLOCK), r, c, yp, sp, gyp, gxp)
}
