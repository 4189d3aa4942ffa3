//! Whole-model forwards through the deployed N:M path on the CPU: a small
//! U-ViT (SparseDM's `sparsedm-uvit` layers and every Linear) and a small
//! DDPM UNet (every Linear and Conv2d), masked by magnitude to several N:M
//! patterns, give under `no_grad` (N:M kernels, weights compressed once)
//! the masked dense forward (grad mode on: `effective_weight()` and the
//! dense GEMMs/convolutions) within 1e-5 relative.
//!
//! The kernels' dense-vs-N:M choice is pinned to the N:M kernel, so the
//! SpMM runs in every deployed layer whatever this machine's timings say.

use sparsedm_diffusion::{EpsModel, UNet, UNetConfig, UViT, UViTConfig};
use sparsedm_layers::{NamedPolicy, NmPattern, ParamStore, Policy, SparseMode, apply_policy};
use sparsedm_tensor::nm_cpu::{NmPath, force_path};
use sparsedm_tensor::{Device, Rng, Tensor, no_grad};

const DEV: Device = Device::Cpu;

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err <= 1e-5 * scale, "{what}: max error {err} > 1e-5 × {scale}");
}

/// Masks `store` to `n:m` by magnitude (SR-STE mode, evaluation), runs
/// `fwd` both ways and compares; returns how many layers took an N:M kernel.
fn check(store: &ParamStore, policy: NamedPolicy, n: usize, m: usize, fwd: impl Fn() -> Tensor, what: &str) -> usize {
    let pattern = NmPattern::new(n, m).unwrap();
    apply_policy(store, &Policy::named(policy), pattern, SparseMode::srste).unwrap();
    store.set_training(false);
    let dense = fwd().detach();
    let nm = {
        let _g = no_grad();
        fwd()
    };
    assert_close(&nm, &dense, &format!("{what} {n}:{m}"));
    let slots = store.sparse_slots();
    let deployed = slots.iter().filter(|(_, s)| matches!(s.deployed_kind(), Some("nm-cpu" | "nm-cpu-conv"))).count();
    for (name, s) in &slots {
        assert!(s.deploy_builds() <= 1, "{name} compressed {} times in one forward", s.deploy_builds());
        assert_eq!(s.deployed_pattern().is_some(), s.deployed_kind().is_some(), "{name}");
    }
    deployed
}

#[test]
fn uvit_forward_through_nm_kernels_equals_masked_dense() {
    force_path(Some(NmPath::Sparse));
    let cfg = UViTConfig { img_size: 8, patch_size: 2, embed_dim: 64, depth: 3, num_heads: 2, num_classes: 5, ..Default::default() };
    let x = Tensor::randn(&[3, 3, 8, 8], &mut Rng::new(2), &DEV).unwrap();
    let t = Tensor::from_vec(vec![10.0, 500.0, 990.0], &[3], &DEV).unwrap();
    let y = Tensor::from_vec_i64(vec![0, 4, 2], &[3], &DEV).unwrap();
    for (i, (n, m)) in [(2, 4), (1, 4), (1, 8), (4, 8), (2, 32)].into_iter().enumerate() {
        for policy in [NamedPolicy::SparseDmUvit, NamedPolicy::All] {
            let store = ParamStore::new(DEV, 10 + i as u64);
            let model = UViT::new(&store, &cfg).unwrap();
            let deployed = check(&store, policy, n, m, || model.predict_eps(&x, &t, Some(&y)).unwrap(), "U-ViT");
            assert!(deployed >= 9, "{n}:{m}: only {deployed} layers deployed N:M");
        }
    }
}

#[test]
fn unet_forward_through_nm_kernels_equals_masked_dense() {
    force_path(Some(NmPath::Sparse));
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
    let x = Tensor::randn(&[2, 3, 8, 8], &mut Rng::new(3), &DEV).unwrap();
    let t = Tensor::from_vec(vec![3.0, 700.0], &[2], &DEV).unwrap();
    for (i, (n, m)) in [(2, 4), (1, 4), (1, 8), (4, 8), (2, 32)].into_iter().enumerate() {
        let store = ParamStore::new(DEV, 20 + i as u64);
        let model = UNet::new(&store, &cfg).unwrap();
        let deployed = check(&store, NamedPolicy::All, n, m, || model.predict_eps(&x, &t, None).unwrap(), "UNet");
        assert!(deployed >= 10, "{n}:{m}: only {deployed} layers deployed N:M");
    }
}
