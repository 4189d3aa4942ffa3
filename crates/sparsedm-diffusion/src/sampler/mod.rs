//! Samplers: turn initial noise into samples with an ε-prediction network.
//!
//! Every sampler takes the network as `&dyn EpsModel` (evaluated at *model
//! time*, see [`NoiseSchedule::model_time`]), a schedule, the initial noise
//! `x_init` (`[B, …]`, drawn by the caller), a number of steps, optional class
//! labels `[B]` (i64), and — for the stochastic ones — the `&mut Rng` that
//! every fresh noise draw comes from. Nothing is drawn from a hidden source,
//! so a sample is reproducible from `(x_init, rng state)`.
//!
//! | [`SamplerKind`] | file | schedules | NFE |
//! |---|---|---|---|
//! | `euler-maruyama` | [`sde`] (U-ViT `sde.euler_maruyama` on `ReverseSDE`) | continuous | steps |
//! | `pf-ode` | [`sde`] (U-ViT `sde.euler_maruyama` on `ODE`) | continuous | steps |
//! | `dpm-solver-1/2/3` | [`mod@dpm_solver`] (Lu et al. 2022, Alg. 1–2, singlestep, fixed order) | all | ⌊steps/order⌋·order |
//! | `dpm-solver-fast` | [`mod@dpm_solver`] (DPM-Solver-fast: orders 3,…,3,2/1) | all | steps |
//! | `dpm-solver++2m` | [`dpm_solver_pp`] (Lu et al. 2022b, Alg. 2) | all | steps |
//! | `ddpm` | [`mod@ddpm`] (Ho et al. ancestral, fixed-large variance, x̂₀ clipped) | discrete | steps |
//! | `ddim` | [`mod@ddim`] (Song et al. 2021, η) | discrete | steps |
//!
//! Classifier-free guidance is a wrapping [`EpsModel`]:
//! [`crate::cfg::ClassifierFreeGuidance`].
//!
//! Sampling runs under [`sparsedm_tensor::no_grad`].

pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod dpm_solver_pp;
pub mod sde;

pub use ddim::ddim;
pub use ddpm::ddpm;
pub use dpm_solver::{TimeSkip, dpm_solver, dpm_solver_fast, time_steps};
pub use dpm_solver_pp::dpm_solver_pp_2m;
pub use sde::{UVIT_EM_EPS, euler_maruyama, probability_flow_euler};

use crate::error::{DiffusionError, Result};
use crate::model::EpsModel;
use crate::schedule::{DiscreteSchedule, NoiseSchedule};
use sparsedm_tensor::{DType, Rng, Tensor};
use std::fmt;
use std::str::FromStr;

/// The samplers, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// `euler-maruyama`: reverse SDE, U-ViT's final-FID sampler.
    EulerMaruyama,
    /// `pf-ode`: Euler on the probability-flow ODE (U-ViT's preview sampler).
    PfOde,
    /// `dpm-solver-1` (= DDIM in continuous time).
    DpmSolver1,
    /// `dpm-solver-2`.
    DpmSolver2,
    /// `dpm-solver-3`.
    DpmSolver3,
    /// `dpm-solver-fast`: U-ViT's training-time FID sampler.
    DpmSolverFast,
    /// `dpm-solver++2m`.
    DpmSolverPp2M,
    /// `ddpm`: ancestral sampling.
    Ddpm,
    /// `ddim`: DDIM(η).
    Ddim,
}

impl SamplerKind {
    /// Every kind.
    pub const ALL: [SamplerKind; 9] = [
        SamplerKind::EulerMaruyama,
        SamplerKind::PfOde,
        SamplerKind::DpmSolver1,
        SamplerKind::DpmSolver2,
        SamplerKind::DpmSolver3,
        SamplerKind::DpmSolverFast,
        SamplerKind::DpmSolverPp2M,
        SamplerKind::Ddpm,
        SamplerKind::Ddim,
    ];

    /// The name [`FromStr`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::EulerMaruyama => "euler-maruyama",
            SamplerKind::PfOde => "pf-ode",
            SamplerKind::DpmSolver1 => "dpm-solver-1",
            SamplerKind::DpmSolver2 => "dpm-solver-2",
            SamplerKind::DpmSolver3 => "dpm-solver-3",
            SamplerKind::DpmSolverFast => "dpm-solver-fast",
            SamplerKind::DpmSolverPp2M => "dpm-solver++2m",
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
        }
    }

    /// Whether the sampler draws fresh noise (uses the `rng`). DDIM does
    /// exactly when η > 0.
    pub fn is_stochastic(self, eta: f64) -> bool {
        match self {
            SamplerKind::EulerMaruyama | SamplerKind::Ddpm => true,
            SamplerKind::Ddim => eta > 0.0,
            _ => false,
        }
    }

    /// The fewest steps the sampler takes: DPM-Solver-k's order k, two for
    /// Euler–Maruyama and PF-ODE (U-ViT's grid `[0] + linspace(eps, T, steps)`
    /// needs both ends), one for the others. Fewer are refused when sampling.
    pub fn min_steps(self) -> usize {
        match self {
            SamplerKind::DpmSolver2 | SamplerKind::EulerMaruyama | SamplerKind::PfOde => 2,
            SamplerKind::DpmSolver3 => 3,
            _ => 1,
        }
    }

    /// Checks that the sampler can run `steps` steps on a schedule that is
    /// `discrete` (or continuous): the errors sampling would give, found
    /// before any work (a run's config is checked when it is read, not at
    /// its first preview grid).
    pub fn check_use(self, steps: usize, discrete: bool) -> std::result::Result<(), String> {
        if steps < self.min_steps() {
            return Err(format!("{self} needs at least {} steps, got {steps}", self.min_steps()));
        }
        match self.needs_discrete() {
            Some(d) if d != discrete => Err(format!(
                "{self} needs a {} noise schedule ({}), not a {} one",
                if d { "discrete" } else { "continuous" },
                if d { "ddpm-linear, scaled-linear" } else { "vp-linear, vp-cosine" },
                if discrete { "discrete" } else { "continuous" }
            )),
            _ => Ok(()),
        }
    }

    /// Whether the sampler needs a discrete schedule (DDPM, DDIM) or a
    /// continuous one (Euler–Maruyama, PF-ODE); `None` = either.
    pub fn needs_discrete(self) -> Option<bool> {
        match self {
            SamplerKind::Ddpm | SamplerKind::Ddim => Some(true),
            SamplerKind::EulerMaruyama | SamplerKind::PfOde => Some(false),
            _ => None,
        }
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SamplerKind {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self> {
        SamplerKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = SamplerKind::ALL.iter().map(|k| k.name()).collect();
            DiffusionError::Config(format!("unknown sampler {s:?}; expected one of {}", names.join(", ")))
        })
    }
}

/// Settings of [`sample`]; each sampler reads the ones it uses.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerOptions {
    /// Number of steps (network evaluations; see the table in the module docs).
    pub steps: usize,
    /// DPM-Solver time grid (default [`TimeSkip::LogSnr`]).
    pub skip: TimeSkip,
    /// End time: DPM-Solver's `eps` (default [`NoiseSchedule::default_t_end`])
    /// or the first non-zero time of the Euler–Maruyama/PF-ODE grid (default
    /// [`UVIT_EM_EPS`] = 1e-3).
    pub t_end: Option<f64>,
    /// DDIM's η (0 = deterministic DDIM, 1 = DDPM-like posterior variance).
    pub eta: f64,
    /// Clip x̂₀ to [−1, 1] (default: on for DDPM, as Ho et al.; off for DDIM and
    /// DPM-Solver++(2M); the other samplers have no x̂₀ to clip).
    pub clip_denoised: Option<bool>,
}

impl SamplerOptions {
    /// Defaults with `steps` steps.
    pub fn new(steps: usize) -> Self {
        SamplerOptions { steps, skip: TimeSkip::LogSnr, t_end: None, eta: 0.0, clip_denoised: None }
    }
}

fn discrete_of(kind: SamplerKind, schedule: &dyn NoiseSchedule) -> Result<&DiscreteSchedule> {
    schedule.discrete().ok_or_else(|| DiffusionError::Input {
        what: kind.name().into(),
        msg: format!("needs a discrete schedule (ddpm-linear, scaled-linear), got {}", schedule.name()),
    })
}

/// Runs the sampler `kind` from `x_init` and returns x₀.
pub fn sample(
    kind: SamplerKind,
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    x_init: &Tensor,
    y: Option<&Tensor>,
    opts: &SamplerOptions,
    rng: &mut Rng,
) -> Result<Tensor> {
    let t_end = opts.t_end.unwrap_or(schedule.default_t_end());
    match kind {
        SamplerKind::EulerMaruyama => euler_maruyama(model, schedule, x_init, opts.steps, opts.t_end.unwrap_or(UVIT_EM_EPS), y, rng),
        SamplerKind::PfOde => probability_flow_euler(model, schedule, x_init, opts.steps, opts.t_end.unwrap_or(UVIT_EM_EPS), y),
        SamplerKind::DpmSolver1 => dpm_solver(model, schedule, x_init, 1, opts.steps, opts.skip, t_end, y),
        SamplerKind::DpmSolver2 => dpm_solver(model, schedule, x_init, 2, opts.steps, opts.skip, t_end, y),
        SamplerKind::DpmSolver3 => dpm_solver(model, schedule, x_init, 3, opts.steps, opts.skip, t_end, y),
        SamplerKind::DpmSolverFast => dpm_solver_fast(model, schedule, x_init, opts.steps, opts.skip, t_end, y),
        SamplerKind::DpmSolverPp2M => {
            dpm_solver_pp_2m(model, schedule, x_init, opts.steps, opts.skip, t_end, opts.clip_denoised.unwrap_or(false), y)
        }
        SamplerKind::Ddpm => ddpm(model, discrete_of(kind, schedule)?, x_init, opts.steps, opts.clip_denoised.unwrap_or(true), y, rng),
        SamplerKind::Ddim => {
            ddim(model, discrete_of(kind, schedule)?, x_init, opts.steps, opts.eta, opts.clip_denoised.unwrap_or(false), y, rng)
        }
    }
}

// ----- shared helpers ------------------------------------------------------

fn input_err(what: &str, msg: impl Into<String>) -> DiffusionError {
    DiffusionError::Input { what: what.into(), msg: msg.into() }
}

/// Checks the sampler inputs: `x_init` f32 with a non-empty batch, labels
/// `[B]` i64, `steps ≥ min_steps`.
pub(crate) fn check_inputs(what: &str, x: &Tensor, y: Option<&Tensor>, steps: usize, min_steps: usize) -> Result<usize> {
    if x.dtype() != DType::F32 {
        return Err(input_err(what, format!("x_init must be f32, got {:?}", x.dtype())));
    }
    let b = match x.shape().first() {
        Some(&b) if b > 0 => b,
        _ => return Err(input_err(what, format!("x_init must be [B, …] with B > 0, got shape {:?}", x.shape()))),
    };
    if let Some(y) = y
        && (y.shape() != [b] || y.dtype() != DType::I64)
    {
        return Err(input_err(what, format!("labels must be i64 [{b}], got {:?} {:?}", y.dtype(), y.shape())));
    }
    if steps < min_steps {
        return Err(input_err(what, format!("needs at least {min_steps} step(s), got {steps}")));
    }
    Ok(b)
}

/// Checks a time interval `[t_end, t_start]` against the schedule's domain.
pub(crate) fn check_times(what: &str, schedule: &dyn NoiseSchedule, t_start: f64, t_end: f64) -> Result<()> {
    let (lo, hi) = (schedule.t_min(), schedule.t_max());
    let ok = t_end.is_finite() && t_start.is_finite() && t_end >= lo - 1e-12 && t_start <= hi + 1e-12 && t_end < t_start;
    if !ok {
        return Err(input_err(
            what,
            format!("end time {t_end} must satisfy {lo} ≤ t_end < {t_start} ≤ {hi} for schedule {}", schedule.name()),
        ));
    }
    Ok(())
}

/// The network, the schedule and the labels of one sampling run.
pub(crate) struct Eval<'a> {
    pub model: &'a dyn EpsModel,
    pub schedule: &'a dyn NoiseSchedule,
    pub y: Option<&'a Tensor>,
}

impl Eval<'_> {
    /// ε̂(x, t) at schedule time `t`.
    pub fn eps(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        self.eps_model_time(x, self.schedule.model_time(t))
    }

    /// ε̂(x, ·) at model time `m`, checked to have the shape of `x`.
    pub fn eps_model_time(&self, x: &Tensor, m: f64) -> Result<Tensor> {
        let b = x.shape()[0];
        let tt = Tensor::full(m as f32, &[b], &x.device())?;
        let e = self.model.predict_eps(x, &tt, self.y)?;
        if e.shape() != x.shape() {
            return Err(input_err("sampler", format!("the model returned ε of shape {:?} for x of shape {:?}", e.shape(), x.shape())));
        }
        Ok(e)
    }

    /// x̂₀ = (x − σ_t ε̂)/α_t (DPM-Solver++'s data prediction).
    pub fn x0(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let e = self.eps(x, t)?;
        let (a, s) = (self.schedule.alpha(t), self.schedule.sigma(t));
        lincomb(1.0 / a, x, -s / a, &e)
    }
}

/// `a·x + b·y` with f64 coefficients applied in f32.
pub(crate) fn lincomb(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    Ok(x.mul_scalar(a as f32)?.add(&y.mul_scalar(b as f32)?)?)
}

/// `a·x + b·y + c·z`.
pub(crate) fn lincomb3(a: f64, x: &Tensor, b: f64, y: &Tensor, c: f64, z: &Tensor) -> Result<Tensor> {
    Ok(lincomb(a, x, b, y)?.add(&z.mul_scalar(c as f32)?)?)
}
