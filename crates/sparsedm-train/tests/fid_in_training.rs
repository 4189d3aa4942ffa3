//! FID during training: the evaluation runs at `fid.every` and the last step, is logged to
//! metrics.jsonl, and the best EMA model is kept as best.safetensors. The
//! Inception weights here are random (what is tested is the machinery; the
//! network's parity with pytorch-fid is tested in sparsedm-fid).

use sparsedm_layers::ParamStore;
use sparsedm_tensor::Device;
use sparsedm_train::data::{Dataset, ShapesDataset};
use sparsedm_train::samples::Images;
use sparsedm_train::{RunConfig, Trainer};

#[test]
fn fid_is_evaluated_logged_and_best_kept() {
    let dir = sparsedm_testkit::Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), "fid-train");

    // Random Inception weights under the official names.
    let store = ParamStore::new(Device::Cpu, 7);
    let net = sparsedm_fid::InceptionV3::new(&store).unwrap();
    drop(net);
    let inception = dir.join("inception.safetensors");
    store.save_safetensors(&inception, None).unwrap();

    // Reference statistics of real dataset images through the same network.
    let data = ShapesDataset::new(16, 6, 1).unwrap();
    let mut px = Vec::new();
    let mut buf = vec![0f32; 3 * 16 * 16];
    for i in 0..data.len() {
        data.get(i, &mut buf).unwrap();
        for p in 0..256 {
            for c in 0..3 {
                px.push((buf[c * 256 + p] * 255.0).round() as u8);
            }
        }
    }
    let real = Images { data: px, n: 6, h: 16, w: 16 };
    let net = sparsedm_fid::InceptionV3::load(&inception, &Device::Cpu).unwrap();
    let opts = sparsedm_fid::ExtractOptions { progress: sparsedm_fid::Progress::Hidden, ..Default::default() };
    let stats = sparsedm_fid::extract_features(&net, &real, &opts).unwrap().stats().unwrap();
    let reference = dir.join("ref.npz");
    sparsedm_fid::write_stats_npz(&reference, &stats).unwrap();

    let text = format!(
        r#"
seed = 1
arch = "uvit"
[nnet]
img_size = 16
patch_size = 4
embed_dim = 16
depth = 1
num_heads = 1
mlp_ratio = 2.0
[dataset]
name = "shapes"
resolution = 16
len = 32
[train]
n_steps = 3
batch_size = 4
[optimizer]
lr = 1e-3
weight_decay = 0.0
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 0
[fid]
inception = {:?}
reference = {:?}
every = 2
n_samples = 4
sampler = "dpm-solver-1"
steps = 2
"#,
        inception.display().to_string(),
        reference.display().to_string()
    );
    let cfg = RunConfig::parse(&text, "fid test", &[]).unwrap();
    let mut t = Trainer::new(cfg, &dir.join("run"), false, Device::Cpu).unwrap();
    t.run(None, |_, _| {}).unwrap();
    let log = std::fs::read_to_string(dir.join("run").join("metrics.jsonl")).unwrap();
    // At fid.every = 2, and at the last step (3), which fid.every does not reach.
    let fid_lines: Vec<serde_json::Value> =
        log.lines().filter(|l| l.contains("\"fid\"")).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(fid_lines.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3], "{log}");
    assert!(fid_lines.iter().all(|v| v["fid"].as_f64().unwrap().is_finite()));
    assert!(dir.join("run").join("best.safetensors").exists());

    // The [fid] files are read when the run is set up, not at the first evaluation `fid.every`
    // steps in: a missing or wrong one is refused naming its key, and no run folder is made.
    let other = sparsedm_fid::FeatureStats::new(vec![0.0; 4], vec![0.0; 16], 10).unwrap();
    let small = dir.join("small.npz");
    sparsedm_fid::write_stats_npz(&small, &other).unwrap();
    let inception_s = format!("{:?}", inception.display().to_string());
    let reference_s = format!("{:?}", reference.display().to_string());
    for (from, to, needles) in [
        (inception_s.clone(), "\"no-inception.safetensors\"".to_string(), ["fid.inception = \"no-inception.safetensors\"", "No such file"]),
        (reference_s.clone(), "\"no-ref.npz\"".to_string(), ["fid.reference = \"no-ref.npz\"", "no-ref.npz"]),
        (reference_s.clone(), format!("{:?}", small.display().to_string()), ["fid.reference", "statistics of 4-d features"]),
    ] {
        let cfg = RunConfig::parse(&text.replace(&from, &to), "fid test", &[]).unwrap();
        let run = dir.join("refused");
        let e = Trainer::new(cfg, &run, false, Device::Cpu).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "{to}: {e:?} does not name {n:?}");
        }
        assert!(!run.exists(), "{to}: a refused run leaves no folder");
    }
}
