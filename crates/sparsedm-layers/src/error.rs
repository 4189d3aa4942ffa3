//! The one error type of this crate.
//!
//! Every function that takes user-controlled input (a pattern string, a shape, a buffer) returns
//! `Result<_, LayersError>` instead of panicking, and each variant carries enough context (the
//! pattern, the layout, the offending group) for the message to be actionable on its own.

use crate::layout::WeightLayout;
use crate::pattern::{MAX_M, NmPattern};

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
    #[error(
        "cannot parse N:M pattern {input:?}: expected two integers separated by ':', like \"2:4\""
    )]
    PatternSyntax {
        /// The string that failed to parse.
        input: String,
    },

    /// A weight shape that is neither `[out, in]` nor `[out, in, kh, kw]`.
    #[error(
        "unsupported weight shape {shape:?}: expected [out, in] (Linear) or [out, in, kh, kw] (Conv2d)"
    )]
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
