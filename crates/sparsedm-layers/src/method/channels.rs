//! Structural (channel) pruning with first-order Taylor importance, the
//! pruning half of Diff-Pruning (Fang, Ma and Wang, NeurIPS 2023; VainF/
//! Diff-Pruning `ddpm_exp/prune.py` with its vendored Torch-Pruning).
//!
//! A [`ChannelGroup`] is a set of channels that must be removed together to
//! keep the network consistent: the output rows of the layer that produces
//! them, the input columns of the layer that consumes them, the affine
//! entries of a norm over them and the biases. Its channels are cut into
//! *units* (one channel, or one attention head of `unit_width` channels),
//! the smallest thing that is removed.
//!
//! * **Importance** ([`taylor_scores`]): Torch-Pruning's `TaylorImportance`
//!   as Diff-Pruning vendors it. With `g` the gradient of the loss
//!   accumulated over the informative timesteps (see [`InformativeSteps`]),
//!   a channel scores Σ (w·g)² over its row of each producer and its column
//!   of each consumer, plus |γ·g_γ| of each norm scale over it, summed over
//!   the group's members without normalisation; biases are pruned with the
//!   channel but not scored. A unit scores the sum of its channels.
//! * **Selection** ([`select_units`]): the least important units go. As the
//!   reference's `MetaPruner` does for layers followed by a GroupNorm, the
//!   units are split into `partitions` equal consecutive parts (the norm's
//!   groups) and the same number is removed from each part, so every group
//!   of the norm keeps the same size.
//! * **Ratio** ([`ChannelGroup::keep_at_ratio`]): one pruning ratio for every
//!   group (the reference's local, uniform `ch_sparsity`), rounded as the
//!   reference rounds (whole units, the same count per partition, an
//!   optional multiple).
//! * **Slicing** ([`prune_tensors`]): every member tensor loses the removed
//!   rows/columns/entries; the result is a smaller dense state dict.
//!
//! The model-specific part (which tensors form which group, the widths the
//! pruned model then has, the MAC target) lives with the models in
//! `sparsedm-diffusion`.

use crate::LayersError;
use sparsedm_tensor::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};

type Result<T> = std::result::Result<T, LayersError>;

fn err(group: &str, msg: impl Into<String>) -> LayersError {
    LayersError::StructuredPrune { group: group.to_string(), msg: msg.into() }
}

/// How a member tensor holds the channels of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAxis {
    /// Rows (dim 0) of a producer's weight `[out, …]`; scored Σ (w·g)².
    Out,
    /// Columns (dim 1) of a consumer's weight `[out, in, …]`; scored Σ (w·g)².
    In,
    /// Entries of a norm's scale γ `[C]`; scored |γ·g_γ|.
    NormScale,
    /// Entries of a bias or a norm's shift `[C]`: removed with the channel, not scored.
    Bias,
}

impl MemberAxis {
    /// The tensor dimension the channels run along.
    pub fn dim(self) -> usize {
        match self {
            MemberAxis::In => 1,
            MemberAxis::Out | MemberAxis::NormScale | MemberAxis::Bias => 0,
        }
    }
}

/// One tensor's share of a group: channel `c` of the group is index
/// `offset + c` along [`MemberAxis::dim`] (an offset other than 0 names one
/// third of a fused `qkv` weight, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The state-dict name (`in_blocks.0.mlp.fc1.weight`).
    pub tensor: String,
    pub axis: MemberAxis,
    pub offset: usize,
}

impl GroupMember {
    pub fn new(tensor: impl Into<String>, axis: MemberAxis, offset: usize) -> Self {
        GroupMember { tensor: tensor.into(), axis, offset }
    }
}

/// Channels that are pruned together (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroup {
    /// What the group is (`in_blocks.0.mlp`, `down.1.block.0`), for messages and reports.
    pub name: String,
    /// Prunable units (channels, or heads).
    pub units: usize,
    /// Channels per unit (1, or an attention head's width).
    pub unit_width: usize,
    /// Equal consecutive parts that each lose the same number of units (a
    /// GroupNorm's groups); 1 for none.
    pub partitions: usize,
    /// The kept unit count is rounded up to a multiple of this (1 for none).
    pub round_to: usize,
    pub members: Vec<GroupMember>,
}

impl ChannelGroup {
    /// Channels of the group, `units · unit_width`.
    pub fn channels(&self) -> usize {
        self.units * self.unit_width
    }

    /// The fewest units the group may keep: one per partition, and one
    /// multiple of `round_to`, never more than it has.
    pub fn min_keep(&self) -> usize {
        self.partitions.max(self.round_to).max(1).min(self.units)
    }

    /// Checks the group's own numbers (partitions and rounding divide the units).
    pub fn validate(&self) -> Result<()> {
        if self.units == 0 || self.unit_width == 0 || self.partitions == 0 || self.round_to == 0 {
            return Err(err(&self.name, "units, unit width, partitions and rounding must all be positive"));
        }
        if !self.units.is_multiple_of(self.partitions) {
            return Err(err(&self.name, format!("{} units do not split into {} equal partitions", self.units, self.partitions)));
        }
        if self.members.is_empty() {
            return Err(err(&self.name, "the group has no member tensors"));
        }
        Ok(())
    }

    /// The units kept at pruning ratio `ratio` ∈ [0, 1): ⌊units·ratio⌋ are
    /// removed, reduced to a multiple of `partitions` (the same count out of
    /// each part, as the reference's `n_pruned // num_groups` per group);
    /// the kept count is then rounded up to a multiple of `round_to` and is
    /// at least [`ChannelGroup::min_keep`]. Non-increasing in `ratio`.
    pub fn keep_at_ratio(&self, ratio: f64) -> usize {
        let ratio = if ratio.is_finite() { ratio.clamp(0.0, 1.0) } else { 0.0 };
        let p = self.partitions.max(1);
        let removed = ((self.units as f64 * ratio).floor() as usize).min(self.units);
        let removed = removed / p * p;
        let mut keep = self.units - removed;
        let r = self.round_to.max(1);
        if !keep.is_multiple_of(r) {
            keep = (keep / r + 1) * r;
        }
        keep.clamp(self.min_keep(), self.units)
    }
}

/// The rule that picks the informative timesteps of the importance pass
/// (Diff-Pruning's "Taylor expansion over pruned timesteps"): timesteps are
/// visited from t = 0 upwards, the loss at each one is compared with the
/// largest seen so far (this one included), and the pass stops at the first
/// timestep whose loss is below `threshold` × that maximum — before its
/// gradient is added, as `ddpm_exp/prune.py` does. Early timesteps (little
/// noise) carry the largest ε-prediction losses and so decide the importance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InformativeSteps {
    threshold: f64,
    max_loss: f64,
}

impl InformativeSteps {
    /// The README's and scripts' threshold (`--thr 0.05`).
    pub const DEFAULT_THRESHOLD: f64 = 0.05;

    /// A rule with `threshold` in [0, 1) (0 never stops).
    pub fn new(threshold: f64) -> Result<Self> {
        if !(threshold.is_finite() && (0.0..1.0).contains(&threshold)) {
            return Err(err("importance pass", format!("the loss threshold {threshold} must be in [0, 1)")));
        }
        Ok(InformativeSteps { threshold, max_loss: 0.0 })
    }

    /// Records the loss of the next timestep; `false` means stop here (this
    /// timestep's gradient is not accumulated). A non-finite loss is an error.
    pub fn admit(&mut self, loss: f64) -> Result<bool> {
        if !loss.is_finite() {
            return Err(err("importance pass", format!("the diffusion loss is {loss}: the model or its data is broken")));
        }
        self.max_loss = self.max_loss.max(loss);
        Ok(loss >= self.threshold * self.max_loss)
    }

    /// The largest loss seen.
    pub fn max_loss(&self) -> f64 {
        self.max_loss
    }
}

/// A tensor as host values and its shape.
fn host(t: &Tensor) -> Result<(Vec<f32>, Vec<usize>)> {
    Ok((t.to_vec_f32()?, t.shape().to_vec()))
}

/// Checks a member against its tensor's shape and returns (outer, len, inner):
/// the tensor viewed as `[outer, len, inner]` along the member's dim.
fn member_view(group: &ChannelGroup, m: &GroupMember, shape: &[usize]) -> Result<(usize, usize, usize)> {
    let dim = m.axis.dim();
    let need_rank = match m.axis {
        MemberAxis::Out => 2,
        MemberAxis::In => 2,
        MemberAxis::NormScale | MemberAxis::Bias => 1,
    };
    if shape.len() < need_rank || (need_rank == 1 && shape.len() != 1) {
        return Err(err(&group.name, format!("member {} has shape {shape:?}, which has no {:?} axis", m.tensor, m.axis)));
    }
    let len = shape[dim];
    if m.offset + group.channels() > len {
        return Err(err(
            &group.name,
            format!("member {} has {len} entries along dim {dim}, the group needs {} from offset {}", m.tensor, group.channels(), m.offset),
        ));
    }
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    Ok((outer, len, inner))
}

/// The Taylor importance of every unit of `group` (see the module docs),
/// from the weights and the accumulated gradients by tensor name. A member
/// whose weight or gradient is missing, or whose shape does not hold the
/// group, is an error naming it.
pub fn taylor_scores(group: &ChannelGroup, weights: &HashMap<String, Tensor>, grads: &HashMap<String, Tensor>) -> Result<Vec<f64>> {
    group.validate()?;
    let mut channel = vec![0f64; group.channels()];
    for m in group.members.iter().filter(|m| m.axis != MemberAxis::Bias) {
        let w = weights.get(&m.tensor).ok_or_else(|| err(&group.name, format!("no weight {}", m.tensor)))?;
        let g = grads.get(&m.tensor).ok_or_else(|| err(&group.name, format!("no accumulated gradient of {}", m.tensor)))?;
        if w.shape() != g.shape() {
            return Err(err(&group.name, format!("{}: weight {:?} and gradient {:?} differ in shape", m.tensor, w.shape(), g.shape())));
        }
        let (wv, shape) = host(w)?;
        let (gv, _) = host(g)?;
        let (outer, len, inner) = member_view(group, m, &shape)?;
        for (c, score) in channel.iter_mut().enumerate() {
            let idx = m.offset + c;
            let mut s = 0f64;
            for o in 0..outer {
                let base = (o * len + idx) * inner;
                for k in base..base + inner {
                    let wg = wv[k] as f64 * gv[k] as f64;
                    s += match m.axis {
                        MemberAxis::NormScale => wg.abs(),
                        _ => wg * wg,
                    };
                }
            }
            *score += s;
        }
    }
    Ok(channel.chunks(group.unit_width).map(|u| u.iter().sum()).collect())
}

/// The units of `group` to keep (ascending): in each of its `partitions`
/// the `keep / partitions` highest-scoring units (ties keep the earlier
/// unit). `keep` must be a multiple of the partitions between
/// [`ChannelGroup::min_keep`] and the unit count; NaN scores are refused.
pub fn select_units(group: &ChannelGroup, scores: &[f64], keep: usize) -> Result<Vec<usize>> {
    group.validate()?;
    if scores.len() != group.units {
        return Err(err(&group.name, format!("{} scores for {} units", scores.len(), group.units)));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(err(&group.name, format!("unit {i} has importance {}", scores[i])));
    }
    if keep < group.min_keep() || keep > group.units || !keep.is_multiple_of(group.partitions) {
        return Err(err(
            &group.name,
            format!("cannot keep {keep} of {} units in {} equal partitions (at least {})", group.units, group.partitions, group.min_keep()),
        ));
    }
    let part = group.units / group.partitions;
    let per = keep / group.partitions;
    let mut kept = Vec::with_capacity(keep);
    for p in 0..group.partitions {
        let mut idx: Vec<usize> = (p * part..(p + 1) * part).collect();
        // Highest score first; equal scores keep the lower index first.
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        kept.extend_from_slice(&idx[..per]);
    }
    kept.sort_unstable();
    Ok(kept)
}

/// The state dict `tensors` with the units of each group that are not in
/// its `kept` list removed from every member (rows, columns or entries);
/// tensors of no group are returned unchanged, in the same order. Two
/// groups claiming the same entries of a tensor, a member missing from
/// `tensors`, or a kept list that is not ascending and in range, is an
/// error. The result is f32 on the CPU.
pub fn prune_tensors(tensors: Vec<(String, Tensor)>, groups: &[(ChannelGroup, Vec<usize>)]) -> Result<Vec<(String, Tensor)>> {
    // (tensor, dim) → the indices to remove along that dim.
    let mut removals: BTreeMap<(String, usize), Vec<usize>> = BTreeMap::new();
    // (tensor, dim) → the ranges of entries the groups' members cover.
    let mut claimed: HashMap<(String, usize), Vec<Claim>> = HashMap::new();
    let shapes: HashMap<&str, &[usize]> = tensors.iter().map(|(n, t)| (n.as_str(), t.shape())).collect();
    for (group, kept) in groups {
        group.validate()?;
        if kept.is_empty() || kept.windows(2).any(|w| w[0] >= w[1]) || kept.last().is_some_and(|&k| k >= group.units) {
            return Err(err(&group.name, format!("kept units {kept:?} are not an ascending non-empty subset of 0..{}", group.units)));
        }
        let mut removed_channels = Vec::new();
        let mut ki = 0;
        for u in 0..group.units {
            if ki < kept.len() && kept[ki] == u {
                ki += 1;
            } else {
                removed_channels.extend(u * group.unit_width..(u + 1) * group.unit_width);
            }
        }
        for m in &group.members {
            let shape = shapes.get(m.tensor.as_str()).ok_or_else(|| err(&group.name, format!("the state dict has no {}", m.tensor)))?;
            member_view(group, m, shape)?;
            let range = (m.offset, m.offset + group.channels());
            let ranges = claimed.entry((m.tensor.clone(), m.axis.dim())).or_default();
            if let Some((_, _, other)) = ranges.iter().find(|(a, b, _)| range.0 < *b && *a < range.1) {
                return Err(err(
                    &group.name,
                    format!("{} entries {}..{} along dim {} also belong to group {other}", m.tensor, range.0, range.1, m.axis.dim()),
                ));
            }
            ranges.push((range.0, range.1, group.name.clone()));
            let entry = removals.entry((m.tensor.clone(), m.axis.dim())).or_default();
            for &c in &removed_channels {
                entry.push(m.offset + c);
            }
        }
    }
    for idx in removals.values_mut() {
        idx.sort_unstable();
    }
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dims: Vec<usize> = removals.range((name.clone(), 0)..=(name.clone(), usize::MAX)).map(|((_, d), _)| *d).collect();
        if dims.is_empty() {
            out.push((name, t));
            continue;
        }
        let (mut values, mut shape) = host(&t)?;
        for d in dims {
            let removed = &removals[&(name.clone(), d)];
            (values, shape) = drop_along(&values, &shape, d, removed);
        }
        out.push((name, Tensor::from_vec(values, &shape, &Device::Cpu)?));
    }
    Ok(out)
}

/// Entries `start..end` of a tensor dimension that a group's member covers, and the group.
type Claim = (usize, usize, String);

/// `values` of `shape` without the (sorted, distinct) `removed` indices along `dim`.
fn drop_along(values: &[f32], shape: &[usize], dim: usize, removed: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let outer: usize = shape[..dim].iter().product();
    let len = shape[dim];
    let inner: usize = shape[dim + 1..].iter().product();
    let keep: Vec<usize> = {
        let mut r = removed.iter().peekable();
        (0..len)
            .filter(|&i| {
                if r.peek() == Some(&&i) {
                    r.next();
                    false
                } else {
                    true
                }
            })
            .collect()
    };
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &i in &keep {
            let base = (o * len + i) * inner;
            out.extend_from_slice(&values[base..base + inner]);
        }
    }
    let mut new_shape = shape.to_vec();
    new_shape[dim] = keep.len();
    (out, new_shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// fc1 [3, 2] (rows = hidden channels), fc1 bias [3], fc2 [2, 3] (columns).
    fn mlp_group(units: usize, partitions: usize, round_to: usize) -> ChannelGroup {
        ChannelGroup {
            name: "mlp".into(),
            units,
            unit_width: 1,
            partitions,
            round_to,
            members: vec![
                GroupMember::new("fc1.weight", MemberAxis::Out, 0),
                GroupMember::new("fc1.bias", MemberAxis::Bias, 0),
                GroupMember::new("fc2.weight", MemberAxis::In, 0),
            ],
        }
    }

    #[test]
    fn taylor_scores_by_hand() {
        let g = mlp_group(3, 1, 1);
        let w: HashMap<String, Tensor> = [
            ("fc1.weight".to_string(), t(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2])),
            ("fc2.weight".to_string(), t(vec![1.0, -1.0, 2.0, 0.5, 0.0, -2.0], &[2, 3])),
        ]
        .into();
        let gr: HashMap<String, Tensor> = [
            ("fc1.weight".to_string(), t(vec![0.1, 0.0, -0.1, 0.2, 0.0, 1.0], &[3, 2])),
            ("fc2.weight".to_string(), t(vec![1.0, 1.0, 1.0, 2.0, 3.0, 0.5], &[2, 3])),
        ]
        .into();
        let s = taylor_scores(&g, &w, &gr).unwrap();
        // Channel 0: fc1 row (0.1)² + 0 ; fc2 column (1·1)² + (0.5·2)² = 1 + 1.
        // Channel 1: fc1 row (−0.3)² + (0.8)² ; fc2 column (−1)² + 0.
        // Channel 2: fc1 row 0 + 6² ; fc2 column 2² + (−1)².
        let want = [0.01 + 2.0, 0.09 + 0.64 + 1.0, 36.0 + 4.0 + 1.0];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{s:?} vs {want:?}");
        }
        assert_eq!(select_units(&g, &s, 2).unwrap(), vec![0, 2]);
        assert_eq!(select_units(&g, &s, 1).unwrap(), vec![2]);
    }

    #[test]
    fn norm_scales_score_abs_and_heads_sum_their_channels() {
        let g = ChannelGroup {
            name: "heads".into(),
            units: 2,
            unit_width: 2,
            partitions: 1,
            round_to: 1,
            members: vec![GroupMember::new("gamma", MemberAxis::NormScale, 0), GroupMember::new("beta", MemberAxis::Bias, 0)],
        };
        let w: HashMap<String, Tensor> = [("gamma".to_string(), t(vec![1.0, -2.0, 3.0, 0.5], &[4]))].into();
        let gr: HashMap<String, Tensor> = [("gamma".to_string(), t(vec![1.0, 1.0, 0.0, -4.0], &[4]))].into();
        assert_eq!(taylor_scores(&g, &w, &gr).unwrap(), vec![3.0, 2.0]);
    }

    #[test]
    fn partitions_lose_the_same_number_of_units() {
        let g = mlp_group(8, 2, 1);
        let s = [5.0, 1.0, 7.0, 3.0, 0.5, 0.1, 0.2, 0.3];
        // Globally the 4 best are 0, 1?, 2, 3; per partition of 4: {0, 2} and {4, 7}.
        assert_eq!(select_units(&g, &s, 4).unwrap(), vec![0, 2, 4, 7]);
        assert!(select_units(&g, &s, 3).unwrap_err().to_string().contains("equal partitions"));
        assert!(select_units(&g, &[f64::NAN; 8], 4).is_err());
    }

    #[test]
    fn keep_at_ratio_rounds_like_the_reference() {
        // 256 channels, 32 GroupNorm groups, ratio 0.3: ⌊76.8⌋ = 76 → 2 per group → keep 192.
        let g = mlp_group(256, 32, 1);
        assert_eq!(g.keep_at_ratio(0.3), 192);
        // 128 channels: ⌊38.4⌋ = 38 → 1 per group → 96.
        assert_eq!(mlp_group(128, 32, 1).keep_at_ratio(0.3), 96);
        assert_eq!(g.keep_at_ratio(0.0), 256);
        assert_eq!(g.keep_at_ratio(0.999), 32, "one channel per group at least");
        let r = mlp_group(512, 1, 16);
        assert_eq!(r.keep_at_ratio(0.5), 256);
        assert_eq!(r.keep_at_ratio(0.51), 256, "⌊261.12⌋ removed → 251 kept → up to 256");
        let mut last = usize::MAX;
        for i in 0..=1000 {
            let k = r.keep_at_ratio(i as f64 / 1000.0);
            assert!(k <= last && k >= 16 && k.is_multiple_of(16));
            last = k;
        }
    }

    #[test]
    fn prune_tensors_slices_rows_columns_and_offsets() {
        // A fused qkv of 2 heads of width 1 ([6, 1]) and a proj [1, 2].
        let g = ChannelGroup {
            name: "attn".into(),
            units: 2,
            unit_width: 1,
            partitions: 1,
            round_to: 1,
            members: vec![
                GroupMember::new("qkv", MemberAxis::Out, 0),
                GroupMember::new("qkv", MemberAxis::Out, 2),
                GroupMember::new("qkv", MemberAxis::Out, 4),
                GroupMember::new("proj", MemberAxis::In, 0),
            ],
        };
        let tensors = vec![
            ("qkv".to_string(), t(vec![10.0, 11.0, 20.0, 21.0, 30.0, 31.0], &[6, 1])),
            ("proj".to_string(), t(vec![1.0, 2.0], &[1, 2])),
            ("other".to_string(), t(vec![9.0], &[1])),
        ];
        let out = prune_tensors(tensors, &[(g.clone(), vec![1])]).unwrap();
        assert_eq!(out[0].1.shape(), [3, 1]);
        assert_eq!(out[0].1.to_vec_f32().unwrap(), vec![11.0, 21.0, 31.0]);
        assert_eq!(out[1].1.to_vec_f32().unwrap(), vec![2.0]);
        assert_eq!(out[2].1.to_vec_f32().unwrap(), vec![9.0]);
        let twice = prune_tensors(
            vec![("qkv".into(), t(vec![0.0; 6], &[6, 1])), ("proj".into(), t(vec![0.0; 2], &[1, 2]))],
            &[(g.clone(), vec![1]), (g.clone(), vec![0])],
        );
        assert!(twice.unwrap_err().to_string().contains("also belong to group attn"));
        let missing = prune_tensors(vec![("qkv".into(), t(vec![0.0; 6], &[6, 1]))], &[(g, vec![0])]);
        assert!(missing.unwrap_err().to_string().contains("no proj"));
    }

    #[test]
    fn conv_columns_are_sliced_inside_each_row() {
        let g = ChannelGroup {
            name: "c".into(),
            units: 2,
            unit_width: 1,
            partitions: 1,
            round_to: 1,
            members: vec![GroupMember::new("conv2", MemberAxis::In, 0)],
        };
        // [out 2, in 2, 1, 2]
        let w = t(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[2, 2, 1, 2]);
        let out = prune_tensors(vec![("conv2".into(), w)], &[(g, vec![0])]).unwrap();
        assert_eq!(out[0].1.shape(), [2, 1, 1, 2]);
        assert_eq!(out[0].1.to_vec_f32().unwrap(), vec![1.0, 2.0, 5.0, 6.0]);
    }

    #[test]
    fn informative_steps_stop_below_the_threshold() {
        let mut r = InformativeSteps::new(0.05).unwrap();
        assert!(r.admit(2.0).unwrap());
        assert!(r.admit(4.0).unwrap());
        assert!(r.admit(0.2).unwrap(), "0.2 = 0.05 × 4 is not below");
        assert!(!r.admit(0.19).unwrap());
        assert_eq!(r.max_loss(), 4.0);
        assert!(r.admit(f64::NAN).is_err());
        assert!(InformativeSteps::new(1.0).is_err());
        assert!(InformativeSteps::new(-0.1).is_err());
    }
}
