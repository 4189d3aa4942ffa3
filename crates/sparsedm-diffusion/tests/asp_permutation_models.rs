//! apex ASP's channel permutations on the two model families: the plan of
//! `permutable.rs` applied by `permute_channels` leaves the network's output
//! unchanged (before pruning) and keeps more magnitude under 2:4; layers
//! that cannot be permuted are listed with apex's reasons.

use sparsedm_diffusion::{ModelConfig, UNet, UNetConfig, UViT, UViTConfig, channel_plan};
use sparsedm_layers::{NamedPolicy, NmPattern, ParamStore, Policy, SearchOptions, permute_channels};
use sparsedm_tensor::{Device, Rng, Tensor};

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    let worst = a.iter().zip(b).map(|(u, v)| (u - v).abs() / (1.0 + u.abs())).fold(0f32, f32::max);
    assert!(worst <= 2e-5, "permuted output differs by {worst} (relative)");
}

fn asp() -> Policy {
    Policy::named(NamedPolicy::Asp)
}

#[test]
fn uvit_permutes_every_mlp_and_keeps_its_output() {
    let cfg = UViTConfig { img_size: 8, patch_size: 2, embed_dim: 32, depth: 3, num_heads: 2, mlp_time_embed: true, ..Default::default() };
    let store = ParamStore::new(Device::Cpu, 11);
    let model = UViT::new(&store, &cfg).unwrap();
    let mut rng = Rng::new(3);
    let x = Tensor::randn(&[2, 3, 8, 8], &mut rng, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![3.0, 700.0], &[2], &Device::Cpu).unwrap();
    let before = model.forward(&x, &t, None).unwrap().to_vec_f32().unwrap();

    let plan = channel_plan(&ModelConfig::UViT(cfg.clone()), &store);
    let consumers: Vec<&str> = plan.groups.iter().flat_map(|g| g.consumers.iter().map(String::as_str)).collect();
    assert_eq!(consumers, ["in_blocks.0.mlp.fc2", "mid_block.mlp.fc2", "out_blocks.0.mlp.fc2", "time_embed.2"]);
    let report = permute_channels(&store, &plan, &asp(), NmPattern::TWO_FOUR, &SearchOptions::default()).unwrap();
    eprintln!("{report}");
    close(&before, &model.forward(&x, &t, None).unwrap().to_vec_f32().unwrap());
    assert_eq!(report.applied(), 4, "{report}");
    assert!(report.kept_with > report.kept_without, "{report}");
    assert!(report.kept_with < report.total_magnitude);
    let reason = |layer: &str| report.unpermuted.iter().find(|(l, _)| l == layer).map(|(_, r)| r.clone());
    assert!(reason("in_blocks.0.attn.qkv").unwrap().contains("residual stream"), "{report}");
    assert!(reason("out_blocks.0.skip_linear").unwrap().contains("concatenation"), "{report}");
    assert!(reason("mid_block.attn.proj").unwrap().contains("heads"), "{report}");
    assert!(reason("mid_block.mlp.fc2").is_none());
}

#[test]
fn unet_permutes_its_time_embedding_and_attention_outputs_and_keeps_its_output() {
    let cfg = UNetConfig {
        ch: 32,
        out_ch: 3,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![4],
        dropout: 0.0,
        resamp_with_conv: true,
        in_channels: 3,
        resolution: 8,
        widths: None,
        num_groups: 32,
    };
    let store = ParamStore::new(Device::Cpu, 12);
    let model = UNet::new(&store, &cfg).unwrap();
    let mut rng = Rng::new(4);
    let x = Tensor::randn(&[2, 3, 8, 8], &mut rng, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![5.0, 900.0], &[2], &Device::Cpu).unwrap();
    let before = model.forward(&x, &t).unwrap().to_vec_f32().unwrap();

    let plan = channel_plan(&ModelConfig::DdpmUNet(cfg.clone()), &store);
    let report = permute_channels(&store, &plan, &asp(), NmPattern::TWO_FOUR, &SearchOptions::default()).unwrap();
    eprintln!("{report}");
    close(&before, &model.forward(&x, &t).unwrap().to_vec_f32().unwrap());
    // temb.dense.1, the temb_proj sibling group, and proj_out of the down, mid and up attention blocks.
    let names: Vec<String> = report.groups.iter().map(|g| g.consumers.join(",")).collect();
    assert!(names.iter().any(|n| n == "temb.dense.1"), "{names:?}");
    assert!(names.iter().any(|n| n.split(',').count() > 4 && n.split(',').all(|c| c.ends_with(".temb_proj"))), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".proj_out")).count(), 4, "{names:?}");
    assert!(report.applied() >= 3, "{report}");
    assert!(report.kept_with > report.kept_without, "{report}");
    let reason = |layer: &str| report.unpermuted.iter().find(|(l, _)| l == layer).map(|(_, r)| r.clone());
    assert!(reason("down.0.block.0.conv1").unwrap().contains("GroupNorm"), "{report}");
    assert!(reason("mid.attn_1.q").unwrap().contains("GroupNorm"), "{report}");
}
