//! Diff-Pruning (`sparsedm_diffusion::diffprune`): the pruned models' MAC
//! counts against the tensors they hold, the slicing against the dense
//! model's function, the Taylor ranking against the loss change of actually
//! removing a channel, the informative-timestep rule, and bad input.

use sparsedm_diffusion::diffprune::{self, ImportanceOptions, channel_groups, importance_pass, plan_for_macs, prune_to_macs};
use sparsedm_diffusion::registry::ModelConfig;
use sparsedm_diffusion::sampler::{SamplerKind, SamplerOptions, sample};
use sparsedm_diffusion::{EpsModel, MacKind, NoiseSchedule, ScheduleKind, UNetConfig, UViTConfig};
use sparsedm_layers::{ParamStore, prune_tensors, select_units, taylor_scores};
use sparsedm_tensor::{Device, Rng, Tensor};
use std::collections::HashMap;

/// The demo's U-ViT shape (presets/demo_shapes_uvit.toml) at depth 4 to stay quick.
fn small_uvit() -> ModelConfig {
    ModelConfig::UViT(UViTConfig {
        img_size: 16,
        patch_size: 2,
        embed_dim: 128,
        depth: 4,
        num_heads: 4,
        mlp_ratio: 4.0,
        ..Default::default()
    })
}

/// A UNet with 64- and 128-channel levels (prunable inside GroupNorm(32)).
fn small_unet() -> ModelConfig {
    ModelConfig::DdpmUNet(UNetConfig {
        ch: 64,
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
    })
}

fn build(cfg: &ModelConfig, seed: u64) -> (ParamStore, Box<dyn EpsModel>) {
    let store = ParamStore::new(Device::Cpu, seed);
    let model = cfg.build(&store).unwrap();
    (store, model)
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, &mut Rng::new(seed), &Device::Cpu).unwrap()
}

fn batch(cfg: &ModelConfig, b: usize, seed: u64) -> Tensor {
    let [c, h, w] = cfg.input_shape();
    randn(&[b, c, h, w], seed).clamp(-1.0, 1.0).unwrap()
}

fn schedule_of(cfg: &ModelConfig) -> Box<dyn NoiseSchedule> {
    match cfg {
        ModelConfig::UViT(_) => ScheduleKind::VpLinear.build(),
        ModelConfig::DdpmUNet(_) => ScheduleKind::DdpmLinear.build(),
    }
}

/// The paper's MAC total (Linear + Conv2d + norms) of the pruned model,
/// counted from its tensors: each layer's positions per sample come from
/// the dense model's report (count / weight size), which pruning channels
/// does not change, times the pruned tensor's size.
fn macs_from_tensors(dense: &ModelConfig, dense_store: &ParamStore, pruned: &HashMap<String, Tensor>) -> f64 {
    let numel = |t: &Tensor| t.shape().iter().product::<usize>() as u64;
    let mut total = 0u64;
    for e in dense.mac_report(1).entries {
        let (tensor, scale) = match e.kind {
            MacKind::Linear | MacKind::Conv2d => (format!("{}.weight", e.name), 1),
            MacKind::LayerNorm | MacKind::GroupNorm => (format!("{}.weight", e.name), sparsedm_diffusion::macs::NORM_OPS_PER_ELEMENT),
            MacKind::AttentionMatmul => continue,
        };
        let d = numel(&dense_store.get(&tensor).unwrap());
        assert_eq!(e.dense % (d * scale), 0, "{tensor}");
        let positions = e.dense / (d * scale);
        total += positions * scale * numel(&pruned[&tensor]);
    }
    total as f64
}

fn check_half_macs(cfg: ModelConfig) {
    let (store, model) = build(&cfg, 3);
    let x0 = batch(&cfg, 4, 1);
    let noise = randn(x0.shape(), 2);
    let sched = schedule_of(&cfg);
    let pass = importance_pass(
        model.as_ref(),
        &store,
        sched.as_ref(),
        &x0,
        None,
        &noise,
        ImportanceOptions { max_steps: 3, threshold: 0.0, stride: 1 },
    )
    .unwrap();
    assert_eq!(pass.losses.len(), 3);
    let pruned = prune_to_macs(&cfg, &store, &pass.grads, 0.5).unwrap();
    let frac = pruned.plan.fraction();
    assert!((frac - 0.5).abs() <= diffprune::MAC_TOLERANCE, "{frac}");
    // The analytic count of the pruned shapes is what the tensors give.
    let analytic = pruned.config.mac_report(1).paper_total();
    assert_eq!(analytic, pruned.plan.macs_after);
    let tensors: HashMap<String, Tensor> = pruned.tensors.iter().cloned().collect();
    assert_eq!(macs_from_tensors(&cfg, &store, &tensors), analytic);
    // Loads strictly into the pruned config, is smaller, runs and samples.
    let (small, small_model) = build(&pruned.config, 0);
    small.load_tensors("pruned", pruned.tensors.clone(), |_| false).unwrap();
    let n: usize = pruned.tensors.iter().map(|(_, t)| t.shape().iter().product::<usize>()).sum();
    assert_eq!(small.num_params(), n);
    assert!(small.num_params() < store.num_params());
    let [c, h, w] = cfg.input_shape();
    let xt = randn(&[2, c, h, w], 5);
    let sched = schedule_of(&cfg);
    let out =
        sample(SamplerKind::DpmSolverPp2M, small_model.as_ref(), sched.as_ref(), &xt, None, &SamplerOptions::new(3), &mut Rng::new(0))
            .unwrap();
    assert_eq!(out.shape(), [2, c, h, w]);
    assert!(out.to_vec_f32().unwrap().iter().all(|v| v.is_finite()));
    // The config round-trips through JSON (the run config and checkpoint metadata).
    let back = ModelConfig::from_json(cfg.arch(), &pruned.config.to_json()).unwrap();
    assert_eq!(back, pruned.config);
}

#[test]
fn uvit_at_half_the_macs() {
    check_half_macs(small_uvit());
}

#[test]
fn unet_at_half_the_macs() {
    check_half_macs(small_unet());
}

#[test]
fn published_configs_reach_half_the_macs() {
    for name in ["cifar10_uvit_small", "cifar10_ddpm"] {
        let cfg = ModelConfig::preset(name).unwrap();
        let plan = plan_for_macs(&cfg, 0.5).unwrap();
        assert!((plan.fraction() - 0.5).abs() < 0.02, "{name}: {}", plan.fraction());
        // Unpruned configs serialise without any width override.
        assert!(cfg.to_json().get("widths").is_none(), "{name}");
        assert!(plan.config.to_json().get("widths").is_some(), "{name}");
    }
    // The UNet loses the same number of channels in each GroupNorm group: widths stay multiples of 32.
    let ModelConfig::DdpmUNet(u) = plan_for_macs(&ModelConfig::preset("cifar10_ddpm").unwrap(), 0.5).unwrap().config else { panic!() };
    assert!(u.widths.unwrap().values().all(|w| w % 32 == 0));
}

/// Removing heads and MLP channels whose outgoing weights are zero leaves
/// the U-ViT's function unchanged: the pruned model must then equal the
/// dense one, which checks every slice (qkv thirds, proj and fc2 columns).
#[test]
fn uvit_slicing_preserves_the_function_of_dead_channels() {
    let cfg = small_uvit();
    let (store, model) = build(&cfg, 7);
    let groups = channel_groups(&cfg);
    let mut selections = Vec::new();
    let mut zeroed: HashMap<String, Tensor> = HashMap::new();
    for (gi, g) in groups.iter().enumerate() {
        // Keep every other unit (heads 1, 3; MLP channels 0, 2, 4, …), shifted per group.
        let kept: Vec<usize> = (0..g.units).filter(|u| (u + gi) % 2 == 1).collect();
        let consumer = g.members.iter().find(|m| m.axis == sparsedm_layers::MemberAxis::In).unwrap();
        let w = zeroed.remove(&consumer.tensor).unwrap_or_else(|| store.get(&consumer.tensor).unwrap());
        let (rows, cols) = (w.shape()[0], w.shape()[1]);
        let mut v = w.to_vec_f32().unwrap();
        for u in (0..g.units).filter(|u| !kept.contains(u)) {
            for c in u * g.unit_width..(u + 1) * g.unit_width {
                for r in 0..rows {
                    v[r * cols + c] = 0.0;
                }
            }
        }
        zeroed.insert(consumer.tensor.clone(), Tensor::from_vec(v, &[rows, cols], &Device::Cpu).unwrap());
        selections.push((g.clone(), kept));
    }
    let mut state = store.state_dict();
    for (name, t) in state.iter_mut() {
        if let Some(z) = zeroed.get(name) {
            *t = z.clone();
        }
    }
    store.load_tensors("zeroed", state.clone(), |_| false).unwrap();
    let keep: Vec<usize> = selections.iter().map(|(_, k)| k.len()).collect();
    let pruned_cfg = diffprune::pruned_config(&cfg, &groups, &keep).unwrap();
    let (small, small_model) = build(&pruned_cfg, 0);
    small.load_tensors("pruned", prune_tensors(state, &selections).unwrap(), |_| false).unwrap();
    let x = batch(&cfg, 2, 11);
    let t = Tensor::from_vec(vec![10.0, 700.0], &[2], &Device::Cpu).unwrap();
    let a = model.predict_eps(&x, &t, None).unwrap().to_vec_f32().unwrap();
    let b = small_model.predict_eps(&x, &t, None).unwrap().to_vec_f32().unwrap();
    let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "max |dense − pruned| = {worst}");
}

/// The Taylor ranking agrees with the loss: removing the MLP channel with
/// the lowest score changes the loss of the importance batch less than
/// removing the one with the highest.
#[test]
fn taylor_ranking_agrees_with_removing_channels() {
    let cfg = small_uvit();
    let (store, model) = build(&cfg, 21);
    let x0 = batch(&cfg, 8, 4);
    let noise = randn(x0.shape(), 5);
    let sched = schedule_of(&cfg);
    let opts = ImportanceOptions { max_steps: 4, threshold: 0.0, stride: 1 };
    let pass = importance_pass(model.as_ref(), &store, sched.as_ref(), &x0, None, &noise, opts).unwrap();
    let base: f64 = pass.losses.iter().sum();
    let weights: HashMap<String, Tensor> = store.state_dict().into_iter().collect();
    let groups = channel_groups(&cfg);
    let mlp = groups.iter().find(|g| g.name == "in_blocks.1.mlp").unwrap();
    let scores = taylor_scores(mlp, &weights, &pass.grads).unwrap();
    let order = {
        let mut o: Vec<usize> = (0..scores.len()).collect();
        o.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        o
    };
    let loss_without = |unit: usize| -> f64 {
        let original = store.state_dict();
        let mut edited = original.clone();
        for (name, t) in edited.iter_mut() {
            let Some(m) = mlp.members.iter().find(|m| &m.tensor == name) else { continue };
            let mut v = t.to_vec_f32().unwrap();
            let shape = t.shape().to_vec();
            match m.axis {
                sparsedm_layers::MemberAxis::In => (0..shape[0]).for_each(|r| v[r * shape[1] + unit] = 0.0),
                sparsedm_layers::MemberAxis::Out => v[unit * shape[1]..(unit + 1) * shape[1]].iter_mut().for_each(|x| *x = 0.0),
                _ => v[unit] = 0.0,
            }
            *t = Tensor::from_vec(v, &shape, &Device::Cpu).unwrap();
        }
        store.load_tensors("edited", edited, |_| false).unwrap();
        let after = importance_pass(model.as_ref(), &store, sched.as_ref(), &x0, None, &noise, opts).unwrap();
        store.load_tensors("original", original, |_| false).unwrap();
        (after.losses.iter().sum::<f64>() - base).abs()
    };
    let (low, high) = (loss_without(order[0]), loss_without(*order.last().unwrap()));
    assert!(low < high, "lowest-score channel changes the loss by {low}, highest by {high}");
    // select_units drops exactly the lowest scores.
    let kept = select_units(mlp, &scores, mlp.units - 16).unwrap();
    assert!(order[..16].iter().all(|u| !kept.contains(u)));
}

#[test]
fn the_pass_stops_at_the_first_uninformative_timestep() {
    let cfg = small_uvit();
    let (store, model) = build(&cfg, 1);
    let x0 = batch(&cfg, 2, 1);
    let noise = randn(x0.shape(), 2);
    let sched = schedule_of(&cfg);
    let all = importance_pass(
        model.as_ref(),
        &store,
        sched.as_ref(),
        &x0,
        None,
        &noise,
        ImportanceOptions { max_steps: 6, threshold: 0.0, stride: 1 },
    )
    .unwrap();
    assert_eq!(all.losses.len(), 6);
    assert!(all.stopped_at.is_none());
    // A threshold just above the ratio of the smallest loss to the running maximum stops there.
    let mut max = 0f64;
    let mut stop = None;
    for (k, &l) in all.losses.iter().enumerate() {
        max = max.max(l);
        if stop.is_none() && l < 0.999_999 * max {
            stop = Some(k);
        }
    }
    let cut = importance_pass(
        model.as_ref(),
        &store,
        sched.as_ref(),
        &x0,
        None,
        &noise,
        ImportanceOptions { max_steps: 6, threshold: 0.999_999, stride: 1 },
    )
    .unwrap();
    match stop {
        Some(k) => {
            assert_eq!(cut.losses.len(), k);
            assert_eq!(cut.stopped_at.map(|s| s.0), Some(k));
        }
        None => assert_eq!(cut.losses.len(), 6),
    }
    // A stride visits every stride-th timestep of the same range, with the same losses.
    let strided = importance_pass(
        model.as_ref(),
        &store,
        sched.as_ref(),
        &x0,
        None,
        &noise,
        ImportanceOptions { max_steps: 6, threshold: 0.0, stride: 2 },
    )
    .unwrap();
    let every_other: Vec<f64> = all.losses.iter().step_by(2).copied().collect();
    assert_eq!(strided.losses, every_other);
    for stride in [0, 7] {
        let opts = ImportanceOptions { max_steps: 6, threshold: 0.0, stride };
        let e = importance_pass(model.as_ref(), &store, sched.as_ref(), &x0, None, &noise, opts).unwrap_err().to_string();
        assert!(e.contains("stride"), "{e}");
    }
    // Too many timesteps, or none, are errors.
    for max_steps in [0, 1001] {
        assert!(
            importance_pass(
                model.as_ref(),
                &store,
                sched.as_ref(),
                &x0,
                None,
                &noise,
                ImportanceOptions { max_steps, threshold: 0.05, stride: 1 }
            )
            .is_err()
        );
    }
}

#[test]
fn models_without_prunable_channels_are_one_clear_error() {
    let narrow = ModelConfig::DdpmUNet(UNetConfig { ch: 32, ch_mult: vec![1], attn_resolutions: vec![], ..small_unet_config() });
    let e = plan_for_macs(&narrow, 0.5).unwrap_err().to_string();
    assert!(e.contains("no prunable channels") && e.contains("one inner channel per GroupNorm group (32)"), "{e}");
    let one_head = ModelConfig::UViT(UViTConfig {
        img_size: 8,
        patch_size: 2,
        embed_dim: 16,
        depth: 2,
        num_heads: 1,
        mlp_ratio: 1.0,
        ..Default::default()
    });
    let e = plan_for_macs(&one_head, 0.5).unwrap_err().to_string();
    assert!(e.contains("no prunable channels"), "{e}");
    // A target the widths cannot reach names what is reachable.
    let e = plan_for_macs(&small_uvit(), 0.01).unwrap_err().to_string();
    assert!(e.contains("out of reach") && e.contains("between"), "{e}");
}

fn small_unet_config() -> UNetConfig {
    match small_unet() {
        ModelConfig::DdpmUNet(c) => c,
        _ => unreachable!(),
    }
}

#[test]
fn width_overrides_are_validated() {
    let mut c = small_unet_config();
    c.widths = Some([("down.0.block.0".to_string(), 48)].into());
    assert!(c.validate().unwrap_err().to_string().contains("multiple of 32"));
    c.widths = Some([("down.7.block.0".to_string(), 32)].into());
    assert!(c.validate().unwrap_err().to_string().contains("does not have"));
    let mut u = match small_uvit() {
        ModelConfig::UViT(u) => u,
        _ => unreachable!(),
    };
    u.widths = Some([("mid_block".to_string(), sparsedm_diffusion::uvit::UViTBlockWidths { mlp_hidden: 64, num_heads: 5 })].into());
    assert!(u.validate().unwrap_err().to_string().contains("num_heads 5"));
}
