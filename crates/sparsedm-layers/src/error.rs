//! The one error type of this crate.
//!
//! Every function that takes user-controlled input (a pattern string, a shape, a buffer) returns
//! `Result<_, LayersError>` instead of panicking, and each variant carries enough context (the
//! pattern, the layout, the offending group) for the message to be actionable on its own.

use crate::nm::layout::WeightLayout;
use crate::nm::pattern::{MAX_M, NmPattern};

/// Everything that can go wrong when building, computing or checking N:M masks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayersError {
    /// A tensor operation failed (shape, dtype or device problem).
    #[error(transparent)]
    Tensor(#[from] sparsedm_tensor::Error),

    /// Loading named tensors into a model found problems; every problem is
    /// listed (missing, unexpected and mis-shaped tensors).
    #[error("checkpoint {path} does not match the model:\n{}", problems.join("\n"))]
    CheckpointMismatch {
        /// The file being loaded.
        path: String,
        /// One line per problem.
        problems: Vec<String>,
    },

    /// A parameter registered twice with different shapes, or looked up
    /// under a name that does not exist.
    #[error("parameter {name}: {msg}")]
    Param {
        /// The full dotted parameter name.
        name: String,
        /// What is wrong.
        msg: String,
    },

    /// N and M do not describe an N:M pattern this crate supports.
    #[error("impossible N:M pattern {n}:{m}: need 1 <= N <= M <= {MAX_M}")]
    ImpossiblePattern {
        /// Kept weights per group.
        n: usize,
        /// Group size.
        m: usize,
    },

    /// A pattern string is not of the form `N:M`.
    #[error("cannot parse N:M pattern {input:?}: expected two integers separated by ':', like \"2:4\"")]
    PatternSyntax {
        /// The string that failed to parse.
        input: String,
    },

    /// A weight shape that is neither `[out, in]` nor `[out, in, kh, kw]`.
    #[error("unsupported weight shape {shape:?}: expected [out, in] (Linear) or [out, in, kh, kw] (Conv2d)")]
    UnsupportedRank {
        /// The rejected shape.
        shape: Vec<usize>,
    },

    /// A weight shape with a zero-sized dimension (nothing to group).
    #[error("weight shape {shape:?} has a zero-sized dimension")]
    EmptyDimension {
        /// The rejected shape.
        shape: Vec<usize>,
    },

    /// A weight shape whose element count overflows `usize`.
    #[error("weight shape {shape:?} has more elements than fit in usize")]
    ShapeOverflow {
        /// The rejected shape.
        shape: Vec<usize>,
    },

    /// A buffer whose length does not match the layout it is used with.
    #[error("{what} has {actual} elements but {layout} needs {expected}")]
    LengthMismatch {
        /// Which buffer ("weight", "mask", ...).
        what: &'static str,
        /// The layout the buffer was checked against.
        layout: WeightLayout,
        /// `layout.numel()`.
        expected: usize,
        /// The buffer's length.
        actual: usize,
    },

    /// The input dimension is not a multiple of M, so the groups along it are not defined
    /// (raised by validation with [`NonDivisible::LeaveDense`](crate::NonDivisible::LeaveDense)).
    #[error(
        "{layout}: input dimension {inp} is not a multiple of M = {} (pattern {pattern}), \
         so it has no N:M groups along its input dimension",
        pattern.m()
    )]
    InputNotDivisible {
        /// The layer's layout.
        layout: WeightLayout,
        /// Its input dimension.
        inp: usize,
        /// The requested pattern.
        pattern: NmPattern,
    },

    /// Flat-index grouping needs the total element count to be a multiple of M (the reference
    /// reshapes the flattened weight to `[numel / M, M]`, which fails otherwise).
    #[error(
        "{layout}: flat-index grouping needs the element count {numel} to be a multiple of M = {} \
         (pattern {pattern})",
        pattern.m()
    )]
    FlatIndexNotDivisible {
        /// The layer's layout.
        layout: WeightLayout,
        /// Its element count.
        numel: usize,
        /// The requested pattern.
        pattern: NmPattern,
    },

    /// A group along the input dimension has more than N nonzeros.
    #[error(
        "{layout} is not {pattern} sparse: the group at out {out}{}, inputs {in_start}..{in_end}, \
         has {nonzeros} nonzeros (at most {} allowed)",
        fmt_kernel_pos(.kernel_pos),
        pattern.n()
    )]
    NmViolation {
        /// The layer's layout.
        layout: WeightLayout,
        /// The pattern that was checked.
        pattern: NmPattern,
        /// Output index (row of a Linear, output channel of a Conv2d).
        out: usize,
        /// `(ky, kx)` kernel position for a Conv2d, `None` for a Linear.
        kernel_pos: Option<(usize, usize)>,
        /// First input index of the group.
        in_start: usize,
        /// One past the last input index of the group.
        in_end: usize,
        /// Nonzeros found in the group.
        nonzeros: usize,
    },

    /// A flat-index group (see [`NonDivisible::FlatIndex`](crate::NonDivisible::FlatIndex)) has
    /// more than N nonzeros. Positions are PyTorch multi-indices (`[o, c]` or `[o, c, ky, kx]`).
    #[error(
        "{layout} is not {pattern} sparse under flat-index grouping: flat group {group} \
         (elements {first:?} .. {last:?}) has {nonzeros} nonzeros (at most {} allowed)",
        pattern.n()
    )]
    FlatGroupViolation {
        /// The layer's layout.
        layout: WeightLayout,
        /// The pattern that was checked.
        pattern: NmPattern,
        /// Index of the group in the (out, ky, kx, in) flat order.
        group: usize,
        /// Multi-index of the group's first element.
        first: Vec<usize>,
        /// Multi-index of the group's last element.
        last: Vec<usize>,
        /// Nonzeros found in the group.
        nonzeros: usize,
    },

    /// Transposable 2:4 masks tile `[out, in]` into 4×4 blocks, so both must be multiples of 4.
    #[error("transposable 2:4 masks need out and in to be multiples of 4, got {layout}")]
    TransposableShape {
        /// The rejected layout.
        layout: WeightLayout,
    },

    /// A 4×4 block has a row or a column with more than 2 nonzeros.
    #[error(
        "{layout} is not transposable 2:4: in the 4x4 block at out {out_start}..{}, in {in_start}..{}{}, \
         {} has {nonzeros} nonzeros (at most 2 allowed)",
        out_start + 4,
        in_start + 4,
        fmt_kernel_pos(.kernel_pos),
        .line
    )]
    TransposableViolation {
        /// The layer's layout.
        layout: WeightLayout,
        /// First output index of the block.
        out_start: usize,
        /// First input index of the block.
        in_start: usize,
        /// `(ky, kx)` for a Conv2d, `None` for a Linear.
        kernel_pos: Option<(usize, usize)>,
        /// The offending line of the block.
        line: BlockLine,
        /// Nonzeros found in that line.
        nonzeros: usize,
    },

    /// A sparsity policy that cannot be parsed, or that selects no layer of
    /// the model (a misspelt glob must not silently leave everything dense).
    #[error("sparsity policy {policy:?}: {msg}")]
    Policy {
        /// The policy as written.
        policy: String,
        /// What is wrong.
        msg: String,
    },

    /// Structural (channel) pruning that cannot be done as asked: a group
    /// whose tensors do not hold its channels, a keep count the group's
    /// partitions do not allow, a broken importance pass.
    #[error("structured pruning of {group}: {msg}")]
    StructuredPrune {
        /// The channel group (or the pass) concerned.
        group: String,
        /// What is wrong.
        msg: String,
    },

    /// A progressive schedule (`"15:16@0,7:8@100000"`) that cannot be parsed or is not
    /// ordered.
    #[error("progressive schedule {spec:?}: {msg}")]
    Schedule {
        /// The schedule as written.
        spec: String,
        /// What is wrong.
        msg: String,
    },

    /// A sparse checkpoint whose sparsity metadata is missing or unreadable, or that lacks a
    /// weight its metadata lists.
    #[error("sparse checkpoint {path}: {msg}")]
    SparseCheckpoint {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },

    /// A layer of a sparse checkpoint whose stored weight does not satisfy the N:M pattern its
    /// metadata declares; `source` names the first offending group.
    #[error("sparse checkpoint {path}: layer {layer} does not satisfy its declared sparsity: {source}")]
    LayerNotSparse {
        /// The file.
        path: String,
        /// The layer (state-dict prefix, e.g. `in_blocks.0.attn.qkv`).
        layer: String,
        /// The violation found by [`check_nm`](crate::check_nm) or
        /// [`check_transposable`](crate::check_transposable).
        source: Box<LayersError>,
    },

    /// An argument outside its domain (a loss weight that is negative or not finite, tensors of
    /// different shapes where one shape is needed, ...).
    #[error("{what}: {msg}")]
    InvalidArgument {
        /// The function or setting concerned.
        what: String,
        /// What is wrong.
        msg: String,
    },
}

/// Structural equality, so tests can compare whole errors. A tensor-engine error holds an
/// `std::io::Error`, which has no equality; two of them are equal when their messages are.
impl PartialEq for LayersError {
    fn eq(&self, other: &Self) -> bool {
        use LayersError as E;
        match (self, other) {
            (E::Tensor(a), E::Tensor(b)) => a.to_string() == b.to_string(),
            (E::CheckpointMismatch { path: a, problems: b }, E::CheckpointMismatch { path: c, problems: d }) => (a, b) == (c, d),
            (E::Param { name: a, msg: b }, E::Param { name: c, msg: d }) => (a, b) == (c, d),
            (E::ImpossiblePattern { n: a, m: b }, E::ImpossiblePattern { n: c, m: d }) => (a, b) == (c, d),
            (E::PatternSyntax { input: a }, E::PatternSyntax { input: b }) => a == b,
            (E::UnsupportedRank { shape: a }, E::UnsupportedRank { shape: b }) => a == b,
            (E::EmptyDimension { shape: a }, E::EmptyDimension { shape: b }) => a == b,
            (E::ShapeOverflow { shape: a }, E::ShapeOverflow { shape: b }) => a == b,
            (
                E::LengthMismatch { what: a, layout: b, expected: c, actual: d },
                E::LengthMismatch { what: e, layout: f, expected: g, actual: h },
            ) => (a, b, c, d) == (e, f, g, h),
            (E::InputNotDivisible { layout: a, inp: b, pattern: c }, E::InputNotDivisible { layout: d, inp: e, pattern: f }) => {
                (a, b, c) == (d, e, f)
            }
            (
                E::FlatIndexNotDivisible { layout: a, numel: b, pattern: c },
                E::FlatIndexNotDivisible { layout: d, numel: e, pattern: f },
            ) => (a, b, c) == (d, e, f),
            (
                E::NmViolation { layout: a, pattern: b, out: c, kernel_pos: d, in_start: e, in_end: f, nonzeros: g },
                E::NmViolation { layout: h, pattern: i, out: j, kernel_pos: k, in_start: l, in_end: m, nonzeros: n },
            ) => (a, b, c, d, e, f, g) == (h, i, j, k, l, m, n),
            (
                E::FlatGroupViolation { layout: a, pattern: b, group: c, first: d, last: e, nonzeros: f },
                E::FlatGroupViolation { layout: g, pattern: h, group: i, first: j, last: k, nonzeros: l },
            ) => (a, b, c, d, e, f) == (g, h, i, j, k, l),
            (E::TransposableShape { layout: a }, E::TransposableShape { layout: b }) => a == b,
            (
                E::TransposableViolation { layout: a, out_start: b, in_start: c, kernel_pos: d, line: e, nonzeros: f },
                E::TransposableViolation { layout: g, out_start: h, in_start: i, kernel_pos: j, line: k, nonzeros: l },
            ) => (a, b, c, d, e, f) == (g, h, i, j, k, l),
            (E::Policy { policy: a, msg: b }, E::Policy { policy: c, msg: d }) => (a, b) == (c, d),
            (E::Schedule { spec: a, msg: b }, E::Schedule { spec: c, msg: d }) => (a, b) == (c, d),
            (E::SparseCheckpoint { path: a, msg: b }, E::SparseCheckpoint { path: c, msg: d }) => (a, b) == (c, d),
            (E::LayerNotSparse { path: a, layer: b, source: c }, E::LayerNotSparse { path: d, layer: e, source: f }) => {
                (a, b, c) == (d, e, f)
            }
            (E::InvalidArgument { what: a, msg: b }, E::InvalidArgument { what: c, msg: d }) => (a, b) == (c, d),
            _ => false,
        }
    }
}

/// A row or a column of a 4×4 block, by its absolute index in the weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockLine {
    /// The block's row at this output index (a group along the input dimension).
    Row(usize),
    /// The block's column at this input index (a group along the output dimension).
    Column(usize),
}

impl std::fmt::Display for BlockLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockLine::Row(o) => write!(f, "row out {o}"),
            BlockLine::Column(c) => write!(f, "column in {c}"),
        }
    }
}

fn fmt_kernel_pos(pos: &Option<(usize, usize)>) -> String {
    match pos {
        Some((ky, kx)) => format!(", kernel (kh {ky}, kw {kx})"),
        None => String::new(),
    }
}
