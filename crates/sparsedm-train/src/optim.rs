//! AdamW with PyTorch's semantics (`torch.optim.AdamW`, amsgrad off):
//! decoupled weight decay `p ← p·(1 − lr·wd)`, then the Adam step with bias
//! correction, `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`. Weight decay
//! applies to every parameter that has a gradient, as U-ViT does.
//!
//! Each parameter keeps its two moments as tensors on its own device and is
//! updated by one fused primitive ([`Tensor::adamw_step_`]: a parallel loop
//! on the CPU, one kernel on a GPU, the same per-element arithmetic), which
//! reads the gradient where it lies: no copy of the gradient or of the
//! moments per step, and one code path for every device.

use crate::error::{Result, TrainError};
use sparsedm_tensor::{AdamWScalars, Device, GradStore, Tensor};

/// Hyper-parameters (defaults: PyTorch's, except the learning rate).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 2e-4, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.01 }
    }
}

#[derive(Debug)]
struct Slot {
    name: String,
    param: Tensor,
    /// The first and second moments on the parameter's device; `None` until
    /// the first step or load (zeros then), so a parameter that never gets a
    /// gradient costs no memory, and allocating (which can fail on a GPU)
    /// happens where errors can be returned.
    moments: Option<(Tensor, Tensor)>,
}

impl Slot {
    /// The moments, allocated (zeros) on first use.
    fn moments(&mut self) -> Result<(Tensor, Tensor)> {
        if self.moments.is_none() {
            self.moments = Some((self.param.zeros_like()?, self.param.zeros_like()?));
        }
        self.moments.clone().ok_or_else(|| TrainError::Config("AdamW: moments missing".into()))
    }
}

/// The optimizer over a fixed list of named parameters.
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl AdamW {
    pub fn new(params: Vec<(String, Tensor)>, cfg: AdamWConfig) -> Self {
        let slots = params.into_iter().map(|(name, param)| Slot { name, param, moments: None }).collect();
        AdamW { cfg, slots, step: 0 }
    }

    pub fn config(&self) -> AdamWConfig {
        self.cfg
    }
    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` (the schedule's value for this
    /// step). Parameters without a gradient are left untouched.
    pub fn step(&mut self, grads: &GradStore, lr: f32) -> Result<()> {
        self.step += 1;
        let AdamWConfig { betas: (b1, b2), eps, weight_decay: wd, .. } = self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - (b1 as f64).powi(t);
        let bc2_sqrt = (1.0 - (b2 as f64).powi(t)).sqrt();
        let step_size = (lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2_sqrt as f32;
        let decay = 1.0 - lr * wd;
        let s = AdamWScalars { lr, beta1: b1, beta2: b2, eps, decay, step_size, bc2_sqrt };
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.param) else { continue };
            let (m, v) = slot.moments()?;
            slot.param.adamw_step_(g, &m, &v, &s)?;
        }
        Ok(())
    }

    /// The state as named tensors (`optim.exp_avg.<param>`,
    /// `optim.exp_avg_sq.<param>`, and `optim.step`) for checkpoints, on
    /// the CPU whatever the parameters' device (moments on a GPU are
    /// downloaded), so checkpoints do not depend on where training ran.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.slots.len() + 1);
        for s in &self.slots {
            let shape = s.param.shape();
            let (m, v) = match &s.moments {
                Some((m, v)) => (m.to_vec_f32()?, v.to_vec_f32()?),
                None => (vec![0.0; s.param.elem_count()], vec![0.0; s.param.elem_count()]),
            };
            out.push((format!("optim.exp_avg.{}", s.name), Tensor::from_vec(m, shape, &Device::Cpu)?));
            out.push((format!("optim.exp_avg_sq.{}", s.name), Tensor::from_vec(v, shape, &Device::Cpu)?));
        }
        out.push(("optim.step".into(), Tensor::from_vec_i64(vec![self.step as i64], &[1], &Device::Cpu)?));
        Ok(out)
    }

    /// Restores the state written by [`Self::state_tensors`]; every entry
    /// must be present with the right shape. Moments of parameters on a GPU
    /// are uploaded there.
    pub fn load_state(&mut self, tensors: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = tensors.get(k).ok_or_else(|| TrainError::Config(format!("optimizer state: missing tensor {k}")))?;
            if t.shape() != shape {
                return Err(TrainError::Config(format!("optimizer state: {k} has shape {:?}, expected {shape:?}", t.shape())));
            }
            Ok(t.to_vec_f32()?)
        };
        for s in &mut self.slots {
            let shape = s.param.shape().to_vec();
            let m = get(&format!("optim.exp_avg.{}", s.name), &shape)?;
            let v = get(&format!("optim.exp_avg_sq.{}", s.name), &shape)?;
            let dev = s.param.device();
            s.moments = Some((Tensor::from_vec(m, &shape, &dev)?, Tensor::from_vec(v, &shape, &dev)?));
        }
        let step = tensors.get("optim.step").ok_or_else(|| TrainError::Config("optimizer state: missing optim.step".into()))?;
        self.step = step.to_vec_i64()?.first().copied().unwrap_or(0).max(0) as u64;
        Ok(())
    }
}
