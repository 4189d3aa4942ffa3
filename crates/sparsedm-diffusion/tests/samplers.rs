//! Every sampler against the exact optimal denoiser of Gaussian data.
//!
//! For data x₀ ~ N(μ, s²I) the forward marginal is q(x_t) = N(√ᾱ μ, (ᾱs² + 1 − ᾱ) I)
//! and the minimum-MSE noise prediction is
//!
//! ```text
//! ε*(x_t, t) = √(1−ᾱ) (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ).
//! ```
//!
//! The probability-flow ODE then transports q(x_T) to q(x_t) by the affine map
//! that keeps the standardised variable fixed (both are Gaussian and the flow
//! is affine and increasing):
//!
//! ```text
//! z = (x_T − √ᾱ_T μ)/√(ᾱ_T s² + 1 − ᾱ_T),    x_t = √ᾱ_t μ + √(ᾱ_t s² + 1 − ᾱ_t) · z.
//! ```
//!
//! Checks: (1) sample mean and variance of many samples against the target law
//! within 5 standard errors plus the sampler's own discretisation bias, which
//! for the stochastic samplers is computed exactly (their updates are affine
//! in x for this ε*, so mean and variance propagate in closed form); (2) the
//! ODE solvers' error against the exact map shrinks at their order.

use sparsedm_diffusion::sampler::{self, SamplerKind, SamplerOptions, ddpm::respaced_steps, sde::em_time_grid};
use sparsedm_diffusion::schedule::{DiscreteSchedule, NoiseSchedule, ScheduleKind, VpCosine, VpLinear};
use sparsedm_diffusion::{ClassifierFreeGuidance, EpsModel, Result};
use sparsedm_tensor::{Device, Rng, Tensor};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The exact ε* of N(μ_y, s²) data (μ_y = μ + shift·y when labels are given).
struct GaussianEps<'a> {
    schedule: &'a dyn NoiseSchedule,
    mu: f64,
    var: f64,
    label_shift: f64,
    calls: AtomicUsize,
}

impl<'a> GaussianEps<'a> {
    fn new(schedule: &'a dyn NoiseSchedule, mu: f64, sd: f64) -> Self {
        GaussianEps { schedule, mu, var: sd * sd, label_shift: 0.0, calls: AtomicUsize::new(0) }
    }
}

impl EpsModel for GaussianEps<'_> {
    fn predict_eps(&self, x: &Tensor, t: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let b = x.shape()[0];
        let per = x.elem_count() / b;
        let (xv, tv) = (x.to_vec_f32()?, t.to_vec_f32()?);
        let yv = match y {
            Some(y) => y.to_vec_i64()?,
            None => vec![0; b],
        };
        let mut out = vec![0f32; xv.len()];
        for i in 0..b {
            let tt = self.schedule.time_from_model_time(tv[i] as f64);
            let (ab, sig) = (self.schedule.alpha_bar(tt), self.schedule.sigma(tt));
            let mu = self.mu + self.label_shift * yv[i] as f64;
            let k = sig / (ab * self.var + sig * sig);
            let c = ab.sqrt() * mu;
            for j in i * per..(i + 1) * per {
                out[j] = (k * (xv[j] as f64 - c)) as f32;
            }
        }
        Ok(Tensor::from_vec(out, x.shape(), &x.device())?)
    }
}

/// √(ᾱ s² + 1 − ᾱ) at t.
fn marginal_sd(s: &dyn NoiseSchedule, var: f64, t: f64) -> f64 {
    (s.alpha_bar(t) * var + s.sigma(t).powi(2)).sqrt()
}

/// The exact PF-ODE map from t_from to t_to.
fn exact_flow(s: &dyn NoiseSchedule, mu: f64, var: f64, x: f64, t_from: f64, t_to: f64) -> f64 {
    let z = (x - s.alpha(t_from) * mu) / marginal_sd(s, var, t_from);
    s.alpha(t_to) * mu + marginal_sd(s, var, t_to) * z
}

fn mean_var(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (m, v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / (n - 1.0))
}

/// Least-squares slope of −log(err) against log(nfe).
fn order_slope(nfe: &[usize], err: &[f64]) -> f64 {
    let xs: Vec<f64> = nfe.iter().map(|&n| (n as f64).ln()).collect();
    let ys: Vec<f64> = err.iter().map(|e| e.ln()).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    -cov / var
}

fn sci(v: &[f64]) -> String {
    v.iter().map(|e| format!("{e:.3e}")).collect::<Vec<_>>().join(", ")
}

const DEV: Device = Device::Cpu;

// ---------------------------------------------------------------------------
// Convergence of the ODE solvers.

/// Max error over 64 starting points x_T ∈ [−3, 3] for each step count.
fn ode_errors(
    kind: SamplerKind,
    schedule: &dyn NoiseSchedule,
    steps: &[usize],
    exact: &dyn Fn(f64) -> f64,
    (mu, sd): (f64, f64),
) -> Vec<f64> {
    let model = GaussianEps::new(schedule, mu, sd);
    let xs: Vec<f32> = (0..64).map(|i| -3.0 + 6.0 * i as f32 / 63.0).collect();
    let x_init = Tensor::from_vec(xs.clone(), &[64, 1, 1, 1], &DEV).unwrap();
    steps
        .iter()
        .map(|&n| {
            let out = sampler::sample(kind, &model, schedule, &x_init, None, &SamplerOptions::new(n), &mut Rng::new(0)).unwrap();
            let out = out.to_vec_f32().unwrap();
            xs.iter().zip(&out).map(|(&x, &o)| (o as f64 - exact(x as f64)).abs()).fold(0.0, f64::max)
        })
        .collect()
}

fn check_order(name: &str, nfe: &[usize], err: &[f64], order: f64) {
    let slope = order_slope(nfe, err);
    println!("{name}: NFE {nfe:?} max|err| {} slope {slope:.3}", sci(err));
    assert!(slope >= order - 0.3, "{name}: slope {slope:.3} < {order} − 0.3 (errors {err:?} at NFE {nfe:?})");
    assert!(err.windows(2).all(|w| w[1] < w[0]), "{name}: errors do not decrease: {err:?}");
}

const DATA: (f64, f64) = (0.5, 0.7);

/// Exact ODE map of DDIM's discrete chain: the PF-ODE from step N−1 to step 0,
/// then DDIM's last update to ᾱ = 1, which returns x̂₀ = (x − σ₀ε*)/α₀ at step 0.
fn ddim_exact(d: &DiscreteSchedule, (mu, sd): (f64, f64), x: f64) -> f64 {
    let var = sd * sd;
    let t0 = d.step_time(0);
    let x_t0 = exact_flow(d, mu, var, x, d.step_time(d.num_steps() - 1), t0);
    let e = d.sigma(t0) / marginal_sd(d, var, t0).powi(2) * (x_t0 - d.alpha(t0) * mu);
    (x_t0 - d.sigma(t0) * e) / d.alpha(t0)
}

/// Steps per solver (NFE = steps except DPM-Solver-k: ⌊steps/k⌋·k) chosen in
/// the asymptotic range: the error at the smallest count is < 1 and at the
/// largest well above f32 round-off (~1e-6 for outputs of size 3).
#[test]
fn ode_solvers_converge_at_their_order() {
    let vp = VpLinear::uvit();
    let (mu, sd) = DATA;
    let t_end = vp.default_t_end();
    let to_t_end = |x: f64| exact_flow(&vp, mu, sd * sd, x, vp.t_max(), t_end);
    let to_zero = |x: f64| exact_flow(&vp, mu, sd * sd, x, vp.t_max(), 0.0);
    type Case<'a> = (SamplerKind, [usize; 3], f64, &'a dyn Fn(f64) -> f64);
    let cases: [Case<'_>; 5] = [
        (SamplerKind::PfOde, [40, 80, 160], 1.0, &to_zero),
        (SamplerKind::DpmSolver1, [10, 20, 40], 1.0, &to_t_end),
        (SamplerKind::DpmSolver2, [20, 40, 80], 2.0, &to_t_end),
        (SamplerKind::DpmSolver3, [30, 60, 120], 3.0, &to_t_end),
        (SamplerKind::DpmSolverPp2M, [20, 40, 80], 2.0, &to_t_end),
    ];
    for (kind, steps, order, exact) in cases {
        let err = ode_errors(kind, &vp, &steps, exact, DATA);
        check_order(&format!("{kind} (vp-linear)"), &steps, &err, order);
    }
}

/// DDIM(η = 0) is first order on both discrete schedules; DPM-Solver runs on
/// the discrete schedules' continuous-time embedding and on the cosine
/// schedule at the same orders.
#[test]
fn ode_solvers_converge_on_other_schedules() {
    let (mu, sd) = DATA;
    for d in [DiscreteSchedule::ddpm_linear(), DiscreteSchedule::scaled_linear()] {
        let exact = |x: f64| ddim_exact(&d, DATA, x);
        let steps = [10, 20, 40];
        let err = ode_errors(SamplerKind::Ddim, &d, &steps, &exact, DATA);
        check_order(&format!("ddim η=0 ({})", d.name()), &steps, &err, 1.0);
        let t_end = d.default_t_end();
        let exact = |x: f64| exact_flow(&d, mu, sd * sd, x, d.t_max(), t_end);
        let steps = [20, 40, 80];
        let err = ode_errors(SamplerKind::DpmSolverPp2M, &d, &steps, &exact, DATA);
        check_order(&format!("dpm-solver++2m ({})", d.name()), &steps, &err, 2.0);
    }
    let cos = VpCosine::default();
    let exact = |x: f64| exact_flow(&cos, mu, sd * sd, x, cos.t_max(), cos.default_t_end());
    let steps = [30, 60, 120];
    let err = ode_errors(SamplerKind::DpmSolver3, &cos, &steps, &exact, DATA);
    check_order("dpm-solver-3 (vp-cosine)", &steps, &err, 3.0);
    let steps = [20, 40, 80];
    let err = ode_errors(SamplerKind::DpmSolver2, &cos, &steps, &exact, DATA);
    check_order("dpm-solver-2 (vp-cosine)", &steps, &err, 2.0);
}

// ---------------------------------------------------------------------------
// Moments of many samples.

/// Number of samples × values per sample in the moment tests.
const BATCH: [usize; 4] = [4096, 1, 2, 2];

/// Mean and variance of the output when x_T ~ N(0, I), propagated exactly
/// through a stochastic sampler's update: with ε* = k(x − c) every update is
/// x' = A x + B + √V z, so (m, v) ← (A m + B, A² v + V).
type Moments = (f64, f64);

fn em_law(s: &dyn NoiseSchedule, (mu, sd): (f64, f64), steps: usize) -> Moments {
    let grid = em_time_grid(s.t_max(), sampler::UVIT_EM_EPS, steps);
    let (mut m, mut v) = (0.0, 1.0);
    for k in (1..grid.len()).rev() {
        let (ts, t) = (grid[k - 1], grid[k]);
        let dt = ts - t;
        let (beta, sig) = (s.beta(t), s.sigma(t));
        let kk = sig / marginal_sd(s, sd * sd, t).powi(2);
        let c = s.alpha(t) * mu;
        // x' = x + (−½β x + β ε*/σ) dt + √β √(−dt) z      (U-ViT ReverseSDE + euler_maruyama)
        let a = 1.0 - 0.5 * beta * dt + beta / sig * dt * kk;
        let b = -beta / sig * dt * kk * c;
        (m, v) = (a * m + b, a * a * v + if ts != 0.0 { beta * -dt } else { 0.0 });
    }
    (m, v)
}

fn ddpm_ddim_law(d: &DiscreteSchedule, (mu, sd): (f64, f64), steps: usize, ddim_eta: Option<f64>) -> Moments {
    let tau = respaced_steps(d.num_steps(), steps).unwrap();
    let ab = d.alphas_cumprod();
    let (mut m, mut v) = (0.0, 1.0);
    for k in (0..tau.len()).rev() {
        let (ab_t, ab_prev) = (ab[tau[k]], if k == 0 { 1.0 } else { ab[tau[k - 1]] });
        let kk = (1.0 - ab_t).sqrt() / (ab_t * sd * sd + 1.0 - ab_t);
        let c = ab_t.sqrt() * mu;
        // x̂₀ = p x − q ε* = (p − q k) x + q k c
        let (p, q) = ((1.0 / ab_t).sqrt(), (1.0 / ab_t - 1.0).sqrt());
        let (x0a, x0b) = (p - q * kk, q * kk * c);
        let (a, b, noise) = match ddim_eta {
            None => {
                // Ho eq. 7 posterior mean, fixed-large variance β, none at the last step.
                let beta = 1.0 - ab_t / ab_prev;
                let c1 = beta * ab_prev.sqrt() / (1.0 - ab_t);
                let c2 = (1.0 - ab_prev) * (1.0 - beta).sqrt() / (1.0 - ab_t);
                (c1 * x0a + c2, c1 * x0b, if k > 0 { beta } else { 0.0 })
            }
            Some(eta) => {
                // Song et al. eq. 12.
                let sig = eta * ((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)).sqrt();
                let ce = (1.0 - ab_prev - sig * sig).max(0.0).sqrt();
                (ab_prev.sqrt() * x0a + ce * kk, ab_prev.sqrt() * x0b - ce * kk * c, sig * sig)
            }
        };
        (m, v) = (a * m + b, a * a * v + noise);
    }
    (m, v)
}

/// The output law of a deterministic sampler for x_T ~ N(0, I): it is affine
/// in x_T for this ε*, x₀ = a·x_T + b, so the law is N(b, a²); a and b are
/// read off two runs (x_T = 0 and 1).
fn ode_law(kind: SamplerKind, s: &dyn NoiseSchedule, (mu, sd): (f64, f64), opts: &SamplerOptions) -> Moments {
    let model = GaussianEps::new(s, mu, sd);
    let x = Tensor::from_vec(vec![0.0, 1.0], &[2, 1, 1, 1], &DEV).unwrap();
    let o = sampler::sample(kind, &model, s, &x, None, opts, &mut Rng::new(0)).unwrap().to_vec_f32().unwrap();
    let (b, a) = (o[0] as f64, (o[1] - o[0]) as f64);
    (b, a * a)
}

struct MomentCase<'a> {
    kind: SamplerKind,
    schedule: &'a dyn NoiseSchedule,
    data: (f64, f64),
    opts: SamplerOptions,
    /// Law of the discretised sampler (exact, see above).
    law: Moments,
    /// Law the sampler approximates: the data (samplers that end at t = 0)
    /// or q(x_{t_end}) (DPM-Solver's t_end).
    target: Moments,
    /// Allowed |law − target| for the mean (absolute) and the variance
    /// (relative): the discretisation bias justified by the step count.
    bias: (f64, f64),
}

fn run_moment_case(c: &MomentCase<'_>, seed: u64) {
    let model = GaussianEps::new(c.schedule, c.data.0, c.data.1);
    let x_init = Tensor::randn(&BATCH, &mut Rng::new(seed), &DEV).unwrap();
    let out = sampler::sample(c.kind, &model, c.schedule, &x_init, None, &c.opts, &mut Rng::new(seed + 1)).unwrap();
    let out = out.to_vec_f32().unwrap();
    let n = out.len() as f64;
    let (m, v) = mean_var(&out);
    let (lm, lv) = c.law;
    let (tm, tv) = c.target;
    // Standard errors of the sample mean and the (unbiased) sample variance of n Gaussian values.
    let (se_m, se_v) = ((lv / n).sqrt(), lv * (2.0 / (n - 1.0)).sqrt());
    let name = format!("{} ({}, {} steps, η {})", c.kind, c.schedule.name(), c.opts.steps, c.opts.eta);
    println!(
        "{name}: sample mean {m:.5} var {v:.5} | sampler law {lm:.5} {lv:.5} | target {tm:.5} {tv:.5} | \
         |mean−target| {:.2e} |var−target|/var {:.2e} | 5 SE {:.2e} {:.2e}",
        (m - tm).abs(),
        (v - tv).abs() / tv,
        5.0 * se_m,
        5.0 * se_v
    );
    assert!((m - lm).abs() < 5.0 * se_m, "{name}: sample mean {m} vs law {lm} (5 SE = {})", 5.0 * se_m);
    assert!((v - lv).abs() < 5.0 * se_v, "{name}: sample variance {v} vs law {lv} (5 SE = {})", 5.0 * se_v);
    assert!((lm - tm).abs() < c.bias.0, "{name}: discretisation bias of the mean {} > {}", (lm - tm).abs(), c.bias.0);
    assert!((lv - tv).abs() / tv < c.bias.1, "{name}: relative variance bias {} > {}", (lv - tv).abs() / tv, c.bias.1);
    // Together: within 5 SE + the allowed bias of the target.
    assert!((m - tm).abs() < 5.0 * se_m + c.bias.0 && (v - tv).abs() < 5.0 * se_v + c.bias.1 * tv);
}

/// Euler–Maruyama (U-ViT's 1000 steps and a short 100-step run), DDPM
/// (Ho's 1000 steps with clipping, and 100 respaced steps) and DDIM with
/// η = 1 and η = 0.5. The target is the data law N(μ, s²).
///
/// Bias budgets (exact law − target, from [`em_law`] / [`ddpm_ddim_law`]):
/// the O(1/N) error of the first-order discretisations, the fixed-large
/// variance of DDPM (≈ +0.9 % of s² = 0.04 at N = 1000), the fixed-small
/// ("posterior") variance of DDIM η = 1 (≈ −1.2 % at N = 1000) and η = 0.5 at
/// N = 100 (−4.7 %), and the prior mismatch x_T ~ N(0, I) instead of
/// N(√ᾱ_T μ, …): ≤ 3.5e-3 on the mean for the VP schedules, up to 0.024 for
/// scaled-linear, whose ᾱ_T = 4.7e-3 is far from 0 (deterministic samplers
/// keep all of it; stochastic ones forget part).
#[test]
fn stochastic_samplers_match_the_data_moments() {
    let vp = VpLinear::uvit();
    let cos = VpCosine::default();
    let ddpm_lin = DiscreteSchedule::ddpm_linear();
    let sl = DiscreteSchedule::scaled_linear();
    // DDPM clips x̂₀ to [−1, 1]: data N(0.2, 0.2²) puts only 3e-5 of the mass beyond ±1 (4 sd).
    let clip_data = (0.2, 0.2);
    let data_law = (DATA.0, DATA.1 * DATA.1);
    let mk = |steps: usize, eta: f64, clip: Option<bool>| SamplerOptions { eta, clip_denoised: clip, ..SamplerOptions::new(steps) };
    #[rustfmt::skip]
    let cases = [
        // law − target: mean 3.2e-4, variance +0.12 %
        MomentCase { kind: SamplerKind::EulerMaruyama, schedule: &vp, data: DATA, opts: mk(1000, 0.0, None), law: em_law(&vp, DATA, 1000), target: data_law, bias: (2e-3, 5e-3) },
        // mean 3.3e-3, variance +1.5 %
        MomentCase { kind: SamplerKind::EulerMaruyama, schedule: &vp, data: DATA, opts: mk(100, 0.0, None), law: em_law(&vp, DATA, 100), target: data_law, bias: (0.01, 0.03) },
        // mean 4.9e-4, variance +0.2 %
        MomentCase { kind: SamplerKind::EulerMaruyama, schedule: &cos, data: DATA, opts: mk(500, 0.0, None), law: em_law(&cos, DATA, 500), target: data_law, bias: (3e-3, 0.01) },
        // mean < 1e-5, variance +0.93 %
        MomentCase { kind: SamplerKind::Ddpm, schedule: &ddpm_lin, data: clip_data, opts: mk(1000, 0.0, None), law: ddpm_ddim_law(&ddpm_lin, clip_data, 1000, None), target: (0.2, 0.04), bias: (2e-3, 0.015) },
        // mean 1.1e-3, variance +0.88 %
        MomentCase { kind: SamplerKind::Ddpm, schedule: &sl, data: DATA, opts: mk(100, 0.0, Some(false)), law: ddpm_ddim_law(&sl, DATA, 100, None), target: data_law, bias: (5e-3, 0.02) },
        // mean 1e-5, variance −1.2 %
        MomentCase { kind: SamplerKind::Ddim, schedule: &ddpm_lin, data: DATA, opts: mk(1000, 1.0, None), law: ddpm_ddim_law(&ddpm_lin, DATA, 1000, Some(1.0)), target: data_law, bias: (2e-3, 0.02) },
        // mean 0.011 (prior mismatch), variance −4.7 %
        MomentCase { kind: SamplerKind::Ddim, schedule: &sl, data: DATA, opts: mk(100, 0.5, None), law: ddpm_ddim_law(&sl, DATA, 100, Some(0.5)), target: data_law, bias: (0.02, 0.07) },
    ];
    for (i, c) in cases.iter().enumerate() {
        run_moment_case(c, 100 + 10 * i as u64);
    }
}

/// The law of `exact(x_T)` for x_T ~ N(0, I) (`exact` is affine).
fn pushforward(exact: &dyn Fn(f64) -> f64) -> Moments {
    let (b, a) = (exact(0.0), exact(1.0) - exact(0.0));
    (b, a * a)
}

/// The deterministic samplers at practical step counts. Their output law is
/// N(b, a²) for the affine map x_T ↦ a·x_T + b they compute; the target is
/// the exact PF-ODE map's pushforward of N(0, I) (which keeps the prior
/// mismatch, so the bias left is the discretisation alone: O(h^k), the error
/// the convergence tests measure). Budgets ≈ 1.5–2× the exact biases noted.
#[test]
fn ode_samplers_match_the_data_moments() {
    let vp = VpLinear::uvit();
    let ddpm_lin = DiscreteSchedule::ddpm_linear();
    let sl = DiscreteSchedule::scaled_linear();
    let var = DATA.1 * DATA.1;
    let vp_0 = pushforward(&|x| exact_flow(&vp, DATA.0, var, x, vp.t_max(), 0.0));
    let vp_end = pushforward(&|x| exact_flow(&vp, DATA.0, var, x, vp.t_max(), vp.default_t_end()));
    let sl_end = pushforward(&|x| exact_flow(&sl, DATA.0, var, x, sl.t_max(), sl.default_t_end()));
    let ddim_lin = pushforward(&|x| ddim_exact(&ddpm_lin, DATA, x));
    let ddim_sl = pushforward(&|x| ddim_exact(&sl, DATA, x));
    type Case<'a> = (SamplerKind, &'a dyn NoiseSchedule, usize, Moments, (f64, f64));
    #[rustfmt::skip]
    let cases: [Case<'_>; 9] = [
        (SamplerKind::PfOde, &vp, 250, vp_0, (2e-3, 5e-3)),             // U-ViT's Euler ODE
        (SamplerKind::DpmSolver1, &vp, 400, vp_end, (2e-3, 0.02)),      // first order: variance −1.2 %
        (SamplerKind::DpmSolver2, &vp, 100, vp_end, (2e-3, 0.01)),      // +0.48 %
        (SamplerKind::DpmSolver3, &vp, 60, vp_end, (2e-3, 2e-3)),       // +0.04 %
        (SamplerKind::DpmSolverFast, &vp, 50, vp_end, (2e-3, 2e-3)),    // U-ViT's FID-10k sampler: +0.07 %
        (SamplerKind::DpmSolverPp2M, &vp, 50, vp_end, (2e-3, 0.01)),    // +0.45 %
        (SamplerKind::DpmSolverPp2M, &sl, 50, sl_end, (2e-3, 0.01)),
        (SamplerKind::Ddim, &ddpm_lin, 400, ddim_lin, (2e-3, 0.02)),    // first order: −1.2 %
        (SamplerKind::Ddim, &sl, 400, ddim_sl, (2e-3, 0.02)),
    ];
    for (i, (kind, s, steps, target, bias)) in cases.into_iter().enumerate() {
        let opts = SamplerOptions::new(steps);
        let law = ode_law(kind, s, DATA, &opts);
        run_moment_case(&MomentCase { kind, schedule: s, data: DATA, opts, law, target, bias }, 500 + 10 * i as u64);
    }
}

// ---------------------------------------------------------------------------
// Guidance, evaluation counts, randomness, errors.

/// For two Gaussians with the same variance, ε* is k(x − √ᾱ μ) with the same
/// k, so the guided (1 + w)ε*_y − w ε*_∅ is the ε* of N((1 + w)μ_y − w μ_∅, s²):
/// guided samples must have that mean. Labels y ∈ {0, 1, 2}, null class 3,
/// μ_y = 0.5 + 0.4·y, w = 0.5 → means 0.5 + 0.4·(1.5 y − 1.5).
#[test]
fn classifier_free_guidance_shifts_the_class_means() {
    let vp = VpLinear::uvit();
    let mut model = GaussianEps::new(&vp, 0.5, 0.3);
    model.label_shift = 0.4;
    let guided = ClassifierFreeGuidance::uvit(&model, 0.5, 4).unwrap();
    let per_class = 1024;
    let y: Vec<i64> = (0..3 * per_class).map(|i| (i / per_class) as i64).collect();
    let y = Tensor::from_vec_i64(y, &[3 * per_class], &DEV).unwrap();
    let x = Tensor::randn(&[3 * per_class, 1, 1, 1], &mut Rng::new(7), &DEV).unwrap();
    let opts = SamplerOptions::new(50);
    let out = sampler::sample(SamplerKind::DpmSolverPp2M, &guided, &vp, &x, Some(&y), &opts, &mut Rng::new(8)).unwrap();
    let out = out.to_vec_f32().unwrap();
    for c in 0..3 {
        let (m, v) = mean_var(&out[c * per_class..(c + 1) * per_class]);
        let want = 0.5 + 0.4 * (1.5 * c as f64 - 1.5);
        // 5 standard errors of the mean (sd 0.3) plus the prior mismatch/discretisation (< 3e-3).
        assert!((m - want).abs() < 5.0 * 0.3 / (per_class as f64).sqrt() + 3e-3, "class {c}: mean {m} want {want}");
        assert!((v - 0.09).abs() < 5.0 * 0.09 * (2.0 / per_class as f64).sqrt() + 2e-3, "class {c}: var {v}");
    }
    // w = 0 is the conditional model, one evaluation per step.
    model.calls.store(0, Ordering::Relaxed);
    let plain = ClassifierFreeGuidance::uvit(&model, 0.0, 4).unwrap();
    sampler::sample(SamplerKind::DpmSolverPp2M, &plain, &vp, &x, Some(&y), &opts, &mut Rng::new(8)).unwrap();
    assert_eq!(model.calls.load(Ordering::Relaxed), 50);
    // Guidance needs labels.
    assert!(sampler::sample(SamplerKind::DpmSolverPp2M, &guided, &vp, &x, None, &opts, &mut Rng::new(8)).is_err());
}

/// Network evaluations per run: DPM-Solver-k ⌊steps/k⌋·k, everything else `steps`.
#[test]
fn evaluation_counts() {
    let vp = VpLinear::uvit();
    let d = DiscreteSchedule::ddpm_linear();
    let x = Tensor::randn(&[2, 1, 2, 2], &mut Rng::new(1), &DEV).unwrap();
    for kind in SamplerKind::ALL {
        let s: &dyn NoiseSchedule = if kind.needs_discrete() == Some(true) { &d } else { &vp };
        let model = GaussianEps::new(s, 0.0, 1.0);
        let opts = SamplerOptions::new(20);
        let out = sampler::sample(kind, &model, s, &x, None, &opts, &mut Rng::new(2)).unwrap();
        assert_eq!(out.shape(), x.shape());
        let want = match kind {
            SamplerKind::DpmSolver3 => 18,
            _ => 20,
        };
        assert_eq!(model.calls.load(Ordering::Relaxed), want, "{kind}");
        assert_eq!(kind.name().parse::<SamplerKind>().unwrap(), kind);
    }
    assert!("dpm-solver-4".parse::<SamplerKind>().is_err());
}

/// `SamplerKind::min_steps` and `check_use` say what sampling accepts: every sampler runs
/// `min_steps` steps on a schedule `check_use` accepts and refuses one step fewer, and
/// `check_use` refuses exactly the schedules the sampler refuses.
#[test]
fn check_use_agrees_with_the_samplers() {
    let vp = VpLinear::uvit();
    let d = DiscreteSchedule::ddpm_linear();
    let x = Tensor::randn(&[1, 1, 2, 2], &mut Rng::new(1), &DEV).unwrap();
    for kind in SamplerKind::ALL {
        for (s, discrete) in [(&vp as &dyn NoiseSchedule, false), (&d, true)] {
            let model = GaussianEps::new(s, 0.0, 1.0);
            let run = |steps: usize| sampler::sample(kind, &model, s, &x, None, &SamplerOptions::new(steps), &mut Rng::new(2));
            let min = kind.min_steps();
            assert_eq!(kind.check_use(min, discrete).is_ok(), run(min).is_ok(), "{kind} with {min} steps, discrete {discrete}");
            if kind.check_use(min, discrete).is_ok() {
                assert!(kind.check_use(min - 1, discrete).is_err() && run(min - 1).is_err(), "{kind}: {} steps", min - 1);
            }
        }
    }
    let e = SamplerKind::DpmSolver3.check_use(2, false).unwrap_err().to_string();
    assert!(e.contains("dpm-solver-3 needs at least 3 steps, got 2"), "{e}");
    let e = SamplerKind::Ddpm.check_use(50, false).unwrap_err().to_string();
    assert!(e.contains("ddpm needs a discrete noise schedule (ddpm-linear, scaled-linear)"), "{e}");
}

/// Randomness comes only from the rng passed in: the same seed gives the
/// same samples, another seed others; deterministic samplers ignore it.
#[test]
fn randomness_is_explicit() {
    let vp = VpLinear::uvit();
    let d = DiscreteSchedule::ddpm_linear();
    let x = Tensor::randn(&[4, 1, 2, 2], &mut Rng::new(1), &DEV).unwrap();
    let run = |kind: SamplerKind, s: &dyn NoiseSchedule, eta: f64, seed: u64| {
        let model = GaussianEps::new(s, 0.1, 0.5);
        let opts = SamplerOptions { eta, ..SamplerOptions::new(10) };
        sampler::sample(kind, &model, s, &x, None, &opts, &mut Rng::new(seed)).unwrap().to_vec_f32().unwrap()
    };
    for (kind, s, eta) in
        [(SamplerKind::EulerMaruyama, &vp as &dyn NoiseSchedule, 0.0), (SamplerKind::Ddpm, &d, 0.0), (SamplerKind::Ddim, &d, 1.0)]
    {
        assert!(kind.is_stochastic(eta));
        assert_eq!(run(kind, s, eta, 5), run(kind, s, eta, 5), "{kind}");
        assert_ne!(run(kind, s, eta, 5), run(kind, s, eta, 6), "{kind}");
    }
    for (kind, s) in [(SamplerKind::PfOde, &vp as &dyn NoiseSchedule), (SamplerKind::DpmSolver3, &vp), (SamplerKind::Ddim, &d)] {
        assert!(!kind.is_stochastic(0.0));
        assert_eq!(run(kind, s, 0.0, 5), run(kind, s, 0.0, 6), "{kind}");
    }
    // Stochastic samplers advance the stream; deterministic ones leave it alone.
    let model = GaussianEps::new(&vp, 0.0, 1.0);
    let mut rng = Rng::new(9);
    sampler::sample(SamplerKind::DpmSolver2, &model, &vp, &x, None, &SamplerOptions::new(10), &mut rng).unwrap();
    assert_eq!(rng.state(), (9, 0));
    sampler::sample(SamplerKind::EulerMaruyama, &model, &vp, &x, None, &SamplerOptions::new(10), &mut rng).unwrap();
    assert_ne!(rng.state(), (9, 0));
}

/// Wrong schedules, step counts, end times and labels are errors.
#[test]
fn bad_inputs_are_errors() {
    let vp = VpLinear::uvit();
    let d = DiscreteSchedule::ddpm_linear();
    let model = GaussianEps::new(&vp, 0.0, 1.0);
    let x = Tensor::randn(&[2, 1, 2, 2], &mut Rng::new(1), &DEV).unwrap();
    let mut rng = Rng::new(0);
    let opts = SamplerOptions::new(10);
    let run = |kind, s: &dyn NoiseSchedule, x: &Tensor, y: Option<&Tensor>, opts: &SamplerOptions, rng: &mut Rng| {
        sampler::sample(kind, &model, s, x, y, opts, rng)
    };
    // DDPM/DDIM need a discrete schedule, Euler–Maruyama/PF-ODE a continuous one.
    assert!(run(SamplerKind::Ddpm, &vp, &x, None, &opts, &mut rng).is_err());
    assert!(run(SamplerKind::Ddim, &vp, &x, None, &opts, &mut rng).is_err());
    assert!(run(SamplerKind::EulerMaruyama, &d, &x, None, &opts, &mut rng).is_err());
    assert!(run(SamplerKind::PfOde, &d, &x, None, &opts, &mut rng).is_err());
    // Step counts.
    assert!(run(SamplerKind::DpmSolver3, &vp, &x, None, &SamplerOptions::new(2), &mut rng).is_err());
    assert!(run(SamplerKind::Ddpm, &d, &x, None, &SamplerOptions::new(1001), &mut rng).is_err());
    assert!(run(SamplerKind::EulerMaruyama, &vp, &x, None, &SamplerOptions::new(1), &mut rng).is_err());
    assert!(run(SamplerKind::DpmSolverPp2M, &vp, &x, None, &SamplerOptions::new(0), &mut rng).is_err());
    // End times outside the schedule.
    let bad_end = SamplerOptions { t_end: Some(0.0), ..SamplerOptions::new(10) };
    assert!(run(SamplerKind::DpmSolver2, &d, &x, None, &bad_end, &mut rng).is_err());
    let bad_end = SamplerOptions { t_end: Some(1.5), ..SamplerOptions::new(10) };
    assert!(run(SamplerKind::DpmSolver2, &vp, &x, None, &bad_end, &mut rng).is_err());
    // DDIM η < 0.
    let bad_eta = SamplerOptions { eta: -0.1, ..SamplerOptions::new(10) };
    assert!(run(SamplerKind::Ddim, &d, &x, None, &bad_eta, &mut rng).is_err());
    // Labels of the wrong length or dtype, inputs without a batch.
    let y3 = Tensor::from_vec_i64(vec![0, 1, 2], &[3], &DEV).unwrap();
    assert!(run(SamplerKind::DpmSolver1, &vp, &x, Some(&y3), &opts, &mut rng).is_err());
    let yf = Tensor::zeros(&[2], &DEV).unwrap();
    assert!(run(SamplerKind::DpmSolver1, &vp, &x, Some(&yf), &opts, &mut rng).is_err());
    assert!(run(SamplerKind::DpmSolver1, &vp, &Tensor::scalar(0.0, &DEV).unwrap(), None, &opts, &mut rng).is_err());
    // A model whose ε has the wrong shape.
    struct Bad;
    impl EpsModel for Bad {
        fn predict_eps(&self, x: &Tensor, _t: &Tensor, _y: Option<&Tensor>) -> Result<Tensor> {
            Ok(Tensor::zeros(&[x.shape()[0], 1], &x.device())?)
        }
    }
    assert!(sampler::sample(SamplerKind::DpmSolver1, &Bad, &vp, &x, None, &opts, &mut rng).is_err());
    // Every schedule by name works with DPM-Solver.
    for kind in ScheduleKind::ALL {
        let s = kind.build();
        let m = GaussianEps::new(s.as_ref(), 0.0, 1.0);
        assert!(sampler::sample(SamplerKind::DpmSolver2, &m, s.as_ref(), &x, None, &opts, &mut rng).is_ok(), "{kind}");
    }
}
