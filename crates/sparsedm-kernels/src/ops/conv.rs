//! Module `conv`: im2col / col2im, so conv2d runs as one strided-batched GEMM per layer.

use crate::device::{BLOCK, grid_for};
use crate::error::{KernelsError, Result};
use crate::launch::{i64_of, launch};
use crate::{DeviceBuffer, Gpu, GpuDType};

/// Geometry of a 2-D convolution over `n` images of `[c, h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl ConvGeometry {
    /// Output height and width (PyTorch's formula, dilation 1), or an error if the kernel does
    /// not fit the padded input.
    pub fn output(&self) -> Result<(usize, usize)> {
        let (ph, pw) = (self.h + 2 * self.padding.0, self.w + 2 * self.padding.1);
        if self.kh == 0 || self.kw == 0 || self.stride.0 == 0 || self.stride.1 == 0 || ph < self.kh || pw < self.kw {
            return Err(KernelsError::invalid(
                "conv2d",
                format!("kernel {}x{} does not fit input {}x{} with padding {:?}", self.kh, self.kw, self.h, self.w, self.padding),
            ));
        }
        Ok(((ph - self.kh) / self.stride.0 + 1, (pw - self.kw) / self.stride.1 + 1))
    }
    /// Rows of the column matrix per image: `c·kh·kw`.
    pub fn col_rows(&self) -> usize {
        self.c * self.kh * self.kw
    }

    fn args(&self) -> Result<(i64, [i32; 12])> {
        let (oh, ow) = self.output()?;
        let dims = [self.c, self.h, self.w, self.kh, self.kw, self.stride.0, self.stride.1, self.padding.0, self.padding.1, oh, ow, 0];
        let mut out = [0i32; 12];
        for (o, &d) in out.iter_mut().zip(&dims) {
            *o = i32::try_from(d).map_err(|_| KernelsError::invalid("conv2d", format!("dimension {d} exceeds i32")))?;
        }
        Ok((i64_of(self.n), out))
    }
}

fn run(gpu: &Gpu, dt: GpuDType, name: &str, g: &ConvGeometry, src: u64, dst: u64, work: usize) -> Result<()> {
    let (n, [c, h, w, kh, kw, sh, sw, ph, pw, oh, ow, _]) = g.args()?;
    if work == 0 {
        return Ok(());
    }
    launch!(gpu, "conv", format!("{name}_{dt}"), grid_for(work, BLOCK), n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow, src, dst)
}

/// `x [N,C,H,W]` → `cols [N, C·kh·kw, oh·ow]`.
pub fn im2col(gpu: &Gpu, dt: GpuDType, g: &ConvGeometry, x: &DeviceBuffer, cols: &mut DeviceBuffer) -> Result<()> {
    let (oh, ow) = g.output()?;
    let ncols = g.n * g.col_rows() * oh * ow;
    x.check_fits("im2col", "input", g.n * g.c * g.h * g.w, dt.size())?;
    cols.check_fits("im2col", "columns", ncols, dt.size())?;
    run(gpu, dt, "im2col", g, x.device_ptr(), cols.device_ptr(), ncols)
}

/// The adjoint of [`im2col`]: `x [N,C,H,W]` gathers the column entries that read each pixel.
pub fn col2im(gpu: &Gpu, dt: GpuDType, g: &ConvGeometry, cols: &DeviceBuffer, x: &mut DeviceBuffer) -> Result<()> {
    let (oh, ow) = g.output()?;
    let nx = g.n * g.c * g.h * g.w;
    cols.check_fits("col2im", "columns", g.n * g.col_rows() * oh * ow, dt.size())?;
    x.check_fits("col2im", "output", nx, dt.size())?;
    run(gpu, dt, "col2im", g, cols.device_ptr(), x.device_ptr(), nx)
}
