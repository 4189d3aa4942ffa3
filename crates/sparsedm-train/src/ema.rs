//! Exponential moving average of model weights, U-ViT's `ema(nnet_ema,
//! nnet, decay)`: p_ema ← decay·p_ema + (1 − decay)·p after every step,
//! starting from a copy. The trainer passes the dense parameters, also of
//! sparse layers (as the reference averages `nnet`'s parameters, whose
//! sparse Linears hold dense weights): the EMA model then derives its
//! masks from its own averaged weights, so a position whose mask switches
//! on carries its averaged dense value instead of ramping up from 0.
//! Shadows live on their source's device; each update is one fused
//! primitive per tensor ([`Tensor::ema_update_`]: a parallel loop on the
//! CPU, one kernel on a GPU, the same arithmetic), reading the weights in
//! place.

use crate::error::{Result, TrainError};
use sparsedm_tensor::{Tensor, no_grad};

/// Shadow copies of named tensors.
#[derive(Debug)]
pub struct Ema {
    decay: f32,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts from a copy of `values`.
    pub fn new(values: &[(String, Tensor)], decay: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(TrainError::Config(format!("EMA decay {decay} outside [0, 1]")));
        }
        let shadow = values
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.detach().contiguous()?.to_vec_f32().and_then(|v| Tensor::from_vec(v, t.shape(), &t.device()))?)))
            .collect::<Result<_>>()?;
        Ok(Ema { decay, shadow })
    }

    pub fn decay(&self) -> f32 {
        self.decay
    }

    /// One update from the current values (same names and order as at
    /// construction).
    pub fn update(&mut self, values: &[(String, Tensor)]) -> Result<()> {
        if values.len() != self.shadow.len() {
            return Err(TrainError::Config(format!("EMA: {} tensors given, {} tracked", values.len(), self.shadow.len())));
        }
        let _g = no_grad();
        let d = self.decay;
        for ((name, s), (vname, v)) in self.shadow.iter().zip(values) {
            if name != vname {
                return Err(TrainError::Config(format!("EMA: expected {name}, got {vname}")));
            }
            s.ema_update_(v, d)?;
        }
        Ok(())
    }

    /// The averaged tensors by name.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    /// Replaces the shadow values (when resuming).
    pub fn load(&mut self, values: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for (name, s) in &self.shadow {
            let v = values.get(name).ok_or_else(|| TrainError::Config(format!("EMA state: missing tensor {name}")))?;
            s.set_data(v)?;
        }
        Ok(())
    }
}
