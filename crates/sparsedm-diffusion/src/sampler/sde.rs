//! Euler–Maruyama on the reverse VP-SDE and Euler on the probability-flow
//! ODE, exactly as U-ViT's `sde.py` (`euler_maruyama(rsde, x_init,
//! sample_steps, eps=1e-3, T=1)` with `ReverseSDE` / `ODE`).
//!
//! Forward SDE `dx = f(x,t) dt + g(t) dw` with `f = −½β(t) x`, `g = √β(t)`;
//! score `s(x,t) = −ε̂(x,t)/σ_t` (U-ViT's `ScoreModel.score`, σ_t = √(1−ᾱ(t))).
//!
//! ```text
//! reverse SDE:  dx = [f − g² s] dt + g dw̄,      PF-ODE:  dx = [f − ½ g² s] dt
//! grid: t₀ = 0, t₁…t_N = linspace(eps, T, N)      (eps = 1e-3, T = 1)
//! for (s, t) = (t_{k−1}, t_k), k = N … 1:
//!     x ← x + drift(x, t)·(s − t) + g(t)·√(t − s)·z,   z ~ N(0, I),  no noise when s = 0
//! ```
//!
//! The drift is evaluated at the later time `t` of each interval, and the
//! last step (from `eps` to 0) adds no noise, as in U-ViT.

use super::{Eval, check_inputs, check_times, lincomb, lincomb3};
use crate::error::{DiffusionError, Result};
use crate::model::EpsModel;
use crate::schedule::{NoiseSchedule, linspace};
use sparsedm_tensor::{Rng, Tensor, no_grad};

/// U-ViT's `eps` of the Euler–Maruyama grid.
pub const UVIT_EM_EPS: f64 = 1e-3;

/// The time grid `[0] + linspace(eps, T, steps)` (increasing, `steps + 1` points).
pub fn em_time_grid(t_max: f64, eps: f64, steps: usize) -> Vec<f64> {
    let mut g = vec![0.0];
    g.extend(linspace(eps, t_max, steps));
    g
}

fn check_continuous(what: &str, schedule: &dyn NoiseSchedule) -> Result<()> {
    if schedule.discrete().is_some() || schedule.t_min() != 0.0 {
        return Err(DiffusionError::Input {
            what: what.into(),
            msg: format!("needs a continuous schedule (its grid starts at t = 0), got {}", schedule.name()),
        });
    }
    Ok(())
}

fn run(
    what: &str,
    stochastic: bool,
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    x_init: &Tensor,
    steps: usize,
    eps: f64,
    y: Option<&Tensor>,
    mut rng: Option<&mut Rng>,
) -> Result<Tensor> {
    check_inputs(what, x_init, y, steps, 2)?;
    check_continuous(what, schedule)?;
    check_times(what, schedule, schedule.t_max(), eps)?;
    if eps <= 0.0 {
        return Err(DiffusionError::Input { what: what.into(), msg: format!("eps must be > 0, got {eps}") });
    }
    let _guard = no_grad();
    let ev = Eval { model, schedule, y };
    let grid = em_time_grid(schedule.t_max(), eps, steps);
    // The reverse-SDE drift carries the full g²·s, the PF-ODE half of it.
    let score_weight = if stochastic { 1.0 } else { 0.5 };
    let mut x = x_init.clone();
    for k in (1..grid.len()).rev() {
        let (s, t) = (grid[k - 1], grid[k]);
        let dt = s - t;
        let beta = schedule.beta(t);
        let sigma_t = schedule.sigma(t);
        let e = ev.eps(&x, t)?;
        // drift = −½β x − w·β·s(x,t) = −½β x + w·β ε̂/σ_t
        let a = 1.0 - 0.5 * beta * dt;
        let b = score_weight * beta / sigma_t * dt;
        x = match rng.as_deref_mut() {
            Some(rng) if s != 0.0 => {
                let z = Tensor::randn(x.shape(), rng, &x.device())?;
                lincomb3(a, &x, b, &e, beta.sqrt() * (-dt).sqrt(), &z)?
            }
            _ => lincomb(a, &x, b, &e)?,
        };
    }
    Ok(x)
}

/// Euler–Maruyama on the reverse SDE (U-ViT's final-FID sampler, 1000 steps
/// for CIFAR-10/CelebA). `steps ≥ 2` network evaluations; `eps` is the first
/// non-zero grid time ([`UVIT_EM_EPS`]). Continuous schedules only.
pub fn euler_maruyama(
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    x_init: &Tensor,
    steps: usize,
    eps: f64,
    y: Option<&Tensor>,
    rng: &mut Rng,
) -> Result<Tensor> {
    run("euler-maruyama", true, model, schedule, x_init, steps, eps, y, Some(rng))
}

/// Euler on the probability-flow ODE, on the same grid as
/// [`euler_maruyama`]; deterministic. Continuous schedules only.
pub fn probability_flow_euler(
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    x_init: &Tensor,
    steps: usize,
    eps: f64,
    y: Option<&Tensor>,
) -> Result<Tensor> {
    run("pf-ode", false, model, schedule, x_init, steps, eps, y, None)
}
