//! N:M sparse layers for sparse diffusion models (SparseDM).
//!
//! The crate is in three folders, each using only the folders listed before it:
//!
//! * [`nm`]: the **pure mask algorithms** on plain `&[f32]` buffers plus a
//!   [`WeightLayout`]; they know nothing of the tensor engine.
//!   - [`pattern`]: [`NmPattern`], a validated `N:M` (`"2:4"`; `N == M` is the dense point).
//!   - [`layout`]: [`WeightLayout`], Linear `[out, in]` / Conv2d `[out, in, kh, kw]`, and the axis the
//!     N:M groups run along (the input dimension; input channels at each `(out, ky, kx)` for a conv).
//!   - [`mask`]: magnitude N:M masks (the SR-STE rule: keep the N largest `|w|` per group of M),
//!     allocation-free and parallel via [`mask_into`] since SR-STE recomputes them at every forward
//!     pass; [`NonDivisible`] handles input dimensions that are not a multiple of M, including
//!     SparseDM's flat-index grouping.
//!   - [`validate`]: [`check_nm`] (naming the first offending group), [`sparsity`],
//!     [`kept_magnitude`].
//!   - [`transposable`]: transposable 2:4 masks (exact over the 90 valid 4×4 patterns, or greedy
//!     2-approximation) for sparse forward *and* backward GEMMs.
//!
//!   Masks are `Vec<f32>` of 0.0/1.0 so a layer can multiply them with the weight directly.
//! * [`nn`]: the **layers** the models are built from ([`Linear`], [`Conv2d`], [`LayerNorm`],
//!   [`GroupNorm`], [`BatchNorm2d`], [`Embedding`], [`Attention`]), the [`ParamStore`] that names
//!   their parameters like the reference `state_dict()`, and [`SparseSlot`], the single owner of a
//!   Linear/Conv2d weight, which turns the dense weight into the weight each training mode uses
//!   ([`SparseMode`]: SR-STE, STE, ASP's fixed mask, untrained masks).
//! * [`method`]: the **method** around them:
//!   - [`policy`]: which layers get a pattern ([`Policy`]: `sparsedm-uvit`,
//!     `asp`, `all`, name globs) and [`apply_policy`];
//!   - [`report`]: [`SparsityReport`], per-layer pattern, achieved sparsity
//!     and MACs, as a table or JSON;
//!   - [`kt`]: the knowledge-transfer loss [`KtLoss`];
//!   - [`progressive`]: the progressive-sparsity baseline
//!     [`ProgressiveSchedule`] (masks switched in place);
//!   - [`checkpoint`]: sparse checkpoints (masked weights plus the sparsity
//!     spec in the safetensors metadata, verified on read);
//!   - [`prune`](mod@prune): one-shot magnitude pruning ([`prune()`]);
//!   - [`permutation`](method::permutation): apex ASP's channel permutations ([`permute_channels`]).
//! * [`error`]: [`LayersError`], the crate's one error type; no function here panics on bad input.
//!
//! Every public item is also re-exported at the crate root, and every module
//! under its flat name (`sparsedm_layers::mask`), as before the folders existed.

pub mod error;
pub mod finite;
pub mod method;
pub mod nm;
pub mod nn;

// The modules under their flat pre-folder paths (`sparsedm_layers::mask`,
// `sparsedm_layers::sparse`, ...), so code written against them keeps
// compiling; new code should name the folder (`sparsedm_layers::nm::mask`).
#[doc(no_inline)]
pub use method::{checkpoint, kt, policy, progressive, prune, report};
#[doc(no_inline)]
pub use nm::{layout, mask, pattern, transposable, validate};
#[doc(no_inline)]
pub use nn::{attention, conv2d, deployed, init, linear, norm, sparse, store};

pub use attention::Attention;
pub use checkpoint::{
    CompressedReport, LayerSparsity, SPARSITY_METADATA_KEY, SparsitySpec, load_sparse_checkpoint, read_sparse_checkpoint,
    save_sparse_checkpoint, sparse_state_dict, write_compressed_sparse_checkpoint, write_sparse_checkpoint,
};
pub use conv2d::{Conv2d, Conv2dConfig};
pub use error::{BlockLine, LayersError};
pub use finite::{allow_non_finite_weights, check_finite, non_finite_weights_allowed};
pub use init::Init;
pub use kt::{KtLoss, KtLossValue};
pub use layout::WeightLayout;
pub use linear::Linear;
pub use mask::{MaskOutcome, NonDivisible, compute_mask, mask_into, plan_mask};
pub use method::channels::{ChannelGroup, GroupMember, InformativeSteps, MemberAxis, prune_tensors, select_units, taylor_scores};
pub use method::permutation::{ChannelPlan, PermutationGroup, PermutationReport, SearchOptions, permute_channels, search_permutation};
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
