//! The PyTorch checkpoint reader on real `torch.save` files
//! (`tests/fixtures/pth/`, written by `make_pth.py` there with torch 2.15.0):
//! every tensor equals, bit for bit and in dtype, what the same script wrote
//! to `expected.safetensors`; pickles that would run code are refused,
//! naming the global, and do not run.

use sparsedm_tensor::pth::{TorchFormat, load_torch_checkpoint};
use sparsedm_tensor::storage::CpuStorage;
use sparsedm_tensor::{Error, Tensor, WeightsFormat, load_safetensors, load_weights, load_weights_metadata, weights_format};
use sparsedm_testkit::Scratch;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pth").join(name)
}

fn expected(stem: &str) -> Vec<(String, Tensor)> {
    let prefix = format!("{stem}/");
    let all = load_safetensors(fixture("expected.safetensors")).unwrap();
    all.into_iter().filter_map(|(k, t)| Some((k.strip_prefix(&prefix)?.to_string(), t))).collect()
}

/// Same dtype, shape and bits.
fn identical(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let bits = |s: CpuStorage| -> (&'static str, Vec<u64>) {
        match s {
            CpuStorage::F32(v) => ("f32", v.iter().map(|x| x.to_bits().into()).collect()),
            CpuStorage::F16(v) => ("f16", v.iter().map(|x| x.to_bits().into()).collect()),
            CpuStorage::BF16(v) => ("bf16", v.iter().map(|x| x.to_bits().into()).collect()),
            CpuStorage::I64(v) => ("i64", v.iter().map(|&x| x as u64).collect()),
        }
    };
    assert_eq!(bits(got.to_cpu_storage().unwrap()), bits(want.to_cpu_storage().unwrap()), "{what}: values");
}

/// Loads `file` (with `key`) and compares with the expected tensors of `stem`, names and order included.
fn matches_expected(file: &str, key: Option<&str>, stem: &str) {
    let got = load_torch_checkpoint(fixture(file), key).unwrap_or_else(|e| panic!("{file}: {e}"));
    let want = expected(stem);
    assert!(!want.is_empty(), "no expected tensors for {stem}");
    let got_names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let mut want_names: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = got_names.clone();
    sorted.sort();
    want_names.sort();
    assert_eq!(sorted, want_names, "{file}: tensor names");
    let want: HashMap<String, Tensor> = want.into_iter().collect();
    for (name, t) in &got {
        identical(&format!("{file} {name}"), t, &want[name]);
    }
}

#[test]
fn zip_and_legacy_state_dicts_with_every_dtype() {
    matches_expected("basic_zip.pth", None, "basic_zip");
    matches_expected("basic_legacy.pth", None, "basic_legacy");
    // The state dict's own order is kept (the order model.state_dict() had).
    let names: Vec<String> = load_torch_checkpoint(fixture("basic_zip.pth"), None).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["conv.weight", "conv.bias", "norm.running_mean", "norm.num_batches_tracked", "index", "flags"]);
}

#[test]
fn half_and_bfloat16_stay_in_their_dtype() {
    matches_expected("half_zip.pth", None, "half_zip");
    matches_expected("half_legacy.pth", None, "half_legacy");
    let t: HashMap<String, Tensor> = load_torch_checkpoint(fixture("half_zip.pth"), None).unwrap().into_iter().collect();
    assert_eq!(format!("{:?}", t["h"].dtype()), "F16");
    assert_eq!(format!("{:?}", t["b"].dtype()), "BF16");
}

#[test]
fn views_sharing_one_storage_and_parameters() {
    matches_expected("views_zip.pth", None, "views_zip");
    matches_expected("views_legacy.pth", None, "views_legacy");
    let t: HashMap<String, Tensor> = load_torch_checkpoint(fixture("views_zip.pth"), None).unwrap().into_iter().collect();
    // base = arange(24)/8 as 4x6; narrowed = base[1:3, 2:5].
    assert_eq!(t["narrowed"].to_vec_f32().unwrap(), [8.0, 9.0, 10.0, 14.0, 15.0, 16.0].map(|x| x / 8.0));
    assert_eq!(t["transposed"].shape(), [6, 4]);
}

#[test]
fn protocol_4_pickles() {
    matches_expected("proto4.pth", None, "proto4");
}

#[test]
fn nested_state_dicts_by_key_or_found() {
    matches_expected("nested.pth", None, "nested");
    matches_expected("nested.pth", Some("state_dict"), "nested");
    matches_expected("two_models.pth", Some("ema"), "two_models");
    let e = load_torch_checkpoint(fixture("two_models.pth"), None).unwrap_err().to_string();
    assert!(
        e.contains("two_models.pth") && e.contains("several dicts of tensors") && e.contains("\"model\"") && e.contains("\"ema\""),
        "{e}"
    );
    assert!(e.contains("--key"), "{e}");
    let e = load_torch_checkpoint(fixture("nested.pth"), Some("weights")).unwrap_err().to_string();
    assert!(e.contains("no key \"weights\"") && e.contains("state_dict, epoch, optimizer"), "{e}");
    let e = load_torch_checkpoint(fixture("nested.pth"), Some("epoch")).unwrap_err().to_string();
    assert!(e.contains("entry \"epoch\" is an int"), "{e}");
    let e = load_torch_checkpoint(fixture("nested.pth"), Some("optimizer")).unwrap_err().to_string();
    assert!(e.contains("entry \"optimizer\" is not a dict of tensors") && e.contains("\"state\" is a dict"), "{e}");
}

#[test]
fn code_executing_pickles_are_refused_and_do_not_run() {
    let marker = std::path::Path::new("/tmp/sparsedm-pickle-pwned");
    let _ = std::fs::remove_file(marker);
    for file in ["malicious_zip.pth", "malicious_legacy.pth"] {
        let e = load_torch_checkpoint(fixture(file), None).unwrap_err();
        assert!(matches!(e, Error::TorchCheckpoint { .. }), "{file}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(file) && msg.contains("refused pickle global posix.system"), "{file}: {msg}");
        assert!(!marker.exists(), "{file}: the payload ran");
    }
}

#[test]
fn load_weights_routes_by_content() {
    let st = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/op_refs.safetensors");
    assert_eq!(weights_format(&st).unwrap(), WeightsFormat::SafeTensors);
    assert_eq!(weights_format(fixture("basic_zip.pth")).unwrap(), WeightsFormat::Torch(TorchFormat::Zip));
    assert_eq!(weights_format(fixture("basic_legacy.pth")).unwrap(), WeightsFormat::Torch(TorchFormat::Legacy));
    // Safetensors: the same tensors as load_safetensors, and its metadata.
    let a = load_weights(&st, None).unwrap();
    let b = load_safetensors(&st).unwrap();
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        identical(na, ta, tb);
    }
    let e = load_weights(&st, Some("state_dict")).unwrap_err().to_string();
    assert!(e.contains("--key \"state_dict\""), "{e}");
    // PyTorch files: through the torch reader; no metadata.
    assert_eq!(load_weights(fixture("nested.pth"), Some("state_dict")).unwrap().len(), 2);
    assert!(load_weights_metadata(fixture("basic_zip.pth")).unwrap().is_empty());
}

#[test]
fn damaged_files_are_errors_naming_the_file() {
    let dir = Scratch::new("pth");
    for file in ["basic_zip.pth", "basic_legacy.pth", "views_legacy.pth"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        // Every truncation point is an error, never a panic.
        for cut in (0..bytes.len()).step_by(7) {
            let p = dir.join(format!("cut-{cut}-{file}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            if let Err(e) = load_weights(&p, None) {
                assert!(e.to_string().contains(&format!("cut-{cut}-{file}")), "{e}");
            } else if cut < bytes.len() - 64 {
                panic!("{file} cut at {cut} of {} loaded", bytes.len());
            }
            std::fs::remove_file(&p).unwrap();
        }
    }
    let e = load_weights(dir.join("missing.pth"), None).unwrap_err().to_string();
    assert!(e.contains("missing.pth"), "{e}");
}

/// A zip checkpoint is read entry by entry: the storages of a state dict
/// picked by key are all it reads, so a checkpoint whose other entries'
/// storages are missing (here `two_models.pth` rewritten without the
/// model's first storage) still gives its EMA weights, and asking for the
/// model names the missing entry.
#[test]
fn zip_checkpoints_read_only_the_selected_storages() {
    use std::io::{Read, Write};
    let dir = Scratch::new("pth-sel");
    let src = std::fs::File::open(fixture("two_models.pth")).unwrap();
    let mut zin = zip::ZipArchive::new(src).unwrap();
    let out = dir.join("two_models_partial.pth");
    let mut zout = zip::ZipWriter::new(std::fs::File::create(&out).unwrap());
    let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let model_weight = {
        let model: HashMap<String, Tensor> = load_torch_checkpoint(fixture("two_models.pth"), Some("model")).unwrap().into_iter().collect();
        model["layer.weight"].to_vec_f32().unwrap()
    };
    let mut dropped = None;
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let name = f.name().to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        // The storage holding the model's layer.weight (its f32 bytes).
        let is_model_weight = name.contains("/data/") && bytes.len() == model_weight.len() * 4 && {
            let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            v == model_weight
        };
        if is_model_weight {
            dropped = Some(name);
            continue;
        }
        zout.start_file(name, stored).unwrap();
        zout.write_all(&bytes).unwrap();
    }
    zout.finish().unwrap();
    let dropped = dropped.expect("the model's weight storage");
    let got: HashMap<String, Tensor> = load_torch_checkpoint(&out, Some("ema")).unwrap().into_iter().collect();
    for (name, want) in expected("two_models") {
        identical(&format!("ema {name}"), &got[&name], &want);
    }
    let e = load_torch_checkpoint(&out, Some("model")).unwrap_err().to_string();
    assert!(e.contains("two_models_partial.pth") && e.contains(&dropped) && e.contains("layer.weight"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A zip that is no `torch.save` checkpoint is refused when its metadata is read, saying what it
/// is: an `.npz` of arrays (was: taken for a checkpoint without metadata, so the CLI asked for
/// `--arch/--config`), or any other zip without `<name>/data.pkl`.
#[test]
fn zips_that_are_not_checkpoints_are_named_when_the_metadata_is_read() {
    use std::io::Write;
    let dir = Scratch::new("pth-npz");
    let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let write_zip = |name: &str, entry: &str| {
        let path = dir.join(name);
        let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        z.start_file(entry, stored).unwrap();
        z.write_all(b"\x93NUMPY").unwrap();
        z.finish().unwrap();
        path
    };
    let npz = write_zip("images.npz", "arr_0.npy");
    let e = load_weights_metadata(&npz).unwrap_err().to_string();
    assert!(e.contains("images.npz") && e.contains(".npy arrays (an .npz"), "{e}");
    let other = write_zip("other.pth", "notes/readme.txt");
    let e = load_weights_metadata(&other).unwrap_err().to_string();
    assert!(e.contains("other.pth") && e.contains("without <name>/data.pkl"), "{e}");
    // A real zip checkpoint still has (empty) metadata.
    assert!(load_weights_metadata(fixture("two_models.pth")).unwrap().is_empty());
}
