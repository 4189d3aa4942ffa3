//! N:M sparse masks for the layers of sparse diffusion models (SparseDM).
//!
//! This crate part holds the **pure mask algorithms**: they work on plain `&[f32]` weight buffers in
//! PyTorch layout plus a [`WeightLayout`], and know nothing of the tensor engine, so the sparse
//! layers (SR-STE, ASP) can call them on whatever storage they use.
//!
//! * [`pattern`]: [`NmPattern`], a validated `N:M` (`"2:4"`; `N == M` is the dense point).
//! * [`layout`]: [`WeightLayout`], Linear `[out, in]` / Conv2d `[out, in, kh, kw]`, and the axis the
//!   N:M groups run along (the input dimension; input channels at each `(out, ky, kx)` for a conv).
//! * [`mask`]: magnitude N:M masks (the SR-STE rule: keep the N largest `|w|` per group of M),
//!   allocation-free and parallel via [`mask_into`] since SR-STE recomputes them at every forward
//!   pass; [`NonDivisible`] handles input dimensions that are not a multiple of M, including
//!   SparseDM's flat-index grouping.
//! * [`validate`]: [`check_nm`] (naming the first offending group), [`sparsity`],
//!   [`kept_magnitude`].
//! * [`transposable`]: transposable 2:4 masks (exact over the 90 valid 4×4 patterns, or greedy
//!   2-approximation) for sparse forward *and* backward GEMMs.
//! * [`error`]: [`LayersError`]; no function here panics on bad input.
//!
//! Masks are `Vec<f32>` of 0.0/1.0 so a layer can multiply them with the weight directly.
//!
//! On top of the mask algorithms sit the **layers** the models are built from
//! ([`Linear`], [`Conv2d`], [`LayerNorm`], [`GroupNorm`], [`BatchNorm2d`],
//! [`Embedding`], [`Attention`]), the [`ParamStore`] that names their
//! parameters like the reference `state_dict()`, and [`SparseSlot`], which
//! turns a dense weight into the weight each training mode uses
//! ([`SparseMode`]: SR-STE, STE, ASP's fixed mask, untrained masks).
//!
//! And the **method** around them:
//! * [`policy`]: which layers get a pattern ([`Policy`]: `sparsedm-uvit`,
//!   `asp`, `all`, name globs) and [`apply_policy`];
//! * [`report`]: [`SparsityReport`], per-layer pattern, achieved sparsity
//!   and MACs, as a table or JSON;
//! * [`kt`]: the knowledge-transfer loss [`KtLoss`];
//! * [`progressive`]: the progressive-sparsity baseline
//!   [`ProgressiveSchedule`] (masks switched in place);
//! * [`checkpoint`]: sparse checkpoints (masked weights plus the sparsity
//!   spec in the safetensors metadata, verified on read);
//! * [`prune`](mod@prune): one-shot magnitude pruning ([`prune()`]).

pub mod attention;
pub mod checkpoint;
pub mod conv2d;
pub mod error;
pub mod finite;
pub mod init;
pub mod kt;
pub mod layout;
pub mod linear;
pub mod mask;
pub mod norm;
pub mod pattern;
pub mod policy;
pub mod progressive;
pub mod prune;
pub mod report;
pub mod sparse;
pub mod store;
pub mod transposable;
pub mod validate;

pub use attention::Attention;
pub use checkpoint::{
    LayerSparsity, SPARSITY_METADATA_KEY, SparsitySpec, load_sparse_checkpoint, read_sparse_checkpoint, save_sparse_checkpoint,
    sparse_state_dict, write_sparse_checkpoint,
};
pub use conv2d::{Conv2d, Conv2dConfig};
pub use error::{BlockLine, LayersError};
pub use finite::{allow_non_finite_weights, check_finite, non_finite_weights_allowed};
pub use init::Init;
pub use kt::{KtLoss, KtLossValue};
pub use layout::WeightLayout;
pub use linear::Linear;
pub use mask::{MaskOutcome, NonDivisible, compute_mask, mask_into, plan_mask};
pub use norm::{BatchNorm2d, Embedding, GroupNorm, LayerNorm};
pub use pattern::{MAX_M, NmPattern};
pub use policy::{NamedPolicy, Policy, Selection, apply_policy};
pub use progressive::{ProgressiveSchedule, Stage, Switch};
pub use prune::{prune, replace_pruned};
pub use report::{LayerKind, LayerReport, ReportTotals, SparsityReport};
pub use sparse::{MaskPlan, ModeKind, SRSTE_LAMBDA, SparseMode, SparseSlot, mode_mask, plan_mode};
pub use store::ParamStore;
pub use transposable::{TransposableMethod, check_transposable, transposable_mask, transposable_mask_into, valid_4x4_patterns};
pub use validate::{check_nm, kept_magnitude, sparsity};
