//! The SparseDM method and its baselines, on top of the layers: which layers
//! become sparse, how the dense teacher guides the sparse student, how sparsity
//! is scheduled, and how sparse models are reported and saved.
//!
//! * [`policy`]: which layers get a pattern ([`Policy`](policy::Policy)) and
//!   [`apply_policy`](policy::apply_policy);
//! * [`kt`]: the knowledge-transfer loss [`KtLoss`](kt::KtLoss);
//! * [`progressive`]: the progressive-sparsity baseline's schedule;
//! * [`prune`](mod@prune): one-shot magnitude pruning;
//! * [`permutation`]: apex ASP's channel permutations before pruning;
//! * [`report`]: per-layer pattern, achieved sparsity and MACs;
//! * [`channels`]: structural channel pruning with Taylor importance (Diff-Pruning's pruner);
//! * [`checkpoint`]: sparse checkpoints (masked weights plus the sparsity
//!   spec in the safetensors metadata, verified on read).

pub mod channels;
pub mod checkpoint;
pub mod kt;
pub mod permutation;
pub mod policy;
pub mod progressive;
pub mod prune;
pub mod report;
