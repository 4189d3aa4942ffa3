//! DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) as pytorch_diffusion
//! (`diffusion.denoising_step`) and the official code run it: predict x̂₀,
//! clip it to [−1, 1], take the mean of the posterior q(x_{t−1} | x_t, x̂₀),
//! add noise with the *fixed-large* variance βₜ (`model_var_type =
//! 'fixedlarge'`), and add no noise at the last step.
//!
//! ```text
//! x̂₀ = clip(√(1/ᾱₜ) xₜ − √(1/ᾱₜ − 1) ε̂(xₜ, t), −1, 1)
//! μ̃ₜ = βₜ √ᾱₜ₋₁/(1 − ᾱₜ) · x̂₀ + (1 − ᾱₜ₋₁) √αₜ/(1 − ᾱₜ) · xₜ           (Ho eq. 7, ᾱ₋₁ = 1)
//! xₜ₋₁ = μ̃ₜ + √vₜ z,  vₜ = βₜ for t ≥ 1  (log-variance append(β̃₁, β[1:]));  xₜ₋₁ = μ̃ₜ at t = 0
//! ```
//!
//! With `steps = N` this is Ho's 1000-step sampler. With fewer steps the
//! chain is *respaced* (Nichol & Dhariwal 2021, §4): on the increasing step
//! subsequence τ (the rounded `linspace(0, N−1, steps)`) the respaced
//! variances are `β'ₖ = 1 − ᾱ_{τₖ}/ᾱ_{τₖ₋₁}` and the same update runs with
//! them; the network still gets the original step index τₖ.

use super::{Eval, check_inputs, lincomb, lincomb3};
use crate::error::{DiffusionError, Result};
use crate::model::EpsModel;
use crate::schedule::DiscreteSchedule;
use sparsedm_tensor::{Rng, Tensor, no_grad};

/// The step subsequence τ of a `steps`-step run on an `n`-step schedule,
/// increasing: all steps when `steps == n`, else the rounded
/// `linspace(n−1, 0, steps)` reversed (so it always starts at the noisiest
/// step n−1 and, for `steps ≥ 2`, ends at step 0).
pub fn respaced_steps(n: usize, steps: usize) -> Result<Vec<usize>> {
    if steps == 0 || steps > n {
        return Err(DiffusionError::Input { what: "respaced_steps".into(), msg: format!("steps must be in 1..={n}, got {steps}") });
    }
    let mut tau: Vec<usize> = crate::schedule::linspace((n - 1) as f64, 0.0, steps).into_iter().map(|v| v.round() as usize).collect();
    tau.reverse();
    Ok(tau)
}

/// DDPM ancestral sampling with `steps` network evaluations (respaced when
/// `steps < N`), fixed-large variance, x̂₀ clipped to [−1, 1] when
/// `clip_denoised`. Fresh noise comes from `rng` (one `randn` per step
/// except the last).
pub fn ddpm(
    model: &dyn EpsModel,
    schedule: &DiscreteSchedule,
    x_init: &Tensor,
    steps: usize,
    clip_denoised: bool,
    y: Option<&Tensor>,
    rng: &mut Rng,
) -> Result<Tensor> {
    check_inputs("ddpm", x_init, y, steps, 1)?;
    let tau = respaced_steps(schedule.num_steps(), steps)?;
    let _guard = no_grad();
    let ev = Eval { model, schedule, y };
    let ab = schedule.alphas_cumprod();
    let mut x = x_init.clone();
    for k in (0..tau.len()).rev() {
        let ab_t = ab[tau[k]];
        let ab_prev = if k == 0 { 1.0 } else { ab[tau[k - 1]] };
        let beta = 1.0 - ab_t / ab_prev; // β'ₖ (= β_{τₖ} without respacing)
        let e = ev.eps_model_time(&x, schedule.step_model_time(tau[k]))?;
        let mut x0 = lincomb((1.0 / ab_t).sqrt(), &x, -(1.0 / ab_t - 1.0).sqrt(), &e)?;
        if clip_denoised {
            x0 = x0.clamp(-1.0, 1.0)?;
        }
        let c1 = beta * ab_prev.sqrt() / (1.0 - ab_t);
        let c2 = (1.0 - ab_prev) * (1.0 - beta).sqrt() / (1.0 - ab_t);
        x = if k > 0 {
            let z = Tensor::randn(x.shape(), rng, &x.device())?;
            lincomb3(c1, &x0, c2, &x, beta.sqrt(), &z)?
        } else {
            lincomb(c1, &x0, c2, &x)?
        };
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respacing_covers_both_ends() {
        assert_eq!(respaced_steps(1000, 1000).unwrap(), (0..1000).collect::<Vec<_>>());
        assert_eq!(respaced_steps(1000, 1).unwrap(), vec![999]);
        let t = respaced_steps(1000, 10).unwrap();
        assert_eq!(t, vec![0, 111, 222, 333, 444, 555, 666, 777, 888, 999]);
        assert!(respaced_steps(1000, 1001).is_err() && respaced_steps(10, 0).is_err());
    }
}
