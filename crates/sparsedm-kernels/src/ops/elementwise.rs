//! Module `elementwise`: unary maps, broadcasting binary maps and `where`, over strided inputs
//! into a contiguous output. Op codes: [`crate::abi`].

use crate::abi::SdmLayout;
use crate::device::{BLOCK, grid_for};
use crate::error::Result;
use crate::launch::{check_same_shape, check_view, i64_of, launch, numel};
use crate::{DeviceBuffer, Gpu, GpuDType};

/// `y = f_op(x)` with scalar parameters `a`, `b` (see kernels/ABI.md for each op's use).
pub fn unary(gpu: &Gpu, dt: GpuDType, op: i32, a: f32, b: f32, x: &DeviceBuffer, xl: &SdmLayout, y: &mut DeviceBuffer) -> Result<()> {
    check_view("unary", "input", xl, x, dt.size())?;
    let n = numel(xl);
    y.check_fits("unary", "output", n, dt.size())?;
    if n == 0 {
        return Ok(());
    }
    let (n64, xl, xp, yp) = (i64_of(n), *xl, x.device_ptr(), y.device_ptr());
    launch!(gpu, "elementwise", format!("unary_{dt}"), grid_for(n, BLOCK), n64, op, a, b, xl, xp, yp)
}

/// `y = g_op(a, b)`; both layouts already broadcast to the output shape (zero strides).
pub fn binary(
    gpu: &Gpu,
    dt: GpuDType,
    op: i32,
    a: &DeviceBuffer,
    al: &SdmLayout,
    b: &DeviceBuffer,
    bl: &SdmLayout,
    y: &mut DeviceBuffer,
) -> Result<()> {
    check_same_shape("binary", al, bl)?;
    check_view("binary", "lhs", al, a, dt.size())?;
    check_view("binary", "rhs", bl, b, dt.size())?;
    let n = numel(al);
    y.check_fits("binary", "output", n, dt.size())?;
    if n == 0 {
        return Ok(());
    }
    let (n64, al, ap, bl, bp, yp) = (i64_of(n), *al, a.device_ptr(), *bl, b.device_ptr(), y.device_ptr());
    launch!(gpu, "elementwise", format!("binary_{dt}"), grid_for(n, BLOCK), n64, op, al, ap, bl, bp, yp)
}

/// `y = c != 0 ? a : b`, all three broadcast to the output shape.
pub fn where_cond(
    gpu: &Gpu,
    dt: GpuDType,
    c: &DeviceBuffer,
    cl: &SdmLayout,
    a: &DeviceBuffer,
    al: &SdmLayout,
    b: &DeviceBuffer,
    bl: &SdmLayout,
    y: &mut DeviceBuffer,
) -> Result<()> {
    check_same_shape("where", cl, al)?;
    check_same_shape("where", cl, bl)?;
    check_view("where", "condition", cl, c, dt.size())?;
    check_view("where", "a", al, a, dt.size())?;
    check_view("where", "b", bl, b, dt.size())?;
    let n = numel(cl);
    y.check_fits("where", "output", n, dt.size())?;
    if n == 0 {
        return Ok(());
    }
    let (n64, cl, cp, al, ap, bl, bp, yp) = (i64_of(n), *cl, c.device_ptr(), *al, a.device_ptr(), *bl, b.device_ptr(), y.device_ptr());
    launch!(gpu, "elementwise", format!("where_{dt}"), grid_for(n, BLOCK), n64, cl, cp, al, ap, bl, bp, yp)
}
