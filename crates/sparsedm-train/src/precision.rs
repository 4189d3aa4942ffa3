//! Which matrix-product precision a run or a command computes at, and the
//! scope that applies it.
//!
//! The CUDA backend's precision is one process-wide setting
//! ([`sparsedm_tensor::set_matmul_precision`]), so that a model runs in
//! any mode without changes. Runs and commands therefore do not set it
//! once and leave it: they resolve their [`Precision`] against their device
//! here (refusing what the device cannot do before any work), and enter a
//! [`MatmulScope`] around the work, which puts the previous setting back
//! when it ends — so a bench, a trainer and a sampler in one process (the
//! demo, the tests) each compute at their own precision.

use crate::error::{Result, TrainError};
use crate::vocab::Precision;
use sparsedm_tensor::{Device, MatmulPrecision, matmul_precision, set_matmul_precision};

/// The precision `asked` on `device`, or `on_gpu` when nothing was asked
/// on a GPU (f32 on the CPU). `what` names the setting in the error: the
/// CPU computes in f32 only, so tf32 and bf16 there are refused rather
/// than silently ignored.
pub fn resolve(asked: Option<Precision>, device: Device, on_gpu: Precision, what: &str) -> Result<Precision> {
    match (asked, device) {
        (Some(Precision::F32), _) | (None, Device::Cpu) => Ok(Precision::F32),
        (Some(p), Device::Cpu) => Err(TrainError::Config(format!(
            "{what} {p}: CPU matrix products are f32 only (tf32 and bf16 need a CUDA device); use f32 or --device cuda"
        ))),
        (Some(p), Device::Cuda(_)) => Ok(p),
        (None, Device::Cuda(_)) => Ok(on_gpu),
    }
}

/// Sets the process's CUDA matrix-product precision until dropped, then
/// puts the previous one back (also when the work in between fails or
/// panics).
#[derive(Debug)]
#[must_use = "the precision applies only while the scope is alive"]
pub struct MatmulScope {
    previous: MatmulPrecision,
}

impl MatmulScope {
    /// Computes at `p` from now until the scope ends.
    pub fn enter(p: Precision) -> Self {
        let previous = matmul_precision();
        set_matmul_precision(p.matmul());
        MatmulScope { previous }
    }
}

impl Drop for MatmulScope {
    fn drop(&mut self) {
        set_matmul_precision(self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let gpu = Device::Cuda(0);
        assert_eq!(resolve(None, Device::Cpu, Precision::Bf16, "x").unwrap(), Precision::F32);
        assert_eq!(resolve(None, gpu, Precision::Bf16, "x").unwrap(), Precision::Bf16);
        assert_eq!(resolve(None, gpu, Precision::F32, "x").unwrap(), Precision::F32);
        assert_eq!(resolve(Some(Precision::Tf32), gpu, Precision::Bf16, "x").unwrap(), Precision::Tf32);
        assert_eq!(resolve(Some(Precision::F32), Device::Cpu, Precision::Bf16, "x").unwrap(), Precision::F32);
        for p in [Precision::Tf32, Precision::Bf16] {
            let e = resolve(Some(p), Device::Cpu, Precision::Bf16, "train.precision").unwrap_err().to_string();
            assert!(e.starts_with(&format!("train.precision {p}: CPU matrix products are f32 only")), "{e}");
        }
    }

    #[test]
    fn the_scope_restores_the_previous_setting() {
        let before = matmul_precision();
        {
            let _s = MatmulScope::enter(Precision::Tf32);
            assert_eq!(matmul_precision(), MatmulPrecision::Tf32);
            {
                let _inner = MatmulScope::enter(Precision::Bf16);
                assert_eq!(matmul_precision(), MatmulPrecision::Bf16);
            }
            assert_eq!(matmul_precision(), MatmulPrecision::Tf32);
        }
        assert_eq!(matmul_precision(), before);
    }
}
