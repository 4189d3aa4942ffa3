//! N:M sparsity patterns ("keep N of every M consecutive weights").
//!
//! SparseDM trains at 2:4 and ablates over 1:4 … 31:32; its ablation also has a dense point written
//! as 32:32, so `N == M` is a valid pattern here and simply means "keep everything".

use std::fmt;
use std::str::FromStr;

use crate::error::LayersError;

/// Largest supported group size M.
///
/// 32 is the largest M the paper uses (1:32, 31:32, 32:32). The mask kernels keep a group on the
/// stack in a `[_; MAX_M]` buffer, so this bound is also what keeps them allocation-free.
pub const MAX_M: usize = 32;

/// A validated N:M pattern: at most `n` nonzeros in every group of `m` consecutive weights along
/// the input dimension, with `1 <= n <= m <= MAX_M`.
///
/// The fields are private so that every value in circulation is valid; build one with
/// [`NmPattern::new`] or parse one from `"2:4"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NmPattern {
    n: usize,
    m: usize,
}

impl NmPattern {
    /// The 2:4 pattern that sparse tensor cores accelerate.
    pub const TWO_FOUR: NmPattern = NmPattern { n: 2, m: 4 };

    /// Validates and builds `n:m`.
    ///
    /// # Errors
    /// [`LayersError::ImpossiblePattern`] unless `1 <= n <= m <= MAX_M`.
    pub fn new(n: usize, m: usize) -> Result<Self, LayersError> {
        if n >= 1 && n <= m && m <= MAX_M { Ok(NmPattern { n, m }) } else { Err(LayersError::ImpossiblePattern { n, m }) }
    }

    /// Weights kept per group.
    pub fn n(self) -> usize {
        self.n
    }

    /// Group size.
    pub fn m(self) -> usize {
        self.m
    }

    /// Fraction of weights kept, `n / m` (1.0 for a dense pattern).
    pub fn density(self) -> f64 {
        self.n as f64 / self.m as f64
    }

    /// Fraction of weights pruned, `1 - n / m`.
    pub fn sparsity(self) -> f64 {
        (self.m - self.n) as f64 / self.m as f64
    }

    /// `true` for `N == M` (e.g. the ablation's 32:32 point): the mask keeps every weight.
    pub fn is_dense(self) -> bool {
        self.n == self.m
    }
}

impl fmt::Display for NmPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.n, self.m)
    }
}

impl FromStr for NmPattern {
    type Err = LayersError;

    /// Parses `"N:M"` (surrounding whitespace allowed), then validates it like [`NmPattern::new`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || LayersError::PatternSyntax { input: s.to_owned() };
        let (n, m) = s.trim().split_once(':').ok_or_else(syntax)?;
        let n: usize = n.trim().parse().map_err(|_| syntax())?;
        let m: usize = m.trim().parse().map_err(|_| syntax())?;
        NmPattern::new(n, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for s in ["2:4", "1:32", "31:32", "32:32", "1:1"] {
            let p: NmPattern = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        let p: NmPattern = " 7 : 8 ".parse().unwrap();
        assert_eq!((p.n(), p.m()), (7, 8));
        assert_eq!(p.density(), 0.875);
        assert_eq!(NmPattern::TWO_FOUR.sparsity(), 0.5);
        assert!("32:32".parse::<NmPattern>().unwrap().is_dense());
    }
}
