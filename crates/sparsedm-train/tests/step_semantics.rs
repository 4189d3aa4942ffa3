//! What one training step means, beyond "the loss falls":
//! - gradient accumulation: 2 micro-batches of 32 give the update of one
//!   batch of 64 (noise, loss and SR-STE's decay λ counted once per step);
//! - the EMA averages the dense parameters (also the pruned positions of
//!   SR-STE layers), and the EMA model derives its masks from its own weights;
//! - a sparse SR-STE run with accumulation resumes bit for bit.

mod common;

use common::{TINY, tmp};
use sparsedm_layers::SparseMode;
use sparsedm_tensor::testing::max_rel_diff;
use sparsedm_tensor::{Device, Tensor};
use sparsedm_train::data::LoaderConfig;
use sparsedm_train::data::loader::make_batch;
use sparsedm_train::{RunConfig, TrainStep, Trainer, build};

/// The tiny model with 2:4 SR-STE on its block layers and no teacher.
fn srste(extra: &[&str]) -> RunConfig {
    let mut sets: Vec<String> =
        ["sparse.pattern=\"2:4\"", "sparse.method=\"srste\"", "sparse.teacher=\"none\"", "lr_scheduler.warmup_steps=0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::parse(TINY, "tiny", &sets).unwrap()
}

fn values(ts: &[(String, Tensor)]) -> Vec<(String, Vec<f32>)> {
    ts.iter().map(|(n, t)| (n.clone(), t.to_vec_f32().unwrap())).collect()
}

#[test]
fn accumulating_two_micro_batches_of_32_is_one_batch_of_64() {
    // A large λ makes the decay term a visible part of the gradient: counted
    // once per micro-batch it would change the first moments by tens of percent.
    let one = srste(&["train.batch_size=64", "sparse.lambda=0.5"]);
    let two = srste(&["train.batch_size=64", "train.grad_accum=2", "sparse.lambda=0.5"]);
    let data = build::dataset(&one).unwrap();
    let batch = make_batch(data.as_ref(), &LoaderConfig { batch_size: 64, seed: 1, random_flip: true, prefetch: 1 }, 0).unwrap();
    let mut a = TrainStep::new(&one, Device::Cpu, None).unwrap();
    let mut b = TrainStep::new(&two, Device::Cpu, None).unwrap();
    let (ma, mb) = (a.run(&batch).unwrap(), b.run(&batch).unwrap());
    assert!((ma.loss - mb.loss).abs() <= 1e-6 * ma.loss.abs(), "loss {} vs {}", ma.loss, mb.loss);
    assert!((ma.grad_norm - mb.grad_norm).abs() <= 1e-4 * ma.grad_norm, "gradient norm {} vs {}", ma.grad_norm, mb.grad_norm);
    // After one AdamW step the first moment is (1 − β₁)·gradient: compare the gradients themselves.
    let (sa, sb) = (a.state().unwrap(), b.state().unwrap());
    let mut srste_weights = 0;
    for (name, m_a) in &sa.optim {
        if !name.starts_with("optim.exp_avg.") {
            continue;
        }
        let d = max_rel_diff(&sb.optim[name].to_vec_f32().unwrap(), &m_a.to_vec_f32().unwrap());
        assert!(d <= 1e-4, "{name}: accumulated gradient differs from the one-batch gradient by {d:.2e}");
        srste_weights += usize::from(name.ends_with(".weight") && (name.contains(".attn.") || name.contains(".mlp.")));
    }
    assert!(srste_weights >= 8, "the SR-STE weights were compared ({srste_weights})");
    for ((n, pa), (_, pb)) in values(&sa.model).iter().zip(&values(&sb.model)) {
        let d = max_rel_diff(pb, pa);
        assert!(d <= 1e-4, "{n}: weights differ by {d:.2e} after one step");
    }
}

#[test]
fn the_ema_averages_the_dense_weights_and_masks_itself() {
    let cfg = srste(&["train.ema_rate=0.5"]);
    let data = build::dataset(&cfg).unwrap();
    let batch = make_batch(data.as_ref(), &LoaderConfig { batch_size: 16, seed: 1, random_flip: false, prefetch: 1 }, 0).unwrap();
    let mut step = TrainStep::new(&cfg, Device::Cpu, None).unwrap();
    let before = values(&step.student().store.params());
    step.run(&batch).unwrap();
    let after = values(&step.student().store.params());
    let ema = values(step.ema_tensors());
    let slots = step.student().store.sparse_slots();
    let (name, slot) = slots.iter().find(|(_, s)| matches!(s.mode(), SparseMode::SrSte { .. })).expect("an SR-STE layer");
    let weight = format!("{name}.weight");
    let find = |vs: &[(String, Vec<f32>)]| vs.iter().find(|(n, _)| *n == weight).unwrap().1.clone();
    let (w0, w1, e) = (find(&before), find(&after), find(&ema));
    let expected: Vec<f32> = w0.iter().zip(&w1).map(|(a, b)| 0.5 * a + 0.5 * b).collect();
    assert_eq!(e, expected, "{weight}: the EMA is the average of the dense weights");
    let mask = slot.current_mask().unwrap().expect("a mask").to_vec_f32().unwrap();
    assert!(mask.iter().zip(&e).any(|(&m, &v)| m == 0.0 && v != 0.0), "pruned positions keep their averaged dense values");

    // The EMA model masks its own averaged weights by magnitude.
    let run = tmp("ema-dense");
    let mut t = Trainer::new(cfg.clone(), &run, false, Device::Cpu).unwrap();
    t.train_step().unwrap();
    let model = t.ema_model().unwrap();
    let ema_slot = model.store.sparse_slots().into_iter().find(|(n, _)| n == name).unwrap().1;
    let own = ema_slot.current_mask().unwrap().unwrap().to_vec_f32().unwrap();
    let deployed = ema_slot.deployed_weight().unwrap().to_vec_f32().unwrap();
    let ema_w = model.store.get(&weight).unwrap().to_vec_f32().unwrap();
    for (i, ((&m, &d), &w)) in own.iter().zip(&deployed).zip(&ema_w).enumerate() {
        assert_eq!(d, m * w, "{weight}[{i}]: the EMA model deploys its weights under its own mask");
    }
    for g in own.chunks(4) {
        assert_eq!(g.iter().filter(|&&m| m != 0.0).count(), 2, "the EMA model's own mask is 2:4");
    }
}

#[test]
fn a_sparse_run_with_accumulation_resumes_bit_for_bit() {
    let dir = tmp("sparse-resume");
    let cfg = |n: u64| srste(&[&format!("train.n_steps={n}"), "train.save_interval=2", "train.grad_accum=2", "train.grad_clip=0.5"]);
    let mut straight = Trainer::new(cfg(4), &dir.join("a"), false, Device::Cpu).unwrap();
    straight.run(None, |_, _| {}).unwrap();
    let mut first = Trainer::new(cfg(2), &dir.join("b"), false, Device::Cpu).unwrap();
    first.run(None, |_, _| {}).unwrap();
    drop(first);
    let mut resumed = Trainer::new(cfg(4), &dir.join("b"), true, Device::Cpu).unwrap();
    assert_eq!(resumed.step(), 2);
    resumed.run(None, |_, _| {}).unwrap();
    let bits = |t: &Trainer| -> Vec<(String, Vec<u32>)> {
        let st = t.student().store.state_dict().into_iter().chain(t.ema_model().unwrap().store.state_dict());
        st.map(|(n, v)| (n, v.to_vec_f32().unwrap().into_iter().map(f32::to_bits).collect())).collect()
    };
    assert_eq!(bits(&straight), bits(&resumed), "weights and EMA after 2 + 2 steps differ from 4 straight steps");
    let _ = std::fs::remove_dir_all(&dir);
}
