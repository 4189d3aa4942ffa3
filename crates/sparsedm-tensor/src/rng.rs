//! Seeded, reproducible random numbers from the counter-based Philox4x32-10
//! generator (Salmon et al., SC'11, "Parallel random numbers: as easy as
//! 1, 2, 3"). The whole state is `(seed, counter)`: element block `j` of a
//! draw is `philox(key = seed, ctr = counter + j)`, so any device can
//! produce the same stream in parallel, and a checkpoint stores two
//! integers.

use crate::{Error, Result};
use rayon::prelude::*;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for _ in 0..10 {
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// A Philox stream: `seed` is the key, `counter` the next block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    seed: u64,
    counter: u64,
}

/// u32 → uniform in (0, 1] with 24 bits (never 0, so `ln` is finite).
fn unit_open0(x: u32) -> f32 {
    ((x >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { seed, counter: 0 }
    }
    /// Restores a stream saved with [`Rng::state`].
    pub fn from_state(seed: u64, counter: u64) -> Self {
        Rng { seed, counter }
    }
    /// `(seed, counter)`: everything needed to resume the stream.
    pub fn state(&self) -> (u64, u64) {
        (self.seed, self.counter)
    }
    /// An independent stream derived from this one (for a worker, a data
    /// loader, a sampler), advancing this stream by one block.
    pub fn fork(&mut self) -> Rng {
        let b = self.blocks(1)[0];
        Rng::new(((b[0] as u64) << 32 | b[1] as u64) ^ ((b[2] as u64) << 32 | b[3] as u64).rotate_left(17))
    }

    fn key(&self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    /// The next `n` blocks of four u32.
    pub fn blocks(&mut self, n: usize) -> Vec<[u32; 4]> {
        let (key, base) = (self.key(), self.counter);
        self.counter = self.counter.wrapping_add(n as u64);
        let block = |j: usize| {
            let c = base.wrapping_add(j as u64);
            philox4x32_10([c as u32, (c >> 32) as u32, 0, 0], key)
        };
        if n >= 4096 { (0..n).into_par_iter().map(block).collect() } else { (0..n).map(block).collect() }
    }

    /// `n` uniform values in `[lo, hi)`.
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        let mut v: Vec<f32> = self.blocks(n.div_ceil(4)).into_iter().flatten().map(|x| (x >> 8) as f32 * (1.0 / 16_777_216.0)).collect();
        v.truncate(n);
        v.iter_mut().for_each(|u| *u = lo + (hi - lo) * *u);
        v
    }

    /// `n` standard normal values (Box–Muller on pairs of uniforms).
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = self
            .blocks(n.div_ceil(4))
            .into_iter()
            .flat_map(|b| {
                let mut out = [0f32; 4];
                for p in 0..2 {
                    let (u1, u2) = (unit_open0(b[2 * p]), unit_open0(b[2 * p + 1]));
                    let r = (-2.0 * u1.ln()).sqrt();
                    let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
                    out[2 * p] = r * c;
                    out[2 * p + 1] = r * s;
                }
                out
            })
            .collect();
        v.truncate(n);
        v
    }

    /// `n` integers uniform in `[lo, hi)` (64 bits per draw, so the
    /// modulo bias is below 2⁻³²for any practical range).
    pub fn int_vec(&mut self, n: usize, lo: i64, hi: i64) -> Result<Vec<i64>> {
        if hi <= lo {
            return Err(Error::invalid("randint", format!("empty range [{lo}, {hi})")));
        }
        let range = (hi - lo) as u64;
        let mut v: Vec<i64> = self
            .blocks(n.div_ceil(2))
            .into_iter()
            .flat_map(|b| [((b[0] as u64) << 32 | b[1] as u64), ((b[2] as u64) << 32 | b[3] as u64)])
            .map(|x| lo + (x % range) as i64)
            .collect();
        v.truncate(n);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from Random123's `kat_vectors` (philox4x32 10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(philox4x32_10([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn streams_are_reproducible_and_resumable() {
        let mut a = Rng::new(7);
        let first = a.normal_vec(10);
        let state = a.state();
        let next = a.normal_vec(5);
        let mut b = Rng::from_state(state.0, state.1);
        assert_eq!(b.normal_vec(5), next);
        assert_eq!(Rng::new(7).normal_vec(10), first);
        let v = Rng::new(1).normal_vec(200_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "mean {mean} var {var}");
        let ints = Rng::new(3).int_vec(1000, -2, 3).unwrap();
        assert!(ints.iter().all(|&i| (-2..3).contains(&i)));
        assert!(Rng::new(3).int_vec(1, 2, 2).is_err());
    }
}
