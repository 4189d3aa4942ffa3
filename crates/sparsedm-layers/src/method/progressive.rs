//! The "traditional progressive" baseline of the SparseDM paper: the
//! sparsity ratio rises in stages during fine-tuning, e.g. 15:16 → 7:8 →
//! 3:4 → 2:4 every 100k steps (MODELS_AND_METHOD §1, §7.4).
//!
//! A [`ProgressiveSchedule`] is a list of (pattern, start step), written
//! `"15:16@0,7:8@100000,3:4@200000,2:4@300000"`. [`ProgressiveSchedule::apply`]
//! is called once per step (before the forward) and, when the step has
//! crossed into a new stage, switches the mask of every sparse layer **on the
//! same weight tensors**, in place: the model is not rebuilt, so the
//! optimizer (whose state is keyed by those tensors), the learning-rate
//! schedule, the training forward and the EMA all keep working on the one
//! model.
//!
//! Why this matters: the paper's scripts (`train_c10_multi_step7.py`,
//! `_step31.py`) built a *new* train state at each boundary — a freshly
//! initialised network whose EMA loaded the last checkpoint — while the
//! training forward (`score_model`), the optimizer and the LR scheduler kept
//! pointing at the old objects, and evaluation used the old EMA. After the
//! first switch the optimizer trained a network nobody evaluated any more,
//! and the new EMA decayed toward an untrained network, which is
//! indistinguishable from "training stopped" (the paper's reading of the
//! ablation). Switching masks in place is what the method describes; doing
//! it here avoids that bug by construction.
//!
//! The switch is stateless: a layer is re-configured exactly when its
//! current pattern differs from the stage's, so resuming from a checkpoint
//! at any step just works. Layers that are dense (not chosen by the policy)
//! are never touched; choose the layers once with
//! [`crate::apply_policy`] at the first stage's pattern.

use crate::nm::pattern::NmPattern;
use crate::nn::sparse::{SparseMode, plan_mode};
use crate::{LayersError, ParamStore};
use std::fmt;
use std::str::FromStr;

type Result<T> = std::result::Result<T, LayersError>;

/// One stage: `pattern` from step `start` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub pattern: NmPattern,
    pub start: u64,
}

/// A validated schedule: at least one stage, the first at step 0, starts
/// strictly increasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressiveSchedule {
    stages: Vec<Stage>,
}

/// What [`ProgressiveSchedule::apply`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The pattern the layers now use.
    pub pattern: NmPattern,
    /// Names of the layers that were switched.
    pub layers: Vec<String>,
}

impl ProgressiveSchedule {
    /// A schedule from its stages.
    ///
    /// # Errors
    /// [`LayersError::Schedule`] for no stages, a first stage that does not
    /// start at 0, or starts that do not strictly increase.
    pub fn new(stages: Vec<Stage>) -> Result<Self> {
        let spec = display(&stages);
        let err = |msg: String| LayersError::Schedule { spec: spec.clone(), msg };
        let first = stages.first().ok_or_else(|| err("no stages".into()))?;
        if first.start != 0 {
            return Err(err(format!("the first stage must start at step 0, not {}", first.start)));
        }
        for w in stages.windows(2) {
            if w[1].start <= w[0].start {
                return Err(err(format!("stage starts must increase: {} then {}", w[0].start, w[1].start)));
            }
        }
        Ok(ProgressiveSchedule { stages })
    }

    /// `patterns[i]` from step `i · interval` on (the paper: every 100,000 steps).
    ///
    /// # Errors
    /// As [`Self::new`] (`interval` 0 with several patterns, no patterns), or an overflow.
    pub fn every(patterns: &[NmPattern], interval: u64) -> Result<Self> {
        let stages = patterns
            .iter()
            .enumerate()
            .map(|(i, &pattern)| {
                (i as u64)
                    .checked_mul(interval)
                    .map(|start| Stage { pattern, start })
                    .ok_or_else(|| LayersError::Schedule { spec: format!("every {interval} steps"), msg: "step overflow".into() })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(stages)
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Index of the stage in force at `step`.
    pub fn stage_index_at(&self, step: u64) -> usize {
        self.stages.partition_point(|s| s.start <= step).saturating_sub(1)
    }

    /// The pattern in force at `step`.
    pub fn pattern_at(&self, step: u64) -> NmPattern {
        self.stages[self.stage_index_at(step)].pattern
    }

    /// Checks that every stage's mode can be built on every sparse layer of
    /// `store` (for example that flat-index groups exist for each M), so a
    /// run does not fail at a boundary hours in.
    ///
    /// # Errors
    /// [`LayersError::Schedule`] naming the stage and layer.
    pub fn validate<F>(&self, store: &ParamStore, mode_builder: F) -> Result<()>
    where
        F: Fn(NmPattern) -> SparseMode,
    {
        for (name, slot) in store.sparse_slots() {
            if slot.mode().pattern().is_none() {
                continue;
            }
            for stage in &self.stages {
                plan_mode(slot.layout(), mode_builder(stage.pattern), slot.non_divisible()).map_err(|e| LayersError::Schedule {
                    spec: self.to_string(),
                    msg: format!("stage {}@{} cannot be applied to layer {name}: {e}", stage.pattern, stage.start),
                })?;
            }
        }
        Ok(())
    }

    /// Puts every sparse layer of `store` on the pattern of `step`'s stage,
    /// switching (via [`crate::SparseSlot::configure`], same weights) only
    /// the layers whose pattern differs. Returns what changed, `None` when
    /// nothing did (every step inside a stage). All layers are checked
    /// before any is switched.
    ///
    /// # Errors
    /// A mode that cannot be built on a layer (see [`Self::validate`]).
    pub fn apply<F>(&self, step: u64, store: &ParamStore, mode_builder: F) -> Result<Option<Switch>>
    where
        F: Fn(NmPattern) -> SparseMode,
    {
        let pattern = self.pattern_at(step);
        let mode = mode_builder(pattern);
        let mut todo = Vec::new();
        for (name, slot) in store.sparse_slots() {
            match slot.mode().pattern() {
                Some(p) if p != pattern => {
                    plan_mode(slot.layout(), mode, slot.non_divisible()).map_err(|e| LayersError::Schedule {
                        spec: self.to_string(),
                        msg: format!("step {step}: cannot switch layer {name} to {pattern}: {e}"),
                    })?;
                    todo.push((name, slot));
                }
                _ => {}
            }
        }
        if todo.is_empty() {
            return Ok(None);
        }
        let mut layers = Vec::with_capacity(todo.len());
        for (name, slot) in todo {
            slot.configure(mode, slot.non_divisible())?;
            layers.push(name);
        }
        Ok(Some(Switch { pattern, layers }))
    }
}

fn display(stages: &[Stage]) -> String {
    stages.iter().map(|s| format!("{}@{}", s.pattern, s.start)).collect::<Vec<_>>().join(",")
}

impl fmt::Display for ProgressiveSchedule {
    /// `15:16@0,7:8@100000,...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display(&self.stages))
    }
}

impl FromStr for ProgressiveSchedule {
    type Err = LayersError;

    /// Parses `N:M@STEP` items separated by commas (whitespace allowed;
    /// `_` allowed in steps, as in `100_000`).
    fn from_str(s: &str) -> Result<Self> {
        let err = |msg: String| LayersError::Schedule { spec: s.to_string(), msg };
        let mut stages = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            let (p, step) = item.split_once('@').ok_or_else(|| err(format!("item {item:?} is not N:M@STEP")))?;
            let pattern: NmPattern = p.trim().parse().map_err(|e| err(format!("item {item:?}: {e}")))?;
            let start: u64 = step
                .trim()
                .replace('_', "")
                .parse()
                .map_err(|_| err(format!("item {item:?}: step {:?} is not a non-negative integer", step.trim())))?;
            stages.push(Stage { pattern, start });
        }
        ProgressiveSchedule::new(stages).map_err(|e| match e {
            LayersError::Schedule { msg, .. } => err(msg),
            other => other,
        })
    }
}
