//! A deployed 2:4 Linear on CUDA for inference: the masked weight
//! compressed once by cuSPARSELt (real, or simulated under
//! `SPARSEDM_CUDA_SIM=1`) and `Y = X·Wᵀ + b` on sparse tensor cores.
//!
//! cuSPARSELt's 2:4 mode takes f16/bf16 operands (f32 has only 1:2), so
//! this is the path of the bf16 matmul precision: the weight and bias are
//! cast to bf16 once, the activations at each call (as the dense bf16 GEMM
//! does), with f32 accumulation and an f32 result. Any weight with at most
//! two non-zeros in every four consecutive inputs qualifies (2:4, 1:4, 1:8,
//! 2:8…); cuSPARSELt's own prune check refuses the rest, and shapes whose
//! dimensions are not multiples of 16, at construction.
//!
//! Per problem (device, rows bucket, out, in, bias), [`Sparse24Linear::forward`]
//! times the dense bf16 GEMM on the masked weight against the sparse path
//! once and keeps the faster; the simulator has no meaningful timings, so
//! there the sparse path always runs (and is what the tests exercise).

use crate::backend::cuda::Sparse24;
use crate::nm_cpu::{NmPath, forced_path};
use crate::{DType, Device, Error, Result, Tensor};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Timed repetitions per path at a problem's first use (after one warm-up).
const TUNE_REPS: usize = 5;

/// A problem's dispatch key: the kernel, the device name, the rows rounded
/// up to a power of two and the layer's shape (see the callers).
type Key = String;

fn table() -> &'static Mutex<HashMap<Key, NmPath>> {
    static T: OnceLock<Mutex<HashMap<Key, NmPath>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The faster path for the problem `key` on `dev`: looked up, or timed
/// once (a warm-up of each path, then the best of [`TUNE_REPS`]
/// interleaved runs of `run` on each, synchronised) and kept for the
/// process. Callers settle the simulator (no real timings) and
/// [`crate::nm_cpu::force_path`] themselves, before asking.
pub(crate) fn timed_choice(key: Key, dev: Device, run: impl Fn(NmPath) -> Result<Tensor>) -> Result<NmPath> {
    if let Some(&path) = table().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(path);
    }
    let mut best = [f64::INFINITY; 2];
    for path in [NmPath::Dense, NmPath::Sparse] {
        run(path)?;
    }
    for _ in 0..TUNE_REPS {
        for (i, path) in [NmPath::Dense, NmPath::Sparse].into_iter().enumerate() {
            dev.synchronize()?;
            let t = Instant::now();
            run(path)?;
            dev.synchronize()?;
            best[i] = best[i].min(t.elapsed().as_secs_f64());
        }
    }
    let path = if best[1] < best[0] { NmPath::Sparse } else { NmPath::Dense };
    table().lock().unwrap_or_else(|e| e.into_inner()).insert(key, path);
    Ok(path)
}

/// A 2:4 Linear compressed on a GPU, with the masked dense weight for the
/// dense path.
#[derive(Debug)]
pub struct Sparse24Linear {
    imp: Sparse24,
    dense: Tensor,
    bias: Option<Tensor>,
}

impl Sparse24Linear {
    /// Compresses `masked_weight` (`[out, in]` f32 on a GPU, at most 2 of
    /// every 4 consecutive inputs non-zero) and `bias` (`[out]`).
    ///
    /// # Errors
    /// A tensor not on a GPU, not f32, of the wrong rank or shape; and
    /// cuSPARSELt's refusals as [`Error::Cuda`]: a weight that is not 2:4
    /// along its input dimension, dimensions not multiples of 16, a missing
    /// library.
    pub fn new(masked_weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let op = "sparse24_linear";
        if !masked_weight.is_cuda() {
            return Err(Error::NotImplementedOnDevice { op, device: masked_weight.device() });
        }
        if masked_weight.rank() != 2 {
            return Err(Error::bad_shape(op, masked_weight.shape(), "a Linear weight [out, in]"));
        }
        for t in std::iter::once(masked_weight).chain(bias) {
            if t.dtype() != DType::F32 {
                return Err(Error::UnsupportedDType { op, dtype: t.dtype(), expected: "f32" });
            }
        }
        let (n, k) = (masked_weight.shape()[0], masked_weight.shape()[1]);
        if let Some(b) = bias
            && b.shape() != [n]
        {
            return Err(Error::ShapeMismatch { op, lhs: masked_weight.shape().to_vec(), rhs: b.shape().to_vec() });
        }
        let imp = {
            let ws = masked_weight.storage();
            let bs = bias.map(|b| b.storage());
            ws.sparse24_compress(masked_weight.layout(), bs.as_deref().zip(bias.map(Tensor::layout)), n, k)?
        };
        Ok(Sparse24Linear { imp, dense: masked_weight.detach(), bias: bias.map(Tensor::detach) })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.imp.out_features()
    }
    /// Input features.
    pub fn in_features(&self) -> usize {
        self.imp.in_features()
    }

    /// `x [..., in]` to `[..., out]` by the given path: `Dense` is
    /// `Tensor::linear` on the masked weight (the model's own path at the
    /// current matmul precision), `Sparse` cuSPARSELt. Untracked.
    ///
    /// # Errors
    /// A tensor on another device, not f32, or whose last dimension is not `in`.
    pub fn forward_with(&self, path: NmPath, x: &Tensor) -> Result<Tensor> {
        let op = "sparse24_linear";
        let k = self.in_features();
        if x.shape().last() != Some(&k) {
            return Err(Error::ShapeMismatch { op, lhs: x.shape().to_vec(), rhs: vec![self.out_features(), k] });
        }
        if path == NmPath::Dense {
            return x.linear(&self.dense, self.bias.as_ref());
        }
        if x.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: x.dtype(), expected: "f32" });
        }
        let m = x.elem_count() / k.max(1);
        let x2 = x.contiguous()?.reshape(&[m, k])?;
        let y = x2.storage().sparse24_matmul(x2.layout(), &self.imp, m)?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = self.out_features();
        Ok(Tensor::from_storage(y, &shape))
    }

    /// `x [..., in]` to `[..., out]` by the faster path for this problem
    /// (timed once on a real GPU; always sparse on the simulator; pinned by
    /// [`crate::nm_cpu::force_path`] when set).
    ///
    /// # Errors
    /// As [`Sparse24Linear::forward_with`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(path) = forced_path() {
            return self.forward_with(path, x);
        }
        if self.imp.is_simulated() {
            return self.forward_with(NmPath::Sparse, x);
        }
        let m = x.elem_count() / self.in_features().max(1);
        let key = format!(
            "linear|{}|{}|{}|{}|{}",
            self.imp.device_name(),
            m.max(1).next_power_of_two(),
            self.out_features(),
            self.in_features(),
            self.bias.is_some()
        );
        let path = timed_choice(key, x.device(), |p| self.forward_with(p, x))?;
        self.forward_with(path, x)
    }

    /// Whether the weight lives on the CUDA simulator (no timings there).
    pub(crate) fn is_simulated(&self) -> bool {
        self.imp.is_simulated()
    }

    /// The device's name (a dispatch key).
    pub(crate) fn device_name(&self) -> &str {
        self.imp.device_name()
    }
}

/// Weights compressed by cuSPARSELt (real or simulated) in this process:
/// a deployed model compresses each 2:4 weight once, so tests count these.
pub fn compressions() -> usize {
    crate::backend::cuda::sparse24_compressions()
}
