//! Module `pool`: max/avg pooling, nearest upsampling and bilinear resizing of `[NC, H, W]` planes
//! (f32), with gather-form backward kernels (deterministic).

use crate::device::{BLOCK, grid_for};
use crate::error::{KernelsError, Result};
use crate::launch::{i64_of, launch};
use crate::{DeviceBuffer, Gpu};

/// A square pooling window over `nc` planes of `h × w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub nc: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
}

impl PoolGeometry {
    /// Output size (floor mode), or an error for a window that does not fit.
    pub fn output(&self) -> Result<(usize, usize)> {
        if self.k == 0 || self.s == 0 || 2 * self.p > self.k || self.h + 2 * self.p < self.k || self.w + 2 * self.p < self.k {
            return Err(KernelsError::invalid(
                "pool2d",
                format!("window {} stride {} padding {} on {}x{}", self.k, self.s, self.p, self.h, self.w),
            ));
        }
        Ok(((self.h + 2 * self.p - self.k) / self.s + 1, (self.w + 2 * self.p - self.k) / self.s + 1))
    }
    /// `([h, w, k, s, p, oh], ow)` as the kernels' `int`s.
    fn ints(&self) -> Result<([i32; 6], i32)> {
        let (oh, ow) = self.output()?;
        let mut out = [0i32; 6];
        for (o, d) in out.iter_mut().zip([self.h, self.w, self.k, self.s, self.p, oh]) {
            *o = small("pool2d", d)?;
        }
        Ok((out, small("pool2d", ow)?))
    }
}

/// Max pooling (padding −∞); `arg` gets the in-plane index of each maximum (i64).
pub fn maxpool2d_fwd(gpu: &Gpu, g: &PoolGeometry, x: &DeviceBuffer, y: &mut DeviceBuffer, arg: &mut DeviceBuffer) -> Result<()> {
    let (oh, ow) = g.output()?;
    let ny = g.nc * oh * ow;
    x.check_fits("maxpool2d", "input", g.nc * g.h * g.w, 4)?;
    y.check_fits("maxpool2d", "output", ny, 4)?;
    arg.check_fits("maxpool2d", "argmax", ny, 8)?;
    if ny == 0 {
        return Ok(());
    }
    let ([h, w, k, s, p, oh], ow) = g.ints()?;
    let (nc, xp, yp, ap) = (i64_of(g.nc), x.device_ptr(), y.device_ptr(), arg.device_ptr());
    launch!(gpu, "pool", "maxpool2d_fwd", grid_for(ny, BLOCK), nc, h, w, k, s, p, oh, ow, xp, yp, ap)
}

/// Gradient of [`maxpool2d_fwd`].
pub fn maxpool2d_bwd(gpu: &Gpu, g: &PoolGeometry, arg: &DeviceBuffer, gy: &DeviceBuffer, gx: &mut DeviceBuffer) -> Result<()> {
    let (oh, ow) = g.output()?;
    let nx = g.nc * g.h * g.w;
    arg.check_fits("maxpool2d_bwd", "argmax", g.nc * oh * ow, 8)?;
    gy.check_fits("maxpool2d_bwd", "output gradient", g.nc * oh * ow, 4)?;
    gx.check_fits("maxpool2d_bwd", "input gradient", nx, 4)?;
    if nx == 0 {
        return Ok(());
    }
    let ([h, w, k, s, p, oh], ow) = g.ints()?;
    let (nc, ap, gyp, gxp) = (i64_of(g.nc), arg.device_ptr(), gy.device_ptr(), gx.device_ptr());
    launch!(gpu, "pool", "maxpool2d_bwd", grid_for(nx, BLOCK), nc, h, w, k, s, p, oh, ow, ap, gyp, gxp)
}

/// Average pooling (PyTorch `avg_pool2d`, floor mode).
pub fn avgpool2d_fwd(gpu: &Gpu, g: &PoolGeometry, count_include_pad: bool, x: &DeviceBuffer, y: &mut DeviceBuffer) -> Result<()> {
    let (oh, ow) = g.output()?;
    let ny = g.nc * oh * ow;
    x.check_fits("avgpool2d", "input", g.nc * g.h * g.w, 4)?;
    y.check_fits("avgpool2d", "output", ny, 4)?;
    if ny == 0 {
        return Ok(());
    }
    let ([h, w, k, s, p, oh], ow) = g.ints()?;
    let (nc, cip, xp, yp) = (i64_of(g.nc), i32::from(count_include_pad), x.device_ptr(), y.device_ptr());
    launch!(gpu, "pool", "avgpool2d_fwd", grid_for(ny, BLOCK), nc, h, w, k, s, p, cip, oh, ow, xp, yp)
}

/// Gradient of [`avgpool2d_fwd`].
pub fn avgpool2d_bwd(gpu: &Gpu, g: &PoolGeometry, count_include_pad: bool, gy: &DeviceBuffer, gx: &mut DeviceBuffer) -> Result<()> {
    let (oh, ow) = g.output()?;
    let nx = g.nc * g.h * g.w;
    gy.check_fits("avgpool2d_bwd", "output gradient", g.nc * oh * ow, 4)?;
    gx.check_fits("avgpool2d_bwd", "input gradient", nx, 4)?;
    if nx == 0 {
        return Ok(());
    }
    let ([h, w, k, s, p, oh], ow) = g.ints()?;
    let (nc, cip, gyp, gxp) = (i64_of(g.nc), i32::from(count_include_pad), gy.device_ptr(), gx.device_ptr());
    launch!(gpu, "pool", "avgpool2d_bwd", grid_for(nx, BLOCK), nc, h, w, k, s, p, cip, oh, ow, gyp, gxp)
}

fn small(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelsError::invalid(op, format!("dimension {v} exceeds i32")))
}

/// Nearest-neighbour upsampling by an integer factor: `[NC,H,W]` → `[NC,H·f,W·f]`.
pub fn upsample_nearest2d(gpu: &Gpu, nc: usize, h: usize, w: usize, f: usize, x: &DeviceBuffer, y: &mut DeviceBuffer) -> Result<()> {
    let ny = nc * h * w * f * f;
    x.check_fits("upsample_nearest2d", "input", nc * h * w, 4)?;
    y.check_fits("upsample_nearest2d", "output", ny, 4)?;
    if ny == 0 {
        return Ok(());
    }
    let (nc, h, w, f, xp, yp) =
        (i64_of(nc), small("upsample", h)?, small("upsample", w)?, small("upsample", f)?, x.device_ptr(), y.device_ptr());
    launch!(gpu, "pool", "upsample_nearest2d_fwd", grid_for(ny, BLOCK), nc, h, w, f, xp, yp)
}

/// Gradient of [`upsample_nearest2d`]: each input pixel sums its f×f block.
pub fn upsample_nearest2d_bwd(gpu: &Gpu, nc: usize, h: usize, w: usize, f: usize, gy: &DeviceBuffer, gx: &mut DeviceBuffer) -> Result<()> {
    let nx = nc * h * w;
    gy.check_fits("upsample_nearest2d_bwd", "output gradient", nx * f * f, 4)?;
    gx.check_fits("upsample_nearest2d_bwd", "input gradient", nx, 4)?;
    if nx == 0 {
        return Ok(());
    }
    let (nc, h, w, f, gyp, gxp) =
        (i64_of(nc), small("upsample", h)?, small("upsample", w)?, small("upsample", f)?, gy.device_ptr(), gx.device_ptr());
    launch!(gpu, "pool", "upsample_nearest2d_bwd", grid_for(nx, BLOCK), nc, h, w, f, gyp, gxp)
}

/// Bilinear resize, `align_corners = False` (pytorch-fid's resize to 299).
pub fn resize_bilinear(
    gpu: &Gpu,
    nc: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    x: &DeviceBuffer,
    y: &mut DeviceBuffer,
) -> Result<()> {
    let ny = nc * oh * ow;
    x.check_fits("resize_bilinear", "input", nc * h * w, 4)?;
    y.check_fits("resize_bilinear", "output", ny, 4)?;
    if ny == 0 {
        return Ok(());
    }
    let (nc, h, w) = (i64_of(nc), small("resize", h)?, small("resize", w)?);
    let (oh, ow, xp, yp) = (small("resize", oh)?, small("resize", ow)?, x.device_ptr(), y.device_ptr());
    launch!(gpu, "pool", "resize_bilinear_fwd", grid_for(ny, BLOCK), nc, h, w, oh, ow, xp, yp)
}
