//! Noise schedules against their defining formulas and published numbers.
//!
//! Sources of the reference values (all recomputed here in f64 from the
//! formulas, then pinned as literals):
//! * U-ViT `sde.py` VPSDE: ᾱ(t) = exp(−∫₀ᵗ β) = exp(−(0.1 t + 9.95 t²)).
//! * Ho et al. 2020 / pytorch_diffusion: β = linspace(1e-4, 0.02, 1000),
//!   ᾱ₉₉₉ = ∏(1 − βᵢ) = 4.0358e-5 (the often-quoted "ᾱ_T ≈ 4.04e-5").
//! * U-ViT `train_ldm_discrete.py` / Stable Diffusion: β = linspace(√0.00085,
//!   √0.012, 1000)², ᾱ₉₉₉ = 4.6601e-3 (SD's final `alphas_cumprod` ≈ 0.0047).
//! * Nichol & Dhariwal 2021 eq. 17 with s = 0.008: ᾱ(t) = f(t)/f(0),
//!   f(t) = cos²(π/2·(t+s)/(1+s)); DPM-Solver's cosine_t_max = 0.997998.

use sparsedm_diffusion::schedule::{DiscreteSchedule, NoiseSchedule, ScheduleKind, VpCosine, VpLinear};
use sparsedm_tensor::{Device, Rng, Tensor};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn vp_linear_matches_uvit_formula() {
    let s = VpLinear::uvit();
    for &(t, want) in &[(0.25, 0.523_679_721_522_376_4), (0.5, 0.079_063_812_453_160_69), (1.0, 4.318_574_906_034_135e-5)] {
        let formula = f64::exp(-(0.1 * t + 9.95 * t * t));
        assert!(rel(formula, want) < 1e-14);
        assert!(rel(s.alpha_bar(t), want) < 1e-13, "t {t}: {} vs {want}", s.alpha_bar(t));
        assert!(rel(s.sigma(t).powi(2) + s.alpha(t).powi(2), 1.0) < 1e-14);
        assert!(rel(s.lambda(t), 0.5 * (want / (1.0 - want)).ln()) < 1e-12);
    }
    assert_eq!(s.alpha_bar(0.0), 1.0);
    assert!(rel(s.beta(0.5), 0.1 + 0.5 * 19.9) < 1e-15);
    assert!(rel(s.model_time(0.5), 499.5) < 1e-15);
}

#[test]
fn ddpm_linear_alpha_bar_t_is_4_04e_minus_5() {
    let s = DiscreteSchedule::ddpm_linear();
    // Independent product of (1 − βᵢ), βᵢ = 1e-4 + i·(0.02 − 1e-4)/999.
    let mut prod = 1.0f64;
    for i in 0..1000 {
        prod *= 1.0 - (1e-4 + i as f64 * (0.02 - 1e-4) / 999.0);
    }
    assert!(rel(prod, 4.035_829_765_375_675e-5) < 1e-12);
    assert!(rel(s.alphas_cumprod()[999], prod) < 1e-10, "{}", s.alphas_cumprod()[999]);
    assert!(rel(s.alphas_cumprod()[0], 1.0 - 1e-4) < 1e-15);
    // Continuous-time embedding: step n at t = (n+1)/N, model time n.
    assert!(rel(s.alpha_bar(1.0), prod) < 1e-10);
    assert!(rel(s.alpha_bar(0.5), s.alphas_cumprod()[499]) < 1e-12);
    assert!((s.model_time(s.step_time(499)) - 499.0).abs() < 1e-9);
    assert_eq!(s.step_model_time(0), 0.0);
}

#[test]
fn scaled_linear_matches_stable_diffusion() {
    let s = DiscreteSchedule::scaled_linear();
    let (a, b) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    let mut prod = 1.0f64;
    for i in 0..1000 {
        let beta = (a + i as f64 * (b - a) / 999.0).powi(2);
        prod *= 1.0 - beta;
    }
    assert!(rel(prod, 4.660_098_513_077_234e-3) < 1e-12);
    assert!(rel(s.alphas_cumprod()[999], prod) < 1e-10);
    assert!(rel(s.betas()[0], 0.00085) < 1e-12 && rel(s.betas()[999], 0.012) < 1e-12);
    // U-ViT's LDMs number the steps 1…1000.
    assert_eq!(s.step_model_time(0), 1.0);
    assert!((s.model_time(1.0) - 1000.0).abs() < 1e-9);
}

#[test]
fn cosine_matches_nichol_dhariwal() {
    let s = VpCosine::default();
    let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    for &t in &[0.1, 0.5, 0.9] {
        assert!(rel(s.alpha_bar(t), f(t) / f(0.0)) < 1e-13);
    }
    assert!(rel(s.alpha_bar(0.5), 0.493_843_590_440_637_75) < 1e-12);
    assert!(rel(s.t_max(), 0.997_998_004_493_136_5) < 1e-12);
    assert!(rel(s.beta(s.t_max()), 999.0) < 1e-9);
}

/// x_t = √ᾱ(t)·x₀ + √(1−ᾱ(t))·ε holds element-wise; times are uniform on
/// [0, T) (continuous) or uniform steps (discrete); ε is standard normal.
#[test]
fn training_triples() {
    let dev = Device::Cpu;
    let b = 4096;
    let x0 = Tensor::full(0.5, &[b, 1, 2, 2], &dev).unwrap();
    for kind in ScheduleKind::ALL {
        let s = kind.build();
        let tr = s.sample_training(&x0, &mut Rng::new(11)).unwrap();
        assert_eq!(tr.x_t.shape(), x0.shape());
        let (t, mt, eps, xt) =
            (tr.t.to_vec_f32().unwrap(), tr.model_t.to_vec_f32().unwrap(), tr.eps.to_vec_f32().unwrap(), tr.x_t.to_vec_f32().unwrap());
        for i in 0..b {
            let ti = t[i] as f64;
            assert!((mt[i] as f64 - s.model_time(ti)).abs() < 1e-3 * s.model_time(ti).max(1.0));
            for j in 0..4 {
                let want = s.alpha(ti) * 0.5 + s.sigma(ti) * eps[4 * i + j] as f64;
                assert!((xt[4 * i + j] as f64 - want).abs() < 1e-5, "{kind}");
            }
        }
        // Mean time T/2 (continuous) or (N+1)/(2N) (discrete), within 5 standard errors (sd ≈ T/√12).
        let mean_t = t.iter().map(|&v| v as f64).sum::<f64>() / b as f64;
        let want_t = match s.discrete() {
            Some(d) => (d.num_steps() + 1) as f64 / (2.0 * d.num_steps() as f64),
            None => s.t_max() / 2.0,
        };
        assert!((mean_t - want_t).abs() < 5.0 * s.t_max() / (12.0f64.sqrt() * (b as f64).sqrt()), "{kind}: {mean_t}");
        if let Some(d) = s.discrete() {
            let lo = d.first_model_index() as f32;
            assert!(mt.iter().all(|&m| m.fract() == 0.0 && m >= lo && m < lo + 1000.0));
        }
        let n = eps.len() as f64;
        let m = eps.iter().map(|&v| v as f64).sum::<f64>() / n;
        let v = eps.iter().map(|&e| (e as f64 - m).powi(2)).sum::<f64>() / n;
        assert!(m.abs() < 5.0 / n.sqrt() && (v - 1.0).abs() < 5.0 * (2.0 / n).sqrt(), "{kind}: eps mean {m} var {v}");
    }
    // Reproducible from the seed.
    let s = VpLinear::uvit();
    let a = s.sample_training(&x0, &mut Rng::new(3)).unwrap().x_t.to_vec_f32().unwrap();
    let b2 = s.sample_training(&x0, &mut Rng::new(3)).unwrap().x_t.to_vec_f32().unwrap();
    assert_eq!(a, b2);
    assert!(s.sample_training(&Tensor::scalar(1.0, &dev).unwrap(), &mut Rng::new(0)).is_err());
}
