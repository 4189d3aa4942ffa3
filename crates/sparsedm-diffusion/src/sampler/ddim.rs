//! DDIM (Song, Meng & Ermon, ICLR 2021, eq. 12 and 16) on a discrete
//! schedule, on the step subsequence τ of [`super::ddpm::respaced_steps`]:
//!
//! ```text
//! x̂₀ = (x_τₖ − √(1−ᾱ_τₖ) ε̂)/√ᾱ_τₖ                       (optionally clipped to [−1, 1]; ε̂ is kept)
//! σₖ = η √((1−ᾱ_prev)/(1−ᾱ_τₖ)) √(1 − ᾱ_τₖ/ᾱ_prev),   ᾱ_prev = ᾱ_τₖ₋₁ (1 after the last step)
//! x_τₖ₋₁ = √ᾱ_prev x̂₀ + √(1 − ᾱ_prev − σₖ²) ε̂ + σₖ z
//! ```
//!
//! η = 0 is the deterministic DDIM (the first-order solver of the PF-ODE,
//! = DPM-Solver-1 in discrete time); η = 1 with all steps is DDPM with the
//! posterior ("fixed-small") variance. The final step lands on ᾱ = 1, i.e.
//! returns x̂₀. Song et al.'s code uses the grid `range(0, N, N/steps)`; this
//! one uses [`super::ddpm::respaced_steps`], which starts at step N−1.

use super::ddpm::respaced_steps;
use super::{Eval, check_inputs, lincomb, lincomb3};
use crate::error::{DiffusionError, Result};
use crate::model::EpsModel;
use crate::schedule::DiscreteSchedule;
use sparsedm_tensor::{Rng, Tensor, no_grad};

/// DDIM(η) with `steps` network evaluations. `rng` is used only when η > 0.
pub fn ddim(
    model: &dyn EpsModel,
    schedule: &DiscreteSchedule,
    x_init: &Tensor,
    steps: usize,
    eta: f64,
    clip_denoised: bool,
    y: Option<&Tensor>,
    rng: &mut Rng,
) -> Result<Tensor> {
    check_inputs("ddim", x_init, y, steps, 1)?;
    if !(eta >= 0.0 && eta.is_finite()) {
        return Err(DiffusionError::Input { what: "ddim".into(), msg: format!("eta must be ≥ 0, got {eta}") });
    }
    let tau = respaced_steps(schedule.num_steps(), steps)?;
    let _guard = no_grad();
    let ev = Eval { model, schedule, y };
    let ab = schedule.alphas_cumprod();
    let mut x = x_init.clone();
    for k in (0..tau.len()).rev() {
        let ab_t = ab[tau[k]];
        let ab_prev = if k == 0 { 1.0 } else { ab[tau[k - 1]] };
        let e = ev.eps_model_time(&x, schedule.step_model_time(tau[k]))?;
        let mut x0 = lincomb(1.0 / ab_t.sqrt(), &x, -((1.0 - ab_t) / ab_t).sqrt(), &e)?;
        if clip_denoised {
            x0 = x0.clamp(-1.0, 1.0)?;
        }
        let sigma = eta * ((1.0 - ab_prev) / (1.0 - ab_t)).sqrt() * (1.0 - ab_t / ab_prev).sqrt();
        let c_eps = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
        x = if sigma > 0.0 {
            let z = Tensor::randn(x.shape(), rng, &x.device())?;
            lincomb3(ab_prev.sqrt(), &x0, c_eps, &e, sigma, &z)?
        } else {
            lincomb(ab_prev.sqrt(), &x0, c_eps, &e)?
        };
    }
    Ok(x)
}
