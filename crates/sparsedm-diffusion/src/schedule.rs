//! Noise schedules of variance-preserving (VP) diffusions, continuous and
//! discrete, behind one trait so that trainers and samplers never need to know
//! which one they drive.
//!
//! Notation (Lu et al. 2022, "DPM-Solver", §2): the forward marginal is
//!
//! ```text
//! q(x_t | x_0) = N(α_t x_0, σ_t² I),   α_t² + σ_t² = 1,
//! ᾱ(t) = α_t²  (DDPM's cumulative product),   σ_t = √(1 − ᾱ(t)),
//! λ_t = log(α_t / σ_t)  (half the log-SNR),
//! β(t) = −2 d/dt log α_t  (the VP-SDE drift coefficient, dx = −½β x dt + √β dw).
//! ```
//!
//! | schedule | log α_t | model time |
//! |---|---|---|
//! | [`VpLinear`] (U-ViT's `sde.VPSDE`) | −¼ t² (β₁−β₀) − ½ t β₀, β₀=0.1, β₁=20 | 999·t |
//! | [`VpCosine`] (Nichol & Dhariwal, continuous) | log cos(π/2·(t+s)/(1+s)) − log cos(π/2·s/(1+s)) | 999·t |
//! | [`DiscreteSchedule::ddpm_linear`] (Ho et al.) | ½ log ∏ᵢ₌₀ⁿ (1−βᵢ), β = linspace(1e-4, 0.02, 1000) | step index n ∈ 0..1000 |
//! | [`DiscreteSchedule::scaled_linear`] (U-ViT's latent models) | same with β = linspace(√0.00085, √0.012, 1000)² | n+1 ∈ 1..=1000 |
//!
//! Continuous schedules live on `t ∈ [0, T]` (T = 1 for the linear VP,
//! DPM-Solver's `cosine_t_max` ≈ 0.99800 for the cosine one). Discrete
//! schedules are embedded in continuous time as DPM-Solver's
//! `NoiseScheduleVP('discrete')` does: step n (0-based) sits at
//! `t = (n+1)/N`, and log α_t is piecewise linear in t between the steps, so
//! `t ∈ [1/N, 1]` and DPM-Solver runs on them unchanged.
//!
//! All schedule arithmetic is f64; tensors only see the final f32
//! coefficients.

use crate::error::{DiffusionError, Result};
use sparsedm_tensor::{Rng, Tensor};
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

/// `log(1 + eˣ)` without overflow or cancellation.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// log α_t for a given λ_t: from ᾱ = 1/(1 + e^{−2λ}), log α = −½ softplus(−2λ).
pub fn log_alpha_from_lambda(lambda: f64) -> f64 {
    -0.5 * softplus(-2.0 * lambda)
}

/// `n` points from `a` to `b` inclusive, as `numpy.linspace` (f64).
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![a],
        _ => {
            let step = (b - a) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| a + step * i as f64).collect();
            v[n - 1] = b;
            v
        }
    }
}

/// A training example drawn from the forward process, for a batch:
/// `x_t = √ᾱ(t)·x₀ + √(1−ᾱ(t))·ε`, the regression target of an
/// ε-prediction network being `eps`.
#[derive(Debug, Clone)]
pub struct TrainingTriple {
    /// Schedule time of each sample, `[B]` f32 (continuous `t`, or `(n+1)/N`
    /// for discrete step `n`).
    pub t: Tensor,
    /// What the network is fed, `[B]` f32: [`NoiseSchedule::model_time`] of `t`.
    pub model_t: Tensor,
    /// The noise, shaped like `x0`.
    pub eps: Tensor,
    /// The noised input, shaped like `x0`.
    pub x_t: Tensor,
}

/// A variance-preserving noise schedule (see the module docs for notation).
///
/// The required methods are the schedule's definition; the provided ones
/// derive α, σ, λ and the training triple from them.
pub trait NoiseSchedule: Send + Sync + fmt::Debug {
    /// A short name (`"vp-linear"`, …; see [`ScheduleKind`]).
    fn name(&self) -> &'static str;

    /// `log α_t = ½ log ᾱ(t)`, DPM-Solver's `marginal_log_mean_coeff`.
    fn log_mean_coeff(&self, t: f64) -> f64;

    /// `β(t) = −2 d/dt log α_t`, the drift/diffusion coefficient of the
    /// forward VP-SDE `dx = −½β(t) x dt + √β(t) dw` (U-ViT's
    /// `squared_diffusion`). Piecewise constant for discrete schedules.
    fn beta(&self, t: f64) -> f64;

    /// The time horizon T where sampling starts.
    fn t_max(&self) -> f64;

    /// The smallest valid time (0 for continuous schedules, 1/N for discrete).
    fn t_min(&self) -> f64;

    /// The default end time of DPM-Solver-type samplers: 1e-3 for continuous
    /// schedules (DPM-Solver's recommendation; U-ViT's training-time FID used
    /// 1e-4), 1/N for discrete ones (DPM-Solver's and U-ViT's LDM `eps`).
    fn default_t_end(&self) -> f64;

    /// The inverse of λ: the time `t` with `λ_t = lambda` (DPM-Solver's
    /// `inverse_lambda`), clamped to `[t_min, t_max]` for discrete schedules.
    fn inverse_lambda(&self, lambda: f64) -> f64;

    /// The time input of the network at schedule time `t`: `999·t` for the
    /// continuous schedules (U-ViT's `ScoreModel.predict`), the step index for
    /// discrete ones.
    fn model_time(&self, t: f64) -> f64;

    /// The inverse of [`NoiseSchedule::model_time`].
    fn time_from_model_time(&self, model_t: f64) -> f64;

    /// `n` training times drawn from `rng`: uniform on `[0, T)` for
    /// continuous schedules, a uniform step for discrete ones.
    fn draw_times(&self, n: usize, rng: &mut Rng) -> Result<Vec<f64>>;

    /// The discrete schedule behind `self`, if it is one (DDPM and DDIM need
    /// the step table).
    fn discrete(&self) -> Option<&DiscreteSchedule> {
        None
    }

    /// `ᾱ(t) = α_t²`.
    fn alpha_bar(&self, t: f64) -> f64 {
        (2.0 * self.log_mean_coeff(t)).exp()
    }

    /// `α_t = √ᾱ(t)`.
    fn alpha(&self, t: f64) -> f64 {
        self.log_mean_coeff(t).exp()
    }

    /// `σ_t = √(1 − ᾱ(t))`, computed as √(−expm1(2 log α_t)) so that it
    /// stays accurate for small t.
    fn sigma(&self, t: f64) -> f64 {
        (-(2.0 * self.log_mean_coeff(t)).exp_m1()).sqrt()
    }

    /// `λ_t = log α_t − log σ_t` (DPM-Solver's `marginal_lambda`).
    fn lambda(&self, t: f64) -> f64 {
        let la = self.log_mean_coeff(t);
        la - 0.5 * (-(2.0 * la).exp_m1()).ln()
    }

    /// The training triple `(t, ε, x_t)` for a batch `x0` `[B, …]`: times from
    /// [`NoiseSchedule::draw_times`] (drawn first, as U-ViT's `sde.sample`
    /// does), then `ε ~ N(0, I)`, then `x_t = √ᾱ(t)·x₀ + √(1−ᾱ(t))·ε`.
    fn sample_training(&self, x0: &Tensor, rng: &mut Rng) -> Result<TrainingTriple> {
        let shape = x0.shape().to_vec();
        let Some(&b) = shape.first() else {
            return Err(DiffusionError::Input { what: "sample_training".into(), msg: "x0 must have a batch dimension".into() });
        };
        let dev = x0.device();
        let times = self.draw_times(b, rng)?;
        let eps = Tensor::randn(&shape, rng, &dev)?;
        let mut coef_shape = vec![1; shape.len()];
        coef_shape[0] = b;
        let ca: Vec<f32> = times.iter().map(|&t| self.alpha(t) as f32).collect();
        let cs: Vec<f32> = times.iter().map(|&t| self.sigma(t) as f32).collect();
        let ca = Tensor::from_vec(ca, &coef_shape, &dev)?;
        let cs = Tensor::from_vec(cs, &coef_shape, &dev)?;
        let x_t = x0.mul(&ca)?.add(&eps.mul(&cs)?)?;
        let t = Tensor::from_vec(times.iter().map(|&t| t as f32).collect(), &[b], &dev)?;
        let model_t = Tensor::from_vec(times.iter().map(|&t| self.model_time(t) as f32).collect(), &[b], &dev)?;
        Ok(TrainingTriple { t, model_t, eps, x_t })
    }
}

/// Time scale of the continuous schedules' model time (U-ViT feeds `t·999`).
pub const CONTINUOUS_MODEL_TIME_SCALE: f64 = 999.0;

// ---------------------------------------------------------------------------

/// The continuous linear VP-SDE of Song et al. (2021) as U-ViT's `sde.VPSDE`
/// uses it: `β(t) = β₀ + t(β₁ − β₀)` on `t ∈ [0, 1]`, so
///
/// ```text
/// ᾱ(t) = exp(−∫₀ᵗ β) = exp(−(β₀ t + ½(β₁−β₀) t²))   = exp(−(0.1 t + 9.95 t²)) for β₀=0.1, β₁=20,
/// log α_t = −¼ t² (β₁−β₀) − ½ t β₀,
/// λ⁻¹(λ) = (−β₀ + √(β₀² + 2(β₁−β₀)L)) / (β₁−β₀) = 2L / (√(β₀² + 2(β₁−β₀)L) + β₀),
///          L = softplus(−2λ) = −log ᾱ,
/// ```
///
/// (DPM-Solver's `inverse_lambda` for `'linear'`, in the cancellation-free
/// second form). Model time is `999·t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpLinear {
    /// β₀ (U-ViT: 0.1).
    pub beta_min: f64,
    /// β₁ (U-ViT: 20).
    pub beta_max: f64,
}

impl Default for VpLinear {
    fn default() -> Self {
        VpLinear { beta_min: 0.1, beta_max: 20.0 }
    }
}

impl VpLinear {
    /// U-ViT's schedule: β₀ = 0.1, β₁ = 20.
    pub fn uvit() -> Self {
        Self::default()
    }
    /// A linear VP with other endpoints; errors unless `0 ≤ β₀ ≤ β₁`, `β₁ > 0`.
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self> {
        if !(beta_min >= 0.0 && beta_max > 0.0 && beta_max >= beta_min && beta_max.is_finite()) {
            return Err(DiffusionError::Config(format!(
                "vp-linear: need 0 ≤ beta_min ≤ beta_max, beta_max > 0; got {beta_min}, {beta_max}"
            )));
        }
        Ok(VpLinear { beta_min, beta_max })
    }
}

impl NoiseSchedule for VpLinear {
    fn name(&self) -> &'static str {
        "vp-linear"
    }
    fn log_mean_coeff(&self, t: f64) -> f64 {
        -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
    }
    fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn t_min(&self) -> f64 {
        0.0
    }
    fn default_t_end(&self) -> f64 {
        1e-3
    }
    fn inverse_lambda(&self, lambda: f64) -> f64 {
        let l = softplus(-2.0 * lambda); // −log ᾱ
        let d = self.beta_max - self.beta_min;
        if d == 0.0 {
            return l / self.beta_min;
        }
        2.0 * l / ((self.beta_min * self.beta_min + 2.0 * d * l).sqrt() + self.beta_min)
    }
    fn model_time(&self, t: f64) -> f64 {
        CONTINUOUS_MODEL_TIME_SCALE * t
    }
    fn time_from_model_time(&self, model_t: f64) -> f64 {
        model_t / CONTINUOUS_MODEL_TIME_SCALE
    }
    fn draw_times(&self, n: usize, rng: &mut Rng) -> Result<Vec<f64>> {
        // U-ViT: t = torch.rand(B)·(1 − t_init) + t_init with t_init = 0, i.e. U[0, 1).
        Ok(rng.uniform_vec(n, 0.0, 1.0).into_iter().map(|u| u as f64 * self.t_max()).collect())
    }
}

// ---------------------------------------------------------------------------

/// The cosine schedule of Nichol & Dhariwal (2021), in the continuous form of
/// DPM-Solver's `NoiseScheduleVP('cosine')`:
///
/// ```text
/// f(t) = cos(π/2 · (t+s)/(1+s)),   ᾱ(t) = f(t)² / f(0)²,   s = 0.008,
/// log α_t = log f(t) − log f(0),
/// β(t) = π/(1+s) · tan(π/2 · (t+s)/(1+s)),
/// T = cosine_t_max = 2(1+s)/π · atan(β_max (1+s)/π) − s,  β_max = 999  (β(T) = β_max; ≈ 0.99800),
/// λ⁻¹(λ) = 2(1+s)/π · acos(exp(log α + log f(0))) − s,  log α = −½ softplus(−2λ).
/// ```
///
/// ᾱ(1) = 0 exactly, so sampling starts at `T` (as DPM-Solver does). Model
/// time is `999·t`, as for the linear VP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpCosine {
    /// The offset `s` (0.008).
    pub s: f64,
    /// The β at which the horizon is truncated (DPM-Solver: 999).
    pub beta_max: f64,
}

impl Default for VpCosine {
    fn default() -> Self {
        VpCosine { s: 0.008, beta_max: 999.0 }
    }
}

impl VpCosine {
    fn log_f(&self, t: f64) -> f64 {
        ((t + self.s) / (1.0 + self.s) * PI / 2.0).cos().ln()
    }
}

impl NoiseSchedule for VpCosine {
    fn name(&self) -> &'static str {
        "vp-cosine"
    }
    fn log_mean_coeff(&self, t: f64) -> f64 {
        self.log_f(t) - self.log_f(0.0)
    }
    fn beta(&self, t: f64) -> f64 {
        PI / (1.0 + self.s) * ((t + self.s) / (1.0 + self.s) * PI / 2.0).tan()
    }
    fn t_max(&self) -> f64 {
        (self.beta_max * (1.0 + self.s) / PI).atan() * 2.0 * (1.0 + self.s) / PI - self.s
    }
    fn t_min(&self) -> f64 {
        0.0
    }
    fn default_t_end(&self) -> f64 {
        1e-3
    }
    fn inverse_lambda(&self, lambda: f64) -> f64 {
        let la = log_alpha_from_lambda(lambda);
        (la + self.log_f(0.0)).exp().acos() * 2.0 * (1.0 + self.s) / PI - self.s
    }
    fn model_time(&self, t: f64) -> f64 {
        CONTINUOUS_MODEL_TIME_SCALE * t
    }
    fn time_from_model_time(&self, model_t: f64) -> f64 {
        model_t / CONTINUOUS_MODEL_TIME_SCALE
    }
    fn draw_times(&self, n: usize, rng: &mut Rng) -> Result<Vec<f64>> {
        Ok(rng.uniform_vec(n, 0.0, 1.0).into_iter().map(|u| u as f64 * self.t_max()).collect())
    }
}

// ---------------------------------------------------------------------------

/// A discrete DDPM schedule of `N` steps with variances `β₀ … β_{N−1}`
/// (0-based, as Ho et al. and pytorch_diffusion index them):
///
/// ```text
/// ᾱₙ = ∏ᵢ₌₀ⁿ (1 − βᵢ),   q(xₙ | x₀) = N(√ᾱₙ x₀, (1−ᾱₙ) I),   n = 0 … N−1.
/// ```
///
/// In continuous time (DPM-Solver's `NoiseScheduleVP('discrete')`) step `n`
/// sits at `t = (n+1)/N` and log α_t is linear between neighbouring steps.
///
/// The network's time input at step `n` is `n + first_model_index`: Ho's
/// DDPM (and pytorch_diffusion) feed `n ∈ 0..N` (`first_model_index = 0`),
/// U-ViT's latent models (`train_ldm_discrete.py`, whose `Schedule` prepends
/// β=0 and numbers the steps 1…N) feed `n+1` (`first_model_index = 1`). In
/// continuous time both are `model_time(t) = N·t − 1 + first_model_index`
/// (DPM-Solver's `(t − 1/N)·1000` for Ho, U-ViT's `t·N` for LDMs).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteSchedule {
    name: &'static str,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    /// ½ log ᾱₙ.
    log_alphas: Vec<f64>,
    first_model_index: u32,
}

impl DiscreteSchedule {
    /// A schedule from its step variances; errors unless there are at least
    /// two steps and every β is in (0, 1).
    pub fn from_betas(betas: Vec<f64>, first_model_index: u32) -> Result<Self> {
        Self::named("discrete", betas, first_model_index)
    }

    fn named(name: &'static str, betas: Vec<f64>, first_model_index: u32) -> Result<Self> {
        if betas.len() < 2 {
            return Err(DiffusionError::Config(format!("discrete schedule: need at least 2 steps, got {}", betas.len())));
        }
        if let Some((i, b)) = betas.iter().enumerate().find(|(_, b)| !(**b > 0.0 && **b < 1.0)) {
            return Err(DiffusionError::Config(format!("discrete schedule: beta[{i}] = {b} is outside (0, 1)")));
        }
        let mut log_acc = 0.0f64;
        let mut alphas_cumprod = Vec::with_capacity(betas.len());
        let mut log_alphas = Vec::with_capacity(betas.len());
        for &b in &betas {
            log_acc += (-b).ln_1p();
            alphas_cumprod.push(log_acc.exp());
            log_alphas.push(0.5 * log_acc);
        }
        Ok(DiscreteSchedule { name, betas, alphas_cumprod, log_alphas, first_model_index })
    }

    /// Ho et al.'s DDPM schedule: `β = linspace(1e-4, 0.02, 1000)` (f64, as
    /// `get_beta_schedule('linear', …)`), model time = step index `0…999`.
    pub fn ddpm_linear() -> Self {
        Self::named("ddpm-linear", linspace(1e-4, 0.02, 1000), 0).expect("valid constant schedule")
    }

    /// The "scaled linear" schedule of Stable Diffusion and U-ViT's latent
    /// models (`stable_diffusion_beta_schedule`): `β = linspace(√0.00085,
    /// √0.012, 1000)²`, model time = `n+1 ∈ 1…1000`.
    pub fn scaled_linear() -> Self {
        let betas = linspace(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000).into_iter().map(|b| b * b).collect();
        Self::named("scaled-linear", betas, 1).expect("valid constant schedule")
    }

    /// Number of steps N.
    pub fn num_steps(&self) -> usize {
        self.betas.len()
    }
    /// βₙ, n = 0 … N−1.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }
    /// ᾱₙ = ∏ᵢ₌₀ⁿ (1 − βᵢ).
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }
    /// The model time of step 0.
    pub fn first_model_index(&self) -> u32 {
        self.first_model_index
    }
    /// The network's time input at step `n` (0-based).
    pub fn step_model_time(&self, n: usize) -> f64 {
        (n as f64) + self.first_model_index as f64
    }
    /// The continuous time of step `n`: `(n+1)/N`.
    pub fn step_time(&self, n: usize) -> f64 {
        (n + 1) as f64 / self.num_steps() as f64
    }
}

impl NoiseSchedule for DiscreteSchedule {
    fn name(&self) -> &'static str {
        self.name
    }
    fn log_mean_coeff(&self, t: f64) -> f64 {
        // Piecewise-linear interpolation of ½ log ᾱ on the grid t = (n+1)/N
        // (DPM-Solver's interpolate_fn), clamped to the grid.
        let n = self.num_steps();
        let p = (t * n as f64 - 1.0).clamp(0.0, (n - 1) as f64);
        let i = (p.floor() as usize).min(n - 2);
        let frac = p - i as f64;
        self.log_alphas[i] + frac * (self.log_alphas[i + 1] - self.log_alphas[i])
    }
    fn beta(&self, t: f64) -> f64 {
        let n = self.num_steps();
        let p = (t * n as f64 - 1.0).clamp(0.0, (n - 1) as f64);
        let i = (p.floor() as usize).min(n - 2);
        -2.0 * n as f64 * (self.log_alphas[i + 1] - self.log_alphas[i])
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn t_min(&self) -> f64 {
        1.0 / self.num_steps() as f64
    }
    fn default_t_end(&self) -> f64 {
        self.t_min()
    }
    fn inverse_lambda(&self, lambda: f64) -> f64 {
        let la = log_alpha_from_lambda(lambda);
        let n = self.num_steps();
        let la_grid = &self.log_alphas; // strictly decreasing
        if la >= la_grid[0] {
            return self.t_min();
        }
        if la <= la_grid[n - 1] {
            return 1.0;
        }
        // First index with la_grid[i] < la; the answer lies in [i−1, i].
        let i = la_grid.partition_point(|&v| v >= la);
        let (a, b) = (la_grid[i - 1], la_grid[i]);
        let p = (i - 1) as f64 + (la - a) / (b - a);
        (p + 1.0) / n as f64
    }
    fn model_time(&self, t: f64) -> f64 {
        t * self.num_steps() as f64 - 1.0 + self.first_model_index as f64
    }
    fn time_from_model_time(&self, model_t: f64) -> f64 {
        (model_t + 1.0 - self.first_model_index as f64) / self.num_steps() as f64
    }
    fn draw_times(&self, n: usize, rng: &mut Rng) -> Result<Vec<f64>> {
        let steps = self.num_steps();
        let idx = rng.int_vec(n, 0, steps as i64)?;
        Ok(idx.into_iter().map(|i| self.step_time(i as usize)).collect())
    }
    fn discrete(&self) -> Option<&DiscreteSchedule> {
        Some(self)
    }
}

// ---------------------------------------------------------------------------

/// The named schedules, for configs and the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScheduleKind {
    /// [`VpLinear::uvit`] (`"vp-linear"`).
    VpLinear,
    /// [`VpCosine::default`] (`"vp-cosine"`).
    VpCosine,
    /// [`DiscreteSchedule::ddpm_linear`] (`"ddpm-linear"`).
    DdpmLinear,
    /// [`DiscreteSchedule::scaled_linear`] (`"scaled-linear"`).
    ScaledLinear,
}

impl ScheduleKind {
    /// Every kind, in documentation order.
    pub const ALL: [ScheduleKind; 4] =
        [ScheduleKind::VpLinear, ScheduleKind::VpCosine, ScheduleKind::DdpmLinear, ScheduleKind::ScaledLinear];

    /// The name [`FromStr`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::VpLinear => "vp-linear",
            ScheduleKind::VpCosine => "vp-cosine",
            ScheduleKind::DdpmLinear => "ddpm-linear",
            ScheduleKind::ScaledLinear => "scaled-linear",
        }
    }

    /// Whether the schedule is discrete (DDPM's 1000 steps) rather than continuous in t.
    pub fn is_discrete(self) -> bool {
        matches!(self, ScheduleKind::DdpmLinear | ScheduleKind::ScaledLinear)
    }

    /// The schedule with its published constants.
    pub fn build(self) -> Box<dyn NoiseSchedule> {
        match self {
            ScheduleKind::VpLinear => Box::new(VpLinear::uvit()),
            ScheduleKind::VpCosine => Box::new(VpCosine::default()),
            ScheduleKind::DdpmLinear => Box::new(DiscreteSchedule::ddpm_linear()),
            ScheduleKind::ScaledLinear => Box::new(DiscreteSchedule::scaled_linear()),
        }
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScheduleKind {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self> {
        ScheduleKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = ScheduleKind::ALL.iter().map(|k| k.name()).collect();
            DiffusionError::Config(format!("unknown noise schedule {s:?}; expected one of {}", names.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// λ⁻¹(λ(t)) = t on every schedule.
    #[test]
    fn inverse_lambda_round_trips() {
        for kind in ScheduleKind::ALL {
            let s = kind.build();
            for i in 0..=50 {
                let t = s.t_min() + (s.t_max() - s.t_min()) * (i as f64 / 50.0).max(1e-3);
                let back = s.inverse_lambda(s.lambda(t));
                assert!((back - t).abs() < 1e-9, "{kind}: t {t} back {back}");
            }
        }
    }

    /// β(t) = −2 d/dt log α_t, checked by central differences on the continuous schedules.
    #[test]
    fn beta_is_the_log_alpha_derivative() {
        for s in [ScheduleKind::VpLinear.build(), ScheduleKind::VpCosine.build()] {
            for &t in &[0.01, 0.3, 0.7, 0.95] {
                let h = 1e-6;
                let fd = -2.0 * (s.log_mean_coeff(t + h) - s.log_mean_coeff(t - h)) / (2.0 * h);
                assert!((fd - s.beta(t)).abs() < 1e-5 * s.beta(t).max(1.0), "{}: t {t}", s.name());
            }
        }
    }

    #[test]
    fn model_time_round_trips_and_names_parse() {
        for kind in ScheduleKind::ALL {
            let s = kind.build();
            let t = 0.37;
            assert!((s.time_from_model_time(s.model_time(t)) - t).abs() < 1e-12);
            assert_eq!(kind.name().parse::<ScheduleKind>().unwrap(), kind);
        }
        assert!("linear-ish".parse::<ScheduleKind>().is_err());
        assert!(DiscreteSchedule::from_betas(vec![0.1, 1.0], 0).is_err());
        assert!(VpLinear::new(1.0, 0.5).is_err());
    }
}
