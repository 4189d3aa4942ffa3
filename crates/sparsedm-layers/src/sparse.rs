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
//! Here g is the gradient with respect to the weight the forward used.

use crate::layout::WeightLayout;
use crate::mask::{compute_mask, MaskOutcome, NonDivisible};
use crate::pattern::NmPattern;
use crate::transposable::{transposable_mask, TransposableMethod};
use crate::LayersError;
use sparsedm_tensor::{no_grad, Tensor};
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
    SrSte { pattern: NmPattern, lambda: f32 },
    /// Plain straight-through estimator (SR-STE with λ = 0).
    Ste { pattern: NmPattern },
    /// apex ASP: a magnitude mask computed once (optionally transposable
    /// 2:4), weights and gradients masked around every optimizer step.
    Fixed { pattern: NmPattern, transposable: bool },
    /// The ablation's untrained mask: dense training, masked inference.
    Untrained { pattern: NmPattern },
}

impl SparseMode {
    /// The N:M pattern, if the mode is sparse.
    pub fn pattern(&self) -> Option<NmPattern> {
        match *self {
            SparseMode::Dense => None,
            SparseMode::SrSte { pattern, .. } | SparseMode::Ste { pattern } | SparseMode::Fixed { pattern, .. } | SparseMode::Untrained { pattern } => {
                Some(pattern)
            }
        }
    }
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            SparseMode::Dense => "dense",
            SparseMode::SrSte { .. } => "srste",
            SparseMode::Ste { .. } => "ste",
            SparseMode::Fixed { .. } => "fixed",
            SparseMode::Untrained { .. } => "untrained",
        }
    }
}

#[derive(Debug)]
struct State {
    mode: SparseMode,
    non_divisible: NonDivisible,
    fixed_mask: Option<Tensor>,
    last_outcome: Option<MaskOutcome>,
}

/// The sparsity of one weight; shared between the layer and the
/// [`crate::ParamStore`] (so policies can address layers by name).
#[derive(Debug, Clone)]
pub struct SparseSlot {
    weight: Tensor,
    layout: WeightLayout,
    training: Arc<AtomicBool>,
    state: Arc<RwLock<State>>,
}

impl SparseSlot {
    pub(crate) fn new(weight: Tensor, training: Arc<AtomicBool>) -> Result<Self> {
        let layout = WeightLayout::from_shape(weight.shape())?;
        let state = State { mode: SparseMode::Dense, non_divisible: NonDivisible::default(), fixed_mask: None, last_outcome: None };
        Ok(SparseSlot { weight, layout, training, state: Arc::new(RwLock::new(state)) })
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
    /// How the last mask was built (grouped, flat-index, or left dense
    /// because the input dim is not a multiple of M).
    pub fn last_outcome(&self) -> Option<MaskOutcome> {
        self.read().last_outcome
    }

    /// Chooses what happens when the input dim is not a multiple of M.
    pub fn set_non_divisible(&self, nd: NonDivisible) {
        self.write().non_divisible = nd;
    }

    /// Switches the mode, keeping the same weight (and so the same
    /// optimizer state). `Fixed` computes its mask now and prunes the
    /// weight in place, as ASP's `compute_sparse_masks` does.
    pub fn set_mode(&self, mode: SparseMode) -> Result<()> {
        let mut st = self.write();
        st.mode = mode;
        st.fixed_mask = None;
        if let SparseMode::Fixed { pattern, transposable } = mode {
            let (mask, outcome) = self.magnitude_mask(pattern, transposable, st.non_divisible)?;
            let _g = no_grad();
            self.weight.set_data(&self.weight.mul(&mask)?)?;
            st.fixed_mask = Some(mask);
            st.last_outcome = Some(outcome);
        }
        Ok(())
    }

    fn magnitude_mask(&self, pattern: NmPattern, transposable: bool, nd: NonDivisible) -> Result<(Tensor, MaskOutcome)> {
        let w = self.weight.to_vec_f32()?;
        let (mask, outcome) = if transposable {
            if (pattern.n(), pattern.m()) != (2, 4) {
                return Err(LayersError::Param {
                    name: format!("{:?}", self.layout),
                    msg: format!("transposable masks exist for 2:4 only, not {pattern}"),
                });
            }
            (transposable_mask(&w, self.layout, TransposableMethod::Exact)?, MaskOutcome::Grouped)
        } else {
            compute_mask(&w, self.layout, pattern, nd)?
        };
        Ok((Tensor::from_vec(mask, self.weight.shape(), &self.weight.device())?, outcome))
    }

    /// The current mask (`None` for dense layers).
    pub fn current_mask(&self) -> Result<Option<Tensor>> {
        let st = self.read();
        match st.mode {
            SparseMode::Dense => Ok(None),
            SparseMode::Fixed { .. } => Ok(st.fixed_mask.clone()),
            mode => {
                let nd = st.non_divisible;
                drop(st);
                let pattern = mode.pattern().ok_or_else(|| LayersError::Param { name: String::new(), msg: "no pattern".into() })?;
                Ok(Some(self.magnitude_mask(pattern, false, nd)?.0))
            }
        }
    }

    /// The weight the forward pass uses (see the module table).
    pub fn effective_weight(&self) -> Result<Tensor> {
        let (mode, nd, fixed) = {
            let st = self.read();
            (st.mode, st.non_divisible, st.fixed_mask.clone())
        };
        let w = &self.weight;
        match mode {
            SparseMode::Dense => Ok(w.clone()),
            SparseMode::Fixed { .. } => {
                let m = fixed.ok_or_else(|| LayersError::Param { name: String::new(), msg: "fixed mode without a mask".into() })?;
                Ok(w.mul(&m)?)
            }
            SparseMode::Untrained { pattern } => {
                if self.training.load(Ordering::Relaxed) {
                    Ok(w.clone())
                } else {
                    let (m, outcome) = self.magnitude_mask(pattern, false, nd)?;
                    self.write().last_outcome = Some(outcome);
                    Ok(w.mul(&m)?)
                }
            }
            SparseMode::SrSte { pattern, lambda } => self.straight_through(pattern, lambda, nd),
            SparseMode::Ste { pattern } => self.straight_through(pattern, 0.0, nd),
        }
    }

    /// w ⊙ m forward; g + λ(1 − m) ⊙ w backward (aojunzz/NM-sparsity
    /// `Sparse.backward`).
    fn straight_through(&self, pattern: NmPattern, lambda: f32, nd: NonDivisible) -> Result<Tensor> {
        let (m, outcome) = self.magnitude_mask(pattern, false, nd)?;
        self.write().last_outcome = Some(outcome);
        let w = self.weight.detach();
        let value = {
            let _g = no_grad();
            w.mul(&m)?
        };
        let op = if lambda == 0.0 { "ste" } else { "srste" };
        Ok(Tensor::custom_op(&value, op, &[&self.weight], move |c| {
            if lambda == 0.0 {
                return Ok(vec![Some(c.grad.clone())]);
            }
            let decay = w.mul(&m.affine(-lambda, lambda)?)?;
            Ok(vec![Some(c.grad.add(&decay)?)])
        })?)
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
