//! xorshift64*: deterministic test data without a dependency, shared by
//! the N:M kernel tests (`mod xorshift;` in each).

pub struct Rng(pub u64);

#[allow(dead_code)] // Not every test binary uses every method.
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn normal_ish(&mut self) -> f32 {
        // Sum of uniforms in [-1, 1): varied signs and magnitudes.
        (0..3).map(|_| (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).sum()
    }
    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.normal_ish()).collect()
    }
}
