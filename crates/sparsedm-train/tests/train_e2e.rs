//! End to end on the CPU: dense pre-training of a tiny U-ViT on the
//! embedded shapes, 2:4 SparseDM fine-tuning (SR-STE + the dense teacher),
//! sampling; and the exactness of resuming from a checkpoint.

use sparsedm_layers::{NmPattern, NonDivisible, SparseMode, check_nm};
use sparsedm_tensor::Device;
use sparsedm_testkit::Scratch;
use sparsedm_train::{RunConfig, Trainer};

const TINY: &str = r#"
seed = 3
arch = "uvit"
[nnet]
img_size = 16
patch_size = 4
embed_dim = 32
depth = 2
num_heads = 2
mlp_ratio = 2.0
qkv_bias = false
[dataset]
name = "shapes"
resolution = 16
len = 256
[train]
n_steps = 60
batch_size = 16
ema_rate = 0.9
log_interval = 5
save_interval = 1000
[optimizer]
lr = 2e-3
weight_decay = 0.03
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 5
[sample]
sampler = "dpm-solver-2"
steps = 6
grid = 4
"#;

/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn tmp(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), name)
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn pretrain_finetune_2of4_and_sample() {
    let dir = tmp("e2e");
    // 1. Dense pre-training: the loss falls.
    let cfg = RunConfig::parse(TINY, "tiny", &[]).unwrap();
    let mut t = Trainer::new(cfg, &dir.join("dense"), false, Device::Cpu).unwrap();
    let mut losses = Vec::new();
    t.run(None, |m, _| losses.push(m.loss)).unwrap();
    assert_eq!(losses.len(), 60);
    let (first, last) = (mean(&losses[..10]), mean(&losses[50..]));
    assert!(last < 0.8 * first, "dense loss did not fall: {first} -> {last}");
    let dense = dir.join("dense.safetensors");
    t.export_model(&dense, false).unwrap();

    // 2. 2:4 SparseDM fine-tuning from it, with the dense model as teacher.
    let ft = RunConfig::parse(
        TINY,
        "tiny",
        &[
            "train.n_steps=30".into(),
            format!("train.init={:?}", dense.display().to_string()),
            "sparse.pattern=\"2:4\"".into(),
            "sparse.method=\"srste\"".into(),
            "sparse.policy=\"sparsedm-uvit\"".into(),
        ],
    )
    .unwrap();
    let mut s = Trainer::new(ft, &dir.join("sparse"), false, Device::Cpu).unwrap();
    let slots = s.student().store.sparse_slots();
    let sparse: Vec<_> = slots.iter().filter(|(_, sl)| sl.mode() != SparseMode::Dense).collect();
    assert!(sparse.len() >= 8, "qkv/proj/fc1/fc2 of every block are 2:4 ({} layers)", sparse.len());
    let mut ft_losses = Vec::new();
    let mut transfer = Vec::new();
    s.run(None, |m, _| {
        ft_losses.push(m.loss);
        transfer.push(m.loss_transfer);
    })
    .unwrap();
    assert!(transfer.iter().all(|t| t.is_some()), "the teacher term is on");
    assert!(ft_losses.iter().all(|l| l.is_finite()));

    // Every masked layer of the exported EMA model is valid 2:4.
    let out = dir.join("sparse.safetensors");
    s.export_model(&out, true).unwrap();
    let (tensors, spec) = sparsedm_layers::read_sparse_checkpoint(&out).unwrap();
    let p = NmPattern::new(2, 4).unwrap();
    let mut checked = 0;
    for (name, _) in &sparse {
        let w = tensors.iter().find(|(n, _)| *n == format!("{name}.weight")).unwrap().1.to_vec_f32().unwrap();
        let layout =
            sparsedm_layers::WeightLayout::from_shape(tensors.iter().find(|(n, _)| *n == format!("{name}.weight")).unwrap().1.shape())
                .unwrap();
        check_nm(&w, layout, p, NonDivisible::LeaveDense).unwrap_or_else(|e| panic!("{name}: {e}"));
        checked += 1;
    }
    assert_eq!(checked, sparse.len());
    let _ = spec;

    // 3. Samples come out.
    let grid = s.sample_grid().unwrap();
    assert!(std::fs::metadata(&grid).unwrap().len() > 100);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_is_bit_identical() {
    let dir = tmp("resume");
    let cfg = |n: u64| RunConfig::parse(TINY, "tiny", &[format!("train.n_steps={n}"), "train.save_interval=4".into()]).unwrap();
    let mut straight = Trainer::new(cfg(8), &dir.join("a"), false, Device::Cpu).unwrap();
    straight.run(None, |_, _| {}).unwrap();

    let mut first = Trainer::new(cfg(4), &dir.join("b"), false, Device::Cpu).unwrap();
    first.run(None, |_, _| {}).unwrap();
    drop(first);
    let mut resumed = Trainer::new(cfg(8), &dir.join("b"), true, Device::Cpu).unwrap();
    assert_eq!(resumed.step(), 4);
    resumed.run(None, |_, _| {}).unwrap();

    let a = straight.student().store.state_dict();
    let b = resumed.student().store.state_dict();
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(ta.to_vec_f32().unwrap(), tb.to_vec_f32().unwrap(), "{na} differs after resume");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
