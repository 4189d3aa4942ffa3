//! Module `optim`: fused AdamW and EMA updates of f32 master weights, in place.

use crate::device::{BLOCK, grid_for};
use crate::error::Result;
use crate::launch::{i64_of, launch};
use crate::{DeviceBuffer, Gpu};

/// Per-step scalars of AdamW (the kernel's arguments). `sparsedm_tensor::AdamWScalars::new`
/// computes them with the CPU optimizer's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 − lr·weight_decay`.
    pub decay: f32,
    /// `lr / (1 − β1^t)` (computed in f64, rounded to f32).
    pub step_size: f32,
    /// `sqrt(1 − β2^t)` (computed in f64, rounded to f32).
    pub bc2_sqrt: f32,
}

/// One AdamW step over `n` parameters: `p`, `m`, `v` updated in place from gradient `g`.
pub fn adamw_step(
    gpu: &Gpu,
    n: usize,
    s: &AdamWScalars,
    p: &mut DeviceBuffer,
    g: &DeviceBuffer,
    m: &mut DeviceBuffer,
    v: &mut DeviceBuffer,
) -> Result<()> {
    for (what, b) in [("parameters", &*p), ("gradient", g), ("first moment", &*m), ("second moment", &*v)] {
        b.check_fits("adamw", what, n, 4)?;
    }
    if n == 0 {
        return Ok(());
    }
    let AdamWScalars { lr, beta1, beta2, eps, decay, step_size, bc2_sqrt } = *s;
    let (n64, pp, gp, mp, vp) = (i64_of(n), p.device_ptr(), g.device_ptr(), m.device_ptr(), v.device_ptr());
    launch!(gpu, "optim", "adamw_step", grid_for(n, BLOCK), n64, lr, beta1, beta2, eps, decay, step_size, bc2_sqrt, pp, gp, mp, vp)
}

/// `ema = d·ema + (1 − d)·p` over `n` values.
pub fn ema_update(gpu: &Gpu, n: usize, d: f32, ema: &mut DeviceBuffer, p: &DeviceBuffer) -> Result<()> {
    ema.check_fits("ema", "average", n, 4)?;
    p.check_fits("ema", "parameters", n, 4)?;
    if n == 0 {
        return Ok(());
    }
    let (n64, ep, pp) = (i64_of(n), ema.device_ptr(), p.device_ptr());
    launch!(gpu, "optim", "ema_update", grid_for(n, BLOCK), n64, d, ep, pp)
}
