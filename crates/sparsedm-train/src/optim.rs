//! AdamW with PyTorch's semantics (`torch.optim.AdamW`, amsgrad off):
//! decoupled weight decay `p ← p·(1 − lr·wd)`, then the Adam step with bias
//! correction, `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`. Weight decay
//! applies to every parameter that has a gradient, as U-ViT does. The
//! update is one fused pass per parameter over f32 slices, in parallel.

use crate::error::{Result, TrainError};
use rayon::prelude::*;
use sparsedm_tensor::{Device, GradStore, Tensor};

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
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
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
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                let n = param.elem_count();
                Slot { name, param, exp_avg: vec![0.0; n], exp_avg_sq: vec![0.0; n] }
            })
            .collect();
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
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.param) else { continue };
            let g = g.to_vec_f32()?;
            let (m, v) = (&mut slot.exp_avg, &mut slot.exp_avg_sq);
            slot.param.update_f32(|p| {
                const CHUNK: usize = 1 << 14;
                p.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK)).zip(g.par_chunks(CHUNK)).for_each(
                    |(((p, m), v), g)| {
                        for i in 0..p.len() {
                            let gi = g[i];
                            p[i] *= decay;
                            m[i] += (1.0 - b1) * (gi - m[i]);
                            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                            let denom = v[i].sqrt() / bc2_sqrt + eps;
                            p[i] -= step_size * m[i] / denom;
                        }
                    },
                );
            })?;
        }
        Ok(())
    }

    /// The state as named tensors (`optim.exp_avg.<param>`,
    /// `optim.exp_avg_sq.<param>`, and `optim.step`) for checkpoints.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.slots.len() + 1);
        for s in &self.slots {
            let shape = s.param.shape();
            out.push((format!("optim.exp_avg.{}", s.name), Tensor::from_slice(&s.exp_avg, shape, &Device::Cpu)?));
            out.push((format!("optim.exp_avg_sq.{}", s.name), Tensor::from_slice(&s.exp_avg_sq, shape, &Device::Cpu)?));
        }
        out.push(("optim.step".into(), Tensor::from_vec_i64(vec![self.step as i64], &[1], &Device::Cpu)?));
        Ok(out)
    }

    /// Restores the state written by [`Self::state_tensors`]; every entry
    /// must be present with the right shape.
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
            s.exp_avg = get(&format!("optim.exp_avg.{}", s.name), &shape)?;
            s.exp_avg_sq = get(&format!("optim.exp_avg_sq.{}", s.name), &shape)?;
        }
        let step = tensors.get("optim.step").ok_or_else(|| TrainError::Config("optimizer state: missing optim.step".into()))?;
        self.step = step.to_vec_i64()?.first().copied().unwrap_or(0).max(0) as u64;
        Ok(())
    }
}
