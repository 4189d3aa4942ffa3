//! Sparse checkpoints: masked weights plus the sparsity spec in the safetensors `__metadata__`,
//! verified on read (the error names the layer and the first offending group), and one-shot
//! pruning's replacement of weights inside the original tensors.

use sparsedm_layers::{
    BlockLine, Conv2d, Conv2dConfig, LayersError, Linear, NmPattern, NonDivisible, ParamStore, SPARSITY_METADATA_KEY, SparseMode,
    SparsitySpec, WeightLayout, load_sparse_checkpoint, prune, read_sparse_checkpoint, replace_pruned, save_sparse_checkpoint,
    write_sparse_checkpoint,
};
use sparsedm_tensor::{DType, Device, Tensor, load_safetensors, load_safetensors_metadata, save_safetensors};
use sparsedm_testkit::Scratch;
use std::path::PathBuf;

const DEV: Device = Device::Cpu;

fn pat(s: &str) -> NmPattern {
    s.parse().unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::new("sparse-ckpt")
}

/// fc (Linear 16→8, SR-STE 2:4), conv (Conv2d 8→4 3×3, fixed transposable 2:4), stem (Conv2d
/// 3→8 3×3, flat-index 2:4 as SparseDM's UNet first conv), odd (Linear 6→4, left dense), head
/// (Linear 8→2, dense).
fn model(seed: u64) -> ParamStore {
    let s = ParamStore::new(DEV, seed);
    Linear::new(&s.pp("fc"), 16, 8, true).unwrap();
    Conv2d::new(&s.pp("conv"), 8, 4, Conv2dConfig::square(3, 1, 1)).unwrap();
    Conv2d::new(&s.pp("stem"), 3, 8, Conv2dConfig::square(3, 1, 1)).unwrap();
    Linear::new(&s.pp("odd"), 6, 4, true).unwrap();
    Linear::new(&s.pp("head"), 8, 2, true).unwrap();
    s
}

fn sparsify(s: &ParamStore) {
    let slots: std::collections::HashMap<_, _> = s.sparse_slots().into_iter().collect();
    slots["fc"].set_mode(SparseMode::srste(pat("2:4"))).unwrap();
    slots["conv"].set_mode(SparseMode::Fixed { pattern: pat("2:4"), transposable: true }).unwrap();
    slots["stem"].configure(SparseMode::srste(pat("2:4")), NonDivisible::FlatIndex).unwrap();
    slots["odd"].set_mode(SparseMode::Ste { pattern: pat("2:4") }).unwrap();
}

#[test]
fn round_trip_stores_masked_weights_and_the_spec() {
    let scratch = scratch_dir();
    let a = model(1);
    sparsify(&a);
    let path = scratch.join("round_trip.safetensors");
    let mut extra = std::collections::HashMap::new();
    extra.insert("note".to_string(), "kept".to_string());
    let spec = save_sparse_checkpoint(&a, &path, Some(extra)).unwrap();
    assert_eq!(spec.layers.keys().collect::<Vec<_>>(), ["conv", "fc", "odd", "stem"]);
    assert_eq!(spec.layers["conv"].mode, "fixed-transposable");
    assert_eq!(spec.layers["conv"].masking, "transposable");
    assert_eq!(spec.layers["stem"].non_divisible, "flat-index");
    assert_eq!(spec.layers["stem"].masking, "flat-index");
    assert_eq!(spec.layers["odd"].masking, "left-dense");
    assert_eq!(spec.layers["fc"].mode, "srste");

    let meta = load_safetensors_metadata(&path).unwrap();
    assert_eq!(meta["note"], "kept");
    let parsed: serde_json::Value = serde_json::from_str(&meta[SPARSITY_METADATA_KEY]).unwrap();
    assert_eq!(parsed["format"], 1);
    assert_eq!(parsed["layers"]["fc"]["pattern"], "2:4");

    let (tensors, read_spec) = read_sparse_checkpoint(&path).unwrap();
    assert_eq!(read_spec, spec);
    let stored: std::collections::HashMap<_, _> = tensors.into_iter().collect();
    assert_eq!(stored.len(), a.state_dict().len(), "same tensor names");
    for (name, slot) in a.sparse_slots() {
        let w = vals(&stored[&format!("{name}.weight")]);
        assert_eq!(w, vals(&slot.deployed_weight().unwrap()), "{name}");
    }
    // SR-STE keeps dense weights in the model, the file holds the masked ones.
    assert!(vals(&stored["fc.weight"]).iter().filter(|v| **v == 0.0).count() == 64);
    assert_ne!(vals(&stored["fc.weight"]), vals(&a.get("fc.weight").unwrap()));
    for name in ["fc.bias", "head.weight", "odd.weight", "stem.bias"] {
        assert_eq!(vals(&stored[name]), vals(&a.get(name).unwrap()), "{name} untouched");
    }

    // Loading into a fresh model restores values and modes.
    let b = model(2);
    let spec_b = load_sparse_checkpoint(&b, &path).unwrap();
    assert_eq!(spec_b, spec);
    let (sa, sb): (std::collections::HashMap<_, _>, std::collections::HashMap<_, _>) =
        (a.sparse_slots().into_iter().collect(), b.sparse_slots().into_iter().collect());
    for (name, slot) in &sa {
        assert_eq!(sb[name].mode(), slot.mode(), "{name}");
        assert_eq!(sb[name].non_divisible(), slot.non_divisible(), "{name}");
        assert_eq!(vals(&sb[name].deployed_weight().unwrap()), vals(&slot.deployed_weight().unwrap()), "{name}");
    }
}

/// Writes `tensors` with the metadata of `spec` *without* verification (as a buggy or malicious
/// writer would).
fn write_unchecked(path: &PathBuf, tensors: &[(String, Tensor)], spec: &SparsitySpec) {
    let mut meta = std::collections::HashMap::new();
    meta.insert(SPARSITY_METADATA_KEY.to_string(), spec.to_json());
    save_safetensors(path, tensors, Some(meta)).unwrap();
}

/// The saved tensors of a sparsified model with `f` applied to the values of `name`.
fn corrupted(scratch: &Scratch, name: &str, f: impl Fn(&mut Vec<f32>)) -> (PathBuf, SparsitySpec) {
    let a = model(3);
    sparsify(&a);
    let path = scratch.join(format!("corrupt_{name}.safetensors"));
    let spec = save_sparse_checkpoint(&a, &path, None).unwrap();
    let tensors: Vec<(String, Tensor)> = load_safetensors(&path)
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            if n == name {
                let mut v = vals(&t);
                f(&mut v);
                let t2 = Tensor::from_vec(v, t.shape(), &DEV).unwrap();
                (n, t2)
            } else {
                (n, t)
            }
        })
        .collect();
    write_unchecked(&path, &tensors, &spec);
    (path, spec)
}

#[test]
fn a_group_with_three_nonzeros_under_2_4_is_named() {
    let scratch = scratch_dir();
    // fc.weight [8, 16]: make the group at out 5, inputs 8..12 hold 3 nonzeros.
    let (path, _) = corrupted(&scratch, "fc.weight", |v| {
        for (j, x) in v[5 * 16 + 8..5 * 16 + 12].iter_mut().enumerate() {
            *x = if j < 3 { 1.0 + j as f32 } else { 0.0 };
        }
    });
    let e = read_sparse_checkpoint(&path).unwrap_err();
    match &e {
        LayersError::LayerNotSparse { layer, source, path: p } => {
            assert_eq!(layer, "fc");
            assert!(p.contains("corrupt_fc.weight"));
            assert_eq!(
                **source,
                LayersError::NmViolation {
                    layout: WeightLayout::linear(8, 16).unwrap(),
                    pattern: pat("2:4"),
                    out: 5,
                    kernel_pos: None,
                    in_start: 8,
                    in_end: 12,
                    nonzeros: 3,
                }
            );
        }
        other => panic!("expected LayerNotSparse, got {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("layer fc") && msg.contains("out 5, inputs 8..12") && msg.contains("3 nonzeros"), "{msg}");
    // Loading into a model fails the same way and writes nothing.
    let b = model(9);
    let before = vals(&b.get("fc.weight").unwrap());
    assert!(matches!(load_sparse_checkpoint(&b, &path), Err(LayersError::LayerNotSparse { .. })));
    assert_eq!(vals(&b.get("fc.weight").unwrap()), before);
    assert_eq!(b.sparse_slots()[0].1.mode(), SparseMode::Dense);
}

#[test]
fn transposable_and_flat_index_layers_are_checked_by_their_own_rules() {
    let scratch = scratch_dir();
    // conv.weight [4, 8, 3, 3]: in the block out 0..4, in 0..4 at kernel (0, 0), one nonzero per
    // row (each row is fine as 2:4) but three in column in 0: only the transposable rule fails.
    let (path, _) = corrupted(&scratch, "conv.weight", |v| {
        for o in 0..4 {
            for c in 0..4 {
                v[o * 72 + c * 9] = if c == 0 && o < 3 { 1.0 } else { 0.0 };
            }
        }
    });
    match read_sparse_checkpoint(&path).unwrap_err() {
        LayersError::LayerNotSparse { layer, source, .. } => {
            assert_eq!(layer, "conv");
            assert!(
                matches!(*source, LayersError::TransposableViolation { line: BlockLine::Column(0), kernel_pos: Some((0, 0)), .. }),
                "{source}"
            );
        }
        other => panic!("{other}"),
    }
    // stem.weight [8, 3, 3, 3]: flat groups of 4 in (out, ky, kx, in) order; fill the first group.
    let (path, _) = corrupted(&scratch, "stem.weight", |v| {
        // flat positions 0..4 = (o 0, ky 0, kx 0, c 0..3) and (o 0, ky 0, kx 1, c 0): PyTorch
        // indices c·9 + p.
        for i in [0usize, 9, 18, 1] {
            v[i] = 1.0;
        }
    });
    match read_sparse_checkpoint(&path).unwrap_err() {
        LayersError::LayerNotSparse { layer, source, .. } => {
            assert_eq!(layer, "stem");
            assert!(matches!(*source, LayersError::FlatGroupViolation { group: 0, nonzeros: 4, .. }), "{source}");
        }
        other => panic!("{other}"),
    }
    // odd is left dense (6 inputs): anything goes there.
    let (path, _) = corrupted(&scratch, "odd.weight", |v| v.iter_mut().for_each(|x| *x = 1.0));
    read_sparse_checkpoint(&path).unwrap();
}

#[test]
fn writing_refuses_tensors_that_do_not_match_the_spec() {
    let scratch = scratch_dir();
    let a = model(4);
    sparsify(&a);
    let spec = SparsitySpec::from_store(&a).unwrap();
    // The dense state dict (SR-STE keeps dense weights) is not 2:4.
    let path = scratch.join("refused.safetensors");
    let _ = std::fs::remove_file(&path);
    let e = write_sparse_checkpoint(&path, &a.state_dict(), &spec, None).unwrap_err();
    assert!(matches!(e, LayersError::LayerNotSparse { .. }), "{e}");
    assert!(!path.exists(), "nothing written");
}

#[test]
fn files_without_or_with_broken_metadata_are_rejected() {
    let scratch = scratch_dir();
    let a = model(5);
    let path = scratch.join("dense.safetensors");
    a.save_safetensors(&path, None).unwrap();
    let e = read_sparse_checkpoint(&path).unwrap_err();
    assert!(matches!(e, LayersError::SparseCheckpoint { .. }) && e.to_string().contains("not a sparse checkpoint"), "{e}");

    let mut meta = std::collections::HashMap::new();
    meta.insert(SPARSITY_METADATA_KEY.to_string(), "{\"format\": 1, \"layers\": {\"fc\": {\"pattern\": \"5:4\", \"mode\": \"srste\", \"non_divisible\": \"leave-dense\", \"masking\": \"grouped\"}}}".to_string());
    save_safetensors(&path, &a.state_dict(), Some(meta.clone())).unwrap();
    let e = read_sparse_checkpoint(&path).unwrap_err();
    assert!(e.to_string().contains("layer fc") && e.to_string().contains("5:4"), "{e}");

    meta.insert(SPARSITY_METADATA_KEY.to_string(), "{\"format\": 1, \"layers\": {\"nope\": {\"pattern\": \"2:4\", \"mode\": \"srste\", \"non_divisible\": \"leave-dense\", \"masking\": \"grouped\"}}}".to_string());
    save_safetensors(&path, &a.state_dict(), Some(meta.clone())).unwrap();
    let e = read_sparse_checkpoint(&path).unwrap_err();
    assert!(e.to_string().contains("no tensor nope.weight"), "{e}");

    meta.insert(SPARSITY_METADATA_KEY.to_string(), "{\"format\": 2, \"layers\": {}}".to_string());
    save_safetensors(&path, &a.state_dict(), Some(meta.clone())).unwrap();
    assert!(read_sparse_checkpoint(&path).unwrap_err().to_string().contains("format 2"));

    meta.insert(SPARSITY_METADATA_KEY.to_string(), "not json".to_string());
    save_safetensors(&path, &a.state_dict(), Some(meta)).unwrap();
    assert!(read_sparse_checkpoint(&path).unwrap_err().to_string().contains("not a valid sparsity spec"));
}

#[test]
fn prune_replaces_only_the_pruned_weights_in_their_original_dtype() {
    let scratch = scratch_dir();
    let a = model(6);
    // The "original file": half precision for some tensors.
    let original: Vec<(String, Tensor)> = a
        .state_dict()
        .into_iter()
        .enumerate()
        .map(|(i, (n, t))| (n, if i % 2 == 0 { t.to_dtype(DType::F16).unwrap() } else { t }))
        .collect();
    a.load_tensors("<original>", original.clone(), |_| false).unwrap();
    let report = prune(&a, &"fc,conv".parse().unwrap(), pat("2:4"), false).unwrap();
    assert_eq!(report.totals.sparse_layers, 2);
    let (tensors, spec) = replace_pruned(original.clone(), &a).unwrap();
    assert_eq!(spec.layers.keys().collect::<Vec<_>>(), ["conv", "fc"]);
    let path = scratch.join("pruned.safetensors");
    write_sparse_checkpoint(&path, &tensors, &spec, None).unwrap();
    let (read, _) = read_sparse_checkpoint(&path).unwrap();
    assert_eq!(read.len(), original.len());
    let read: std::collections::HashMap<_, _> = read.into_iter().collect();
    for (n0, t0) in &original {
        let t1 = &read[n0];
        assert_eq!(t0.dtype(), t1.dtype(), "{n0}");
        let (v0, v1) = (vals(t0), vals(t1));
        if n0 == "fc.weight" || n0 == "conv.weight" {
            assert!(v0.iter().zip(&v1).all(|(a, b)| b == a || *b == 0.0));
            assert_eq!(v1.iter().filter(|v| **v == 0.0).count(), v1.len() / 2);
        } else {
            assert_eq!(v0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), v1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{n0}");
        }
    }
}
