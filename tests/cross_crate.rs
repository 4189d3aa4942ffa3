//! Invariants that span crates. The sparsity report joins per-layer MACs
//! (sparsedm-diffusion, counted from the config) with the model's sparse
//! slots (sparsedm-layers, registered by the layers) by layer name, and the
//! MAC counter mirrors the forward: so for both model families every
//! Linear/Conv2d of the built model must have exactly one MAC entry under the
//! same name with the same weight shape, and vice versa.

use sparsedm_diffusion::{Arch, ModelConfig};
use sparsedm_layers::ParamStore;
use sparsedm_tensor::Device;
use std::collections::BTreeMap;

fn check(arch: Arch, kwargs: serde_json::Value) {
    let cfg = ModelConfig::from_json(arch, &kwargs).unwrap();
    let store = ParamStore::new(Device::Cpu, 0);
    let _model = cfg.build(&store).unwrap();
    let slots: BTreeMap<String, Vec<usize>> = store.sparse_slots().into_iter().map(|(n, s)| (n, s.layout().shape())).collect();
    let macs: BTreeMap<String, Vec<usize>> = cfg
        .mac_report(1)
        .entries
        .into_iter()
        .filter(|e| e.kind.is_weight_layer())
        .map(|e| (e.name, e.layout.map(|l| l.shape()).unwrap_or_default()))
        .collect();
    assert_eq!(slots, macs, "{arch:?}: layers of the built model and of the MAC count differ");
}

#[test]
fn mac_entries_match_the_models_layers() {
    check(
        Arch::UViT,
        serde_json::json!({"img_size": 16, "patch_size": 2, "embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0,
                           "num_classes": 5, "mlp_time_embed": true, "conv": true, "skip": true}),
    );
    check(
        Arch::DdpmUNet,
        serde_json::json!({"ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                           "dropout": 0.1, "resamp_with_conv": true, "in_channels": 3, "resolution": 16}),
    );
}
