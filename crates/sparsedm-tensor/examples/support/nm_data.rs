//! Test data shared by the N:M table examples (included with `#[path]`).

/// A deterministic value in [-0.5, 0.5) (an LCG step).
pub fn lcg(state: &mut u64) -> f32 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

/// A weight `[out, inp]` with the `n` largest of every `m` kept (by a
/// pseudo-random score), like a trained mask.
pub fn masked(out: usize, inp: usize, n: usize, m: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut w: Vec<f32> = (0..out * inp).map(|_| lcg(&mut s)).collect();
    for g in w.chunks_mut(m) {
        let mut idx: Vec<usize> = (0..m).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &p in &idx[n..] {
            g[p] = 0.0;
        }
    }
    w
}
