//! apex ASP's channel permutations (Pool & Yu, NeurIPS 2021; apex
//! `permutation_lib`): reorder a sparse layer's input channels so its N:M
//! mask keeps more weight magnitude, with the producers of those channels
//! reordered the same way so the network's function does not change.
//!
//! * [`search`]: the column-order search on one matrix;
//! * [`apply`]: a model's permutable groups ([`ChannelPlan`](apply::ChannelPlan), described by the
//!   model crate) searched and applied to a [`ParamStore`](crate::ParamStore), with a report.

pub mod apply;
pub mod search;

pub use apply::{ChannelPlan, GroupOutcome, PermutationGroup, PermutationReport, permute_channels};
pub use search::{MAX_SEARCH_M, SearchOptions, WINDOW, kept_magnitude_permuted, search_permutation};
