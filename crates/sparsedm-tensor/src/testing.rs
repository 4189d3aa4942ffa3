//! Helpers for tests of this and downstream crates: closeness checks with
//! tolerances relative to the reference's magnitude, and a finite-difference
//! gradient checker.

use crate::{Result, Rng, Tensor, no_grad};

/// Max |a − b| divided by max |b| (the fixtures' tolerance convention).
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "max_rel_diff: lengths differ");
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Panics with a readable message when `a` and `b` differ by more than
/// `tol` relative to max |b|.
pub fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ ({} vs {})", a.len(), b.len());
    let d = max_rel_diff(a, b);
    assert!(d <= tol, "{what}: max relative difference {d:.3e} > {tol:.1e}");
}

/// Compares the autograd gradient of `Σ f(inputs) ⊙ r` (random `r`) with
/// central finite differences for every input element, in f64
/// accumulation. Returns the worst relative error over all inputs.
pub fn grad_check(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>, eps: f32, seed: u64) -> Result<f32> {
    let vars: Vec<Tensor> = inputs.iter().map(|t| t.contiguous().map(|c| c.to_var())).collect::<Result<_>>()?;
    let out = f(&vars)?;
    let r = Tensor::randn(out.shape(), &mut Rng::new(seed), &out.device())?;
    let grads = out.mul(&r)?.sum_all()?.backward()?;
    let rv: Vec<f64> = r.to_vec_f32()?.into_iter().map(f64::from).collect();
    let _g = no_grad();
    let loss = |ts: &[Tensor]| -> Result<f64> {
        let o = f(ts)?.to_vec_f32()?;
        Ok(o.iter().zip(&rv).map(|(&a, &b)| a as f64 * b).sum())
    };
    let mut worst = 0f32;
    for (i, v) in vars.iter().enumerate() {
        let analytic = match grads.get(v) {
            Some(g) => g.to_vec_f32()?,
            None => vec![0.0; v.elem_count()],
        };
        let base = v.to_vec_f32()?;
        let mut numeric = vec![0f32; base.len()];
        for j in 0..base.len() {
            let eval = |delta: f32| -> Result<f64> {
                let mut p = base.clone();
                p[j] += delta;
                let mut ts: Vec<Tensor> = vars.iter().map(|t| t.detach()).collect();
                ts[i] = Tensor::from_vec(p, v.shape(), &v.device())?;
                loss(&ts)
            };
            numeric[j] = ((eval(eps)? - eval(-eps)?) / (2.0 * eps as f64)) as f32;
        }
        worst = worst.max(max_rel_diff(&analytic, &numeric));
    }
    Ok(worst)
}
