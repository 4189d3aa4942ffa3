//! AdamW against `torch.optim.AdamW` (PyTorch 2.11.0): the reference
//! trajectory in `fixtures/adamw_ref.safetensors` was produced by
//! `fixtures/make_adamw_ref.py` (four steps, per-step learning rates
//! including the warm-up's 0, betas (0.99, 0.999), weight decay 0.03).
//! Also gradient clipping and EMA against their closed forms.

use sparsedm_tensor::testing::assert_close;
use sparsedm_tensor::{Device, Tensor, load_safetensors};
use sparsedm_train::ema::Ema;
use sparsedm_train::grad::{clip_global_norm, global_norm};
use sparsedm_train::optim::{AdamW, AdamWConfig};
use std::collections::HashMap;

#[test]
fn adamw_matches_pytorch() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw_ref.safetensors");
    let r: HashMap<String, Tensor> = load_safetensors(path).unwrap().into_iter().collect();
    let a = r["init.a"].contiguous().unwrap().to_vec_f32().unwrap();
    let a = Tensor::from_vec(a, &[3, 4], &Device::Cpu).unwrap().to_var();
    let b = Tensor::from_vec(r["init.b"].to_vec_f32().unwrap(), &[5], &Device::Cpu).unwrap().to_var();
    let cfg = AdamWConfig { lr: 1.0, betas: (0.99, 0.999), eps: 1e-8, weight_decay: 0.03 };
    let mut opt = AdamW::new(vec![("a".into(), a.clone()), ("b".into(), b.clone())], cfg);
    let lrs = r["lrs"].to_vec_f32().unwrap();
    for (k, &lr) in lrs.iter().enumerate() {
        // Gradients via a loss whose gradient is exactly the reference's.
        let loss = a
            .mul(&r[&format!("grad{k}.a")])
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&b.mul(&r[&format!("grad{k}.b")]).unwrap().sum_all().unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads, lr).unwrap();
        assert_close(&format!("step {k} a"), &a.to_vec_f32().unwrap(), &r[&format!("after{k}.a")].to_vec_f32().unwrap(), 1e-6);
        assert_close(&format!("step {k} b"), &b.to_vec_f32().unwrap(), &r[&format!("after{k}.b")].to_vec_f32().unwrap(), 1e-6);
    }
    // State round trip.
    let state: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
    let mut again = AdamW::new(vec![("a".into(), a.clone()), ("b".into(), b.clone())], cfg);
    again.load_state(&state).unwrap();
    assert_eq!(again.step_count(), 4);
    let mut missing = state.clone();
    missing.remove("optim.exp_avg.b");
    assert!(again.load_state(&missing).unwrap_err().to_string().contains("optim.exp_avg.b"));
}

#[test]
fn clipping_and_ema() {
    let w = Tensor::from_vec(vec![3.0, 4.0], &[2], &Device::Cpu).unwrap().to_var();
    let params = vec![("w".to_string(), w.clone())];
    let mut grads = w.sqr().unwrap().mul_scalar(0.5).unwrap().sum_all().unwrap().backward().unwrap(); // grad = w
    assert!((global_norm(&grads, &params).unwrap() - 5.0).abs() < 1e-6);
    let before = clip_global_norm(&mut grads, &params, 1.0).unwrap();
    assert!((before - 5.0).abs() < 1e-6);
    let g = grads.get(&w).unwrap().to_vec_f32().unwrap();
    assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");

    let mut ema = Ema::new(&params, 0.9).unwrap();
    w.set_data(&Tensor::from_vec(vec![13.0, 14.0], &[2], &Device::Cpu).unwrap()).unwrap();
    ema.update(&params).unwrap();
    assert_close("ema", &ema.tensors()[0].1.to_vec_f32().unwrap(), &[4.0, 5.0], 1e-6);
}
