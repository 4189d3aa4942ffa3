//! Sparsity policies: which Linear/Conv2d layers of a model get the N:M
//! pattern, and [`apply_policy`], which sets the modes of a
//! [`ParamStore`]'s sparse slots accordingly.
//!
//! A policy is written as a string (`FromStr`/`Display`), a comma-separated
//! list of items:
//!
//! | item | selects | non-divisible input dim |
//! |---|---|---|
//! | `sparsedm-uvit` | `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2` of every U-ViT block (`in_blocks.*`, `mid_block`, `out_blocks.*`): the 52 masked Linears of SparseDM's `uvit_linear` (MODELS_AND_METHOD §7.2). Patch embedding, `skip_linear`, `decoder_pred`, the final conv and time/label/context embeddings stay dense, as in the paper's code | left dense |
//! | `asp` | every Linear and Conv2d with `out % 8 == 0` and `in % 16 == 0` (`in` = input channels for a conv): apex ASP's whitelist and size rule (§5) | left dense |
//! | `all` | every Linear and Conv2d, as SparseDM's UNet (§3.3, §7.2) | SparseDM's flat-index groups when the element count is a multiple of M (its UNet's 3-channel first conv), otherwise left dense |
//! | a glob, e.g. `*.attn.*` | layers whose name (`in_blocks.0.attn.qkv`) or weight name (`….weight`) matches; `*` matches any run of characters (dots included), `?` one character | left dense |
//! | `!` + glob, e.g. `!*.fc2` | removes matching layers from the selection | — |
//!
//! A layer is selected when it is selected by at least one item that is not
//! an exclusion and matches no exclusion; a list of exclusions only starts
//! from every layer. So `sparsedm-uvit,*.skip_linear` adds the long-skip
//! Linears to the paper's set, `asp,!*.decoder_pred` drops one layer from
//! ASP's, and `!patch_embed.*` is every layer but the patch embedding.
//! A layer selected by several items takes the non-divisible handling of
//! the first. Whitespace around items is ignored.
//!
//! A layer whose input dimension is not a multiple of M and that is "left
//! dense" gets the mode anyway (its slot's mask is all ones), and the report
//! says `left-dense` so nobody mistakes it for a sparse layer.

use crate::method::report::SparsityReport;
use crate::nm::mask::NonDivisible;
use crate::nm::pattern::NmPattern;
use crate::nn::sparse::{SparseMode, plan_mode};
use crate::{LayersError, ParamStore, WeightLayout};
use std::fmt;
use std::str::FromStr;

type Result<T> = std::result::Result<T, LayersError>;

/// One of the named policies of the module table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamedPolicy {
    /// `sparsedm-uvit`: the U-ViT layers SparseDM masks.
    SparseDmUvit,
    /// `asp`: apex ASP's size rule.
    Asp,
    /// `all`: every Linear and Conv2d, flat-index groups where needed.
    All,
}

impl NamedPolicy {
    /// The name as written in a policy string.
    pub fn name(self) -> &'static str {
        match self {
            NamedPolicy::SparseDmUvit => "sparsedm-uvit",
            NamedPolicy::Asp => "asp",
            NamedPolicy::All => "all",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [NamedPolicy::SparseDmUvit, NamedPolicy::Asp, NamedPolicy::All].into_iter().find(|p| p.name() == s)
    }

    fn select(self, name: &str, layout: WeightLayout, pattern: NmPattern) -> Selection {
        match self {
            NamedPolicy::SparseDmUvit => {
                if is_uvit_block_linear(name) {
                    Selection::Sparse(NonDivisible::LeaveDense)
                } else {
                    Selection::Dense("not one of SparseDM's U-ViT block layers".into())
                }
            }
            NamedPolicy::Asp => {
                if layout.out().is_multiple_of(8) && layout.inp().is_multiple_of(16) {
                    Selection::Sparse(NonDivisible::LeaveDense)
                } else {
                    Selection::Dense(format!("ASP size rule: out {} % 8 or in {} % 16 is not 0", layout.out(), layout.inp()))
                }
            }
            NamedPolicy::All => {
                let flat_ok = layout.numel().is_multiple_of(pattern.m());
                Selection::Sparse(if flat_ok { NonDivisible::FlatIndex } else { NonDivisible::LeaveDense })
            }
        }
    }
}

/// `…(in_blocks.<i>|out_blocks.<i>|mid_block).(attn.qkv|attn.proj|mlp.fc1|mlp.fc2)`.
fn is_uvit_block_linear(name: &str) -> bool {
    let s: Vec<&str> = name.split('.').collect();
    let n = s.len();
    if n < 3 {
        return false;
    }
    let leaf = matches!((s[n - 2], s[n - 1]), ("attn", "qkv") | ("attn", "proj") | ("mlp", "fc1") | ("mlp", "fc2"));
    let block = s[n - 3] == "mid_block"
        || (n >= 4
            && matches!(s[n - 4], "in_blocks" | "out_blocks")
            && !s[n - 3].is_empty()
            && s[n - 3].bytes().all(|b| b.is_ascii_digit()));
    leaf && block
}

/// What a policy decides for one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The layer gets the pattern, with this handling of an input dimension
    /// that is not a multiple of M.
    Sparse(NonDivisible),
    /// The layer stays dense, for this reason.
    Dense(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Named(NamedPolicy),
    Glob(String),
}

/// A parsed policy; see the module doc for the syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    include: Vec<Item>,
    exclude: Vec<String>,
}

impl Policy {
    /// One of the named policies.
    pub fn named(p: NamedPolicy) -> Self {
        Policy { include: vec![Item::Named(p)], exclude: Vec::new() }
    }

    /// The decision for the layer `name` (state-dict prefix) with weight
    /// `layout` under `pattern`.
    pub fn select(&self, name: &str, layout: WeightLayout, pattern: NmPattern) -> Selection {
        if let Some(g) = self.exclude.iter().find(|g| glob_matches_layer(g, name)) {
            return Selection::Dense(format!("excluded by !{g}"));
        }
        if self.include.is_empty() {
            return Selection::Sparse(NonDivisible::LeaveDense);
        }
        let mut reason = None;
        for item in &self.include {
            match item {
                Item::Named(p) => match p.select(name, layout, pattern) {
                    s @ Selection::Sparse(_) => return s,
                    Selection::Dense(r) => reason = reason.or(Some(r)),
                },
                Item::Glob(g) if glob_matches_layer(g, name) => return Selection::Sparse(NonDivisible::LeaveDense),
                Item::Glob(_) => {}
            }
        }
        Selection::Dense(reason.unwrap_or_else(|| "not selected by the policy".into()))
    }
}

impl FromStr for Policy {
    type Err = LayersError;

    /// Parses a policy string (module doc). Errors on an empty string or
    /// item, and on an item with whitespace or a comma inside.
    fn from_str(s: &str) -> Result<Self> {
        let err = |msg: String| LayersError::Policy { policy: s.to_string(), msg };
        if s.trim().is_empty() {
            return Err(err("empty policy: use sparsedm-uvit, asp, all or name globs such as *.attn.*".into()));
        }
        let mut policy = Policy { include: Vec::new(), exclude: Vec::new() };
        for raw in s.split(',') {
            let item = raw.trim();
            let (negated, body) = match item.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, item),
            };
            if body.is_empty() {
                return Err(err(format!("empty item {raw:?} (items are separated by commas)")));
            }
            if body.chars().any(char::is_whitespace) {
                return Err(err(format!("item {body:?} contains whitespace")));
            }
            match (negated, NamedPolicy::parse(body)) {
                (true, Some(_)) => return Err(err(format!("!{body}: named policies cannot be excluded, only globs"))),
                (true, None) => policy.exclude.push(body.to_string()),
                (false, Some(p)) => policy.include.push(Item::Named(p)),
                (false, None) => policy.include.push(Item::Glob(body.to_string())),
            }
        }
        Ok(policy)
    }
}

impl fmt::Display for Policy {
    /// The canonical string: includes first, then exclusions, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .include
            .iter()
            .map(|i| match i {
                Item::Named(p) => p.name().to_string(),
                Item::Glob(g) => g.clone(),
            })
            .chain(self.exclude.iter().map(|g| format!("!{g}")))
            .collect();
        f.write_str(&items.join(","))
    }
}

/// Whether glob `g` matches the layer `name` or its weight `name.weight`.
fn glob_matches_layer(g: &str, name: &str) -> bool {
    glob_match(g.as_bytes(), name.as_bytes()) || glob_match(g.as_bytes(), format!("{name}.weight").as_bytes())
}

/// `*` = any run of bytes (possibly empty), `?` = one byte, anything else
/// literal. Linear-time greedy matching with backtracking to the last `*`.
pub(crate) fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && p[pi] == s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Sets the mode of every sparse slot of `store`: the layers `policy`
/// selects get `mode_builder(pattern)` with the policy's non-divisible
/// handling, all others [`SparseMode::Dense`]. Returns the report of the
/// result (policy, pattern, each dense layer's reason; no MACs — add them
/// with [`SparsityReport::with_macs`]).
///
/// Every layer's mode is checked before any is changed, so an error (a
/// transposable pattern other than 2:4, say) leaves the store as it was.
/// `Fixed` modes prune the weights in place (ASP's one-shot pruning).
///
/// # Errors
/// [`LayersError::Policy`] when the policy selects none of the store's
/// layers (a misspelt glob would otherwise silently prune nothing); the
/// errors of [`plan_mode`] and of [`crate::SparseSlot::configure`].
pub fn apply_policy<F>(store: &ParamStore, policy: &Policy, pattern: NmPattern, mode_builder: F) -> Result<SparsityReport>
where
    F: Fn(NmPattern) -> SparseMode,
{
    let slots = store.sparse_slots();
    let mut plans = Vec::with_capacity(slots.len());
    let mut notes = Vec::new();
    for (name, slot) in &slots {
        let (mode, nd) = match policy.select(name, slot.layout(), pattern) {
            Selection::Sparse(nd) => (mode_builder(pattern), nd),
            Selection::Dense(reason) => {
                notes.push((name.clone(), reason));
                (SparseMode::Dense, slot.non_divisible())
            }
        };
        plan_mode(slot.layout(), mode, nd)
            .map_err(|e| LayersError::InvalidArgument { what: format!("layer {name}"), msg: e.to_string() })?;
        plans.push((slot, mode, nd));
    }
    if notes.len() == slots.len() {
        return Err(LayersError::Policy {
            policy: policy.to_string(),
            msg: format!(
                "selects none of the model's {} Linear/Conv2d layers (names look like {})",
                slots.len(),
                slots.iter().take(3).map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    for (slot, mode, nd) in plans {
        slot.configure(mode, nd)?;
    }
    let mut report = SparsityReport::from_store(store)?;
    report.policy = Some(policy.to_string());
    report.pattern = Some(pattern.to_string());
    for (name, note) in notes {
        report.set_note(&name, note);
    }
    for (name, slot) in &slots {
        if slot.plan().is_some_and(|p| !p.is_masked()) {
            report.set_note(
                name,
                left_dense_reason(slot.layout(), pattern, matches!(slot.mode(), SparseMode::Fixed { transposable: true, .. })),
            );
        }
    }
    Ok(report)
}

/// Why a selected layer ends up without a mask (see [`plan_mode`]).
fn left_dense_reason(layout: WeightLayout, pattern: NmPattern, transposable: bool) -> String {
    let m = pattern.m();
    if transposable && layout.inp().is_multiple_of(4) {
        return format!("out {} is not a multiple of 4: no transposable 4x4 tiles", layout.out());
    }
    if layout.numel().is_multiple_of(m) {
        format!("in {} is not a multiple of {m}", layout.inp())
    } else {
        format!("in {} and the {} weights are not multiples of {m}", layout.inp(), layout.numel())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.attn.*", b"in_blocks.0.attn.qkv"));
        assert!(!glob_match(b"*.attn.*", b"in_blocks.0.mlp.fc1"));
        assert!(glob_match(b"in_blocks.?.mlp.fc?", b"in_blocks.3.mlp.fc2"));
        assert!(!glob_match(b"in_blocks.?.mlp", b"in_blocks.13.mlp"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(b"**x", b"aax"));
    }

    #[test]
    fn uvit_names() {
        for n in ["in_blocks.0.attn.qkv", "mid_block.attn.proj", "out_blocks.11.mlp.fc2", "nnet.in_blocks.2.mlp.fc1"] {
            assert!(is_uvit_block_linear(n), "{n}");
        }
        for n in ["out_blocks.0.skip_linear", "patch_embed.proj", "decoder_pred", "time_embed.0", "in_blocks.x.attn.qkv", "attn.qkv"] {
            assert!(!is_uvit_block_linear(n), "{n}");
        }
    }

    #[test]
    fn parse_display() {
        let p: Policy = " sparsedm-uvit , *.skip_linear,!out_blocks.0.* ".parse().unwrap();
        assert_eq!(p.to_string(), "sparsedm-uvit,*.skip_linear,!out_blocks.0.*");
        for bad in ["", " , ", "asp,", "!asp", "a b", "!"] {
            assert!(matches!(bad.parse::<Policy>(), Err(LayersError::Policy { .. })), "{bad:?}");
        }
    }
}
