//! The deployed path of a Linear or Conv2d whose forward weight is N:M: the
//! weight compressed once for the N:M kernels and kept until it changes.
//!
//! **When.** A forward takes this path when grad mode is off (sampling,
//! `forward`, evaluation: every sampler runs under `no_grad`), the input is
//! f32, and the layer's [`SparseSlot`] deploys an N:M weight
//! ([`SparseSlot::deployed_pattern`]: a sparse mode whose mask is grouped
//! along the input dimension, and not an `Untrained` mask while training).
//! With grad mode on (training) it is never used: its result carries no
//! gradient.
//!
//! **What.**
//! - CPU tensors: `sparsedm_tensor::nm_cpu` — [`NmLinear`] for a Linear,
//!   [`NmConv2d`] (channel-last im2col + the same SpMM) for a Conv2d; any
//!   N:M with M ≤ 32.
//! - CUDA tensors at the bf16 matmul precision: a Linear whose weight has
//!   at most 2 non-zeros in every 4 inputs goes through cuSPARSELt
//!   ([`Sparse24Linear`], 2:4 on sparse tensor cores; 1:4 and 1:8 weights
//!   are 2:4 too), a Conv2d likewise as im2col + the same SpMM on its
//!   weight permuted channel-last ([`Sparse24Conv2d`]). At f32/TF32
//!   precision (cuSPARSELt's 2:4 is f16/bf16 only) and when cuSPARSELt
//!   refuses the weight (its prune check fails, e.g. a 4:8 weight, or a
//!   dimension is not a multiple of 16, e.g. a 3-channel input conv: one
//!   line on stderr per layer), the layer runs dense on the cached masked
//!   weight.
//! - Each kernel picks, per shape, the faster of itself and the dense
//!   product once and keeps that choice (never slower than dense).
//! - U-ViT's MLP (`Linear::gelu_mlp`), both Linears N:M on the CPU: one
//!   `nm_mlp_forward` call, which fuses the two layers and the GELU tile by
//!   tile once both chose their N:M kernel and that is faster (timed once
//!   per shape); `deployed_time` then includes that GELU.
//! - A pre-norm block's layer (`Linear::forward_fused`,
//!   `Linear::gelu_mlp_fused`: `residual + layer(norm(x))`) on the CPU
//!   hands its norm and residual to the N:M call, which fuses them into the
//!   kernel where it can (`NmFuse`); `deployed_time` includes them.
//!
//! **Cache.** Each slot keeps one entry, keyed by the weight's and bias's
//! [`Tensor::version`] stamps (which change at every in-place write: the
//! optimizer step, EMA, `set_data`, a checkpoint load), the device, the
//! matmul precision and the pattern (the training flag matters only to
//! `Untrained` masks, which are not deployed while training);
//! [`SparseSlot::configure`] (a new mode or mask) drops it. So a trainer
//! that samples every few thousand steps recompresses exactly once per
//! sampling round, and never uses a stale weight.
//!
//! **Masks the kernels do not take.** A masked layer that is not deployed
//! (flat-index or left-dense groups, an ASP mask on a GPU at f32, ...) runs
//! the dense op; without grad mode its `w ⊙ m` is kept too, keyed by the
//! weight's version ([`masked_weight`], used by
//! `SparseSlot::effective_weight`), so sampling does not recompute a
//! magnitude mask at every step.

use crate::LayersError;
use crate::nn::sparse::SparseSlot;
use sparsedm_tensor::nm_cpu::{MlpActivation, NmConv2d, NmLinear, NormParams, nm_mlp_forward_fused};
use sparsedm_tensor::nm_cuda::Sparse24Linear;
use sparsedm_tensor::nm_cuda_conv::Sparse24Conv2d;
use sparsedm_tensor::{DType, Device, MatmulPrecision, Tensor, is_grad_enabled, matmul_precision};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, LayersError>;

/// What a cached entry was built from; any difference rebuilds it.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    weight: u64,
    bias: Option<u64>,
    device: Device,
    precision: MatmulPrecision,
    pattern: (usize, usize),
}

/// The deployed form of one weight.
#[derive(Debug)]
enum Imp {
    /// CPU, Linear: compressed N:M weight and SpMM.
    CpuLinear(NmLinear),
    /// CPU, Conv2d: im2col + SpMM.
    CpuConv(NmConv2d),
    /// CUDA, Linear: cuSPARSELt 2:4.
    Cuda24(Sparse24Linear),
    /// CUDA, Conv2d: im2col + cuSPARSELt 2:4.
    Cuda24Conv(Sparse24Conv2d),
    /// The masked weight for the ordinary dense op (no N:M kernel applies).
    Dense(Tensor),
}

/// A slot's cache: at most one deployed weight.
#[derive(Debug, Default)]
pub(crate) struct DeployCache {
    entry: Mutex<Option<(Key, Arc<Imp>)>>,
    /// Entries built so far (tests check a weight is compressed once).
    builds: AtomicUsize,
    /// Whether the one-line "runs dense" note was printed.
    warned: AtomicBool,
    /// The masked weight of a layer whose mask the N:M kernels do not take,
    /// for forwards without grad mode, keyed by the weight's version (see
    /// [`masked_weight`]).
    masked: Mutex<Option<(u64, Tensor)>>,
    /// Masked weights built so far (tests check one build per version).
    masked_builds: AtomicUsize,
}

impl DeployCache {
    /// Drops the entry (a new mode or mask).
    pub(crate) fn clear(&self) {
        *self.entry.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.masked.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Entries built so far.
    pub(crate) fn builds(&self) -> usize {
        self.builds.load(Ordering::Relaxed)
    }

    /// Masked weights built so far by [`masked_weight`].
    pub(crate) fn masked_builds(&self) -> usize {
        self.masked_builds.load(Ordering::Relaxed)
    }
}

/// `w ⊙ m` of `slot` for a forward without grad mode whose layer is not
/// deployed (a flat-index, left-dense or transposable mask, an input that
/// is not f32, ...): built by `build` once per weight version and kept,
/// instead of recomputing the magnitude mask at every forward. Sampling a
/// 5:9 DDPM UNet (most convolutions flat-index) spent 46 % of its forward
/// on the masks before. The caller decides that the mode's forward weight
/// is `w ⊙ m` (not `Untrained` while training); [`DeployCache::clear`]
/// (a new mode or mask) drops the entry.
pub(crate) fn masked_weight(slot: &SparseSlot, build: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    let version = slot.weight().version();
    let cache = slot.deploy_cache();
    let mut entry = cache.masked.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((v, w)) = entry.as_ref()
        && *v == version
    {
        return Ok(w.clone());
    }
    let w = build()?;
    cache.masked_builds.fetch_add(1, Ordering::Relaxed);
    *entry = Some((version, w.clone()));
    Ok(w)
}

/// The geometry of a convolution (stride, padding).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

/// The deployed form of `slot` for an input on `device`, built (and cached)
/// if needed; `None` when the deployed path does not apply.
fn deployed(slot: &SparseSlot, x: &Tensor, bias: Option<&Tensor>, conv: Option<ConvGeometry>) -> Result<Option<Arc<Imp>>> {
    if is_grad_enabled() || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let Some(pattern) = slot.deployed_pattern() else { return Ok(None) };
    let device = x.device();
    if slot.weight().device() != device {
        return Ok(None);
    }
    let key = Key {
        weight: slot.weight().version(),
        bias: bias.map(Tensor::version),
        device,
        precision: matmul_precision(),
        pattern: (pattern.n(), pattern.m()),
    };
    let cache = slot.deploy_cache();
    // Hold the lock while building: concurrent forwards of one layer wait
    // for one compression instead of each making their own.
    let mut entry = cache.entry.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, imp)) = entry.as_ref()
        && *k == key
    {
        return Ok(Some(imp.clone()));
    }
    let imp = Arc::new(build(slot, &key, bias, conv)?);
    cache.builds.fetch_add(1, Ordering::Relaxed);
    *entry = Some((key, imp.clone()));
    Ok(Some(imp))
}

fn build(slot: &SparseSlot, key: &Key, bias: Option<&Tensor>, conv: Option<ConvGeometry>) -> Result<Imp> {
    let masked = slot.deployed_weight()?;
    let (n, m) = key.pattern;
    let shape = masked.shape().to_vec();
    match key.device {
        Device::Cpu => {
            let w = masked.to_vec_f32()?;
            let b = bias.map(Tensor::to_vec_f32).transpose()?;
            Ok(match (conv, shape.as_slice()) {
                (None, &[out, inp]) => Imp::CpuLinear(NmLinear::new(&w, out, inp, b.as_deref(), n, m)?),
                (Some(g), &[o, c, kh, kw]) => Imp::CpuConv(NmConv2d::new(&w, [o, c, kh, kw], b.as_deref(), g.stride, g.padding, n, m)?),
                _ => {
                    return Err(LayersError::InvalidArgument {
                        what: format!("deployed weight {shape:?}"),
                        msg: "expected a Linear [out, in] or Conv2d [out, in, kh, kw] weight".into(),
                    });
                }
            })
        }
        Device::Cuda(_) => {
            if key.precision != MatmulPrecision::Bf16 {
                return Ok(Imp::Dense(masked));
            }
            let made = match conv {
                None => Sparse24Linear::new(&masked, bias).map(Imp::Cuda24),
                Some(g) => Sparse24Conv2d::new(&masked, bias, g.stride, g.padding).map(Imp::Cuda24Conv),
            };
            match made {
                Ok(imp) => Ok(imp),
                Err(e) => {
                    if !slot.deploy_cache().warned.swap(true, Ordering::Relaxed) {
                        eprintln!("sparsedm: a {n}:{m} layer {shape:?} runs dense on {}: {e}", key.device);
                    }
                    Ok(Imp::Dense(masked))
                }
            }
        }
    }
}

/// Host nanoseconds spent in deployed forwards (compression excluded).
static DEPLOYED_NS: AtomicU64 = AtomicU64::new(0);

/// Host time spent so far in the forwards of deployed layers (their N:M
/// kernels, or the dense product where that was chosen), compression
/// excluded: `sparsedm bench --pattern` reports how much of a CPU forward
/// the N:M layers take. On a GPU this counts only the launches (work is
/// queued, not waited for).
pub fn deployed_time() -> Duration {
    Duration::from_nanos(DEPLOYED_NS.load(Ordering::Relaxed))
}

fn timed(f: impl FnOnce() -> sparsedm_tensor::Result<Tensor>) -> Result<Tensor> {
    let start = Instant::now();
    let y = f()?;
    DEPLOYED_NS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(y)
}

/// The deployed forward of a Linear: `None` when it does not apply.
pub(crate) fn linear_forward(slot: &SparseSlot, x: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let Some(imp) = deployed(slot, x, bias, None)? else { return Ok(None) };
    Ok(Some(match &*imp {
        Imp::CpuLinear(l) => timed(|| l.forward_tensor(x))?,
        Imp::Cuda24(l) => timed(|| l.forward(x))?,
        Imp::Dense(w) => timed(|| x.linear(w, bias))?,
        Imp::CpuConv(_) | Imp::Cuda24Conv(_) => return Ok(None),
    }))
}

/// The deployed forward of the layer on `cat(parts, -1)` (its N:M or
/// cuSPARSELt kernels read one input, so the parts are concatenated for
/// them); `None` when the layer is not deployed, and the caller runs
/// `Tensor::linear_cat` without the concatenation.
pub(crate) fn linear_forward_cat(slot: &SparseSlot, parts: &[&Tensor], bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let Some(first) = parts.first() else { return Ok(None) };
    if deployed(slot, first, bias, None)?.is_none() {
        return Ok(None);
    }
    linear_forward(slot, &Tensor::cat(parts, first.rank().saturating_sub(1))?, bias)
}

/// The deployed forward of `residual + fc2(gelu(fc1(norm(x))))` (norm and
/// residual optional) when both Linears deploy N:M weights on the CPU:
/// [`nm_mlp_forward_fused`], timed as one deployed call (its GELU, norm and
/// residual included); `None` otherwise (the caller runs the layers).
pub(crate) fn gelu_mlp_forward(
    fc1: &SparseSlot,
    bias1: Option<&Tensor>,
    fc2: &SparseSlot,
    bias2: Option<&Tensor>,
    x: &Tensor,
    norm: Option<NormParams<'_>>,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let Some(imp1) = deployed(fc1, x, bias1, None)? else { return Ok(None) };
    let Imp::CpuLinear(l1) = &*imp1 else { return Ok(None) };
    let Some(imp2) = deployed(fc2, x, bias2, None)? else { return Ok(None) };
    let Imp::CpuLinear(l2) = &*imp2 else { return Ok(None) };
    Ok(Some(timed(|| nm_mlp_forward_fused(l1, MlpActivation::Gelu, l2, x, norm, residual))?))
}

/// The deployed forward of `residual + linear(norm(x))` (norm and residual
/// optional) when the Linear deploys an N:M weight on the CPU:
/// [`NmLinear::forward_tensor_fused`], timed as one deployed call; `None`
/// otherwise (the caller runs the ops in turn).
pub(crate) fn linear_forward_fused(
    slot: &SparseSlot,
    x: &Tensor,
    bias: Option<&Tensor>,
    norm: Option<NormParams<'_>>,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let Some(imp) = deployed(slot, x, bias, None)? else { return Ok(None) };
    let Imp::CpuLinear(l) = &*imp else { return Ok(None) };
    Ok(Some(timed(|| l.forward_tensor_fused(x, norm, residual))?))
}

/// The deployed forward of a Conv2d: `None` when it does not apply.
pub(crate) fn conv_forward(slot: &SparseSlot, x: &Tensor, bias: Option<&Tensor>, g: ConvGeometry) -> Result<Option<Tensor>> {
    let Some(imp) = deployed(slot, x, bias, Some(g))? else { return Ok(None) };
    Ok(Some(match &*imp {
        Imp::CpuConv(c) => timed(|| c.forward_tensor(x))?,
        Imp::Cuda24Conv(c) => timed(|| c.forward(x))?,
        Imp::Dense(w) => timed(|| x.conv2d(w, bias, g.stride, g.padding))?,
        Imp::CpuLinear(_) | Imp::Cuda24(_) => return Ok(None),
    }))
}

/// Which kernel a slot's cached entry uses (`None` when nothing is cached):
/// `"nm-cpu"`, `"nm-cpu-conv"`, `"cusparselt-2:4"` (Linear),
/// `"cusparselt-2:4-conv"` (Conv2d) or `"dense"`.
pub(crate) fn cached_kind(slot: &SparseSlot) -> Option<&'static str> {
    let entry = slot.deploy_cache().entry.lock().unwrap_or_else(|e| e.into_inner());
    entry.as_ref().map(|(_, imp)| match **imp {
        Imp::CpuLinear(_) => "nm-cpu",
        Imp::CpuConv(_) => "nm-cpu-conv",
        Imp::Cuda24(_) => "cusparselt-2:4",
        Imp::Cuda24Conv(_) => "cusparselt-2:4-conv",
        Imp::Dense(_) => "dense",
    })
}
