//! The channel-permutation search of apex ASP (`permutation_lib`, Pool & Yu,
//! NeurIPS 2021), re-implemented from its description: find an order of a
//! weight matrix's columns (a layer's input channels) under which an N:M
//! magnitude mask keeps as much |w| as possible.
//!
//! The matrix is `rows × cols`, row-major; N:M groups are M consecutive
//! columns of a row. A *stripe* is the M columns of one group position. The
//! search, as apex's default "exhaustive over stripe groups" with stripe
//! groups of two stripes:
//!
//! 1. for every pair of stripes, every way to redistribute their 2M columns
//!    into two groups of M (order within and of the groups ignored: C(2M, M)/2
//!    splits, 35 for 2:4) is scored by the magnitude the mask keeps;
//! 2. the pairs' improvements are applied greedily, largest first, each
//!    stripe at most once per round; only pairs touching a changed stripe are
//!    scored again; rounds repeat until no pair improves;
//! 3. to leave a local optimum, up to `escape_attempts` random perturbations
//!    (one column swapped between two random stripes) are each followed by
//!    step 2; a perturbation is kept only when the result beats the best
//!    order found so far.
//!
//! Row order does not change the kept magnitude, so a conv weight
//! `[out, C, kh, kw]` is searched as the `(out·kh·kw) × C` matrix whose rows
//! are the (out, ky, kx) positions. Deterministic for a given seed.

use crate::LayersError;
use crate::nm::pattern::NmPattern;
use rayon::prelude::*;

/// The largest M the search handles (C(2M, M)/2 splits per stripe pair:
/// 6435 at M = 8; M = 16 would be 3·10⁸).
pub const MAX_SEARCH_M: usize = 8;

/// Options of [`search_permutation`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    /// Random perturbations tried after the greedy search converges (apex:
    /// 100), on windows of up to 32 stripes; wider windows get
    /// proportionally fewer (128 stripes: a quarter).
    pub escape_attempts: usize,
    /// Seed of the perturbations.
    pub seed: u64,
}

impl Default for SearchOptions {
    /// apex's defaults: 100 escape attempts; a fixed seed (apex seeds every GPU identically).
    fn default() -> Self {
        SearchOptions { escape_attempts: 100, seed: 1 }
    }
}

/// Sum over rows and groups of the N largest |w| of each group of M
/// consecutive columns, with the columns taken in the order `perm` (column
/// `j` of the permuted matrix is column `perm[j]` of `w`; `None`: identity),
/// accumulated in f64: the magnitude an N:M mask of the permuted matrix keeps.
///
/// # Errors
/// A `w` whose length is not a multiple of `cols`, `cols` not a multiple of
/// M, or a `perm` that is not a permutation of `0..cols`.
pub fn kept_magnitude_permuted(w: &[f32], cols: usize, perm: Option<&[usize]>, pattern: NmPattern) -> Result<f64, LayersError> {
    check_matrix(w, cols, pattern)?;
    if let Some(p) = perm {
        check_permutation(p, cols)?;
    }
    let (n, m) = (pattern.n(), pattern.m());
    let mut total = 0f64;
    let mut group = vec![0f32; m];
    for row in w.chunks_exact(cols) {
        for g in 0..cols / m {
            for (k, v) in group.iter_mut().enumerate() {
                let c = g * m + k;
                *v = row[perm.map_or(c, |p| p[c])].abs();
            }
            total += top_n_sum(&mut group, n);
        }
    }
    Ok(total)
}

/// The column order (`perm[j]` = the original column placed at `j`) that
/// the search of the module doc finds for the `rows × cols` matrix `w` at
/// `pattern`. Never worse than the identity (it starts there and keeps
/// only improvements).
///
/// # Errors
/// A `w` whose length is not a multiple of `cols`, `cols` not a multiple of
/// M, or M above [`MAX_SEARCH_M`].
pub fn search_permutation(w: &[f32], cols: usize, pattern: NmPattern, opts: &SearchOptions) -> Result<Vec<usize>, LayersError> {
    check_matrix(w, cols, pattern)?;
    let m = pattern.m();
    if m > MAX_SEARCH_M {
        return Err(LayersError::InvalidArgument {
            what: "channel permutation search".into(),
            msg: format!("supports M up to {MAX_SEARCH_M} (C(2M, M)/2 splits per stripe pair), not the pattern {pattern}"),
        });
    }
    let stripes = cols / m;
    let mut perm: Vec<usize> = (0..cols).collect();
    if stripes < 2 || pattern.is_dense() || w.is_empty() {
        return Ok(perm);
    }
    // apex splits wide matrices before searching; here each window of
    // WINDOW columns is searched on its own (a permutation within windows).
    let mut start = 0;
    while start < cols {
        let width = WINDOW.min(cols - start);
        let window: Vec<f32> = w.chunks_exact(cols).flat_map(|row| row[start..start + width].iter().copied()).collect();
        let local = search_window(&window, width, pattern, opts);
        let found: Vec<usize> = local.iter().map(|&c| start + c).collect();
        perm[start..start + width].copy_from_slice(&found);
        start += width;
    }
    Ok(perm)
}

/// The widest column window searched as one matrix (128 stripes of 2:4): the
/// stripe-pair table grows with the square of the width.
pub const WINDOW: usize = 512;

/// Windows up to this many stripes get every escape attempt (see [`search_window`]).
const ESCAPE_FULL_STRIPES: usize = 32;

/// The search of the module doc on one window (`cols` ≤ [`WINDOW`]).
fn search_window(w: &[f32], cols: usize, pattern: NmPattern, opts: &SearchOptions) -> Vec<usize> {
    let m = pattern.m();
    let stripes = cols / m;
    let mut perm: Vec<usize> = (0..cols).collect();
    if stripes < 2 {
        return perm;
    }
    let s = Searcher::new(w, cols, pattern);
    let mut table = s.score_all(&perm);
    s.greedy(&mut perm, &mut table);
    let mut best = s.total(&perm);
    let mut rng = SplitMix(opts.seed);
    // Each escape re-scores the pairs of the stripes it touches, a cost that
    // grows with the window; apex runs them on a GPU. Beyond 32 stripes the
    // number of attempts shrinks in proportion, so the escapes cost about
    // what the first full scoring does.
    let attempts = if stripes <= ESCAPE_FULL_STRIPES { opts.escape_attempts } else { opts.escape_attempts * ESCAPE_FULL_STRIPES / stripes };
    for _ in 0..attempts {
        let (mut trial, mut trial_table) = (perm.clone(), table.clone());
        let a = rng.below(stripes);
        let b = (a + 1 + rng.below(stripes - 1)) % stripes;
        trial.swap(a * m + rng.below(m), b * m + rng.below(m));
        let mut changed = vec![false; stripes];
        changed[a] = true;
        changed[b] = true;
        s.rescore(&trial, &mut trial_table, &changed);
        s.greedy(&mut trial, &mut trial_table);
        let score = s.total(&trial);
        if score > best + 1e-9 * best.abs().max(1.0) {
            best = score;
            perm = trial;
            table = trial_table;
        }
    }
    perm
}

fn check_matrix(w: &[f32], cols: usize, pattern: NmPattern) -> Result<(), LayersError> {
    if cols == 0 || !w.len().is_multiple_of(cols) {
        return Err(bad(format!("a weight of {} values is not a matrix with {cols} columns", w.len())));
    }
    if !cols.is_multiple_of(pattern.m()) {
        return Err(bad(format!("{cols} input channels are not a multiple of M = {} (pattern {pattern})", pattern.m())));
    }
    Ok(())
}

fn bad(msg: String) -> LayersError {
    LayersError::InvalidArgument { what: "channel permutation".into(), msg }
}

fn check_permutation(p: &[usize], cols: usize) -> Result<(), LayersError> {
    let mut seen = vec![false; cols];
    if p.len() != cols || !p.iter().all(|&c| c < cols && !std::mem::replace(&mut seen[c], true)) {
        return Err(bad(format!("{p:?} is not a permutation of 0..{cols}")));
    }
    Ok(())
}

/// Sum of the `n` largest values of `v` (sorted in place, descending).
fn top_n_sum(v: &mut [f32], n: usize) -> f64 {
    // M ≤ 32: insertion sort beats anything clever.
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v[j - 1] < v[j] {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
    v[..n].iter().map(|&x| f64::from(x)).sum()
}

/// Sum of the `n` largest of the values of `vals` at the positions `idx`
/// (n ≤ M ≤ [`MAX_SEARCH_M`]): the inner loop of the search.
#[inline]
fn top_n_of(vals: &[f32], idx: &[u8], n: usize) -> f32 {
    if n == 2 {
        let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &i in idx {
            let v = vals[i as usize];
            if v > a {
                b = a;
                a = v;
            } else if v > b {
                b = v;
            }
        }
        return a + b;
    }
    // The n largest so far, descending.
    let mut top = [f32::NEG_INFINITY; MAX_SEARCH_M];
    for &i in idx {
        let v = vals[i as usize];
        if v > top[n - 1] {
            let mut j = n - 1;
            while j > 0 && top[j - 1] < v {
                top[j] = top[j - 1];
                j -= 1;
            }
            top[j] = v;
        }
    }
    top[..n].iter().sum()
}

/// The larger plus the second larger of four finite values, without
/// branches: `max(hi₁, hi₂) + max(min(hi₁, hi₂), max(lo₁, lo₂))`.
#[inline(always)]
fn top2_of4(a: f32, b: f32, c: f32, d: f32) -> f32 {
    let max = |x: f32, y: f32| if x > y { x } else { y };
    let min = |x: f32, y: f32| if x < y { x } else { y };
    let (hi1, lo1, hi2, lo2) = (max(a, b), min(a, b), max(c, d), min(c, d));
    max(hi1, hi2) + max(min(hi1, hi2), max(lo1, lo2))
}

/// The search state that does not change: |w| by column, the splits.
struct Searcher {
    /// `abs[c * rows + r]` = |w[r, c]|: a column's values are contiguous.
    abs: Vec<f32>,
    rows: usize,
    n: usize,
    m: usize,
    /// Bit masks over the 2M columns of a stripe pair: the columns of the
    /// first group of each canonical split (it always holds column 0).
    splits: Vec<u32>,
    /// The same splits as positions: the first group's M, then the second's.
    split_index: Vec<[u8; 2 * MAX_SEARCH_M]>,
}

impl Searcher {
    fn new(w: &[f32], cols: usize, pattern: NmPattern) -> Self {
        let rows = w.len() / cols;
        let mut abs = vec![0f32; w.len()];
        for (r, row) in w.chunks_exact(cols).enumerate() {
            for (c, v) in row.iter().enumerate() {
                abs[c * rows + r] = v.abs();
            }
        }
        let m = pattern.m();
        let splits: Vec<u32> = (0u32..1 << (2 * m)).filter(|s| s & 1 == 1 && s.count_ones() as usize == m).collect();
        let split_index = splits
            .iter()
            .map(|&s| {
                let mut idx = [0u8; 2 * MAX_SEARCH_M];
                let first = (0..2 * m).filter(|k| s >> k & 1 == 1);
                let second = (0..2 * m).filter(|k| s >> k & 1 == 0);
                for (slot, k) in idx.iter_mut().zip(first.chain(second)) {
                    *slot = k as u8;
                }
                idx
            })
            .collect();
        Searcher { abs, rows, n: pattern.n(), m, splits, split_index }
    }

    fn col(&self, c: usize) -> &[f32] {
        &self.abs[c * self.rows..(c + 1) * self.rows]
    }

    /// Kept magnitude of one group of M columns.
    fn group_score(&self, cols: &[usize]) -> f64 {
        let mut v = vec![0f32; self.m];
        let mut total = 0f64;
        for r in 0..self.rows {
            for (k, &c) in cols.iter().enumerate() {
                v[k] = self.col(c)[r];
            }
            total += top_n_sum(&mut v, self.n);
        }
        total
    }

    fn total(&self, perm: &[usize]) -> f64 {
        perm.chunks_exact(self.m).map(|g| self.group_score(g)).sum()
    }

    /// The best split of the columns of stripes `a` and `b`: (gain over
    /// their current score, the two new groups).
    fn best_split(&self, perm: &[usize], a: usize, b: usize) -> (f64, Vec<usize>) {
        let m = self.m;
        let cols: Vec<usize> = perm[a * m..(a + 1) * m].iter().chain(&perm[b * m..(b + 1) * m]).copied().collect();
        let scores = if (self.n, m) == (2, 4) { self.split_scores_2of4(&cols) } else { self.split_scores(&cols) };
        // The identity split (the first M columns together) is the current score.
        let current_split = (1u32 << m) - 1;
        let current = self.splits.iter().position(|&s| s == current_split).map_or(0.0, |i| scores[i]);
        let (bi, &best) = scores.iter().enumerate().fold((0, &f64::NEG_INFINITY), |acc, (i, s)| if *s > *acc.1 { (i, s) } else { acc });
        let split = self.splits[bi];
        let mut groups: Vec<usize> = (0..2 * m).filter(|k| split >> k & 1 == 1).map(|k| cols[k]).collect();
        groups.extend((0..2 * m).filter(|k| split >> k & 1 == 0).map(|k| cols[k]));
        (best - current, groups)
    }

    /// Every split's kept magnitude for the 2M columns `cols`, row by row
    /// (any N:M).
    fn split_scores(&self, cols: &[usize]) -> Vec<f64> {
        let m = self.m;
        let mut scores = vec![0f64; self.splits.len()];
        let mut vals = [0f32; 2 * MAX_SEARCH_M];
        for r in 0..self.rows {
            for (k, &c) in cols.iter().enumerate() {
                vals[k] = self.col(c)[r];
            }
            for (score, idx) in scores.iter_mut().zip(&self.split_index) {
                *score += f64::from(top_n_of(&vals, &idx[..m], self.n) + top_n_of(&vals, &idx[m..2 * m], self.n));
            }
        }
        scores
    }

    /// [`Self::split_scores`] for 2:4, split by split over the rows: each
    /// group's two largest of four come from a branch-free max/min network
    /// over contiguous columns, which the compiler vectorises across rows.
    /// The same f32 sums per row as [`top_n_of`] (the larger plus the
    /// second larger), accumulated in f64 per lane.
    fn split_scores_2of4(&self, cols: &[usize]) -> Vec<f64> {
        const LANES: usize = 16;
        let column = |k: u8| self.col(cols[k as usize]);
        self.split_index
            .iter()
            .map(|idx| {
                let g = [
                    [column(idx[0]), column(idx[1]), column(idx[2]), column(idx[3])],
                    [column(idx[4]), column(idx[5]), column(idx[6]), column(idx[7])],
                ];
                let mut acc = [0f64; LANES];
                let mut r = 0;
                while r + LANES <= self.rows {
                    for (l, slot) in acc.iter_mut().enumerate() {
                        let i = r + l;
                        *slot += f64::from(
                            top2_of4(g[0][0][i], g[0][1][i], g[0][2][i], g[0][3][i])
                                + top2_of4(g[1][0][i], g[1][1][i], g[1][2][i], g[1][3][i]),
                        );
                    }
                    r += LANES;
                }
                let mut total: f64 = acc.iter().sum();
                for i in r..self.rows {
                    total += f64::from(
                        top2_of4(g[0][0][i], g[0][1][i], g[0][2][i], g[0][3][i]) + top2_of4(g[1][0][i], g[1][1][i], g[1][2][i], g[1][3][i]),
                    );
                }
                total
            })
            .collect()
    }

    /// The pairs of stripes and each pair's best split under `perm`.
    fn score_all(&self, perm: &[usize]) -> Table {
        let stripes = perm.len() / self.m;
        let pairs: Vec<(usize, usize)> = (0..stripes).flat_map(|a| (a + 1..stripes).map(move |b| (a, b))).collect();
        let best = pairs.par_iter().map(|&(a, b)| self.best_split(perm, a, b)).collect();
        Table { pairs, best }
    }

    /// Scores again the pairs that touch a stripe marked in `changed`.
    fn rescore(&self, perm: &[usize], table: &mut Table, changed: &[bool]) {
        let stale: Vec<usize> = (0..table.pairs.len()).filter(|&i| changed[table.pairs[i].0] || changed[table.pairs[i].1]).collect();
        let fresh: Vec<(f64, Vec<usize>)> = stale.par_iter().map(|&i| self.best_split(perm, table.pairs[i].0, table.pairs[i].1)).collect();
        for (i, f) in stale.into_iter().zip(fresh) {
            table.best[i] = f;
        }
    }

    /// Step 2 of the module doc, in place; `table` holds the pairs' best
    /// splits under `perm` on entry and on return.
    fn greedy(&self, perm: &mut [usize], table: &mut Table) {
        let (m, stripes) = (self.m, perm.len() / self.m);
        // Gains below this are float noise, not improvements.
        let tolerance = 1e-9 * self.rows as f64;
        loop {
            let mut order: Vec<usize> = (0..table.pairs.len()).filter(|&i| table.best[i].0 > tolerance).collect();
            if order.is_empty() {
                return;
            }
            order.sort_by(|&i, &j| table.best[j].0.total_cmp(&table.best[i].0).then(i.cmp(&j)));
            let mut changed = vec![false; stripes];
            for i in order {
                let (a, b) = table.pairs[i];
                if changed[a] || changed[b] {
                    continue;
                }
                let groups = &table.best[i].1;
                perm[a * m..(a + 1) * m].copy_from_slice(&groups[..m]);
                perm[b * m..(b + 1) * m].copy_from_slice(&groups[m..]);
                changed[a] = true;
                changed[b] = true;
            }
            self.rescore(perm, table, &changed);
        }
    }
}

/// Every pair of stripes `(a, b)`, a < b, with its best split: (gain, the
/// two groups' columns).
#[derive(Clone)]
struct Table {
    pairs: Vec<(usize, usize)>,
    best: Vec<(f64, Vec<usize>)>,
}

/// A small deterministic generator for the perturbations (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..k` (k > 0; the modulo bias is irrelevant here).
    fn below(&mut self, k: usize) -> usize {
        (self.next() % k as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised 2:4 scoring gives every split the same score as the
    /// row-by-row one (rows not a multiple of the lane count, ties included).
    #[test]
    fn vectorised_2of4_scores_match_the_row_loop() {
        let pattern: NmPattern = "2:4".parse().unwrap();
        for rows in [1, 15, 16, 37, 130] {
            let cols = 16;
            let mut rng = SplitMix(rows as u64);
            // Values on a coarse grid, so equal magnitudes (ties) occur.
            let w: Vec<f32> = (0..rows * cols).map(|_| (rng.below(64) as f32 - 32.0) / 16.0).collect();
            let s = Searcher::new(&w, cols, pattern);
            for (a, b) in [(0, 1), (1, 3), (0, 2)] {
                let pick: Vec<usize> = (a * 4..a * 4 + 4).chain(b * 4..b * 4 + 4).collect();
                let (fast, slow) = (s.split_scores_2of4(&pick), s.split_scores(&pick));
                assert_eq!(fast.len(), 35);
                for (f, l) in fast.iter().zip(&slow) {
                    assert!((f - l).abs() <= 1e-12 * l.abs().max(1.0), "rows {rows}: {f} vs {l}");
                }
            }
        }
    }

    #[test]
    fn top2_of4_is_the_two_largest() {
        let v = [3.0f32, 1.0, 4.0, 1.5, 0.0, 4.0];
        for a in v {
            for b in v {
                for c in v {
                    for d in v {
                        let mut s = [a, b, c, d];
                        s.sort_by(|x, y| y.total_cmp(x));
                        assert_eq!(top2_of4(a, b, c, d), s[0] + s[1], "{a} {b} {c} {d}");
                    }
                }
            }
        }
    }
}
