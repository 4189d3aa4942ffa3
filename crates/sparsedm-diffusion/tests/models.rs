//! Model construction: parameter counts of the published configs, U-ViT's
//! init, state-dict names, input validation and the UNet's dropout.

use sparsedm_diffusion::{EpsModel, UNet, UNetConfig, UViT, UViTConfig};
use sparsedm_layers::ParamStore;
use sparsedm_tensor::{Device, Rng, Tensor};

fn store() -> ParamStore {
    ParamStore::new(Device::Cpu, 0)
}

#[test]
fn uvit_s2_cifar10_has_44_255_328_parameters() {
    let s = store();
    UViT::new(&s, &UViTConfig::cifar10_uvit_small()).unwrap();
    assert_eq!(s.num_params(), 44_255_328);
    // 13 blocks, 6 skip_linears (MODELS_AND_METHOD §2.3).
    assert!(s.get("out_blocks.5.skip_linear.weight").is_some());
    assert!(s.get("in_blocks.5.skip_linear.weight").is_none());
    assert!(s.get("mid_block.attn.qkv.bias").is_none(), "qkv_bias is off");
    assert_eq!(s.get("pos_embed").unwrap().shape(), &[1, 257, 512]);
}

#[test]
fn uvit_s4_celeba64_parameter_count() {
    let s = store();
    UViT::new(&s, &UViTConfig::celeba64_uvit_small()).unwrap();
    assert_eq!(s.num_params(), 44_292_228);
}

#[test]
fn ddpm_cifar10_unet_has_35_746_307_parameters() {
    let s = store();
    UNet::new(&s, &UNetConfig::cifar10_ddpm()).unwrap();
    assert_eq!(s.num_params(), 35_746_307);
    for name in [
        "temb.dense.0.weight",
        "down.1.block.0.nin_shortcut.weight",
        "down.1.attn.1.proj_out.bias",
        "mid.attn_1.q.weight",
        "up.3.upsample.conv.bias",
        "up.0.block.2.conv2.weight",
        "norm_out.weight",
        "conv_out.bias",
    ] {
        assert!(s.get(name).is_some(), "{name}");
    }
    assert!(s.get("up.0.upsample.conv.weight").is_none());
    assert!(s.get("down.3.downsample.conv.weight").is_none());
    assert!(s.get("down.0.attn.0.q.weight").is_none(), "attention only at 16×16");
}

#[test]
fn uvit_init_follows_the_reference() {
    let s = store();
    let cfg = UViTConfig {
        img_size: 8,
        patch_size: 2,
        embed_dim: 64,
        depth: 2,
        num_heads: 2,
        mlp_time_embed: true,
        num_classes: 3,
        qkv_bias: true,
        ..Default::default()
    };
    UViT::new(&s, &cfg).unwrap();
    let stats = |name: &str| {
        let v = s.get(name).unwrap().to_vec_f32().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        (mean, std, v)
    };
    for w in
        ["mid_block.mlp.fc1.weight", "in_blocks.0.attn.qkv.weight", "out_blocks.0.skip_linear.weight", "time_embed.0.weight", "pos_embed"]
    {
        let (mean, std, _) = stats(w);
        assert!(mean.abs() < 3e-3 && (std - 0.02).abs() < 2e-3, "{w}: mean {mean}, std {std}");
    }
    for b in [
        "mid_block.mlp.fc1.bias",
        "in_blocks.0.attn.qkv.bias",
        "decoder_pred.bias",
        "time_embed.2.bias",
        "norm.bias",
        "in_blocks.0.norm1.bias",
    ] {
        assert!(stats(b).2.iter().all(|&x| x == 0.0), "{b} is zero");
    }
    assert!(stats("norm.weight").2.iter().all(|&x| x == 1.0));
    // Embedding keeps PyTorch's N(0, 1); convs keep the default U(±1/√fan_in).
    let (_, std, _) = stats("label_emb.weight");
    assert!((std - 1.0).abs() < 0.15, "label_emb std {std}");
    let bound = 1.0 / ((3 * 2 * 2) as f32).sqrt();
    assert!(stats("patch_embed.proj.weight").2.iter().all(|&x| x.abs() <= bound));
    assert!(stats("final_layer.bias").2.iter().any(|&x| x != 0.0));
}

#[test]
fn uvit_options_change_the_structure() {
    let base = UViTConfig { img_size: 8, patch_size: 4, embed_dim: 16, depth: 4, num_heads: 2, ..Default::default() };
    let s = store();
    UViT::new(&s, &UViTConfig { conv: false, skip: false, ..base.clone() }).unwrap();
    assert!(s.get("final_layer.weight").is_none());
    assert!(s.get("out_blocks.0.skip_linear.weight").is_none());
    assert!(s.get("time_embed.0.weight").is_none() && s.get("label_emb.weight").is_none());
    let s = store();
    let m = UViT::new(&s, &UViTConfig { conv: false, skip: false, mlp_ratio: 1.5, qk_scale: Some(0.5), ..base.clone() }).unwrap();
    assert_eq!(s.get("in_blocks.0.mlp.fc1.weight").unwrap().shape(), &[24, 16]);
    let x = Tensor::randn(&[2, 3, 8, 8], &mut Rng::new(1), &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![1.0, 500.0], &[2], &Device::Cpu).unwrap();
    assert_eq!(m.forward(&x, &t, None).unwrap().shape(), &[2, 3, 8, 8]);
    // depth 1: only the mid block (the Table 3 model).
    let s = store();
    UViT::new(&s, &UViTConfig { depth: 1, ..base }).unwrap();
    assert!(s.get("mid_block.norm1.weight").is_some() && s.get("in_blocks.0.norm1.weight").is_none());
}

#[test]
fn uvit_input_errors() {
    let s = store();
    let cond = UViTConfig { img_size: 8, patch_size: 4, embed_dim: 16, depth: 2, num_heads: 2, num_classes: 4, ..Default::default() };
    let m = UViT::new(&s, &cond).unwrap();
    let dev = Device::Cpu;
    let x = Tensor::zeros(&[2, 3, 8, 8], &dev).unwrap();
    let t = Tensor::zeros(&[2], &dev).unwrap();
    let y = Tensor::from_vec_i64(vec![0, 3], &[2], &dev).unwrap();
    assert_eq!(m.predict_eps(&x, &t, Some(&y)).unwrap().shape(), &[2, 3, 8, 8]);
    let err = |r: sparsedm_diffusion::Result<Tensor>| r.unwrap_err().to_string();
    assert!(err(m.predict_eps(&x, &t, None)).contains("needs labels"));
    assert!(err(m.predict_eps(&Tensor::zeros(&[2, 3, 16, 16], &dev).unwrap(), &t, Some(&y))).contains("expected [B, 3, 8, 8]"));
    assert!(err(m.predict_eps(&x, &Tensor::zeros(&[3], &dev).unwrap(), Some(&y))).contains("expected shape [2]"));
    assert!(err(m.predict_eps(&x, &t, Some(&Tensor::from_vec_i64(vec![0, 4], &[2], &dev).unwrap()))).contains("outside 0..4"));
    // Float labels holding integers are accepted.
    let yf = Tensor::from_vec(vec![0.0, 3.0], &[2], &dev).unwrap();
    assert!(m.predict_eps(&x, &t, Some(&yf)).is_ok());
    let s = store();
    let uncond = UViT::new(&s, &UViTConfig { num_classes: -1, ..cond }).unwrap();
    assert!(err(uncond.predict_eps(&x, &t, Some(&y))).contains("unconditional"));
}

#[test]
fn config_errors_are_clear() {
    let e = UViTConfig::from_json(&serde_json::json!({"img_size": 32, "patch_size": 3})).unwrap_err().to_string();
    assert!(e.contains("not a multiple of patch_size"), "{e}");
    let e = UViTConfig::from_json(&serde_json::json!({"embed_dim": 10, "num_heads": 3})).unwrap_err().to_string();
    assert!(e.contains("heads"), "{e}");
    let e = UViTConfig::from_json(&serde_json::json!({"norm_layer": "LayerNorm"})).unwrap_err().to_string();
    assert!(e.contains("unknown field `norm_layer`"), "{e}");
    let mut kw = serde_json::to_value(UNetConfig::cifar10_ddpm()).unwrap();
    kw["ch"] = 48.into();
    let e = UNetConfig::from_json(&kw).unwrap_err().to_string();
    assert!(e.contains("multiple of 32"), "{e}");
    kw["ch"] = 128.into();
    kw["dropout"] = 1.0.into();
    assert!(UNetConfig::from_json(&kw).unwrap_err().to_string().contains("dropout"));
    // The reference defaults fill the optional kwargs.
    let c = UNetConfig::from_json(
        &serde_json::json!({"ch": 32, "out_ch": 3, "num_res_blocks": 1, "attn_resolutions": [], "in_channels": 3, "resolution": 16}),
    )
    .unwrap();
    assert_eq!((c.ch_mult.as_slice(), c.dropout, c.resamp_with_conv), (&[1, 2, 4, 8][..], 0.0, true));
}

/// `num_groups` (GroupNorm's group count, 32 in the reference) is optional,
/// absent from the official configs' JSON, checked against every width, and
/// changes the function.
#[test]
fn unet_num_groups_is_optional_checked_and_used() {
    let official = serde_json::to_value(UNetConfig::cifar10_ddpm()).unwrap();
    assert!(official.get("num_groups").is_none(), "{official}");
    assert_eq!(UNetConfig::from_json(&official).unwrap().num_groups, 32);
    let mut kw = official.clone();
    kw["ch"] = 24.into();
    kw["num_groups"] = 8.into();
    let c = UNetConfig::from_json(&kw).unwrap();
    assert_eq!(serde_json::to_value(&c).unwrap()["num_groups"], 8);
    kw["ch"] = 20.into();
    let e = UNetConfig::from_json(&kw).unwrap_err().to_string();
    assert!(e.contains("GroupNorm(8)") && e.contains("20 channels"), "{e}");
    kw["ch"] = 32.into();
    kw["num_groups"] = 0.into();
    assert!(UNetConfig::from_json(&kw).unwrap_err().to_string().contains("num_groups 0"));
    // Same parameters, 8 groups instead of 32: a different function.
    let x = Tensor::randn(&[2, 3, 8, 8], &mut Rng::new(3), &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![10.0, 900.0], &[2], &Device::Cpu).unwrap();
    let (s32, m32) = small_unet(0.0, true);
    let cfg8 = UNetConfig { num_groups: 8, ..m32.config().clone() };
    let s8 = store();
    let m8 = UNet::new(&s8, &cfg8).unwrap();
    s8.load_tensors("the GroupNorm(32) model", s32.state_dict(), |_| false).unwrap();
    let (a, b) = (m32.forward(&x, &t).unwrap().to_vec_f32().unwrap(), m8.forward(&x, &t).unwrap().to_vec_f32().unwrap());
    let diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-3, "GroupNorm(8) and GroupNorm(32) gave the same output (max diff {diff})");
}

fn small_unet(dropout: f64, resamp_with_conv: bool) -> (ParamStore, UNet) {
    let s = store();
    let cfg = UNetConfig {
        ch: 32,
        out_ch: 3,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![4],
        dropout,
        resamp_with_conv,
        in_channels: 3,
        resolution: 8,
        widths: None,
        num_groups: 32,
    };
    let m = UNet::new(&s, &cfg).unwrap();
    (s, m)
}

#[test]
fn unet_dropout_needs_training_mode_and_a_seeded_rng() {
    let (s, m) = small_unet(0.5, true);
    let x = Tensor::randn(&[2, 3, 8, 8], &mut Rng::new(3), &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![10.0, 900.0], &[2], &Device::Cpu).unwrap();
    let run = |m: &UNet| m.forward(&x, &t).unwrap().to_vec_f32().unwrap();
    // A fresh model has no generator: deterministic even in training mode.
    assert!(s.is_training() && !m.dropout_active());
    let plain = run(&m);
    assert_eq!(plain, run(&m));
    // With a generator and training mode, dropout is on and reproducible.
    m.set_dropout_rng(Some(Rng::new(7)));
    assert!(m.dropout_active());
    let a = run(&m);
    assert_ne!(a, plain);
    m.set_dropout_rng(Some(Rng::new(7)));
    assert_eq!(a, run(&m));
    let b = m.forward_with_rng(&x, &t, &mut Rng::new(7)).unwrap().to_vec_f32().unwrap();
    assert_eq!(a, b);
    // Eval mode ignores the generator.
    s.set_training(false);
    assert!(!m.dropout_active());
    assert_eq!(run(&m), plain);
    assert_eq!(m.forward_with_rng(&x, &t, &mut Rng::new(1)).unwrap().to_vec_f32().unwrap(), plain);
}

#[test]
fn unet_without_resampling_convs_and_input_errors() {
    let (s, m) = small_unet(0.0, false);
    assert!(s.get("down.0.downsample.conv.weight").is_none() && s.get("up.1.upsample.conv.weight").is_none());
    let dev = Device::Cpu;
    let x = Tensor::randn(&[1, 3, 8, 8], &mut Rng::new(3), &dev).unwrap();
    let t = Tensor::from_vec(vec![5.0], &[1], &dev).unwrap();
    assert_eq!(m.predict_eps(&x, &t, None).unwrap().shape(), &[1, 3, 8, 8]);
    let e = m.predict_eps(&Tensor::zeros(&[1, 3, 16, 16], &dev).unwrap(), &t, None).unwrap_err().to_string();
    assert!(e.contains("expected [B, 3, 8, 8]"), "{e}");
    let y = Tensor::from_vec_i64(vec![0], &[1], &dev).unwrap();
    assert!(m.predict_eps(&x, &t, Some(&y)).unwrap_err().to_string().contains("unconditional"));
}
