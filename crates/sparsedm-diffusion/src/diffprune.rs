//! Diff-Pruning (Fang, Ma and Wang, "Structural Pruning for Diffusion
//! Models", NeurIPS 2023; VainF/Diff-Pruning `ddpm_exp/prune.py`) for both
//! model families: Taylor importance accumulated over the informative
//! timesteps, then structural pruning of channels to a MAC target. The
//! result is a smaller **dense** model whose config carries its new widths
//! ([`UViTConfig::widths`], [`UNetConfig::widths`]); fine-tuning it is an
//! ordinary training run.
//!
//! What is pruned (the groups of [`channel_groups`]):
//! - **DDPM UNet**: the inner channels of every ResNet block — `conv1`'s
//!   outputs (and bias), `temb_proj`'s outputs (and bias), `norm2`'s
//!   γ/β, `conv2`'s inputs — the same number out of each of `norm2`'s GroupNorm
//!   groups (`num_groups`, 32 in the reference), as the reference's `MetaPruner` does. The reference
//!   also prunes the channels that run through the residual stream, the
//!   skip concatenations, the attention blocks and the time MLP (one
//!   dependency group spanning many layers); those are **not** pruned here:
//!   the ResNet inner channels are the groups that are safely prunable one
//!   block at a time, and they hold most of the MACs. The cut is then
//!   deeper than the reference's: the CIFAR-10 UNet reaches 50 % of its
//!   6.07 G (3.06 G, 35.7 M → 14.3 M parameters) with most inner widths at
//!   a quarter (256 → 64), where the reference's 30 % of every channel
//!   gives ≈ 3.4 G.
//! - **U-ViT**: per block, the MLP hidden width (`fc1` rows and bias, `fc2`
//!   columns; kept a multiple of 16 when the width is, so layers stay
//!   2:4-eligible) and the attention heads (a head's rows in each third of
//!   `qkv`, its bias if any, its columns of `proj`; the head width and the
//!   attention scale are kept). The token width D couples all blocks and is
//!   kept.
//!
//! Importance ([`importance_pass`]): one batch of clean images and one
//! fixed noise tensor; for timesteps k = 0, 1, … (the schedule's discrete
//! steps, or t = (k+1)/1000 for a continuous one) the ε-MSE of the whole
//! batch at that timestep is computed and its gradient accumulated, until
//! the loss falls below 0.05 × the largest loss so far
//! ([`sparsedm_layers::InformativeSteps`], checked before the backward as
//! in `ddpm_exp/prune.py`) or `max_steps` timesteps were used. Scores are
//! [`sparsedm_layers::taylor_scores`] of the accumulated gradient.
//!
//! Ratio ([`plan_for_macs`]): as the reference, one pruning ratio for every
//! group (local, uniform: each group loses the same fraction of its units,
//! its least important ones, never ranked across groups); the ratio is the
//! one whose pruned model's analytic MAC count ([`crate::macs`], the
//! paper's total: Linear + Conv2d + norms) is closest to the target
//! fraction of the dense count. Because widths move in whole heads and
//! whole GroupNorm groups, the two uniform cuts around the target can be
//! far apart (25 % of a 128-channel block); then the groups are moved one
//! at a time, in forward order, from the cut above the target to the cut
//! below it, and the closest of these mixtures is taken — every group is
//! still cut at one of two adjacent rounding steps of the same ratio.

use crate::error::{DiffusionError, Result};
use crate::model::EpsModel;
use crate::registry::ModelConfig;
use crate::schedule::NoiseSchedule;
use crate::unet::UNetConfig;
use crate::uvit::{UViTBlockWidths, UViTConfig};
use sparsedm_layers::{ChannelGroup, GroupMember, InformativeSteps, MemberAxis, ParamStore, prune_tensors, select_units, taylor_scores};
use sparsedm_tensor::{Tensor, no_grad};
use std::collections::{BTreeMap, HashMap};

/// Timesteps the importance pass may visit (the reference's `range(0, 1000)`).
pub const TIMESTEPS: usize = 1000;

/// The largest distance between the MAC fraction reached and the target
/// that [`plan_for_macs`] accepts: the widths move in whole heads, whole
/// GroupNorm groups and multiples of 16, so a target is met only to a step.
pub const MAC_TOLERANCE: f64 = 0.05;

/// MLP widths are kept multiples of this when they are (2:4 eligibility).
const UVIT_MLP_ROUND: usize = 16;

fn bad(msg: impl Into<String>) -> DiffusionError {
    DiffusionError::Config(format!("diff-pruning: {}", msg.into()))
}

/// The prunable channel groups of a model (see the module docs), in
/// forward order, with the model's current widths.
pub fn channel_groups(cfg: &ModelConfig) -> Vec<ChannelGroup> {
    match cfg {
        ModelConfig::UViT(c) => uvit_groups(c),
        ModelConfig::DdpmUNet(c) => unet_groups(c),
    }
}

fn uvit_groups(c: &UViTConfig) -> Vec<ChannelGroup> {
    let hd = c.head_dim();
    let mut groups = Vec::new();
    for b in c.block_names() {
        let w = c.block_widths(&b);
        let inner = w.num_heads * hd;
        let mut attn = vec![
            GroupMember::new(format!("{b}.attn.qkv.weight"), MemberAxis::Out, 0),
            GroupMember::new(format!("{b}.attn.qkv.weight"), MemberAxis::Out, inner),
            GroupMember::new(format!("{b}.attn.qkv.weight"), MemberAxis::Out, 2 * inner),
        ];
        if c.qkv_bias {
            attn.extend((0..3).map(|k| GroupMember::new(format!("{b}.attn.qkv.bias"), MemberAxis::Bias, k * inner)));
        }
        attn.push(GroupMember::new(format!("{b}.attn.proj.weight"), MemberAxis::In, 0));
        groups.push(ChannelGroup {
            name: format!("{b}.attn"),
            units: w.num_heads,
            unit_width: hd,
            partitions: 1,
            round_to: 1,
            members: attn,
        });
        groups.push(ChannelGroup {
            name: format!("{b}.mlp"),
            units: w.mlp_hidden,
            unit_width: 1,
            partitions: 1,
            round_to: if w.mlp_hidden.is_multiple_of(UVIT_MLP_ROUND) { UVIT_MLP_ROUND } else { 1 },
            members: vec![
                GroupMember::new(format!("{b}.mlp.fc1.weight"), MemberAxis::Out, 0),
                GroupMember::new(format!("{b}.mlp.fc1.bias"), MemberAxis::Bias, 0),
                GroupMember::new(format!("{b}.mlp.fc2.weight"), MemberAxis::In, 0),
            ],
        });
    }
    groups
}

/// `(name, out)` of every ResNet block in forward order.
fn unet_blocks(c: &UNetConfig) -> Vec<(String, usize)> {
    let (down, mid, up) = c.res_block_channels();
    let mut blocks = Vec::new();
    for (i, level) in down.iter().enumerate() {
        for (j, &(_, out)) in level.iter().enumerate() {
            blocks.push((format!("down.{i}.block.{j}"), out));
        }
    }
    blocks.push(("mid.block_1".to_string(), mid));
    blocks.push(("mid.block_2".to_string(), mid));
    for i in (0..up.len()).rev() {
        for (j, &(_, out)) in up[i].iter().enumerate() {
            blocks.push((format!("up.{i}.block.{j}"), out));
        }
    }
    blocks
}

fn unet_groups(c: &UNetConfig) -> Vec<ChannelGroup> {
    unet_blocks(c)
        .into_iter()
        .map(|(b, out)| ChannelGroup {
            units: c.res_inner(&b, out),
            unit_width: 1,
            partitions: c.num_groups,
            round_to: 1,
            members: vec![
                GroupMember::new(format!("{b}.conv1.weight"), MemberAxis::Out, 0),
                GroupMember::new(format!("{b}.conv1.bias"), MemberAxis::Bias, 0),
                GroupMember::new(format!("{b}.temb_proj.weight"), MemberAxis::Out, 0),
                GroupMember::new(format!("{b}.temb_proj.bias"), MemberAxis::Bias, 0),
                GroupMember::new(format!("{b}.norm2.weight"), MemberAxis::NormScale, 0),
                GroupMember::new(format!("{b}.norm2.bias"), MemberAxis::Bias, 0),
                GroupMember::new(format!("{b}.conv2.weight"), MemberAxis::In, 0),
            ],
            name: b,
        })
        .collect()
}

/// The config of `cfg` with each group's width set to its kept units
/// (`keep[i]` for `groups[i]`, the groups of [`channel_groups`]`(cfg)`).
/// Every block is listed in the result's `widths`.
pub fn pruned_config(cfg: &ModelConfig, groups: &[ChannelGroup], keep: &[usize]) -> Result<ModelConfig> {
    if groups.len() != keep.len() {
        return Err(bad(format!("{} kept counts for {} groups", keep.len(), groups.len())));
    }
    let kept: HashMap<&str, usize> = groups.iter().zip(keep).map(|(g, &k)| (g.name.as_str(), k)).collect();
    let get = |name: &str| kept.get(name).copied().ok_or_else(|| bad(format!("no kept count for group {name}")));
    let out = match cfg {
        ModelConfig::UViT(c) => {
            let mut widths = BTreeMap::new();
            for b in c.block_names() {
                let w = UViTBlockWidths { mlp_hidden: get(&format!("{b}.mlp"))?, num_heads: get(&format!("{b}.attn"))? };
                widths.insert(b, w);
            }
            let c = UViTConfig { widths: Some(widths), ..c.clone() };
            c.validate()?;
            ModelConfig::UViT(c)
        }
        ModelConfig::DdpmUNet(c) => {
            let mut widths = BTreeMap::new();
            for (b, _) in unet_blocks(c) {
                let k = get(&b)?;
                widths.insert(b, k);
            }
            let c = UNetConfig { widths: Some(widths), ..c.clone() };
            c.validate()?;
            ModelConfig::DdpmUNet(c)
        }
    };
    Ok(out)
}

/// The widths and MAC counts of a pruning ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct MacPlan {
    /// The uniform pruning ratio the groups were cut at (some groups may be
    /// one rounding step further, see the module docs).
    pub ratio: f64,
    /// Kept units of each group (in the order of [`channel_groups`]).
    pub keep: Vec<usize>,
    /// The pruned model's config.
    pub config: ModelConfig,
    /// MACs (the paper's total, batch 1) of the model before pruning.
    pub macs_before: f64,
    /// MACs of the pruned model.
    pub macs_after: f64,
}

impl MacPlan {
    /// `macs_after / macs_before`.
    pub fn fraction(&self) -> f64 {
        self.macs_after / self.macs_before
    }
}

/// Checks a MAC target: a fraction of the dense MACs strictly between 0 and 1.
pub fn check_mac_target(target: f64) -> Result<()> {
    if !(target.is_finite() && target > 0.0 && target < 1.0) {
        return Err(bad(format!("the MAC target {target} must be a fraction of the dense MACs strictly between 0 and 1 (e.g. 0.5)")));
    }
    Ok(())
}

/// The uniform ratio whose pruned model's MACs are closest to `target` ×
/// the model's MACs (ties: the smaller ratio), scanned in steps of 1/4096,
/// refined between the two cuts around the target (see the module docs).
///
/// # Errors
/// A target outside (0, 1); a model with nothing to prune (every group
/// already at its minimum, e.g. UNet blocks with one inner channel per
/// GroupNorm group); a target the widths cannot reach within
/// [`MAC_TOLERANCE`] (the message gives the fractions within reach).
pub fn plan_for_macs(cfg: &ModelConfig, target: f64) -> Result<MacPlan> {
    check_mac_target(target)?;
    let groups = channel_groups(cfg);
    if groups.iter().all(|g| g.units <= g.min_keep()) {
        return Err(bad(format!(
            "the {} model has no prunable channels: {}",
            cfg.arch(),
            match cfg {
                ModelConfig::UViT(_) => "every block has one head and its smallest MLP width".to_string(),
                ModelConfig::DdpmUNet(c) => format!("every ResNet block has one inner channel per GroupNorm group ({})", c.num_groups),
            }
        )));
    }
    let macs_of = |c: &ModelConfig| -> Result<f64> {
        let r = c.mac_report(1);
        r.check()?;
        Ok(r.paper_total())
    };
    let before = macs_of(cfg)?;
    const STEPS: usize = 4096;
    // The distinct uniform cuts, in order of increasing ratio (so of non-increasing MACs).
    let mut cuts: Vec<MacPlan> = Vec::new();
    for i in 0..STEPS {
        let ratio = i as f64 / STEPS as f64;
        let keep: Vec<usize> = groups.iter().map(|g| g.keep_at_ratio(ratio)).collect();
        if cuts.last().is_some_and(|c| c.keep == keep) {
            continue;
        }
        let config = pruned_config(cfg, &groups, &keep)?;
        let after = macs_of(&config)?;
        cuts.push(MacPlan { ratio, keep, config, macs_before: before, macs_after: after });
    }
    let (lowest, highest) = cuts.iter().fold((f64::INFINITY, 0f64), |(lo, hi), c| (lo.min(c.fraction()), hi.max(c.fraction())));
    let closer = |a: &MacPlan, b: &MacPlan| (a.fraction() - target).abs() < (b.fraction() - target).abs();
    let mut best: Option<MacPlan> = None;
    for c in &cuts {
        if best.as_ref().is_none_or(|b| closer(c, b)) {
            best = Some(c.clone());
        }
    }
    // Whole heads and GroupNorm groups make the uniform cuts coarse: between
    // the last cut above the target and the first below it, move the groups
    // one at a time (in forward order) to their next rounding step.
    if let Some(j) = cuts.windows(2).position(|w| w[0].fraction() >= target && w[1].fraction() < target) {
        let (above, below) = (&cuts[j], &cuts[j + 1]);
        let mut keep = above.keep.clone();
        for i in 0..keep.len() {
            if keep[i] == below.keep[i] {
                continue;
            }
            keep[i] = below.keep[i];
            let config = pruned_config(cfg, &groups, &keep)?;
            let after = macs_of(&config)?;
            let mixed = MacPlan { ratio: above.ratio, keep: keep.clone(), config, macs_before: before, macs_after: after };
            if best.as_ref().is_none_or(|b| closer(&mixed, b)) {
                best = Some(mixed);
            }
        }
    }
    let best = best.ok_or_else(|| bad("no pruning ratio was tried"))?;
    if (best.fraction() - target).abs() > MAC_TOLERANCE {
        return Err(bad(format!(
            "a MAC target of {target} is out of reach for this {} model: uniform pruning of its prunable channels gives between {lowest:.3} and {highest:.3} of its MACs (closest {:.3}, tolerance {MAC_TOLERANCE})",
            cfg.arch(),
            best.fraction()
        )));
    }
    Ok(best)
}

/// Options of the importance pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImportanceOptions {
    /// At most this many timesteps (k = 0 … max_steps−1), ≤ [`TIMESTEPS`].
    pub max_steps: usize,
    /// Stop at the first timestep whose loss is below `threshold` × the largest so far.
    pub threshold: f64,
    /// Visit every `stride`-th timestep (k = 0, stride, 2·stride, … < `max_steps`). The
    /// reference visits each (1, the default); a larger stride sums the gradient over a
    /// subsample of the same informative range, for a pass `stride` times cheaper (the
    /// scores only rank channels within a group, so their scale does not matter).
    pub stride: usize,
}

impl Default for ImportanceOptions {
    fn default() -> Self {
        ImportanceOptions { max_steps: TIMESTEPS, threshold: InformativeSteps::DEFAULT_THRESHOLD, stride: 1 }
    }
}

/// What the importance pass measured.
#[derive(Debug, Clone)]
pub struct ImportancePass {
    /// Σ over the informative timesteps of ∂(ε-MSE)/∂θ, by parameter name.
    pub grads: HashMap<String, Tensor>,
    /// The loss at each timestep whose gradient was accumulated.
    pub losses: Vec<f64>,
    /// The loss of the timestep that stopped the pass (not accumulated), if one did.
    pub stopped_at: Option<(usize, f64)>,
}

/// The schedule time of importance timestep `k`: the schedule's own step
/// for a discrete schedule, (k+1)/[`TIMESTEPS`] · T for a continuous one.
fn step_time(schedule: &dyn NoiseSchedule, k: usize) -> f64 {
    match schedule.discrete() {
        Some(d) => d.step_time(k.min(d.num_steps() - 1)),
        None => (k + 1) as f64 / TIMESTEPS as f64 * schedule.t_max(),
    }
}

/// Accumulates the gradient of the ε-prediction loss over the informative
/// timesteps (see the module docs) for the model whose parameters are in
/// `store`. `x0` `[B, C, H, W]` are clean images in [−1, 1], `noise` one
/// fixed ε of the same shape, `y` the labels of a class-conditional model.
/// The store is put in evaluation mode (no dropout, as the reference's
/// `model.eval()`); its parameters are not changed.
/// The checks [`importance_pass`] makes on its options before any work:
/// 1..=limit timesteps (the schedule's steps, at most [`TIMESTEPS`]) and a
/// valid threshold; callers run it first so a bad option is an error
/// before a model is moved or a device announced.
pub fn check_importance_options(schedule: &dyn NoiseSchedule, opts: ImportanceOptions) -> Result<()> {
    let limit = schedule.discrete().map_or(TIMESTEPS, |d| d.num_steps().min(TIMESTEPS));
    if opts.max_steps == 0 || opts.max_steps > limit {
        return Err(bad(format!("the importance pass needs 1..={limit} timesteps, got {}", opts.max_steps)));
    }
    if opts.stride == 0 || opts.stride > opts.max_steps {
        return Err(bad(format!("the importance pass's timestep stride must be in 1..={}, got {}", opts.max_steps, opts.stride)));
    }
    InformativeSteps::new(opts.threshold)?;
    Ok(())
}

pub fn importance_pass(
    model: &dyn EpsModel,
    store: &ParamStore,
    schedule: &dyn NoiseSchedule,
    x0: &Tensor,
    y: Option<&Tensor>,
    noise: &Tensor,
    opts: ImportanceOptions,
) -> Result<ImportancePass> {
    if x0.shape() != noise.shape() || x0.rank() != 4 || x0.shape()[0] == 0 {
        return Err(DiffusionError::Input {
            what: "diff-pruning importance pass".into(),
            msg: format!("images {:?} and noise {:?} must be the same non-empty [B, C, H, W]", x0.shape(), noise.shape()),
        });
    }
    check_importance_options(schedule, opts)?;
    let mut rule = InformativeSteps::new(opts.threshold)?;
    store.set_training(false);
    let params = store.params();
    let b = x0.shape()[0];
    let dev = x0.device();
    let mut grads: HashMap<String, Tensor> = HashMap::new();
    let mut losses = Vec::new();
    let mut stopped_at = None;
    for k in (0..opts.max_steps).step_by(opts.stride) {
        let t = step_time(schedule, k);
        let (a, s) = (schedule.alpha(t) as f32, schedule.sigma(t) as f32);
        let x_t = x0.mul_scalar(a)?.add(&noise.mul_scalar(s)?)?;
        let model_t = Tensor::from_vec(vec![schedule.model_time(t) as f32; b], &[b], &dev)?;
        let eps_hat = model.predict_eps(&x_t, &model_t, y)?;
        let loss = noise.sub(&eps_hat)?.sqr()?.mean_all()?;
        let value = loss.to_scalar()? as f64;
        if !rule.admit(value)? {
            stopped_at = Some((k, value));
            break;
        }
        let step = loss.backward()?;
        let _g = no_grad();
        for (name, p) in &params {
            if let Some(g) = step.get(p) {
                let sum = match grads.remove(name) {
                    Some(acc) => acc.add(g)?,
                    None => g.detach(),
                };
                grads.insert(name.clone(), sum);
            }
        }
        losses.push(value);
    }
    Ok(ImportancePass { grads, losses, stopped_at })
}

/// One group's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupOutcome {
    pub name: String,
    /// Units before and after (channels, or heads).
    pub units: usize,
    pub kept: usize,
    /// Channels per unit.
    pub unit_width: usize,
}

/// A pruned model: its config, its tensors (state-dict names, f32) and what was done.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub config: ModelConfig,
    pub tensors: Vec<(String, Tensor)>,
    pub plan: MacPlan,
    pub groups: Vec<GroupOutcome>,
}

/// Prunes the model `cfg` whose weights are in `store` to `target` × its
/// MACs, removing in every group the units with the lowest Taylor scores
/// under `grads` (from [`importance_pass`]). The pruned tensors are checked
/// by building the pruned config and loading them strictly. `store` and
/// `grads` may live on any device (the pass runs where the model is); the
/// scores and the slicing work on host copies, and the pruned tensors are
/// f32 on the CPU.
pub fn prune_to_macs(cfg: &ModelConfig, store: &ParamStore, grads: &HashMap<String, Tensor>, target: f64) -> Result<Pruned> {
    let plan = plan_for_macs(cfg, target)?;
    let groups = channel_groups(cfg);
    let host = sparsedm_tensor::Device::Cpu;
    let state = store.state_dict().into_iter().map(|(n, t)| Ok((n, t.to_device(&host)?))).collect::<Result<Vec<_>>>()?;
    let grads = grads.iter().map(|(n, g)| Ok((n.clone(), g.to_device(&host)?))).collect::<Result<HashMap<_, _>>>()?;
    let grads = &grads;
    let weights: HashMap<String, Tensor> = state.iter().cloned().collect();
    let mut selections = Vec::with_capacity(groups.len());
    let mut outcomes = Vec::with_capacity(groups.len());
    for (g, &keep) in groups.iter().zip(&plan.keep) {
        let scores = taylor_scores(g, &weights, grads)?;
        let kept = select_units(g, &scores, keep)?;
        outcomes.push(GroupOutcome { name: g.name.clone(), units: g.units, kept: kept.len(), unit_width: g.unit_width });
        selections.push((g.clone(), kept));
    }
    let tensors = prune_tensors(state, &selections)?;
    // The pruned tensors must be exactly the pruned config's parameters.
    let check = ParamStore::new(sparsedm_tensor::Device::Cpu, 0);
    plan.config.build(&check)?;
    check.load_tensors("the pruned tensors", tensors.clone(), |_| false)?;
    Ok(Pruned { config: plan.config.clone(), tensors, plan, groups: outcomes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvit_groups_follow_the_blocks() {
        let c = UViTConfig::cifar10_uvit_small();
        let g = channel_groups(&ModelConfig::UViT(c.clone()));
        assert_eq!(g.len(), 2 * 13);
        assert_eq!(g[0].name, "in_blocks.0.attn");
        assert_eq!((g[0].units, g[0].unit_width), (8, 64));
        assert_eq!(g[0].members[1].offset, 512);
        assert_eq!((g[1].units, g[1].round_to), (2048, 16));
    }

    #[test]
    fn bad_targets_are_errors() {
        let cfg = ModelConfig::UViT(UViTConfig::cifar10_uvit_small());
        for t in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let e = plan_for_macs(&cfg, t).unwrap_err().to_string();
            assert!(e.contains("strictly between 0 and 1"), "{e}");
        }
    }
}
