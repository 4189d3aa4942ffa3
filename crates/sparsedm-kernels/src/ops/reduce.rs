//! Module `reduce`: reductions of a contiguous `[outer, red, inner]` view over `red` into f32.

use crate::device::{BLOCK, grid_rows};
use crate::error::{KernelsError, Result};
use crate::launch::{i64_of, launch};
use crate::{DeviceBuffer, Gpu, GpuDType};

/// `y[o, i] = op_r x[o, r, i]` (op codes `abi::reduce`), y f32 `[outer, inner]`.
pub fn reduce(
    gpu: &Gpu,
    dt: GpuDType,
    outer: usize,
    red: usize,
    inner: usize,
    op: i32,
    x: &DeviceBuffer,
    y: &mut DeviceBuffer,
) -> Result<()> {
    if red == 0 {
        return Err(KernelsError::invalid("reduce", "empty reduction axis"));
    }
    x.check_fits("reduce", "input", outer * red * inner, dt.size())?;
    y.check_fits("reduce", "output", outer * inner, 4)?;
    if outer * inner == 0 {
        return Ok(());
    }
    let (o, r, i, xp, yp) = (i64_of(outer), i64_of(red), i64_of(inner), x.device_ptr(), y.device_ptr());
    launch!(gpu, "reduce", format!("reduce_{dt}"), grid_rows(outer * inner, BLOCK), o, r, i, op, xp, yp)
}

/// Max over `red` and its first index (NaN counts as the maximum).
pub fn argmax(
    gpu: &Gpu,
    outer: usize,
    red: usize,
    inner: usize,
    x: &DeviceBuffer,
    vals: &mut DeviceBuffer,
    idx: &mut DeviceBuffer,
) -> Result<()> {
    if red == 0 {
        return Err(KernelsError::invalid("argmax", "empty reduction axis"));
    }
    x.check_fits("argmax", "input", outer * red * inner, 4)?;
    vals.check_fits("argmax", "values", outer * inner, 4)?;
    idx.check_fits("argmax", "indices", outer * inner, 8)?;
    if outer * inner == 0 {
        return Ok(());
    }
    let (o, r, i, xp, vp, ip) = (i64_of(outer), i64_of(red), i64_of(inner), x.device_ptr(), vals.device_ptr(), idx.device_ptr());
    launch!(gpu, "reduce", "argmax_f32", grid_rows(outer * inner, BLOCK), o, r, i, xp, vp, ip)
}
