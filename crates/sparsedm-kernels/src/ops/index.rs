//! Module `index`: gathers along one dimension (embedding, index_select) and their gradient.

use crate::device::{BLOCK, grid_for};
use crate::error::Result;
use crate::launch::{i64_of, launch};
use crate::{DeviceBuffer, Gpu, GpuDType};

/// `y[o, i, j] = x[o, idx[i], j]` for `x [outer, src_dim, inner]`. The indices (i64) must be in
/// `0..src_dim`: the caller validates them on the host before upload.
pub fn index_select(
    gpu: &Gpu,
    dt: GpuDType,
    outer: usize,
    n_idx: usize,
    inner: usize,
    src_dim: usize,
    idx: &DeviceBuffer,
    x: &DeviceBuffer,
    y: &mut DeviceBuffer,
) -> Result<()> {
    idx.check_fits("index_select", "indices", n_idx, 8)?;
    x.check_fits("index_select", "input", outer * src_dim * inner, dt.size())?;
    let ny = outer * n_idx * inner;
    y.check_fits("index_select", "output", ny, dt.size())?;
    if ny == 0 {
        return Ok(());
    }
    let (o, n, i, s, ip, xp, yp) =
        (i64_of(outer), i64_of(n_idx), i64_of(inner), i64_of(src_dim), idx.device_ptr(), x.device_ptr(), y.device_ptr());
    launch!(gpu, "index", format!("index_select_{dt}"), grid_for(ny, BLOCK), o, n, i, s, ip, xp, yp)
}

/// Gradient of [`index_select`]: `gx[o, r, j] = Σ_{idx[i] = r} gy[o, i, j]` (writes all of gx).
pub fn index_add_bwd(
    gpu: &Gpu,
    outer: usize,
    n_idx: usize,
    inner: usize,
    dst_dim: usize,
    idx: &DeviceBuffer,
    gy: &DeviceBuffer,
    gx: &mut DeviceBuffer,
) -> Result<()> {
    idx.check_fits("index_add_bwd", "indices", n_idx, 8)?;
    gy.check_fits("index_add_bwd", "output gradient", outer * n_idx * inner, 4)?;
    let nx = outer * dst_dim * inner;
    gx.check_fits("index_add_bwd", "input gradient", nx, 4)?;
    if nx == 0 {
        return Ok(());
    }
    let (o, n, i, d, ip, gyp, gxp) =
        (i64_of(outer), i64_of(n_idx), i64_of(inner), i64_of(dst_dim), idx.device_ptr(), gy.device_ptr(), gx.device_ptr());
    launch!(gpu, "index", "index_add_bwd", grid_for(nx, BLOCK), o, n, i, d, ip, gyp, gxp)
}
