//! Module `copy`: strided copies, dtype casts, fills.

use crate::abi::SdmLayout;
use crate::device::{BLOCK, grid_for};
use crate::error::{KernelsError, Result};
use crate::launch::{check_same_shape, check_view, i64_of, launch, numel};
use crate::{DeviceBuffer, Gpu, GpuDType};

/// `dst[dl] = src[sl]` element by element over their common shape (contiguous(), cat, pad).
pub fn copy_strided(gpu: &Gpu, dt: GpuDType, src: &DeviceBuffer, sl: &SdmLayout, dst: &mut DeviceBuffer, dl: &SdmLayout) -> Result<()> {
    check_same_shape("copy_strided", sl, dl)?;
    check_view("copy_strided", "source", sl, src, dt.size())?;
    check_view("copy_strided", "destination", dl, dst, dt.size())?;
    let n = numel(sl);
    if n == 0 {
        return Ok(());
    }
    let (n64, sl, dl, sp, dp) = (i64_of(n), *sl, *dl, src.device_ptr(), dst.device_ptr());
    launch!(gpu, "copy", format!("copy_strided_{dt}"), grid_for(n, BLOCK), n64, sl, sp, dl, dp)
}

/// Converts `n` contiguous elements from `from` to `to` (f32 ↔ f16/bf16, round to nearest even).
pub fn cast(gpu: &Gpu, n: usize, from: GpuDType, x: &DeviceBuffer, to: GpuDType, y: &mut DeviceBuffer) -> Result<()> {
    if from == to || (from != GpuDType::F32 && to != GpuDType::F32) {
        return Err(KernelsError::invalid("cast", format!("no kernel for {from} -> {to} (one side must be f32, the other not)")));
    }
    x.check_fits("cast", "input", n, from.size())?;
    y.check_fits("cast", "output", n, to.size())?;
    if n == 0 {
        return Ok(());
    }
    let (n64, xp, yp) = (i64_of(n), x.device_ptr(), y.device_ptr());
    launch!(gpu, "copy", format!("cast_{from}_{to}"), grid_for(n, BLOCK), n64, xp, yp)
}

/// `y[..n] = v`.
pub fn fill(gpu: &Gpu, dt: GpuDType, n: usize, v: f32, y: &mut DeviceBuffer) -> Result<()> {
    y.check_fits("fill", "output", n, dt.size())?;
    if n == 0 {
        return Ok(());
    }
    let (n64, yp) = (i64_of(n), y.device_ptr());
    launch!(gpu, "copy", format!("fill_{dt}"), grid_for(n, BLOCK), n64, v, yp)
}
