//! The knowledge-transfer loss of SparseDM's `train_c10_lsm3.py` (MODELS_AND_METHOD §7.3):
//! w_diff · mean((ε − ε̂)²) + w_kt · mean((ε_teacher − ε̂)²), defaults 1.0 / 0.1, teacher detached.

use sparsedm_layers::{KtLoss, LayersError, Linear, ParamStore, SparseMode};
use sparsedm_tensor::{Device, Rng, Tensor};

const DEV: Device = Device::Cpu;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(Rng::new(seed).normal_vec(shape.iter().product()), shape, &DEV).unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>() / a.len() as f64
}

#[test]
fn defaults_are_the_papers_and_the_value_is_the_formula() {
    assert_eq!(KtLoss::default(), KtLoss { w_diff: 1.0, w_kt: 0.1 });
    let shape = [2, 3, 4, 4];
    let (eps, pred, teacher) = (randn(&shape, 1), randn(&shape, 2), randn(&shape, 3));
    for loss in [KtLoss::default(), KtLoss::new(0.01, 1.0).unwrap(), KtLoss::new(1.0, 1.0).unwrap()] {
        let out = loss.compute(&eps, &pred, Some(&teacher)).unwrap();
        let d = mse(&vals(&eps), &vals(&pred));
        let k = mse(&vals(&teacher), &vals(&pred));
        assert!((f64::from(out.diffusion) - d).abs() < 1e-5 * d, "{} vs {d}", out.diffusion);
        assert!((f64::from(out.transfer.unwrap()) - k).abs() < 1e-5 * k);
        let total = f64::from(loss.w_diff) * d + f64::from(loss.w_kt) * k;
        let got = f64::from(vals(&out.total)[0]);
        assert!((got - total).abs() < 1e-5 * total, "{got} vs {total}");
        assert_eq!(out.total.shape(), &[] as &[usize]);
    }
}

#[test]
fn gradient_reaches_the_student_and_never_the_teacher() {
    let (student_store, teacher_store) = (ParamStore::new(DEV, 1), ParamStore::new(DEV, 2));
    let student = Linear::new(&student_store.pp("fc"), 8, 8, true).unwrap();
    student.slot().set_mode(SparseMode::srste("2:4".parse().unwrap())).unwrap();
    let teacher = Linear::new(&teacher_store.pp("fc"), 8, 8, true).unwrap();
    let x = randn(&[4, 8], 3);
    let eps = randn(&[4, 8], 4);
    let pred = student.forward(&x).unwrap();
    // The teacher runs with gradients enabled (as the reference does): its output is tracked.
    let t_out = teacher.forward(&x).unwrap();
    assert!(t_out.is_tracked());
    let loss = KtLoss::default().compute(&eps, &pred, Some(&t_out)).unwrap();
    let grads = loss.total.backward().unwrap();
    assert!(grads.get(student.weight()).is_some());
    assert!(grads.get(student.bias().unwrap()).is_some());
    assert!(grads.get(teacher.weight()).is_none(), "no gradient may flow into the teacher");
    assert!(grads.get(teacher.bias().unwrap()).is_none());
    assert_eq!(grads.len(), 2);
}

#[test]
fn gradient_with_respect_to_the_prediction_is_the_analytic_one() {
    let shape = [3, 5];
    let (eps, teacher) = (randn(&shape, 5), randn(&shape, 6));
    let pred = randn(&shape, 7).to_var();
    let loss = KtLoss::new(0.7, 0.3).unwrap();
    let out = loss.compute(&eps, &pred, Some(&teacher)).unwrap();
    let g = vals(out.total.backward().unwrap().get(&pred).unwrap());
    let n = 15.0;
    let (e, t, p) = (vals(&eps), vals(&teacher), vals(&pred));
    for i in 0..15 {
        let expected = 2.0 / n * (0.7 * (p[i] - e[i]) + 0.3 * (p[i] - t[i]));
        assert!((g[i] - expected).abs() <= 1e-6 * expected.abs().max(1e-3), "{i}: {} vs {expected}", g[i]);
    }
}

#[test]
fn without_a_teacher_it_is_the_plain_diffusion_loss() {
    let (eps, pred) = (randn(&[2, 4], 8), randn(&[2, 4], 9));
    let out = KtLoss::new(1.0, 0.0).unwrap().compute(&eps, &pred, None).unwrap();
    assert_eq!(out.transfer, None);
    assert_eq!(vals(&out.total)[0], out.diffusion);
    let e = KtLoss::default().compute(&eps, &pred, None).unwrap_err();
    assert!(e.to_string().contains("needs a teacher"), "{e}");
}

#[test]
fn bad_weights_and_shapes_are_errors() {
    for (a, b) in [(-1.0, 0.1), (1.0, f32::NAN), (f32::INFINITY, 0.0), (0.0, 0.0)] {
        assert!(matches!(KtLoss::new(a, b), Err(LayersError::InvalidArgument { .. })), "{a} {b}");
    }
    let loss = KtLoss::default();
    let (a, b) = (randn(&[2, 4], 1), randn(&[4, 2], 2));
    let e = loss.compute(&a, &b, Some(&a)).unwrap_err();
    assert!(e.to_string().contains("differ in shape"), "{e}");
    // A broadcastable teacher shape must not slip through.
    let t = randn(&[1, 4], 3);
    let e = loss.compute(&a, &a, Some(&t)).unwrap_err();
    assert!(e.to_string().contains("teacher"), "{e}");
}
