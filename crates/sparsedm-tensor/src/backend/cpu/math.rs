//! Scalar f32 functions the CPU kernels inline into their loops: a
//! vectorisable `exp`, `erf`, the logistic function and the normal pdf/cdf
//! (GELU and its derivative).
//!
//! The polynomials use `mul_add`: one fused multiply-add instead of a
//! multiply and an add (on x86 the kernels that inline these run with FMA
//! enabled, `simd.rs`), and exactly rounded on every instruction set, so
//! the levels still agree to the bit. Without hardware FMA (baseline
//! x86-64 before AVX2) `mul_add` is a libm call: correct, slower.

/// eˣ for f32 without a libm call, so loops over it vectorise (scalar
/// `expf` was a tenth of a training step): Cody–Waite range reduction
/// x = n·ln2 + r, a degree-6 polynomial for eʳ on |r| ≤ ln2/2 (Cephes
/// `expf` coefficients), and 2ⁿ built in the exponent bits. Relative error
/// ≤ 3e-7 on [−87, 88]; inputs are clamped to [−87.3, 88.7], so
/// results underflow to ~1e-38 instead of 0 and saturate near f32::MAX.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // 2¹²⁷ is the largest power the exponent bits hold; above x ≈ 88.03 the
    // remainder r grows past ln2/2 and the error to ~1e-5 (rarely matters).
    // Round to nearest by adding and removing 1.5·2²³ (pure arithmetic:
    // `f32::round` is a libm call on baseline x86-64 and blocks vectorising).
    const MAGIC: f32 = 12_582_912.0;
    let n = ((x * std::f32::consts::LOG2_E + MAGIC) - MAGIC).min(127.0);
    let r = n.mul_add(2.121_944_4e-4, (-n).mul_add(0.693_359_4, x));
    let z = r * r;
    let q = 1.987_569_1e-4f32
        .mul_add(r, 1.398_2e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let p = q.mul_add(z, r) + 1.0;
    // 2ⁿ from the bits of n + 1.5·2²³ (exact: n is an integer in [−126,
    // 127], so its low mantissa bits are n): integer vector ops. A float
    // to int `as` cast saturates, and LLVM turns that check into sixteen
    // scalar conversions per AVX-512 vector (most of a softmax's time).
    let n_int = (n + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32;
    p * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// erf(x) as `x·P(x²)/Q(x²)` on x clamped to ±3.92 (where erf is 1 to
/// within f32 rounding): P of degree 5 and Q of degree 5 in x², every Q
/// coefficient positive (so Q ≥ 1), fitted for this crate to the smallest
/// maximum error on [0, 3.92] by iteratively reweighted least squares
/// (Loeb's linearisation with Lawson's weights, in f64); 3.9e-7 measured in
/// f32 over [−8, 8] (`erf_matches_libm`). Ten FMAs, a multiply and a
/// division, against the exponential, division and polynomial of
/// Abramowitz & Stegun 7.1.26 that GELU used before: GELU was a tenth of
/// the demo model's N:M sampling forward. The result is bounded to [−1, 1]
/// (so ±1 exactly in the tails); NaN stays NaN.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-ERF_CLAMP, ERF_CLAMP);
    let t = x * x;
    let (p, q) = (ERF_P, ERF_Q);
    let p = p[5].mul_add(t, p[4]).mul_add(t, p[3]).mul_add(t, p[2]).mul_add(t, p[1]).mul_add(t, p[0]);
    let q = q[5].mul_add(t, q[4]).mul_add(t, q[3]).mul_add(t, q[2]).mul_add(t, q[1]).mul_add(t, q[0]);
    // The fit overshoots ±1 by up to 1e-7 near the clamp; without the
    // bound, GELU(x) = x·Φ(x) of a very negative x came out positive and
    // growing with |x| (PyTorch: −0).
    (x * p / q).clamp(-1.0, 1.0)
}

/// [`erf`]'s clamp.
pub(crate) const ERF_CLAMP: f32 = 3.92;
/// [`erf`]'s numerator; P[0] is the fit's value, close to 2/√π (erf's
/// slope at 0) but not it.
#[allow(clippy::approx_constant)]
pub(crate) const ERF_P: [f32; 6] = [1.128379, 0.19275847, 0.053059794, 0.0038680963, 0.0002874757, 2.034802e-06];
/// [`erf`]'s denominator.
pub(crate) const ERF_Q: [f32; 6] = [1.0, 0.5041594, 0.11508235, 0.01517184, 0.0011880614, 3.807113e-05];

/// Elements per block of [`gelu_block`].
pub(crate) const GELU_BLOCK: usize = 32;

/// `x·Φ(x)` of [`GELU_BLOCK`] values: the operations of `x *
/// normal_cdf(x)` (so the same bits), staged across the block — each step
/// for every element before the next step — so that a vectorised loop
/// holds four (AVX2) or two (AVX-512) independent registers at every step.
/// Element by element, GELU is a chain of ~50 cycles of latency (two
/// 5-step polynomials, a division) that left Zen 3's schedulers too few
/// independent operations: ~13 cycles a register instead of ~7.
#[inline(always)]
pub(crate) fn gelu_block(x: &[f32; GELU_BLOCK], out: &mut [f32; GELU_BLOCK]) {
    const N: usize = GELU_BLOCK;
    let mut xc = [0f32; N];
    let mut t = [0f32; N];
    for i in 0..N {
        xc[i] = (x[i] * std::f32::consts::FRAC_1_SQRT_2).clamp(-ERF_CLAMP, ERF_CLAMP);
        t[i] = xc[i] * xc[i];
    }
    let (mut p, mut q) = ([0f32; N], [0f32; N]);
    for i in 0..N {
        p[i] = ERF_P[5].mul_add(t[i], ERF_P[4]);
        q[i] = ERF_Q[5].mul_add(t[i], ERF_Q[4]);
    }
    for k in (0..4).rev() {
        for i in 0..N {
            p[i] = p[i].mul_add(t[i], ERF_P[k]);
            q[i] = q[i].mul_add(t[i], ERF_Q[k]);
        }
    }
    for i in 0..N {
        let e = (xc[i] * p[i] / q[i]).clamp(-1.0, 1.0);
        out[i] = x[i] * (0.5 * (1.0 + e));
    }
}
/// erf(x) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7 in exact
/// arithmetic, about 5e-7 in f32), given `e = exp(−x²)`: GELU's gradient
/// needs that exponential for the normal density anyway, so there this
/// form costs only its division and polynomial.
#[inline(always)]
fn erf_given_exp(x: f32, e: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let a = x.abs();
    let t = 1.0 / P.mul_add(a, 1.0);
    let poly = t * A[4].mul_add(t, A[3]).mul_add(t, A[2]).mul_add(t, A[1]).mul_add(t, A[0]);
    let y = (-poly).mul_add(e, 1.0);
    y.copysign(x)
}

/// d/dx [x·Φ(x)] = Φ(x) + x·φ(x), with one exponential exp(−x²/2) for both
/// Φ (through erf) and φ.
#[inline(always)]
pub(crate) fn gelu_grad(x: f32) -> f32 {
    let e = fast_exp(-0.5 * x * x);
    let cdf = 0.5 * (1.0 + erf_given_exp(x * std::f32::consts::FRAC_1_SQRT_2, e));
    cdf + x * (e * 0.398_942_3)
}

/// `g·gelu_grad(x)` of [`GELU_BLOCK`] pairs, each step for the whole block
/// before the next (the exponential, then the rest): the same operations
/// per element, so the same bits, with four (AVX2) or two (AVX-512)
/// independent registers at every step instead of one ~70-cycle chain per
/// register (as [`gelu_block`] for the forward).
#[inline(always)]
pub(crate) fn gelu_grad_block(g: &[f32; GELU_BLOCK], x: &[f32; GELU_BLOCK], out: &mut [f32; GELU_BLOCK]) {
    let mut e = [0f32; GELU_BLOCK];
    for i in 0..GELU_BLOCK {
        e[i] = fast_exp(-0.5 * x[i] * x[i]);
    }
    for i in 0..GELU_BLOCK {
        let cdf = 0.5 * (1.0 + erf_given_exp(x[i] * std::f32::consts::FRAC_1_SQRT_2, e[i]));
        out[i] = g[i] * (cdf + x[i] * (e[i] * 0.398_942_3));
    }
}

/// Φ(x) through erf (PyTorch's exact GELU uses the same).
#[inline(always)]
pub(crate) fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

#[cfg(test)]
mod tests {
    /// The staged block gives `x · normal_cdf(x)` to the bit, specials too.
    #[test]
    fn gelu_block_is_the_scalar_gelu() {
        use super::{GELU_BLOCK, gelu_block, normal_cdf};
        let mut xs: Vec<f32> = (-40_000..40_000).map(|i| i as f32 * 2.7e-4).collect();
        xs.extend([0.0, -0.0, 3.92, -3.92, 5.6, -5.6, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE]);
        for c in xs.chunks(GELU_BLOCK) {
            let mut a = [0f32; GELU_BLOCK];
            a[..c.len()].copy_from_slice(c);
            let mut out = [0f32; GELU_BLOCK];
            gelu_block(&a, &mut out);
            for (x, y) in a.iter().zip(out) {
                let want = x * normal_cdf(*x);
                assert!(y.to_bits() == want.to_bits() || (y.is_nan() && want.is_nan()), "gelu({x}): block {y}, scalar {want}");
            }
        }
    }

    /// The staged gradient block gives `g · gelu_grad(x)` to the bit,
    /// specials too.
    #[test]
    fn gelu_grad_block_is_the_scalar_gradient() {
        use super::{GELU_BLOCK, gelu_grad, gelu_grad_block};
        let mut xs: Vec<f32> = (-40_000..40_000).map(|i| i as f32 * 2.7e-4).collect();
        xs.extend([0.0, -0.0, 3.92, -3.92, 13.3, -13.3, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE]);
        for (k, c) in xs.chunks(GELU_BLOCK).enumerate() {
            let (mut x, mut g) = ([0f32; GELU_BLOCK], [0f32; GELU_BLOCK]);
            x[..c.len()].copy_from_slice(c);
            for (i, g) in g.iter_mut().enumerate() {
                *g = [1.0, -0.37, 2.5e3, 0.0][(k + i) % 4];
            }
            let mut out = [0f32; GELU_BLOCK];
            gelu_grad_block(&g, &x, &mut out);
            for ((x, g), y) in x.iter().zip(&g).zip(out) {
                let want = g * gelu_grad(*x);
                assert!(y.to_bits() == want.to_bits() || (y.is_nan() && want.is_nan()), "{g}·gelu'({x}): block {y}, scalar {want}");
            }
        }
    }

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((super::erf(x) - libm::erf(x as f64) as f32).abs());
        }
        assert!(worst < 4.5e-7, "max |erf error| {worst}");
        assert!(super::erf(f32::NAN).is_nan());
        // The tails are ±1 exactly, so x·Φ(x) is −0 for very negative x and
        // x for very positive x, as in PyTorch.
        for x in [4.0f32, 5.0, 100.0, 1e30, f32::INFINITY] {
            assert_eq!((super::erf(x), super::erf(-x)), (1.0, -1.0), "erf(±{x})");
        }
        for x in [-8.0f32, -100.0, -1e6, -1e30] {
            assert_eq!(x * super::normal_cdf(x), 0.0, "gelu({x})");
            assert_eq!(-x * super::normal_cdf(-x), -x, "gelu({})", -x);
        }
    }

    #[test]
    fn gelu_grad_matches_its_parts() {
        for i in -8_000..=8_000 {
            let x = i as f32 * 1e-3;
            let xd = x as f64;
            let want =
                0.5 * (1.0 + libm::erf(xd / std::f64::consts::SQRT_2)) + xd * (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let got = super::gelu_grad(x) as f64;
            assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "x {x}: {got} vs {want}");
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            worst = worst.max(((super::fast_exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 3e-7, "max relative exp error {worst}");
        assert!(super::fast_exp(-1000.0) < 1e-37 && super::fast_exp(1000.0) > 1e38);
        assert!(super::sigmoid(-100.0) < 1e-30 && (super::sigmoid(100.0) - 1.0).abs() < 1e-7);
    }
}
