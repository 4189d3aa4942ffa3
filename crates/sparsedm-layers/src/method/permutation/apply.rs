//! Applying channel permutations to a model (apex ASP's `permutation_lib`):
//! the input channels of a group of sparse layers are reordered to keep
//! more magnitude under the N:M mask, and the same order is applied to the
//! output channels of every tensor that produces those channels (weight
//! rows, biases, norm affines), so the network computes exactly the same
//! function before pruning.
//!
//! Which channels may be permuted is a property of the architecture, so the
//! model crate describes it as a [`ChannelPlan`]: groups of consumers
//! (apex's sibling group: layers reading the same tensor, which share one
//! permutation and whose weights are searched together) with their
//! producers (apex's co-parents), and the layers it cannot permute with the
//! reason (a residual stream, a GroupNorm, heads). [`permute_channels`]
//! searches and applies the groups the policy makes sparse and reports the
//! magnitude the N:M masks keep with and without the permutations.

use super::search::{SearchOptions, kept_magnitude_permuted, search_permutation};
use crate::method::policy::{Policy, Selection};
use crate::nm::layout::WeightLayout;
use crate::nm::mask::{NonDivisible, compute_mask};
use crate::nm::pattern::NmPattern;
use crate::nm::validate::kept_magnitude;
use crate::{LayersError, ParamStore};
use sparsedm_tensor::{Tensor, no_grad};
use std::collections::BTreeMap;
use std::fmt;

type Result<T> = std::result::Result<T, LayersError>;

/// Channels that can be reordered without changing the network's function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermutationGroup {
    /// Linear/Conv2d layers (sparse-slot names) reading the channels; their
    /// weights' input dimension (dim 1) is permuted.
    pub consumers: Vec<String>,
    /// Tensors (state-dict names) producing the channels along dim 0:
    /// weights' output rows, biases, norm affines.
    pub producers: Vec<String>,
}

/// What the architecture allows: the permutable groups, and the layers that
/// cannot be permuted with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPlan {
    pub groups: Vec<PermutationGroup>,
    /// (layer, reason) for every Linear/Conv2d that is no group's consumer.
    pub unpermutable: Vec<(String, String)>,
}

/// The outcome for one group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupOutcome {
    pub consumers: Vec<String>,
    /// Input channels of the consumers.
    pub channels: usize,
    /// Magnitude the N:M masks of the sparse consumers keep without / with
    /// the permutation found.
    pub kept_before: f64,
    pub kept_after: f64,
    /// Whether the permutation was applied (it improved the kept magnitude).
    pub applied: bool,
    /// Why the group was not searched, if it was not.
    pub skipped: Option<String>,
}

/// What [`permute_channels`] did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PermutationReport {
    pub pattern: String,
    pub groups: Vec<GroupOutcome>,
    /// Sparse layers (under the policy) that no group could permute, with why.
    pub unpermuted: Vec<(String, String)>,
    /// Over every layer the policy makes sparse: Σ|w|, and what the N:M
    /// masks keep without and with the permutations.
    pub total_magnitude: f64,
    pub kept_without: f64,
    pub kept_with: f64,
}

impl PermutationReport {
    /// Number of groups whose permutation was applied.
    pub fn applied(&self) -> usize {
        self.groups.iter().filter(|g| g.applied).count()
    }
}

impl fmt::Display for PermutationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |v: f64| if self.total_magnitude > 0.0 { 100.0 * v / self.total_magnitude } else { 0.0 };
        writeln!(
            f,
            "channel permutations ({}): kept magnitude {:.4} ({:.3}% of {:.4}) without, {:.4} ({:.3}%) with; {} of {} groups applied",
            self.pattern,
            self.kept_without,
            pct(self.kept_without),
            self.total_magnitude,
            self.kept_with,
            pct(self.kept_with),
            self.applied(),
            self.groups.len()
        )?;
        for g in &self.groups {
            match &g.skipped {
                Some(why) => writeln!(f, "  {}: not searched ({why})", g.consumers.join(", "))?,
                None => writeln!(
                    f,
                    "  {} ({} channels): kept {:.4} → {:.4}{}",
                    g.consumers.join(", "),
                    g.channels,
                    g.kept_before,
                    g.kept_after,
                    if g.applied { "" } else { " (no gain, left as is)" }
                )?,
            }
        }
        if !self.unpermuted.is_empty() {
            writeln!(f, "  {} sparse layers cannot be permuted consistently and were left in place:", self.unpermuted.len())?;
            let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (layer, why) in &self.unpermuted {
                by_reason.entry(why).or_default().push(layer);
            }
            for (why, layers) in by_reason {
                writeln!(f, "    {} ({}): {why}", layers.len(), abbreviate(&layers))?;
            }
        }
        Ok(())
    }
}

fn abbreviate(layers: &[&str]) -> String {
    if layers.len() <= 3 { layers.join(", ") } else { format!("{}, {}, … {}", layers[0], layers[1], layers[layers.len() - 1]) }
}

/// A weight as the `rows × in` matrix the N:M groups see (for a conv, the
/// rows are the (out, ky, kx) positions).
fn as_matrix(w: &[f32], layout: WeightLayout) -> Vec<f32> {
    let (inp, area) = (layout.inp(), layout.kernel_area());
    if area == 1 {
        return w.to_vec();
    }
    let mut out = vec![0f32; w.len()];
    for o in 0..layout.out() {
        for c in 0..inp {
            for k in 0..area {
                out[(o * area + k) * inp + c] = w[(o * inp + c) * area + k];
            }
        }
    }
    out
}

/// `t` with its dim `dim` (0 or 1) reordered: index j of the result is index `perm[j]` of `t`.
fn permuted(t: &Tensor, dim: usize, perm: &[usize]) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    let v = t.to_vec_f32()?;
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    let n = shape[dim];
    let mut out = vec![0f32; v.len()];
    for o in 0..outer {
        for (j, &src) in perm.iter().enumerate() {
            let d = (o * n + j) * inner;
            let s = (o * n + src) * inner;
            out[d..d + inner].copy_from_slice(&v[s..s + inner]);
        }
    }
    Ok(Tensor::from_vec(out, &shape, &t.device())?)
}

/// Searches and applies the permutations of `plan` for the layers `policy`
/// makes `pattern`-sparse; returns what was kept with and without them.
/// Call it on the dense model, before the masks are computed: the network's
/// function is unchanged (up to float summation order).
///
/// A group is searched when at least one consumer is sparse under the
/// policy, its channel count is a multiple of M and at least 2M (apex
/// checks the same: `C % 4`, `C < 8`); the permutation is applied only when
/// it keeps more magnitude.
///
/// # Errors
/// A plan naming a layer or tensor the store lacks, or producers whose
/// dim 0 does not match the consumers' channel count (the plan does not
/// describe this model); an M above the search's limit. Nothing is changed
/// in the store unless every group could be checked.
pub fn permute_channels(
    store: &ParamStore,
    plan: &ChannelPlan,
    policy: &Policy,
    pattern: NmPattern,
    opts: &SearchOptions,
) -> Result<PermutationReport> {
    let slots: BTreeMap<String, crate::SparseSlot> = store.sparse_slots().into_iter().collect();
    let bad = |msg: String| LayersError::InvalidArgument { what: "channel permutation plan".into(), msg };
    let sparse_nd = |name: &str, layout: WeightLayout| match policy.select(name, layout, pattern) {
        Selection::Sparse(nd) => Some(nd),
        Selection::Dense(_) => None,
    };
    // Σ|w| and the magnitude the real N:M masks keep, over the policy's sparse layers.
    let kept = || -> Result<(f64, f64)> {
        let (mut total, mut kept) = (0f64, 0f64);
        for (name, slot) in &slots {
            let layout = slot.layout();
            let Some(nd) = sparse_nd(name, layout) else { continue };
            let w = slot.weight().to_vec_f32()?;
            total += w.iter().map(|v| f64::from(v.abs())).sum::<f64>();
            let divisible = layout.inp().is_multiple_of(pattern.m());
            if !divisible && nd == NonDivisible::LeaveDense {
                kept += w.iter().map(|v| f64::from(v.abs())).sum::<f64>();
                continue;
            }
            let (mask, _) = compute_mask(&w, layout, pattern, nd)?;
            kept += kept_magnitude(&w, &mask, layout)?;
        }
        Ok((total, kept))
    };
    let (total_magnitude, kept_without) = kept()?;

    // Check the whole plan and search every group before changing anything.
    let mut outcomes = Vec::new();
    let mut changes: Vec<(Vec<String>, Vec<String>, Vec<usize>)> = Vec::new();
    for g in &plan.groups {
        let mut channels = None;
        for c in &g.consumers {
            let slot = slots.get(c).ok_or_else(|| bad(format!("the model has no Linear/Conv2d {c}")))?;
            let inp = slot.layout().inp();
            if channels.is_some_and(|ch| ch != inp) {
                return Err(bad(format!("the consumers {:?} read different channel counts", g.consumers)));
            }
            channels = Some(inp);
        }
        let channels = channels.ok_or_else(|| bad("a group without consumers".into()))?;
        for p in &g.producers {
            let t = store.get(p).ok_or_else(|| bad(format!("the model has no tensor {p}")))?;
            if t.shape().first() != Some(&channels) {
                return Err(bad(format!("{p} has shape {:?}; it cannot produce the {channels} channels of {:?}", t.shape(), g.consumers)));
            }
        }
        let sparse: Vec<&String> = g.consumers.iter().filter(|c| sparse_nd(c, slots[*c].layout()).is_some()).collect();
        let skip = if sparse.is_empty() {
            Some("its consumers stay dense under the policy".to_string())
        } else if !channels.is_multiple_of(pattern.m()) || channels < 2 * pattern.m() {
            Some(format!("{channels} channels: not a multiple of M = {} or fewer than 2M", pattern.m()))
        } else {
            None
        };
        if let Some(why) = skip {
            outcomes.push(GroupOutcome {
                consumers: g.consumers.clone(),
                channels,
                kept_before: 0.0,
                kept_after: 0.0,
                applied: false,
                skipped: Some(why),
            });
            continue;
        }
        // apex's sibling group: the sparse consumers' matrices stacked row-wise.
        let mut matrix = Vec::new();
        for c in &sparse {
            let slot = &slots[*c];
            matrix.extend(as_matrix(&slot.weight().to_vec_f32()?, slot.layout()));
        }
        let perm = search_permutation(&matrix, channels, pattern, opts)?;
        let kept_before = kept_magnitude_permuted(&matrix, channels, None, pattern)?;
        let kept_after = kept_magnitude_permuted(&matrix, channels, Some(&perm), pattern)?;
        let applied = kept_after > kept_before;
        if applied {
            changes.push((g.consumers.clone(), g.producers.clone(), perm));
        }
        outcomes.push(GroupOutcome { consumers: g.consumers.clone(), channels, kept_before, kept_after, applied, skipped: None });
    }

    let _g = no_grad();
    for (consumers, producers, perm) in &changes {
        for c in consumers {
            let w = slots[c].weight();
            w.set_data(&permuted(w, 1, perm)?)?;
        }
        for p in producers {
            let t = store.get(p).ok_or_else(|| bad(format!("the model has no tensor {p}")))?;
            t.set_data(&permuted(&t, 0, perm)?)?;
        }
    }
    let (_, kept_with) = kept()?;
    let consumers: std::collections::HashSet<&str> = plan.groups.iter().flat_map(|g| g.consumers.iter().map(String::as_str)).collect();
    let reasons: BTreeMap<&str, &str> = plan.unpermutable.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
    let unpermuted = slots
        .iter()
        .filter(|(name, slot)| sparse_nd(name, slot.layout()).is_some() && !consumers.contains(name.as_str()))
        .map(|(name, _)| (name.clone(), reasons.get(name.as_str()).unwrap_or(&"no producer of its input channels is known").to_string()))
        .collect();
    Ok(PermutationReport { pattern: pattern.to_string(), groups: outcomes, unpermuted, total_magnitude, kept_without, kept_with })
}
