//! The fused in-place updates and the N:M mask on CPU tensors: the same
//! arithmetic as PyTorch's AdamW and U-ViT's EMA (written out here
//! operation by operation; `sparsedm-train`'s optimizer and EMA call these
//! updates on every device), the mask equal to `sparsedm_tensor::nm`, the
//! squared norm without a squared copy, and bad operands refused with errors.

use sparsedm_tensor::nm::{NmGroups, nm_mask_into};
use sparsedm_tensor::{AdamWScalars, Device, Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, &mut Rng::new(seed), &Device::Cpu).unwrap()
}

#[test]
fn adamw_step_matches_the_reference_loop() {
    let shape = [37, 1000]; // above one parallel chunk
    let (p, g) = (randn(&shape, 1).contiguous().unwrap(), randn(&shape, 2));
    let m = randn(&shape, 3).mul_scalar(0.1).unwrap();
    let v = randn(&shape, 4).sqr().unwrap();
    let (mut pr, gr, mut mr, mut vr) = (p.to_vec_f32().unwrap(), g.to_vec_f32().unwrap(), m.to_vec_f32().unwrap(), v.to_vec_f32().unwrap());
    for step in 1..=3u64 {
        let s = AdamWScalars::new(1e-3, (0.9, 0.999), 1e-8, 0.03, step);
        p.adamw_step_(&g, &m, &v, &s).unwrap();
        for i in 0..pr.len() {
            let gi = gr[i];
            pr[i] *= s.decay;
            mr[i] += (1.0 - s.beta1) * (gi - mr[i]);
            vr[i] = s.beta2 * vr[i] + (1.0 - s.beta2) * gi * gi;
            let denom = vr[i].sqrt() / s.bc2_sqrt + s.eps;
            pr[i] -= s.step_size * mr[i] / denom;
        }
    }
    assert_eq!(p.to_vec_f32().unwrap(), pr);
    assert_eq!(m.to_vec_f32().unwrap(), mr);
    assert_eq!(v.to_vec_f32().unwrap(), vr);
}

#[test]
fn adamw_step_reads_a_strided_gradient() {
    let p = Tensor::zeros(&[3, 2], &Device::Cpu).unwrap();
    let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
    let g = randn(&[2, 3], 5).t().unwrap();
    let s = AdamWScalars::new(0.1, (0.9, 0.999), 1e-8, 0.0, 1);
    p.adamw_step_(&g, &m, &v, &s).unwrap();
    // First step from zero moments: m = 0.1·g, so p = −lr·sign(g) up to ε.
    for (pv, gv) in p.to_vec_f32().unwrap().iter().zip(g.to_vec_f32().unwrap()) {
        assert!((pv + 0.1 * gv.signum()).abs() < 1e-5, "{pv} for g = {gv}");
    }
}

#[test]
fn ema_update_matches_the_reference_loop() {
    let e = randn(&[5000], 6).contiguous().unwrap();
    let x = randn(&[5000], 7);
    let (mut er, xr) = (e.to_vec_f32().unwrap(), x.to_vec_f32().unwrap());
    e.ema_update_(&x, 0.9999).unwrap();
    for (e, &c) in er.iter_mut().zip(&xr) {
        *e = 0.9999 * *e + (1.0 - 0.9999) * c;
    }
    assert_eq!(e.to_vec_f32().unwrap(), er);
}

#[test]
fn fused_updates_refuse_bad_operands() {
    let p = Tensor::zeros(&[4, 4], &Device::Cpu).unwrap();
    let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
    let s = AdamWScalars::new(1e-3, (0.9, 0.999), 1e-8, 0.0, 1);
    // Shape mismatch, a view target, a shared buffer, a non-f32 gradient.
    assert!(p.adamw_step_(&Tensor::zeros(&[4, 3], &Device::Cpu).unwrap(), &m, &v, &s).is_err());
    assert!(p.t().unwrap().adamw_step_(&p, &m, &v, &s).is_err());
    assert!(p.adamw_step_(&p.zeros_like().unwrap(), &m, &m, &s).is_err());
    let gi = Tensor::from_vec_i64(vec![0; 16], &[4, 4], &Device::Cpu).unwrap();
    assert!(p.adamw_step_(&gi, &m, &v, &s).is_err());
    assert!(p.ema_update_(&p, 0.5).is_err());
    assert!(p.narrow(0, 1, 2).unwrap().ema_update_(&Tensor::zeros(&[2, 4], &Device::Cpu).unwrap(), 0.5).is_err());
    // Nothing was written by the refused calls.
    assert_eq!(p.to_vec_f32().unwrap(), vec![0.0; 16]);
}

#[test]
fn nm_mask_on_the_cpu_equals_the_slice_rule() {
    for (shape, n, m) in [(vec![8, 16], 2, 4), (vec![6, 8, 3, 3], 1, 4), (vec![4, 32], 3, 8), (vec![2, 64, 1, 1], 5, 32)] {
        let w = randn(&shape, 11);
        let got = w.nm_mask(n, m).unwrap();
        assert_eq!(got.shape(), &shape[..]);
        let k: usize = shape[2..].iter().product();
        let mut want = vec![0.0; w.elem_count()];
        nm_mask_into(&w.to_vec_f32().unwrap(), &mut want, (shape[0], shape[1], k), n, m, NmGroups::Grouped).unwrap();
        assert_eq!(got.to_vec_f32().unwrap(), want, "{shape:?} {n}:{m}");
        // n kept per group of m input channels.
        let kept: f32 = want.iter().sum();
        assert_eq!(kept as usize, w.elem_count() / m * n);
    }
    // A transposed view is masked by its values, not its buffer order.
    let w = randn(&[8, 4], 12);
    let wt = w.t().unwrap();
    assert_eq!(wt.nm_mask(2, 4).unwrap().to_vec_f32().unwrap(), wt.contiguous().unwrap().nm_mask(2, 4).unwrap().to_vec_f32().unwrap());
    assert!(randn(&[4, 6], 13).nm_mask(2, 4).is_err());
    assert!(randn(&[8], 13).nm_mask(2, 4).is_err());
    assert!(randn(&[4, 8], 13).nm_mask(5, 4).is_err());
}

#[test]
fn sum_sq_all_is_the_f64_sum_of_squares_of_any_view() {
    // Lengths around the 8 lanes and the 32768-element parallel chunk, and
    // a strided view (gathered first): against a plain f64 sum, which the
    // f64 lanes match to the last f32 bit at these sizes (the two sums
    // differ by far less than half an f32 ulp of the total).
    for (shape, seed) in
        [(vec![0usize], 1u64), (vec![7], 2), (vec![3, 9], 3), (vec![32768], 4), (vec![5, 32768 / 5 + 3], 5), (vec![41, 1000], 6)]
    {
        let x = randn(&shape, seed);
        let want = x.to_vec_f32().unwrap().iter().map(|&v| v as f64 * v as f64).sum::<f64>() as f32;
        let got = x.sum_sq_all().unwrap();
        assert_eq!(got.shape(), &[] as &[usize]);
        assert_eq!(got.to_scalar().unwrap(), want, "{shape:?}");
    }
    let x = randn(&[300, 257], 7);
    let xt = x.t().unwrap();
    let want = xt.contiguous().unwrap().sum_sq_all().unwrap().to_scalar().unwrap();
    assert_eq!(xt.sum_sq_all().unwrap().to_scalar().unwrap(), want);
    let rel = (want as f64 - x.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap() as f64).abs() / want as f64;
    assert!(rel < 1e-6, "{rel}");
    // d/dx Σx² = 2x, through a view.
    let v = randn(&[4, 6], 8).to_var();
    let g = v.t().unwrap().sum_sq_all().unwrap().mul_scalar(0.5).unwrap().backward().unwrap();
    assert_eq!(g.get(&v).unwrap().to_vec_f32().unwrap(), v.to_vec_f32().unwrap());
    let e = Tensor::from_vec_i64(vec![1, 2], &[2], &Device::Cpu).unwrap().sum_sq_all().unwrap_err();
    assert!(e.to_string().contains("sum_sq_all"), "{e}");
}
