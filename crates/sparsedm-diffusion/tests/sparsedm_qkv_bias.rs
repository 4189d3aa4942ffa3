//! SparseDM's qkv bias (`sparsedm_qkv_bias`): the paper's `SparseLinear`
//! forces `bias=True`, so its U-ViT's qkv has a zero-initialised trainable
//! bias that official checkpoints lack. With the option, an official-style
//! checkpoint loads with the bias at zero, the model computes what the plain
//! one computes, and the bias receives gradients; without it, strict loading
//! is unchanged.

use sparsedm_diffusion::{UViT, UViTConfig, load_checkpoint, save_checkpoint};
use sparsedm_layers::{LayersError, ParamStore};
use sparsedm_tensor::{Device, Rng, Tensor};
use sparsedm_testkit::Scratch;

fn cfg(sparsedm_qkv_bias: bool) -> UViTConfig {
    UViTConfig { img_size: 8, patch_size: 2, embed_dim: 32, depth: 3, num_heads: 2, sparsedm_qkv_bias, ..Default::default() }
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::new("qkv-bias")
}

fn inputs() -> (Tensor, Tensor) {
    let mut rng = Rng::new(4);
    let x = Tensor::randn(&[2, 3, 8, 8], &mut rng, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![10.0, 500.0], &[2], &Device::Cpu).unwrap();
    (x, t)
}

/// An official-style checkpoint: a plain U-ViT (no qkv bias) saved to disk.
fn official_checkpoint(scratch: &Scratch, name: &str) -> std::path::PathBuf {
    let s = ParamStore::new(Device::Cpu, 1);
    UViT::new(&s, &cfg(false)).unwrap();
    let p = scratch.join(name);
    save_checkpoint(&s, &p, None).unwrap();
    p
}

#[test]
fn loads_an_official_checkpoint_with_a_zero_bias_and_the_same_output() {
    let scratch = scratch_dir();
    let path = official_checkpoint(&scratch, "official.safetensors");
    let plain_store = ParamStore::new(Device::Cpu, 2);
    let plain = UViT::new(&plain_store, &cfg(false)).unwrap();
    load_checkpoint(&plain_store, &path).unwrap();
    let store = ParamStore::new(Device::Cpu, 3);
    let model = UViT::new(&store, &cfg(true)).unwrap();
    load_checkpoint(&store, &path).unwrap();

    let biases: Vec<(String, Tensor)> = store.params().into_iter().filter(|(n, _)| n.ends_with("attn.qkv.bias")).collect();
    assert_eq!(biases.len(), 3, "one qkv bias per block");
    for (name, b) in &biases {
        assert_eq!(b.shape(), &[96], "{name}");
        assert!(b.to_vec_f32().unwrap().iter().all(|&v| v == 0.0), "{name} should start at zero");
    }
    assert_eq!(store.num_params(), plain_store.num_params() + 3 * 96);

    let (x, t) = inputs();
    let a = plain.forward(&x, &t, None).unwrap().to_vec_f32().unwrap();
    let b = model.forward(&x, &t, None).unwrap().to_vec_f32().unwrap();
    for (u, v) in a.iter().zip(&b) {
        assert!((u - v).abs() <= 1e-6 * (1.0 + u.abs()), "{u} vs {v}");
    }

    // The bias trains: it receives a nonzero gradient.
    let loss = model.forward(&x, &t, None).unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for (name, b) in &biases {
        let g = grads.get(b).unwrap_or_else(|| panic!("no gradient for {name}")).to_vec_f32().unwrap();
        assert!(g.iter().any(|&v| v != 0.0), "{name}: zero gradient");
    }
}

#[test]
fn a_checkpoint_that_has_the_bias_loads_it() {
    let scratch = scratch_dir();
    let s = ParamStore::new(Device::Cpu, 5);
    UViT::new(&s, &cfg(true)).unwrap();
    let b = s.get("mid_block.attn.qkv.bias").unwrap();
    b.set_data(&Tensor::from_vec((0..96).map(|i| i as f32 * 0.01).collect(), &[96], &Device::Cpu).unwrap()).unwrap();
    let p = scratch.join("with_bias.safetensors");
    save_checkpoint(&s, &p, None).unwrap();
    let store = ParamStore::new(Device::Cpu, 6);
    UViT::new(&store, &cfg(true)).unwrap();
    load_checkpoint(&store, &p).unwrap();
    assert_eq!(store.get("mid_block.attn.qkv.bias").unwrap().to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
}

#[test]
fn without_the_option_loading_stays_strict() {
    let scratch = scratch_dir();
    let problems = |e: sparsedm_diffusion::DiffusionError| match e {
        sparsedm_diffusion::DiffusionError::Layers(LayersError::CheckpointMismatch { problems, .. }) => problems,
        other => panic!("expected a checkpoint mismatch, got {other}"),
    };
    // U-ViT's own qkv_bias = true: an official (bias-free) checkpoint is missing three tensors.
    let path = official_checkpoint(&scratch, "official_strict.safetensors");
    let store = ParamStore::new(Device::Cpu, 7);
    UViT::new(&store, &UViTConfig { qkv_bias: true, ..cfg(false) }).unwrap();
    let pr = problems(load_checkpoint(&store, &path).unwrap_err());
    assert_eq!(pr.len(), 3, "{pr:?}");
    assert!(pr.iter().all(|p| p.contains("missing tensor") && p.contains("attn.qkv.bias")), "{pr:?}");

    // A checkpoint with the bias does not load into the plain model.
    let s = ParamStore::new(Device::Cpu, 8);
    UViT::new(&s, &cfg(true)).unwrap();
    let p = scratch.join("biased.safetensors");
    save_checkpoint(&s, &p, None).unwrap();
    let plain = ParamStore::new(Device::Cpu, 9);
    UViT::new(&plain, &cfg(false)).unwrap();
    let pr = problems(load_checkpoint(&plain, &p).unwrap_err());
    assert!(pr.len() == 3 && pr.iter().all(|p| p.contains("unexpected tensor")), "{pr:?}");

    // With the option, every other tensor is still required.
    let mut tensors = sparsedm_tensor::load_safetensors(official_checkpoint(&scratch, "official_partial.safetensors")).unwrap();
    tensors.retain(|(n, _)| n != "mid_block.mlp.fc1.bias");
    let store = ParamStore::new(Device::Cpu, 10);
    UViT::new(&store, &cfg(true)).unwrap();
    let err = store.load_tensors("partial", tensors, |_| false).unwrap_err().to_string();
    assert!(err.contains("missing tensor mid_block.mlp.fc1.bias") && !err.contains("qkv"), "{err}");
}

#[test]
fn the_option_reads_from_json_and_is_not_written_when_off() {
    let on = UViTConfig::from_json(
        &serde_json::json!({"img_size": 8, "patch_size": 2, "embed_dim": 32, "depth": 3, "num_heads": 2, "sparsedm_qkv_bias": true}),
    )
    .unwrap();
    assert!(on.sparsedm_qkv_bias);
    assert_eq!(serde_json::to_value(&on).unwrap()["sparsedm_qkv_bias"], true);
    let off = serde_json::to_value(cfg(false)).unwrap();
    assert!(off.get("sparsedm_qkv_bias").is_none(), "{off}");
}
