//! `sparsedm bench` times the trainer's own step: the step
//! [`speed::bench_step`] builds, run on the trainer's first batch, gives
//! the trainer's loss, gradient norm and weights bit for bit, dense and
//! with 2:4 SR-STE masks; and the bench report comes out of it.

mod common;

use common::{TINY, tmp};
use sparsedm_tensor::Device;
use sparsedm_train::data::LoaderConfig;
use sparsedm_train::data::loader::make_batch;
use sparsedm_train::{RunConfig, Trainer, speed};

fn bits(ts: &[(String, sparsedm_tensor::Tensor)]) -> Vec<(String, Vec<u32>)> {
    ts.iter().map(|(n, t)| (n.clone(), t.to_vec_f32().unwrap().into_iter().map(f32::to_bits).collect())).collect()
}

#[test]
fn bench_times_the_trainers_step() {
    let cfg = RunConfig::parse(TINY, "tiny", &["lr_scheduler.warmup_steps=0".into()]).unwrap();
    let batch = 16;
    for srste in [false, true] {
        let mut bench = speed::bench_step(&cfg, batch, srste, Device::Cpu).unwrap();
        let sparse = srste.then(|| speed::srste_2of4(&cfg));
        let run_cfg = speed::bench_config(&cfg, batch, sparse);
        let dir = tmp(&format!("one-step-{srste}"));
        let mut trainer = Trainer::new(run_cfg.clone(), &dir, false, Device::Cpu).unwrap();
        let loader = LoaderConfig { batch_size: batch, seed: run_cfg.seed, random_flip: run_cfg.dataset.random_flip, prefetch: 1 };
        let first = make_batch(trainer.dataset().as_ref(), &loader, 0).unwrap();

        let a = trainer.train_step().unwrap();
        let b = bench.run(&first).unwrap();
        assert_eq!(a, b, "SR-STE {srste}: the bench step measured something else than the trainer's step");
        assert_eq!(bits(&trainer.student().store.state_dict()), bits(&bench.student().store.state_dict()), "SR-STE {srste}: weights");
        let masked = bench.student().store.sparse_slots().iter().filter(|(_, s)| s.mode().pattern().is_some()).count();
        assert_eq!(masked > 0, srste, "the SR-STE bench step has masked layers, the dense one none");
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = speed::measure(&cfg, 4, 1, Device::Cpu).unwrap();
    let positive = |t: Option<f64>| t.is_some_and(|t| t > 0.0);
    assert!(positive(report.train_step_ms) && positive(report.train_step_srste_ms) && report.forward_ms > 0.0, "{report:?}");
    assert_eq!(report.device, "cpu");
}
