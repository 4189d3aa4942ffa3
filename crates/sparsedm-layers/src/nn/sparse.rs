//! The per-layer sparsity state of a Linear or Conv2d weight, and how the
//! weight the forward pass uses is derived from the dense one in each
//! training mode of the SparseDM paper and its baselines:
//!
//! | mode | forward weight | gradient reaching the dense weight |
//! |---|---|---|
//! | `Dense` | w | g |
//! | `SrSte{λ}` (the paper) | w ⊙ m, m recomputed from \|w\| every forward | g + λ(1 − m) ⊙ w (straight through) |
//! | `Ste` | w ⊙ m, m recomputed every forward | g (straight through) |
//! | `Fixed` (apex ASP) | w ⊙ m, m computed once | g ⊙ m; w re-masked after each step |
//! | `Untrained` | w while training, w ⊙ m(\|w\|) in evaluation | g |
//!
//! Here g is the gradient with respect to the weight the forward used
//! (MODELS_AND_METHOD §4 for SR-STE, §5 for ASP, §7.2 for SparseDM's copy
//! of SR-STE and its "untrained mask" ablation). The SR-STE masks are on in
//! training *and* inference, as in SparseDM's code.
//!
//! Which masks a mode can build on a given weight is decided by
//! [`plan_mode`]: an input dimension that is not a multiple of M follows the
//! slot's [`NonDivisible`] setting, and a transposable 2:4 request on a
//! weight that does not tile into 4×4 blocks falls back as described there.
//! [`SparseSlot::set_mode`] checks that plan *before* it changes anything,
//! so a mode that cannot be built is an error at configuration time, never
//! in the middle of a forward pass.

use crate::LayersError;
use crate::nm::layout::WeightLayout;
use crate::nm::mask::{MaskOutcome, NonDivisible, compute_mask, plan_mask};
use crate::nm::pattern::NmPattern;
use crate::nm::transposable::{TransposableMethod, transposable_mask};
use crate::nn::deployed::{self, DeployCache};
use sparsedm_tensor::{Tensor, is_grad_enabled, no_grad};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

type Result<T> = std::result::Result<T, LayersError>;

/// The paper's SR-STE decay λ (MODELS_AND_METHOD §4; SparseDM's code).
pub const SRSTE_LAMBDA: f32 = 2e-4;

/// How a layer's weight is sparsified.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SparseMode {
    Dense,
    /// SR-STE: dynamic magnitude mask, straight-through gradient plus the
    /// sparse-refined decay λ(1 − m) ⊙ w.
    SrSte {
        pattern: NmPattern,
        lambda: f32,
    },
    /// Plain straight-through estimator (SR-STE with λ = 0).
    Ste {
        pattern: NmPattern,
    },
    /// apex ASP: a magnitude mask computed once (optionally transposable
    /// 2:4), weights and gradients masked around every optimizer step.
    Fixed {
        pattern: NmPattern,
        transposable: bool,
    },
    /// The ablation's untrained mask: dense training, masked inference.
    Untrained {
        pattern: NmPattern,
    },
}

impl SparseMode {
    /// SR-STE at `pattern` with the paper's λ = 2e-4.
    pub fn srste(pattern: NmPattern) -> Self {
        SparseMode::SrSte { pattern, lambda: SRSTE_LAMBDA }
    }

    /// The N:M pattern, if the mode is sparse.
    pub fn pattern(&self) -> Option<NmPattern> {
        match *self {
            SparseMode::Dense => None,
            SparseMode::SrSte { pattern, .. }
            | SparseMode::Ste { pattern }
            | SparseMode::Fixed { pattern, .. }
            | SparseMode::Untrained { pattern } => Some(pattern),
        }
    }

    /// The mode without its pattern.
    pub fn kind(&self) -> ModeKind {
        match *self {
            SparseMode::Dense => ModeKind::Dense,
            SparseMode::SrSte { lambda, .. } => ModeKind::SrSte { lambda },
            SparseMode::Ste { .. } => ModeKind::Ste,
            SparseMode::Fixed { transposable, .. } => ModeKind::Fixed { transposable },
            SparseMode::Untrained { .. } => ModeKind::Untrained,
        }
    }

    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// A [`SparseMode`] without its pattern: what a policy or a progressive
/// schedule combines with the pattern of each layer or stage
/// (`kind.with_pattern(p)` is the usual `mode_builder`).
///
/// Parses from (and displays as) `dense`, `srste` (λ = 2e-4), `srste:<λ>`
/// (e.g. `srste:1e-4`), `ste`, `fixed`, `fixed-transposable` and `untrained`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModeKind {
    Dense,
    SrSte { lambda: f32 },
    Ste,
    Fixed { transposable: bool },
    Untrained,
}

impl ModeKind {
    /// The full mode at `pattern`.
    pub fn with_pattern(self, pattern: NmPattern) -> SparseMode {
        match self {
            ModeKind::Dense => SparseMode::Dense,
            ModeKind::SrSte { lambda } => SparseMode::SrSte { pattern, lambda },
            ModeKind::Ste => SparseMode::Ste { pattern },
            ModeKind::Fixed { transposable } => SparseMode::Fixed { pattern, transposable },
            ModeKind::Untrained => SparseMode::Untrained { pattern },
        }
    }

    /// Short name (`srste`, `fixed`, ...), without λ or the transposable flag.
    pub fn name(self) -> &'static str {
        match self {
            ModeKind::Dense => "dense",
            ModeKind::SrSte { .. } => "srste",
            ModeKind::Ste => "ste",
            ModeKind::Fixed { .. } => "fixed",
            ModeKind::Untrained => "untrained",
        }
    }
}

impl fmt::Display for ModeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ModeKind::SrSte { lambda } if lambda != SRSTE_LAMBDA => write!(f, "srste:{lambda}"),
            ModeKind::Fixed { transposable: true } => f.write_str("fixed-transposable"),
            k => f.write_str(k.name()),
        }
    }
}

impl FromStr for ModeKind {
    type Err = LayersError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |msg: String| LayersError::InvalidArgument { what: format!("sparse mode {s:?}"), msg };
        let t = s.trim();
        if let Some(l) = t.strip_prefix("srste:") {
            let lambda: f32 = l.trim().parse().map_err(|_| bad(format!("λ {l:?} is not a number")))?;
            if !lambda.is_finite() || lambda < 0.0 {
                return Err(bad(format!("λ must be finite and >= 0, got {lambda}")));
            }
            return Ok(ModeKind::SrSte { lambda });
        }
        Ok(match t {
            "dense" => ModeKind::Dense,
            "srste" => ModeKind::SrSte { lambda: SRSTE_LAMBDA },
            "ste" => ModeKind::Ste,
            "fixed" => ModeKind::Fixed { transposable: false },
            "fixed-transposable" => ModeKind::Fixed { transposable: true },
            "untrained" => ModeKind::Untrained,
            _ => return Err(bad("expected dense, srste, srste:<lambda>, ste, fixed, fixed-transposable or untrained".into())),
        })
    }
}

/// How a sparse mode masks one weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskPlan {
    /// Grouped along the input dimension, flat-index groups, or left dense.
    pub outcome: MaskOutcome,
    /// The mask is a transposable 2:4 mask (valid along both dimensions).
    pub transposable: bool,
}

impl MaskPlan {
    /// Whether the weight really gets an N:M mask (not left dense).
    pub fn is_masked(&self) -> bool {
        self.outcome != MaskOutcome::LeftDense
    }

    /// `grouped`, `transposable`, `flat-index` or `left-dense`, for reports
    /// and checkpoint metadata.
    pub fn name(&self) -> &'static str {
        match (self.outcome, self.transposable) {
            (MaskOutcome::Grouped, true) => "transposable",
            (MaskOutcome::Grouped, false) => "grouped",
            (MaskOutcome::FlatIndex, _) => "flat-index",
            (MaskOutcome::LeftDense, _) => "left-dense",
        }
    }
}

/// Whether transposable 2:4 tiles (4 outputs × 4 inputs) cover `layout`.
fn tileable(layout: WeightLayout) -> bool {
    layout.out().is_multiple_of(4) && layout.inp().is_multiple_of(4)
}

/// How `mode` would mask a weight of `layout` whose non-divisible handling
/// is `nd`; `None` for [`SparseMode::Dense`].
///
/// Transposable 2:4 masks exist only for the 2:4 pattern (any other is an
/// error) and need `out` and `in` to be multiples of 4. A weight that does
/// not tile follows the normal rules instead: an input dimension that is
/// not a multiple of 4 is handled by `nd` (left dense, or SparseDM's
/// flat-index groups, which are then 2:4 along the input only), and an
/// output dimension that is not a multiple of 4 leaves the layer dense
/// (its transpose could not be 2:4; the report says "left-dense").
///
/// # Errors
/// An invalid layout, a transposable pattern other than 2:4, or
/// [`LayersError::FlatIndexNotDivisible`].
pub fn plan_mode(layout: WeightLayout, mode: SparseMode, nd: NonDivisible) -> Result<Option<MaskPlan>> {
    let Some(pattern) = mode.pattern() else { return Ok(None) };
    if let SparseMode::Fixed { transposable: true, .. } = mode {
        if (pattern.n(), pattern.m()) != (2, 4) {
            return Err(LayersError::InvalidArgument {
                what: format!("{layout}"),
                msg: format!("transposable masks exist for 2:4 only, not {pattern}"),
            });
        }
        layout.checked_numel()?;
        if tileable(layout) {
            return Ok(Some(MaskPlan { outcome: MaskOutcome::Grouped, transposable: true }));
        }
        if layout.inp().is_multiple_of(4) {
            return Ok(Some(MaskPlan { outcome: MaskOutcome::LeftDense, transposable: false }));
        }
    }
    Ok(Some(MaskPlan { outcome: plan_mask(layout, pattern, nd)?, transposable: false }))
}

/// The 0/1 magnitude mask of `w` (layout `layout`) under `mode`, as
/// [`plan_mode`] describes; `None` for a dense mode.
///
/// # Errors
/// Those of [`plan_mode`], or a length mismatch.
pub fn mode_mask(w: &[f32], layout: WeightLayout, mode: SparseMode, nd: NonDivisible) -> Result<Option<(Vec<f32>, MaskPlan)>> {
    let Some(plan) = plan_mode(layout, mode, nd)? else { return Ok(None) };
    let pattern = mode.pattern().ok_or_else(|| LayersError::InvalidArgument { what: "mode_mask".into(), msg: "no pattern".into() })?;
    let mask = match plan {
        MaskPlan { transposable: true, .. } => transposable_mask(w, layout, TransposableMethod::Exact)?,
        MaskPlan { outcome: MaskOutcome::LeftDense, .. } => {
            layout.check_len("weight", w.len())?;
            vec![1.0; w.len()]
        }
        _ => compute_mask(w, layout, pattern, nd)?.0,
    };
    Ok(Some((mask, plan)))
}

#[derive(Debug)]
struct State {
    mode: SparseMode,
    non_divisible: NonDivisible,
    fixed_mask: Option<Tensor>,
    plan: Option<MaskPlan>,
}

/// The sparsity of one weight; shared between the layer and the
/// [`crate::ParamStore`] (so policies can address layers by name).
#[derive(Debug, Clone)]
pub struct SparseSlot {
    weight: Tensor,
    layout: WeightLayout,
    training: Arc<AtomicBool>,
    state: Arc<RwLock<State>>,
    /// The weight as deployed for the N:M kernels (see `deployed.rs`).
    deploy: Arc<DeployCache>,
}

impl SparseSlot {
    pub(crate) fn new(weight: Tensor, training: Arc<AtomicBool>) -> Result<Self> {
        let layout = WeightLayout::from_shape(weight.shape())?;
        let state = State { mode: SparseMode::Dense, non_divisible: NonDivisible::default(), fixed_mask: None, plan: None };
        Ok(SparseSlot { weight, layout, training, state: Arc::new(RwLock::new(state)), deploy: Arc::new(DeployCache::default()) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The dense weight variable.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn layout(&self) -> WeightLayout {
        self.layout
    }
    pub fn mode(&self) -> SparseMode {
        self.read().mode
    }
    pub fn non_divisible(&self) -> NonDivisible {
        self.read().non_divisible
    }
    /// How the current mode masks this weight (`None` when dense).
    pub fn plan(&self) -> Option<MaskPlan> {
        self.read().plan
    }
    /// How the mask is built (grouped, flat-index, or left dense because the
    /// input dim is not a multiple of M); `None` when dense.
    pub fn last_outcome(&self) -> Option<MaskOutcome> {
        self.read().plan.map(|p| p.outcome)
    }

    /// Chooses what happens when the input dim is not a multiple of M. A
    /// `Fixed` mask is recomputed from the current weights under the new
    /// setting. On error nothing changes.
    pub fn set_non_divisible(&self, nd: NonDivisible) -> Result<()> {
        let mode = {
            let st = self.read();
            if st.non_divisible == nd {
                return Ok(());
            }
            st.mode
        };
        self.configure(mode, nd)
    }

    /// Switches the mode, keeping the same weight (and so the same
    /// optimizer state). `Fixed` computes its mask now and prunes the
    /// weight in place, as ASP's `compute_sparse_masks` does. The mode is
    /// checked first ([`plan_mode`]); on error nothing changes.
    pub fn set_mode(&self, mode: SparseMode) -> Result<()> {
        let nd = self.read().non_divisible;
        self.configure(mode, nd)
    }

    /// Sets mode and non-divisible handling together (one check, one `Fixed`
    /// mask computation). A `Fixed` mask is computed from the weights as
    /// they are now: load a checkpoint first, then set the mode.
    pub fn configure(&self, mode: SparseMode, nd: NonDivisible) -> Result<()> {
        let plan = plan_mode(self.layout, mode, nd)?;
        let fixed_mask = match mode {
            SparseMode::Fixed { .. } => Some(self.magnitude_mask(mode, nd)?.0),
            _ => None,
        };
        let mut st = self.write();
        if let Some(mask) = &fixed_mask {
            let _g = no_grad();
            self.weight.set_data(&self.weight.mul(mask)?)?;
        }
        *st = State { mode, non_divisible: nd, fixed_mask, plan };
        self.deploy.clear();
        Ok(())
    }

    /// Whether the store this slot belongs to is in training mode.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// The N:M pattern of the weight the forward uses, when that weight is
    /// N:M along the input dimension (a sparse mode with a grouped mask,
    /// and not an `Untrained` mask while training): what the deployed N:M
    /// kernels can run (see `deployed.rs`). `None` for dense layers,
    /// left-dense and flat-index masks.
    pub fn deployed_pattern(&self) -> Option<NmPattern> {
        let st = self.read();
        let pattern = st.mode.pattern()?;
        if matches!(st.mode, SparseMode::Untrained { .. }) && self.is_training() {
            return None;
        }
        (st.plan?.outcome == MaskOutcome::Grouped).then_some(pattern)
    }

    pub(crate) fn deploy_cache(&self) -> &DeployCache {
        &self.deploy
    }

    /// How many times this slot's deployed N:M weight has been built
    /// (compressed): once per weight version, mode and device.
    pub fn deploy_builds(&self) -> usize {
        self.deploy.builds()
    }

    /// How many times this slot's masked weight has been built for forwards
    /// without grad mode that do not take the deployed N:M path (once per
    /// weight version and mode).
    pub fn masked_weight_builds(&self) -> usize {
        self.deploy.masked_builds()
    }

    /// The kernel of the cached deployed weight, if any: `"nm-cpu"`,
    /// `"nm-cpu-conv"`, `"cusparselt-2:4"` (Linear), `"cusparselt-2:4-conv"`
    /// (Conv2d) or `"dense"` (no N:M kernel applies).
    pub fn deployed_kind(&self) -> Option<&'static str> {
        deployed::cached_kind(self)
    }

    /// The magnitude mask of the current weight under `mode` (sparse modes only).
    ///
    /// On a GPU the common masks never leave the device (see
    /// [`Self::device_mask`]); the rest, and every mask on the CPU, are
    /// computed by `mask.rs` / `transposable.rs` on the host and placed on
    /// the weight's device.
    fn magnitude_mask(&self, mode: SparseMode, nd: NonDivisible) -> Result<(Tensor, MaskPlan)> {
        if self.weight.is_cuda()
            && let Some(found) = self.device_mask(mode, nd)?
        {
            return Ok(found);
        }
        let w = self.weight.to_vec_f32()?;
        let (mask, plan) = mode_mask(&w, self.layout, mode, nd)?
            .ok_or_else(|| LayersError::InvalidArgument { what: format!("{}", self.layout), msg: "dense mode has no mask".into() })?;
        Ok((Tensor::from_vec(mask, self.weight.shape(), &self.weight.device())?, plan))
    }

    /// The mask of a weight on a GPU, computed there: grouped N:M masks by
    /// the `nm_mask` kernel (the same rule and tie-breaking as `mask.rs`,
    /// so the masks are identical) and left-dense masks as a fill of ones.
    /// `None` for what only the host computes: flat-index groups and
    /// transposable masks (`Fixed` computes those once, so the transfer is
    /// paid once), and dense modes (whose error the host path reports).
    ///
    /// SR-STE and STE recompute their mask at every forward, so this is what
    /// keeps a GPU training step free of weight downloads.
    fn device_mask(&self, mode: SparseMode, nd: NonDivisible) -> Result<Option<(Tensor, MaskPlan)>> {
        let (Some(plan), Some(pattern)) = (plan_mode(self.layout, mode, nd)?, mode.pattern()) else { return Ok(None) };
        Ok(match plan {
            MaskPlan { transposable: true, .. } => None,
            MaskPlan { outcome: MaskOutcome::LeftDense, .. } => Some((self.weight.ones_like()?, plan)),
            MaskPlan { outcome: MaskOutcome::Grouped, .. } => Some((self.weight.nm_mask(pattern.n(), pattern.m())?, plan)),
            MaskPlan { outcome: MaskOutcome::FlatIndex, .. } => None,
        })
    }

    /// The current mask (`None` for dense layers). For `Untrained` this is
    /// the inference mask, whatever the training flag.
    pub fn current_mask(&self) -> Result<Option<Tensor>> {
        let (mode, nd, fixed) = {
            let st = self.read();
            (st.mode, st.non_divisible, st.fixed_mask.clone())
        };
        match mode {
            SparseMode::Dense => Ok(None),
            SparseMode::Fixed { .. } => Ok(fixed),
            mode => Ok(Some(self.magnitude_mask(mode, nd)?.0)),
        }
    }

    /// The weight the forward pass uses (see the module table). Without
    /// grad mode a masked weight is built once per weight version and kept
    /// (`deployed::masked_weight`): the same values, no mask recomputed at
    /// every sampling step.
    pub fn effective_weight(&self) -> Result<Tensor> {
        let (mode, nd, fixed) = {
            let st = self.read();
            (st.mode, st.non_divisible, st.fixed_mask.clone())
        };
        let masked_forward = match mode {
            SparseMode::Dense => false,
            SparseMode::Untrained { .. } => !self.training.load(Ordering::Relaxed),
            SparseMode::SrSte { .. } | SparseMode::Ste { .. } | SparseMode::Fixed { .. } => true,
        };
        if masked_forward && !is_grad_enabled() {
            return deployed::masked_weight(self, || self.deployed_weight());
        }
        let w = &self.weight;
        match mode {
            SparseMode::Dense => Ok(w.clone()),
            SparseMode::Fixed { .. } => {
                let m = fixed.ok_or_else(|| LayersError::InvalidArgument {
                    what: format!("{}", self.layout),
                    msg: "fixed mode without a mask".into(),
                })?;
                Ok(w.mul(&m)?)
            }
            SparseMode::Untrained { .. } => {
                if self.training.load(Ordering::Relaxed) {
                    Ok(w.clone())
                } else {
                    let (m, _) = self.magnitude_mask(mode, nd)?;
                    Ok(w.mul(&m)?)
                }
            }
            SparseMode::SrSte { lambda, .. } => self.straight_through(mode, lambda, nd),
            SparseMode::Ste { .. } => self.straight_through(mode, 0.0, nd),
        }
    }

    /// w ⊙ m forward; g + λ(1 − m) ⊙ w backward (aojunzz/NM-sparsity
    /// `Sparse.backward`).
    ///
    /// The decay term is computed here, from the weights *of this forward*,
    /// as the reference saves `weight` and `mask` for backward: if the
    /// weights change between forward and backward the gradient still
    /// belongs to the forward that was run. (Keeping λ(1 − m) ⊙ w instead of
    /// m costs the same memory.)
    ///
    /// Every step is a tensor op on the weight's device, so on a GPU the
    /// mask (the `nm_mask` kernel), the masked value, the decay term and the
    /// backward addition all stay there.
    fn straight_through(&self, mode: SparseMode, lambda: f32, nd: NonDivisible) -> Result<Tensor> {
        let (m, _) = self.magnitude_mask(mode, nd)?;
        let w = self.weight.detach();
        // Untracked values (the custom op below must be created with grad
        // mode on, so the guard only covers these).
        let (value, decay) = {
            let _g = no_grad();
            let value = w.mul(&m)?;
            // λ(1 − m) ⊙ w; `affine` gives exactly λ where m = 0 and 0 where m = 1.
            let decay = if lambda == 0.0 { None } else { Some(w.mul(&m.affine(-lambda, lambda)?)?) };
            (value, decay)
        };
        Ok(match decay {
            None => Tensor::custom_op(&value, "ste", &[&self.weight], |c| Ok(vec![Some(c.grad.clone())]))?,
            Some(decay) => Tensor::custom_op(&value, "srste", &[&self.weight], move |c| Ok(vec![Some(c.grad.add(&decay)?)]))?,
        })
    }

    /// After an optimizer step: `Fixed` re-applies its mask to the weight
    /// (ASP); other modes need nothing.
    pub fn after_optimizer_step(&self) -> Result<()> {
        let st = self.read();
        if let (SparseMode::Fixed { .. }, Some(m)) = (st.mode, &st.fixed_mask) {
            let _g = no_grad();
            self.weight.set_data(&self.weight.mul(m)?)?;
        }
        Ok(())
    }

    /// The masked weight values as they would be deployed (zeros where
    /// pruned), without recording a graph.
    pub fn deployed_weight(&self) -> Result<Tensor> {
        let _g = no_grad();
        match self.current_mask()? {
            None => Ok(self.weight.detach()),
            Some(m) => Ok(self.weight.mul(&m)?),
        }
    }
}
