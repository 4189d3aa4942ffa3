//! Sparsity policies on a U-ViT-shaped parameter store (the layer names and shapes of
//! baofff/U-ViT `libs/uvit.py`, MODELS_AND_METHOD §2.1: patch_embed.proj, in/mid/out blocks with
//! attn.qkv, attn.proj, mlp.fc1, mlp.fc2, skip_linear in out-blocks, decoder_pred, final_layer),
//! and the report they return.

use sparsedm_layers::{
    Attention, Conv2d, Conv2dConfig, Init, LayerKind, LayerNorm, LayersError, Linear, NmPattern, NonDivisible, ParamStore, Policy,
    SparseMode, SparsityReport, apply_policy, check_nm,
};
use sparsedm_tensor::Device;
use std::collections::{BTreeSet, HashMap};

fn pat(s: &str) -> NmPattern {
    s.parse().unwrap()
}

/// D = 32, depth 2 (1 in-block, mid-block, 1 out-block), patch 2, 3 channels.
fn uvit_like() -> ParamStore {
    let s = ParamStore::new(Device::Cpu, 7);
    let d = 32;
    Conv2d::new(&s.pp("patch_embed").pp("proj"), 3, d, Conv2dConfig::square(2, 2, 0)).unwrap();
    let init = (Init::TruncNormal(0.02), Init::Zeros);
    for (block, skip) in [("in_blocks.0", false), ("mid_block", false), ("out_blocks.0", true)] {
        let b = s.pp(block);
        LayerNorm::new(&b.pp("norm1"), d, 1e-5, true).unwrap();
        Attention::new(&b.pp("attn"), d, 2, false, None, init).unwrap();
        LayerNorm::new(&b.pp("norm2"), d, 1e-5, true).unwrap();
        Linear::new(&b.pp("mlp").pp("fc1"), d, 4 * d, true).unwrap();
        Linear::new(&b.pp("mlp").pp("fc2"), 4 * d, d, true).unwrap();
        if skip {
            Linear::new(&b.pp("skip_linear"), 2 * d, d, true).unwrap();
        }
    }
    LayerNorm::new(&s.pp("norm"), d, 1e-5, true).unwrap();
    Linear::new(&s.pp("decoder_pred"), d, 12, true).unwrap();
    Conv2d::new(&s.pp("final_layer"), 3, 3, Conv2dConfig::square(3, 1, 1)).unwrap();
    s
}

const BLOCK_LINEARS: [&str; 4] = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"];

fn sparse_layers(store: &ParamStore) -> BTreeSet<String> {
    store.sparse_slots().into_iter().filter(|(_, s)| s.mode() != SparseMode::Dense).map(|(n, _)| n).collect()
}

fn masked_layers(r: &SparsityReport) -> BTreeSet<String> {
    r.layers.iter().filter(|l| l.masking != "dense" && l.masking != "left-dense").map(|l| l.name.clone()).collect()
}

fn uvit_block_layers() -> BTreeSet<String> {
    ["in_blocks.0", "mid_block", "out_blocks.0"].iter().flat_map(|b| BLOCK_LINEARS.iter().map(move |l| format!("{b}.{l}"))).collect()
}

#[test]
fn sparsedm_uvit_masks_exactly_the_block_linears() {
    let s = uvit_like();
    let policy: Policy = "sparsedm-uvit".parse().unwrap();
    let r = apply_policy(&s, &policy, pat("2:4"), SparseMode::srste).unwrap();
    assert_eq!(sparse_layers(&s), uvit_block_layers());
    assert_eq!(masked_layers(&r), uvit_block_layers());
    assert_eq!(r.totals.layers, 16);
    assert_eq!(r.totals.sparse_layers, 12);
    for l in &r.layers {
        if uvit_block_layers().contains(&l.name) {
            assert_eq!((l.mode.as_str(), l.pattern.as_deref(), l.masking.as_str()), ("srste", Some("2:4"), "grouped"));
            assert_eq!(l.sparsity, 0.5, "{}", l.name);
            assert_eq!(l.kind, LayerKind::Linear);
        } else {
            assert_eq!((l.mode.as_str(), l.pattern.as_deref()), ("dense", None));
            assert!(l.note.as_deref().unwrap().contains("not one of SparseDM's U-ViT block layers"), "{l:?}");
            // skip_linear biases are zero-init but weights are random: nothing pruned.
            assert!(l.sparsity < 0.5);
        }
    }
    assert_eq!(r.policy.as_deref(), Some("sparsedm-uvit"));
}

#[test]
fn asp_follows_the_size_rule() {
    let s = uvit_like();
    let r = apply_policy(&s, &"asp".parse().unwrap(), pat("2:4"), |p| SparseMode::Fixed { pattern: p, transposable: false }).unwrap();
    let mut expected = uvit_block_layers();
    expected.insert("out_blocks.0.skip_linear".into());
    // Skipped: patch_embed (C_in 3), decoder_pred (out 12), final_layer (3×3): §5.
    assert_eq!(sparse_layers(&s), expected);
    for name in ["patch_embed.proj", "decoder_pred", "final_layer"] {
        let l = r.layer(name).unwrap();
        assert!(l.note.as_deref().unwrap().starts_with("ASP size rule"), "{l:?}");
    }
    // Fixed prunes in place: the stored weights are 2:4.
    for (name, slot) in s.sparse_slots() {
        if expected.contains(&name) {
            let w = slot.weight().to_vec_f32().unwrap();
            check_nm(&w, slot.layout(), pat("2:4"), NonDivisible::LeaveDense).unwrap();
        }
    }
}

#[test]
fn all_uses_flat_index_groups_where_the_input_dim_does_not_divide() {
    let s = uvit_like();
    let r = apply_policy(&s, &"all".parse().unwrap(), pat("2:4"), SparseMode::srste).unwrap();
    assert_eq!(sparse_layers(&s).len(), 16, "every layer gets the mode");
    let pe = r.layer("patch_embed.proj").unwrap();
    assert_eq!((pe.kind, pe.masking.as_str(), pe.sparsity), (LayerKind::Conv2d, "flat-index", 0.5));
    // 3×3×3×3 = 81 weights: no flat groups of 4 either, so it is left dense and reported.
    let fl = r.layer("final_layer").unwrap();
    assert_eq!(fl.masking, "left-dense");
    assert_eq!(fl.note.as_deref(), Some("in 3 and the 81 weights are not multiples of 4"));
    assert_eq!(r.layer("decoder_pred").unwrap().masking, "grouped");
    assert_eq!(r.totals.sparse_layers, 15);
}

#[test]
fn globs_select_by_name_with_exclusions() {
    let cases: [(&str, Vec<String>); 5] = [
        (
            "*.attn.*",
            ["in_blocks.0", "mid_block", "out_blocks.0"].iter().flat_map(|b| [format!("{b}.attn.qkv"), format!("{b}.attn.proj")]).collect(),
        ),
        (
            "*.attn.*,!mid_block.*",
            vec![
                "in_blocks.0.attn.qkv".into(),
                "in_blocks.0.attn.proj".into(),
                "out_blocks.0.attn.qkv".into(),
                "out_blocks.0.attn.proj".into(),
            ],
        ),
        (
            "*.mlp.fc?.weight",
            ["in_blocks.0", "mid_block", "out_blocks.0"].iter().flat_map(|b| [format!("{b}.mlp.fc1"), format!("{b}.mlp.fc2")]).collect(),
        ),
        ("sparsedm-uvit,*.skip_linear", uvit_block_layers().into_iter().chain(["out_blocks.0.skip_linear".to_string()]).collect()),
        ("!patch_embed.*,!final_layer,!decoder_pred", {
            let mut v: Vec<String> = uvit_block_layers().into_iter().collect();
            v.push("out_blocks.0.skip_linear".into());
            v
        }),
    ];
    for (spec, expected) in cases {
        let s = uvit_like();
        let policy: Policy = spec.parse().unwrap();
        let r = apply_policy(&s, &policy, pat("2:4"), SparseMode::srste).unwrap();
        let expected: BTreeSet<String> = expected.into_iter().collect();
        assert_eq!(sparse_layers(&s), expected, "{spec}");
        assert_eq!(masked_layers(&r), expected, "{spec}");
    }
    let s = uvit_like();
    let r = apply_policy(&s, &"*.attn.*,!mid_block.*".parse().unwrap(), pat("2:4"), SparseMode::srste).unwrap();
    assert_eq!(r.layer("mid_block.attn.qkv").unwrap().note.as_deref(), Some("excluded by !mid_block.*"));
}

#[test]
fn a_policy_that_selects_nothing_is_an_error_and_changes_nothing() {
    let s = uvit_like();
    let e = apply_policy(&s, &"*.atn.*".parse().unwrap(), pat("2:4"), SparseMode::srste).unwrap_err();
    assert!(matches!(e, LayersError::Policy { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("*.atn.*") && msg.contains("selects none") && msg.contains("16"), "{msg}");
    assert!(sparse_layers(&s).is_empty());
    // A mode that cannot be built on one selected layer: nothing changes either.
    let before: Vec<_> = s.state_dict().iter().map(|(_, t)| t.to_vec_f32().unwrap()).collect();
    let e = apply_policy(&s, &"asp".parse().unwrap(), pat("1:4"), |p| SparseMode::Fixed { pattern: p, transposable: true }).unwrap_err();
    assert!(e.to_string().contains("2:4 only"), "{e}");
    assert!(sparse_layers(&s).is_empty());
    let after: Vec<_> = s.state_dict().iter().map(|(_, t)| t.to_vec_f32().unwrap()).collect();
    assert_eq!(before, after);
}

#[test]
fn policies_parse_and_display() {
    for (s, shown) in [("sparsedm-uvit", "sparsedm-uvit"), ("asp", "asp"), (" all ", "all"), ("!a.*, b.* ,c", "b.*,c,!a.*")] {
        assert_eq!(s.parse::<Policy>().unwrap().to_string(), shown);
    }
    for bad in ["", "a,,b", "!all", "a b"] {
        let e = bad.parse::<Policy>().unwrap_err();
        assert!(matches!(e, LayersError::Policy { .. }), "{bad:?}: {e}");
    }
}

#[test]
fn report_has_macs_totals_table_and_json() {
    let s = uvit_like();
    let r = apply_policy(&s, &"sparsedm-uvit".parse().unwrap(), pat("1:4"), SparseMode::srste).unwrap();
    let mut macs = HashMap::new();
    macs.insert("in_blocks.0.attn.qkv".to_string(), 1000u64);
    macs.insert("decoder_pred".to_string(), 300u64);
    macs.insert("in_blocks.0.attn.matmul".to_string(), 999u64); // not a weight layer: ignored
    let r = r.with_macs(&macs);
    let qkv = r.layer("in_blocks.0.attn.qkv").unwrap();
    assert_eq!((qkv.dense_macs, qkv.sparse_macs), (Some(1000), Some(250)));
    let dp = r.layer("decoder_pred").unwrap();
    assert_eq!((dp.dense_macs, dp.sparse_macs), (Some(300), Some(300)));
    assert_eq!(r.layer("mid_block.mlp.fc1").unwrap().dense_macs, None);
    assert_eq!((r.totals.dense_macs, r.totals.sparse_macs), (Some(1300), Some(550)));
    let params: u64 = s.sparse_slots().iter().map(|(_, sl)| sl.weight().elem_count() as u64).sum();
    assert_eq!(r.totals.params, params);
    let zeros: u64 = r.layers.iter().map(|l| l.zeros).sum();
    assert_eq!(r.totals.zeros, zeros);

    // The table: one header, one line per layer, a total; columns aligned.
    let table = r.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 16 + 1, "{table}");
    let col = |line: &str, needle: &str| line.find(needle).unwrap();
    let kind_col = col(lines[0], "kind");
    for line in &lines[1..17] {
        let at = line.find("Linear").or_else(|| line.find("Conv2d")).unwrap();
        assert_eq!(at, kind_col, "{table}");
    }
    assert!(lines[17].starts_with("total: 16 layers, 12 with an N:M mask"), "{}", lines[17]);
    assert!(table.contains("75.00%"), "{table}");

    let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert_eq!(json["policy"], "sparsedm-uvit");
    assert_eq!(json["pattern"], "1:4");
    assert_eq!(json["totals"]["dense_macs"], 1300);
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 16);
    let qkv = layers.iter().find(|l| l["name"] == "in_blocks.0.attn.qkv").unwrap();
    assert_eq!(qkv["kind"], "Linear");
    assert_eq!(qkv["shape"], serde_json::json!([96, 32]));
    assert_eq!(qkv["sparsity"], 0.75);
    assert_eq!(qkv["sparse_macs"], 250);
}
