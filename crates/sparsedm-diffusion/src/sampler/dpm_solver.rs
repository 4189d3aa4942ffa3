//! DPM-Solver (Lu et al., NeurIPS 2022, "DPM-Solver: A Fast ODE Solver for
//! Diffusion Probabilistic Model Sampling in Around 10 Steps"), singlestep,
//! noise-prediction form.
//!
//! The PF-ODE solution from `s` to `t < s` is, exactly (paper eq. 3.4),
//!
//! ```text
//! x_t = (α_t/α_s) x_s − α_t ∫_{λ_s}^{λ_t} e^{−λ} ε̂(x_λ, λ) dλ
//! ```
//!
//! and DPM-Solver-k Taylor-expands ε̂ in λ. With `h = λ_t − λ_s`:
//!
//! * **DPM-Solver-1** (eq. 3.7; = DDIM):
//!   `x_t = (α_t/α_s) x_s − σ_t (eʰ − 1) ε̂(x_s, s)`.
//! * **DPM-Solver-2** (Algorithm 1, r₁ = ½): `s₁ = λ⁻¹(λ_s + r₁h)`,
//!   `u = (α_{s₁}/α_s) x_s − σ_{s₁}(e^{r₁h} − 1) ε_s`,
//!   `x_t = (α_t/α_s) x_s − σ_t(eʰ − 1) ε_s − σ_t/(2r₁) (eʰ − 1)(ε̂(u, s₁) − ε_s)`.
//! * **DPM-Solver-3** (Algorithm 2, r₁ = ⅓, r₂ = ⅔): `sᵢ = λ⁻¹(λ_s + rᵢh)`,
//!   `u₁ = (α_{s₁}/α_s) x_s − σ_{s₁}(e^{r₁h} − 1) ε_s`, `D₁ = ε̂(u₁, s₁) − ε_s`,
//!   `u₂ = (α_{s₂}/α_s) x_s − σ_{s₂}(e^{r₂h} − 1) ε_s − (σ_{s₂} r₂/r₁)((e^{r₂h} − 1)/(r₂h) − 1) D₁`,
//!   `D₂ = ε̂(u₂, s₂) − ε_s`,
//!   `x_t = (α_t/α_s) x_s − σ_t(eʰ − 1) ε_s − (σ_t/r₂)((eʰ − 1)/h − 1) D₂`.
//!
//! Order k has global error O(h^k). The time grid (`skip_type`, §3.3 and the
//! reference code's `get_time_steps`) is uniform in λ (`logSNR`, the
//! default), in t, or in √t (`time_quadratic`), from `T` down to `t_end`
//! (`eps`). The fixed-order solver (`singlestep_fixed` in the reference code)
//! takes ⌊steps/k⌋ intervals of order k; DPM-Solver-fast (§3.4, the variant
//! U-ViT evaluates FID with) spends exactly `steps` evaluations on
//! K = ⌊steps/3⌋ + 1 intervals with orders `[3,…,3,2,1]` (steps ≡ 0 mod 3),
//! `[3,…,3,1]` (≡ 1) or `[3,…,3,2]` (≡ 2).

use super::{Eval, check_inputs, check_times, lincomb, lincomb3};
use crate::error::{DiffusionError, Result};
use crate::model::EpsModel;
use crate::schedule::{NoiseSchedule, linspace};
use sparsedm_tensor::{Tensor, no_grad};
use std::fmt;
use std::str::FromStr;

/// How DPM-Solver places its time steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimeSkip {
    /// Uniform in λ = log(α/σ) (`"logSNR"`; recommended for images).
    #[default]
    LogSnr,
    /// Uniform in t (`"time_uniform"`).
    TimeUniform,
    /// Uniform in √t (`"time_quadratic"`).
    TimeQuadratic,
}

impl TimeSkip {
    /// The name [`FromStr`] accepts (the reference code's `skip_type`).
    pub fn name(self) -> &'static str {
        match self {
            TimeSkip::LogSnr => "logSNR",
            TimeSkip::TimeUniform => "time_uniform",
            TimeSkip::TimeQuadratic => "time_quadratic",
        }
    }
}

impl fmt::Display for TimeSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TimeSkip {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self> {
        [TimeSkip::LogSnr, TimeSkip::TimeUniform, TimeSkip::TimeQuadratic]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| DiffusionError::Config(format!("unknown time skip {s:?}; expected logSNR, time_uniform or time_quadratic")))
    }
}

/// `n + 1` decreasing times from `t_start` to `t_end` (both exact).
pub fn time_steps(schedule: &dyn NoiseSchedule, skip: TimeSkip, t_start: f64, t_end: f64, n: usize) -> Vec<f64> {
    let mut ts = match skip {
        TimeSkip::LogSnr => {
            linspace(schedule.lambda(t_start), schedule.lambda(t_end), n + 1).into_iter().map(|l| schedule.inverse_lambda(l)).collect()
        }
        TimeSkip::TimeUniform => linspace(t_start, t_end, n + 1),
        TimeSkip::TimeQuadratic => linspace(t_start.sqrt(), t_end.sqrt(), n + 1).into_iter().map(|r| r * r).collect(),
    };
    ts[0] = t_start;
    ts[n] = t_end;
    ts
}

/// One DPM-Solver step of order 1, 2 or 3 from `s` to `t`.
pub(crate) fn step(ev: &Eval<'_>, x: &Tensor, s: f64, t: f64, order: usize) -> Result<Tensor> {
    let sch = ev.schedule;
    let (lam_s, lam_t) = (sch.lambda(s), sch.lambda(t));
    let h = lam_t - lam_s;
    let (la_s, la_t) = (sch.log_mean_coeff(s), sch.log_mean_coeff(t));
    let sigma_t = sch.sigma(t);
    let phi_1 = h.exp_m1();
    let eps_s = ev.eps(x, s)?;
    // Points inside the interval: α_{sᵢ}/α_s and σ_{sᵢ} at λ_s + r h.
    let inner = |r: f64| {
        let si = sch.inverse_lambda(lam_s + r * h);
        (si, (sch.log_mean_coeff(si) - la_s).exp(), sch.sigma(si))
    };
    let ratio_t = (la_t - la_s).exp();
    match order {
        1 => lincomb(ratio_t, x, -sigma_t * phi_1, &eps_s),
        2 => {
            let r1 = 0.5;
            let (s1, ratio_1, sigma_1) = inner(r1);
            let u = lincomb(ratio_1, x, -sigma_1 * (r1 * h).exp_m1(), &eps_s)?;
            let d1 = ev.eps(&u, s1)?.sub(&eps_s)?;
            lincomb3(ratio_t, x, -sigma_t * phi_1, &eps_s, -(0.5 / r1) * sigma_t * phi_1, &d1)
        }
        3 => {
            let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
            let (s1, ratio_1, sigma_1) = inner(r1);
            let (s2, ratio_2, sigma_2) = inner(r2);
            let phi_11 = (r1 * h).exp_m1();
            let phi_12 = (r2 * h).exp_m1();
            let phi_22 = (r2 * h).exp_m1() / (r2 * h) - 1.0;
            let phi_2 = phi_1 / h - 1.0;
            let u1 = lincomb(ratio_1, x, -sigma_1 * phi_11, &eps_s)?;
            let d1 = ev.eps(&u1, s1)?.sub(&eps_s)?;
            let u2 = lincomb3(ratio_2, x, -sigma_2 * phi_12, &eps_s, -(r2 / r1) * sigma_2 * phi_22, &d1)?;
            let d2 = ev.eps(&u2, s2)?.sub(&eps_s)?;
            lincomb3(ratio_t, x, -sigma_t * phi_1, &eps_s, -(1.0 / r2) * sigma_t * phi_2, &d2)
        }
        _ => Err(DiffusionError::Input { what: "dpm-solver".into(), msg: format!("order must be 1, 2 or 3, got {order}") }),
    }
}

fn run_orders(ev: &Eval<'_>, x_init: &Tensor, orders: &[usize], skip: TimeSkip, t_end: f64) -> Result<Tensor> {
    let _guard = no_grad();
    let ts = time_steps(ev.schedule, skip, ev.schedule.t_max(), t_end, orders.len());
    let mut x = x_init.clone();
    for (i, &order) in orders.iter().enumerate() {
        x = step(ev, &x, ts[i], ts[i + 1], order)?;
    }
    Ok(x)
}

/// DPM-Solver of fixed `order` (1, 2 or 3) with ⌊steps/order⌋ intervals from
/// the schedule's `T` to `t_end`. Works on every schedule (discrete ones in
/// their continuous-time embedding).
pub fn dpm_solver(
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    x_init: &Tensor,
    order: usize,
    steps: usize,
    skip: TimeSkip,
    t_end: f64,
    y: Option<&Tensor>,
) -> Result<Tensor> {
    let what = "dpm-solver";
    if !(1..=3).contains(&order) {
        return Err(DiffusionError::Input { what: what.into(), msg: format!("order must be 1, 2 or 3, got {order}") });
    }
    check_inputs(what, x_init, y, steps, order)?;
    check_times(what, schedule, schedule.t_max(), t_end)?;
    let ev = Eval { model, schedule, y };
    run_orders(&ev, x_init, &vec![order; steps / order], skip, t_end)
}

/// The per-interval orders of DPM-Solver-fast for `steps` evaluations.
pub fn fast_orders(steps: usize) -> Vec<usize> {
    let k = steps / 3 + 1;
    match steps % 3 {
        0 => [vec![3; k - 2], vec![2, 1]].concat(),
        1 => [vec![3; k - 1], vec![1]].concat(),
        _ => [vec![3; k - 1], vec![2]].concat(),
    }
}

/// DPM-Solver-fast: exactly `steps` network evaluations with the orders of
/// [`fast_orders`] (U-ViT's training-time FID sampler: 50 steps, logSNR,
/// `eps` = 1e-4).
pub fn dpm_solver_fast(
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    x_init: &Tensor,
    steps: usize,
    skip: TimeSkip,
    t_end: f64,
    y: Option<&Tensor>,
) -> Result<Tensor> {
    let what = "dpm-solver-fast";
    check_inputs(what, x_init, y, steps, 1)?;
    check_times(what, schedule, schedule.t_max(), t_end)?;
    let ev = Eval { model, schedule, y };
    run_orders(&ev, x_init, &fast_orders(steps), skip, t_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_orders_spend_exactly_steps() {
        for steps in 1..60 {
            let o = fast_orders(steps);
            assert_eq!(o.iter().sum::<usize>(), steps, "steps {steps}: {o:?}");
            assert_eq!(o.len(), steps / 3 + 1);
        }
        assert_eq!(fast_orders(6), vec![3, 2, 1]);
        assert_eq!(fast_orders(7), vec![3, 3, 1]);
        assert_eq!(fast_orders(8), vec![3, 3, 2]);
    }

    #[test]
    fn logsnr_grid_is_uniform_in_lambda() {
        let s = crate::schedule::VpLinear::uvit();
        let ts = time_steps(&s, TimeSkip::LogSnr, 1.0, 1e-3, 8);
        let l: Vec<f64> = ts.iter().map(|&t| s.lambda(t)).collect();
        let h = (l[8] - l[0]) / 8.0;
        for i in 0..8 {
            assert!((l[i + 1] - l[i] - h).abs() < 1e-9, "{l:?}");
        }
        assert_eq!((ts[0], ts[8]), (1.0, 1e-3));
    }
}
