//! Sampling between training steps through the deployed N:M path: the
//! trainer's own SR-STE 2:4 step (AdamW's fused in-place update) changes the
//! weights, and every forward under `no_grad` afterwards — what sampling
//! runs — uses the masks and weights of *that* step: it equals the masked
//! dense forward within 1e-5 relative, and each deployed layer was
//! compressed again exactly once per step.

mod common;

use common::TINY;
use sparsedm_tensor::nm_cpu::{NmPath, force_path};
use sparsedm_tensor::{Device, Rng, Tensor, no_grad};
use sparsedm_train::data::Batch;
use sparsedm_train::{RunConfig, speed};

#[test]
fn samples_between_training_steps_follow_the_weights() {
    force_path(Some(NmPath::Sparse));
    let cfg = RunConfig::parse(TINY, "tiny", &["lr_scheduler.warmup_steps=0".into()]).unwrap();
    let mut step = speed::bench_step(&cfg, 8, true, Device::Cpu).unwrap();
    let mut rng = Rng::new(4);
    let images = Tensor::rand_uniform(&[8, 3, 16, 16], 0.0, 1.0, &mut rng, &Device::Cpu).unwrap();
    let batch = Batch { images, labels: None, step: 0 };
    let x = Tensor::randn(&[4, 3, 16, 16], &mut rng, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![5.0, 250.0, 500.0, 999.0], &[4], &Device::Cpu).unwrap();
    let mut previous: Option<Vec<f32>> = None;
    for round in 1..=3 {
        step.run(&batch).unwrap();
        let b = step.student();
        b.store.set_training(false);
        let dense = b.model.predict_eps(&x, &t, None).unwrap().detach().to_vec_f32().unwrap();
        let nm = {
            let _g = no_grad();
            b.model.predict_eps(&x, &t, None).unwrap().to_vec_f32().unwrap()
        };
        b.store.set_training(true);
        let scale = dense.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = dense.iter().zip(&nm).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-5 * scale, "round {round}: N:M sample differs from the masked dense forward by {err} (scale {scale})");
        let slots = b.store.sparse_slots();
        let deployed: Vec<_> = slots.iter().filter(|(_, s)| s.deployed_kind() == Some("nm-cpu")).collect();
        assert!(!deployed.is_empty());
        for (name, s) in deployed {
            assert_eq!(s.deploy_builds(), round, "{name}: one compression per changed weight");
        }
        if let Some(p) = &previous {
            assert_ne!(p, &nm, "round {round}: the sample did not follow the training step");
        }
        previous = Some(nm);
    }
}
