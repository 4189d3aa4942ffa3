//! The compressed N:M weight: the `n` kept values of every group of `m`
//! consecutive input columns and their column indices, stored in blocks of
//! [`ROW_BLOCK`] output rows so that the SpMM kernel walks one contiguous
//! stream of (value, column) pairs per register tile.

use super::rowwise::RowLayout;
use crate::{Error, Result};
use std::sync::OnceLock;

/// Output rows interleaved per block of the compressed layout: the kernels
/// accumulate this many output rows at once (each into its own registers),
/// so one block's entries are read as `ROW_BLOCK` consecutive values and
/// columns per step. A weight whose `out` is not a multiple is padded with
/// zero-valued rows that the kernels compute and never store.
pub const ROW_BLOCK: usize = 4;

/// Bytes between consecutive panel rows in the stored column offsets
/// (a 16-float panel row).
pub(crate) const COL_UNIT: usize = 64;

/// Largest `in`: column offsets `c · COL_UNIT` must fit a `u32`.
pub const MAX_IN: usize = 1 << 26;

/// The stored offset of column `c`.
fn enc(c: usize) -> u32 {
    (c * COL_UNIT) as u32
}

/// Largest group size `m` supported (in-group positions fit 5 bits, and the
/// mask rule of `sparsedm-layers` and the CUDA kernel use the same bound).
pub const MAX_M: usize = 32;

/// A Linear weight `W [out, in]` (PyTorch layout) that is N:M sparse along
/// `in`, compressed for [`crate::nm_cpu::spmm`].
///
/// - Every row keeps exactly `n` entries per full group of `m` columns
///   (`in / m` groups): its non-zeros, padded with zero-valued entries at the
///   group's first unused positions when a group holds fewer than `n`
///   non-zeros. Every row therefore has the same number of entries
///   ([`NmWeight::entries_per_row`]), which lets one register tile advance
///   all its rows in lockstep.
/// - **`in % m != 0`**: the last `in % m` columns do not form a group; they
///   are kept dense (every value stored, zero or not) after the groups. This
///   matches `sparsedm-layers`, which leaves such a layer's columns unmasked
///   rather than inventing a grouping (`NonDivisible::LeaveDense`).
/// - Entries of a row are in ascending column order. Layout: block `b` of
///   rows `b·R .. b·R+R` (`R` = [`ROW_BLOCK`]), entry `j`, row `r` lives at
///   `(b·E + j)·R + r` in both `values` and `cols` (`E` entries per row).
///   This row layout is the canonical form (expand, checkpoints); each
///   kernel reads a layout derived from it on the kernel's first use: the
///   pattern kernel's groups each row block's columns by the set of its
///   rows that use them, the row-wise kernel's (`rowwise.rs`) lists each
///   row's entries per column chunk.
/// - Columns are stored as absolute byte offsets `c · 64` (`u32`, so
///   `in ≤ 2²⁶`): the offset of panel row `c` when a panel row is 16 floats,
///   and a power-of-two multiple of it for wider panels, which x86 address
///   modes scale for free. Decoding the packed in-group positions once at
///   load time keeps the kernel's inner loop free of index arithmetic (no
///   shifts or vector extracts competing with the FMAs for their ports).
#[derive(Debug, Clone)]
pub struct NmWeight {
    out: usize,
    inp: usize,
    n: usize,
    m: usize,
    values: Vec<f32>,
    cols: Vec<u32>,
    /// The pattern kernel's layout and the row-wise kernel's, each built on
    /// its first use: a CPU runs one of them (AVX2 the row-wise one), and
    /// each holds about as many bytes as the weight itself.
    pat: OnceLock<PatternLayout>,
    rows: OnceLock<RowLayout>,
}

/// Equal when the stored weights are (the kernel layouts derive from them).
impl PartialEq for NmWeight {
    fn eq(&self, o: &Self) -> bool {
        (self.out, self.inp, self.n, self.m) == (o.out, o.inp, o.n, o.m) && self.values == o.values && self.cols == o.cols
    }
}

/// Bytes of panel rows per column chunk of the kernel layout: the kernel
/// sweeps all row blocks of a slab over one chunk of panel rows (mostly
/// L1-resident, since a block touches only its rows' columns) before moving
/// to the next; between chunks the accumulators go through a small `Yᵀ`
/// tile. Smaller chunks pay more for that round trip and for the pattern
/// runs, which get shorter (each run's exit is a branch miss).
///
/// 64 KiB is 256 columns of AVX-512's 64-token panel rows (128 to 512
/// measured alike on a shared Xeon, 256 kept on Zen 4) and 1024 columns of
/// AVX2's 16-token rows: on a 2-core Zen 2 the AVX2 kernel ran U-ViT-S/2's
/// 1:8 qkv and fc2 about 10 % faster with 1024 columns than with 256, and
/// 2:4 alike.
const CHUNK_PANEL_BYTES: usize = 64 * 1024;

/// Columns per chunk for the panel rows of the kernel this CPU runs.
fn chunk_cols() -> usize {
    (CHUNK_PANEL_BYTES / (4 * super::spmm::tile_floats(super::spmm::Isa::best()))).max(1)
}

// The kernel layout enumerates the 15 non-empty patterns of 4 rows.
const _: () = assert!(ROW_BLOCK == 4);

/// The kernel layout, derived from the row layout: within each (row block,
/// column chunk), the columns that some of the block's 4 rows use, grouped
/// by their row pattern (bit `r` set when row `r` has a non-zero there).
/// One loaded panel row then feeds every row of the block that needs it
/// (about 2 of 4 at 2:4), instead of one load per multiply-add.
///
/// Per (block `b`, chunk `c`), at `k = b·chunks + c`: `counts[15k + p - 1]`
/// columns with pattern `p` (1..=15, in increasing `p`), whose offsets
/// start at `starts[k].0` in `cols` and whose values (the pattern's rows in
/// order, per column) start at `starts[k].1` in `vals`. Zero weights (the
/// padding of groups with fewer than `n` non-zeros, and padding rows) are
/// left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct PatternLayout {
    pub chunks: usize,
    pub counts: Vec<u16>,
    pub starts: Vec<(u32, u32)>,
    pub cols: Vec<u32>,
    pub vals: Vec<f32>,
}

fn check_pattern(op: &'static str, out: usize, inp: usize, n: usize, m: usize) -> Result<()> {
    if n == 0 || n > m || m > MAX_M {
        return Err(Error::invalid(op, format!("pattern {n}:{m} outside 1 <= n <= m <= {MAX_M}")));
    }
    if out == 0 || inp == 0 {
        return Err(Error::bad_shape(op, &[out, inp], "an N:M weight needs out >= 1 and in >= 1"));
    }
    if inp > MAX_IN {
        return Err(Error::bad_shape(op, &[out, inp], format!("in > {MAX_IN} does not fit the u32 column offsets")));
    }
    Ok(())
}

impl NmWeight {
    /// Compresses a masked dense weight `w` (`[out, in]`, row-major) whose
    /// every full group of `m` consecutive columns has at most `n` non-zeros
    /// (NaN counts as non-zero).
    ///
    /// # Errors
    /// A pattern outside `1 ≤ n ≤ m ≤ 32`, `w.len() != out·in`, `in > 65 536`,
    /// or a group with more than `n` non-zeros (the error names the row, the
    /// group and its columns).
    pub fn compress(w: &[f32], out: usize, inp: usize, n: usize, m: usize) -> Result<Self> {
        let op = "nm_compress";
        check_pattern(op, out, inp, n, m)?;
        if w.len() != out * inp {
            return Err(Error::ElementCount { op, shape: vec![out, inp], len: w.len() });
        }
        let groups = inp / m;
        let e = groups * n + inp % m;
        let blocks = out.div_ceil(ROW_BLOCK);
        let mut values = vec![0f32; blocks * e * ROW_BLOCK];
        let mut cols = vec![0u32; blocks * e * ROW_BLOCK];
        let mut kept: Vec<usize> = Vec::with_capacity(m);
        for o in 0..blocks * ROW_BLOCK {
            let (b, r) = (o / ROW_BLOCK, o % ROW_BLOCK);
            let at = |j: usize| (b * e + j) * ROW_BLOCK + r;
            if o >= out {
                // Padding row: zero values at valid columns (group order).
                for g in 0..groups {
                    for s in 0..n {
                        cols[at(g * n + s)] = enc(g * m + s);
                    }
                }
                for t in 0..inp % m {
                    cols[at(groups * n + t)] = enc(groups * m + t);
                }
                continue;
            }
            let row = &w[o * inp..(o + 1) * inp];
            for g in 0..groups {
                let grp = &row[g * m..(g + 1) * m];
                kept.clear();
                kept.extend((0..m).filter(|&p| grp[p] != 0.0));
                if kept.len() > n {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "row {o}, group {g} (columns {}..{}) has {} non-zeros, more than {n} of {m}: the weight is not {n}:{m} sparse",
                            g * m,
                            (g + 1) * m,
                            kept.len()
                        ),
                    ));
                }
                // Pad with the first zero positions, then keep column order.
                let mut p = 0;
                while kept.len() < n {
                    if grp[p] == 0.0 && !kept.contains(&p) {
                        kept.push(p);
                    }
                    p += 1;
                }
                kept.sort_unstable();
                for (s, &p) in kept.iter().enumerate() {
                    values[at(g * n + s)] = grp[p];
                    cols[at(g * n + s)] = enc(g * m + p);
                }
            }
            for t in 0..inp % m {
                let c = groups * m + t;
                values[at(groups * n + t)] = row[c];
                cols[at(groups * n + t)] = enc(c);
            }
        }
        Ok(NmWeight { out, inp, n, m, values, cols, pat: OnceLock::new(), rows: OnceLock::new() })
    }

    /// Rebuilds a compressed weight from the per-row kept values and in-group
    /// positions (the checkpoint form, see [`NmWeight::kept_values`] and
    /// [`NmWeight::positions`]): `values` `[out, E]` (E =
    /// [`NmWeight::entries_per_row`], dense tail last), `positions`
    /// `[out, (in / m)·n]` each `< m`, strictly ascending within a group.
    ///
    /// # Errors
    /// Wrong lengths, a position `≥ m`, or positions of a group not strictly
    /// ascending (duplicates would double-count a column).
    pub fn from_kept(out: usize, inp: usize, n: usize, m: usize, values: &[f32], positions: &[u8]) -> Result<Self> {
        let op = "nm_from_kept";
        check_pattern(op, out, inp, n, m)?;
        let groups = inp / m;
        let e = groups * n + inp % m;
        if values.len() != out * e {
            return Err(Error::ElementCount { op, shape: vec![out, e], len: values.len() });
        }
        if positions.len() != out * groups * n {
            return Err(Error::ElementCount { op, shape: vec![out, groups * n], len: positions.len() });
        }
        let blocks = out.div_ceil(ROW_BLOCK);
        let mut c = NmWeight {
            out,
            inp,
            n,
            m,
            values: vec![0f32; blocks * e * ROW_BLOCK],
            cols: vec![0u32; blocks * e * ROW_BLOCK],
            pat: OnceLock::new(),
            rows: OnceLock::new(),
        };
        for o in 0..blocks * ROW_BLOCK {
            for g in 0..groups {
                let pos: Vec<u8> =
                    if o < out { positions[(o * groups + g) * n..(o * groups + g + 1) * n].to_vec() } else { (0..n as u8).collect() };
                for s in 0..n {
                    let p = pos[s] as usize;
                    if p >= m || (s > 0 && pos[s - 1] as usize >= p) {
                        return Err(Error::invalid(
                            op,
                            format!("row {o}, group {g}: positions {pos:?} are not strictly ascending and below {m}"),
                        ));
                    }
                    let at = c.entry(o, g * n + s);
                    c.cols[at] = enc(g * m + p);
                    c.values[at] = if o < out { values[o * e + g * n + s] } else { 0.0 };
                }
            }
            for t in 0..inp % m {
                let at = c.entry(o, groups * n + t);
                c.cols[at] = enc(groups * m + t);
                c.values[at] = if o < out { values[o * e + groups * n + t] } else { 0.0 };
            }
        }
        Ok(c)
    }

    /// Output features (rows of `W`).
    pub fn out_features(&self) -> usize {
        self.out
    }
    /// Input features (columns of `W`).
    pub fn in_features(&self) -> usize {
        self.inp
    }
    /// The pattern `(n, m)`.
    pub fn pattern(&self) -> (usize, usize) {
        (self.n, self.m)
    }
    /// Stored entries per row: `(in / m)·n` group entries plus the
    /// `in % m` dense tail columns.
    pub fn entries_per_row(&self) -> usize {
        (self.inp / self.m) * self.n + self.inp % self.m
    }
    /// Number of row blocks (`out` rounded up to [`ROW_BLOCK`]).
    pub fn row_blocks(&self) -> usize {
        self.out.div_ceil(ROW_BLOCK)
    }
    /// The pattern kernel's layout (see [`PatternLayout`]), built on first use.
    pub(crate) fn patterns(&self) -> &PatternLayout {
        self.pat.get_or_init(|| self.build_patterns())
    }

    /// The row-wise kernel's layout (see [`RowLayout`]), built on first use.
    pub(crate) fn row_layout(&self) -> &RowLayout {
        self.rows.get_or_init(|| RowLayout::build(self))
    }

    /// Entry `j` of row `o < out`: its column and value.
    pub(crate) fn row_entry(&self, o: usize, j: usize) -> (usize, f32) {
        let at = self.entry(o, j);
        (self.cols[at] as usize / COL_UNIT, self.values[at])
    }

    /// Derives the pattern kernel's layout from the row layout.
    fn build_patterns(&self) -> PatternLayout {
        let (e, blocks) = (self.entries_per_row(), self.row_blocks());
        let chunk_cols = chunk_cols();
        let chunks = self.inp.div_ceil(chunk_cols);
        let mut pat = PatternLayout {
            chunks,
            counts: vec![0; blocks * chunks * 15],
            starts: Vec::with_capacity(blocks * chunks),
            ..Default::default()
        };
        // Per block: the 4 rows' weights and a row mask per column.
        let mut wt = vec![0f32; self.inp * ROW_BLOCK];
        let mut mask = vec![0u8; self.inp];
        let mut by_pat: Vec<Vec<usize>> = vec![Vec::new(); 16];
        for b in 0..blocks {
            wt.fill(0.0);
            mask.fill(0);
            for j in 0..e {
                for r in 0..ROW_BLOCK {
                    let at = (b * e + j) * ROW_BLOCK + r;
                    let (v, c) = (self.values[at], self.cols[at] as usize / COL_UNIT);
                    if v != 0.0 && b * ROW_BLOCK + r < self.out {
                        wt[c * ROW_BLOCK + r] = v;
                        mask[c] |= 1 << r;
                    }
                }
            }
            for ch in 0..chunks {
                let k = b * chunks + ch;
                pat.starts.push((pat.cols.len() as u32, pat.vals.len() as u32));
                by_pat.iter_mut().for_each(Vec::clear);
                for c in ch * chunk_cols..((ch + 1) * chunk_cols).min(self.inp) {
                    by_pat[mask[c] as usize].push(c);
                }
                for p in 1..16 {
                    pat.counts[k * 15 + p - 1] = by_pat[p].len() as u16;
                    for &c in &by_pat[p] {
                        pat.cols.push(enc(c));
                        for r in (0..ROW_BLOCK).filter(|r| p & (1 << r) != 0) {
                            pat.vals.push(wt[c * ROW_BLOCK + r]);
                        }
                    }
                }
            }
        }
        pat
    }

    fn entry(&self, o: usize, j: usize) -> usize {
        (o / ROW_BLOCK * self.entries_per_row() + j) * ROW_BLOCK + o % ROW_BLOCK
    }

    /// The kept values per row, `[out, E]` row-major (groups in order, then
    /// the dense tail): with [`NmWeight::positions`] the checkpoint form.
    pub fn kept_values(&self) -> Vec<f32> {
        let e = self.entries_per_row();
        (0..self.out).flat_map(|o| (0..e).map(move |j| (o, j))).map(|(o, j)| self.values[self.entry(o, j)]).collect()
    }

    /// In-group positions (`0..m`) of the kept group entries, `[out, (in / m)·n]`.
    pub fn positions(&self) -> Vec<u8> {
        let gn = (self.inp / self.m) * self.n;
        (0..self.out)
            .flat_map(|o| (0..gn).map(move |j| (o, j)))
            .map(|(o, j)| (self.cols[self.entry(o, j)] as usize / COL_UNIT % self.m) as u8)
            .collect()
    }

    /// Expands back to the dense masked weight `[out, in]`, row-major.
    pub fn expand(&self) -> Vec<f32> {
        let e = self.entries_per_row();
        let mut w = vec![0f32; self.out * self.inp];
        for o in 0..self.out {
            for j in 0..e {
                let at = self.entry(o, j);
                w[o * self.inp + self.cols[at] as usize / COL_UNIT] = self.values[at];
            }
        }
        w
    }
}
