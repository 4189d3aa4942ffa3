//! Parity of the FID InceptionV3 (weights loading, preprocessing, network, extraction) with
//! pytorch-fid.
//!
//! Fixtures `tests/fixtures/inception_fid_formula.json` and
//! `tests/fixtures/inception_fid_formula.io.safetensors` are copied unchanged from the
//! project's shared reference fixtures (`/work/shared/fixtures/`, see its README,
//! `inception_fid_formula.*`), produced by running `fid_inception_v3()` of mseitzer/pytorch-fid
//! (PyTorch 2.11, CPU, float32) on 3 images of 32×32 (image 0 all black), with the pipeline
//! bilinear resize to 299×299 (`align_corners=False`) → `2x − 1` → network. The weights are not
//! stored: every tensor of the state dict is generated from its name by the formula in the JSON
//! (FNV-1a of the name, then splitmix64 per element), reproduced in [`formula_tensor`]. The
//! test writes them as a safetensors checkpoint under the official names (with `fc.*` and the
//! int64 `num_batches_tracked`, as converted from `pt_inception-2015-12-05-6726825d.pth`), loads
//! it through the public loader and compares with `output.pool3` (tolerance 1e-3 relative to
//! max |reference|, from the JSON); on a mismatch the per-stage `debug.blockK_channel_mean`
//! tensors say where the computation diverges.
//!
//! sha256 of the copies: `inception_fid_formula.json` 116094911a75637a…,
//! `inception_fid_formula.io.safetensors` 2438520c805befc8….

use sparsedm_testkit::Scratch;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safetensors::{Dtype, SafeTensors};
use sparsedm_fid::{
    ExtractOptions, FidError, InceptionV3, NpzImages, POOL3_DIM, Progress, U8Images, extract_features, preprocess, write_images_npz,
};
use sparsedm_tensor::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fresh directory under cargo's per-target temporary directory.
/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn temp_dir(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), &format!("fid-inception-{name}"))
}

// ---------------------------------------------------------------------------------------------
// The weight formula of inception_fid_formula.json
// ---------------------------------------------------------------------------------------------

fn fnv1a64(s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in s.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `v ∈ [-1, 1)` of element `i` for `seed`.
fn uniform(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 * 2f64.powi(-53);
    2.0 * u - 1.0
}

/// A checkpoint tensor: f32 values, or the int64 scalar `num_batches_tracked`.
enum Value {
    F32(Vec<f32>),
    I64(i64),
}

/// The tensor `name` of `shape` by the fixture's formula (computed in f64, cast to f32).
fn formula_tensor(name: &str, shape: &[usize], salt: u64) -> Value {
    if name.ends_with(".num_batches_tracked") {
        return Value::I64(0);
    }
    let seed = fnv1a64(name) ^ salt;
    let n: usize = shape.iter().product();
    let fan_in: usize = shape[1..].iter().product();
    let f: Box<dyn Fn(f64) -> f64> = if name.ends_with(".bn.weight") {
        Box::new(|v| 1.0 + 0.2 * v)
    } else if name.ends_with(".bn.bias") || name.ends_with(".bn.running_mean") {
        Box::new(|v| 0.1 * v)
    } else if name.ends_with(".bn.running_var") {
        Box::new(|v| 1.0 + 0.5 * v)
    } else if name == "fc.bias" {
        Box::new(|_| 0.0)
    } else {
        let scale = (6.0 / fan_in as f64).sqrt();
        Box::new(move |v| v * scale)
    };
    Value::F32((0..n as u64).map(|i| f(uniform(seed, i)) as f32).collect())
}

struct Fixture {
    json: serde_json::Value,
    io: Vec<u8>,
}

impl Fixture {
    fn load() -> Self {
        let json = serde_json::from_slice(&std::fs::read(fixture("inception_fid_formula.json")).unwrap()).unwrap();
        let io = std::fs::read(fixture("inception_fid_formula.io.safetensors")).unwrap();
        Fixture { json, io }
    }

    /// Every (name, shape) of the state dict.
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.json["shapes"]
            .as_object()
            .expect("shapes")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()))
            .collect()
    }

    fn salt(&self) -> u64 {
        self.json["formula"]["salt"].as_u64().expect("salt")
    }

    fn tolerance(&self) -> f64 {
        self.json["tolerance"]["pool3_rel"].as_f64().expect("tolerance")
    }

    /// (shape, raw bytes, dtype) of an io tensor.
    fn io_tensor(&self, name: &str) -> (Vec<usize>, Vec<u8>, Dtype) {
        let st = SafeTensors::deserialize(&self.io).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        (t.shape().to_vec(), t.data().to_vec(), t.dtype())
    }

    fn io_f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, bytes, dtype) = self.io_tensor(name);
        assert_eq!(dtype, Dtype::F32, "{name}");
        (shape, bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    }
}

/// Serialises `(name, value)` pairs as safetensors, f32 or (with `half`) f16, int64 counters.
fn checkpoint_bytes(tensors: &[(String, Vec<usize>, Value)], half: bool) -> Vec<u8> {
    let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, v)| match v {
            Value::I64(x) => (name.clone(), Dtype::I64, shape.clone(), x.to_le_bytes().to_vec()),
            Value::F32(v) if half => {
                (name.clone(), Dtype::F16, shape.clone(), v.iter().flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes()).collect())
            }
            Value::F32(v) => (name.clone(), Dtype::F32, shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        raw.iter().map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

/// The formula checkpoint as tensors (every name of the JSON, `fc.*` and counters included).
fn formula_tensors(fx: &Fixture) -> Vec<(String, Vec<usize>, Value)> {
    let salt = fx.salt();
    fx.shapes().into_iter().map(|(name, shape)| (name.clone(), shape.clone(), formula_tensor(&name, &shape, salt))).collect()
}

/// The f32 formula checkpoint (95 MB), written once per test process to a fixed path (so runs
/// do not accumulate copies; written to a temporary name and renamed, so concurrent test
/// processes never read a partial file).
fn formula_checkpoint() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let fx = Fixture::load();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sparsedm-fid-inception-formula");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pt_inception-formula.safetensors");
        let tmp = dir.join(format!(".pt_inception-formula.{}.tmp", std::process::id()));
        std::fs::write(&tmp, checkpoint_bytes(&formula_tensors(&fx), false)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
}

/// Writes a checkpoint for one test, runs `f` on its path, and removes the directory.
fn with_checkpoint(name: &str, bytes: Vec<u8>, f: impl FnOnce(&Path)) {
    let dir = temp_dir(name);
    let path = dir.join("inception.safetensors");
    std::fs::write(&path, bytes).unwrap();
    f(&path);
}

/// max |got − want| / max |want|.
fn rel_max_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, &w| m.max(f64::from(w).abs()));
    let diff = got.iter().zip(want).fold(0f64, |m, (&g, &w)| m.max((f64::from(g) - f64::from(w)).abs()));
    diff / scale
}

/// Channel means of each stage for the images `x` (what `debug.blockK_channel_mean` holds).
fn stage_report(net: &InceptionV3, fx: &Fixture, x: &Tensor) -> String {
    let stages = net.forward_stages(x).unwrap();
    let mut out = String::new();
    for (k, s) in stages.iter().enumerate() {
        let means = s.mean_dims(&[2, 3], false).unwrap().to_vec_f32().unwrap();
        let (_, want) = fx.io_f32(&format!("debug.block{k}_channel_mean"));
        out += &format!("  stage {k} {:?}: channel-mean rel err {:.3e}\n", s.shape(), rel_max_err(&means, &want));
    }
    out
}

#[test]
fn formula_matches_the_fixture_description() {
    // Spot checks of the generator itself: shapes are the official ones, counters are scalars.
    let fx = Fixture::load();
    let shapes = fx.shapes();
    assert_eq!(shapes.len(), 566);
    assert_eq!(shapes["Conv2d_1a_3x3.conv.weight"], vec![32, 3, 3, 3]);
    assert_eq!(shapes["fc.weight"], vec![1008, 2048]);
    assert_eq!(shapes["Mixed_7c.branch_pool.bn.num_batches_tracked"], Vec::<usize>::new());
    match formula_tensor("Mixed_5b.branch1x1.bn.running_var", &[64], fx.salt()) {
        Value::F32(v) => assert!(v.iter().all(|&x| (0.5..=1.5).contains(&x))),
        Value::I64(_) => panic!("running_var must be f32"),
    }
}

/// `sparsedm_fid::formula` (the stand-in weights of the device checks and the GPU bundle) makes
/// every tensor the network loads exactly as this fixture's formula does, so what
/// `pool3_matches_pytorch_fid` verifies for these weights holds for it.
#[test]
fn library_formula_weights_equal_the_fixture_formula() {
    let fx = Fixture::load();
    let shapes = fx.shapes();
    let lib = sparsedm_fid::formula::formula_tensors().unwrap();
    let loaded = shapes.keys().filter(|n| !sparsedm_fid::is_ignored_checkpoint_tensor(n)).count();
    assert_eq!(lib.len(), loaded, "one library tensor per loaded checkpoint tensor");
    for (name, t) in &lib {
        let shape = shapes.get(name).unwrap_or_else(|| panic!("{name} is not in the fixture's state dict"));
        assert_eq!(t.shape(), shape.as_slice(), "{name}");
        let Value::F32(want) = formula_tensor(name, shape, fx.salt()) else { panic!("{name}: not an f32 tensor") };
        assert!(t.to_vec_f32().unwrap() == want, "{name}: values differ from the fixture's formula");
    }
}

/// The whole public pipeline: images (u8 `.npz` source) → preprocessing → network → features.
#[test]
fn pool3_matches_pytorch_fid() {
    let fx = Fixture::load();
    let net = InceptionV3::load(formula_checkpoint(), &Device::Cpu).expect("load the formula checkpoint");
    assert!(net.is_folded());

    // The u8 images go through the NHWC `.npz` source, in batches of 2 (2 + 1 images).
    let (shape, data, dtype) = fx.io_tensor("input.images_u8_nhwc");
    assert_eq!(dtype, Dtype::U8);
    let dir = temp_dir("pipeline");
    let npz = dir.join("images.npz");
    write_images_npz(&npz, &U8Images { data, n: shape[0], height: shape[1], width: shape[2], channels: shape[3] }).unwrap();
    let source = NpzImages::open(&npz).unwrap();
    let opts = ExtractOptions { batch_size: 2, keep_features: true, progress: Progress::Hidden, label: String::new() };
    let ex = extract_features(&net, &source, &opts).unwrap();
    assert_eq!(ex.images, 3);
    let got = ex.features.clone().unwrap();
    let (want_shape, want) = fx.io_f32("output.pool3");
    assert_eq!(want_shape, vec![3, POOL3_DIM]);

    let err = rel_max_err(&got, &want);
    println!("pool3 max |err| / max |ref| = {err:.3e} ({:.2} images/s)", ex.images_per_second());
    if err > fx.tolerance() {
        let (s, x) = fx.io_f32("input.images");
        let x = preprocess(&Tensor::from_vec(x, &s, &Device::Cpu).unwrap()).unwrap();
        panic!("pool3 rel err {err:.3e} > {}\n{}", fx.tolerance(), stage_report(&net, &fx, &x));
    }
    // Per image as well (image 0 is black, 1 and 2 are not).
    for i in 0..3 {
        let r = rel_max_err(&got[i * POOL3_DIM..(i + 1) * POOL3_DIM], &want[i * POOL3_DIM..(i + 1) * POOL3_DIM]);
        assert!(r <= fx.tolerance(), "image {i}: rel err {r:.3e}");
    }
    // The statistics of the run are those of the features.
    let stats = ex.stats().unwrap();
    for j in [0, 1, 2047] {
        let mean = (0..3).map(|i| f64::from(got[i * POOL3_DIM + j])).sum::<f64>() / 3.0;
        assert!((stats.mu[j] - mean).abs() <= 1e-6 * mean.abs().max(1.0));
    }
}

/// The literal conv → batch norm → ReLU path (no folding), on the float input of one image,
/// with the stage means checked too.
#[test]
fn unfolded_network_matches_pytorch_fid() {
    let fx = Fixture::load();
    let mut net = InceptionV3::load(formula_checkpoint(), &Device::Cpu).unwrap();
    net.unfold_batch_norm();
    assert!(!net.is_folded());
    let (s, x) = fx.io_f32("input.images");
    let plane = s[1] * s[2] * s[3];
    let img = Tensor::from_vec(x[plane..2 * plane].to_vec(), &[1, s[1], s[2], s[3]], &Device::Cpu).unwrap();
    let x = preprocess(&img).unwrap();
    assert_eq!(x.shape(), &[1, 3, 299, 299]);
    let stages = net.forward_stages(&x).unwrap();
    for (k, st) in stages.iter().enumerate() {
        let means = st.mean_dims(&[2, 3], false).unwrap().to_vec_f32().unwrap();
        let (ds, want) = fx.io_f32(&format!("debug.block{k}_channel_mean"));
        let c = ds[1];
        let err = rel_max_err(&means, &want[c..2 * c]);
        println!("stage {k} {:?}: channel-mean rel err {err:.3e}", st.shape());
        assert!(err <= fx.tolerance(), "stage {k}: rel err {err:.3e}");
    }
    let (_, want) = fx.io_f32("output.pool3");
    let got = stages[3].to_vec_f32().unwrap();
    let err = rel_max_err(&got, &want[POOL3_DIM..2 * POOL3_DIM]);
    println!("unfolded pool3 rel err {err:.3e}");
    assert!(err <= fx.tolerance());
}

#[test]
fn f16_checkpoint_loads_as_widened_f32() {
    let fx = Fixture::load();
    let tensors = formula_tensors(&fx);
    with_checkpoint("f16", checkpoint_bytes(&tensors, true), |path| {
        let net = InceptionV3::load(path, &Device::Cpu).unwrap();
        for name in ["Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.running_var"] {
            let got = net.store().get(name).unwrap().to_vec_f32().unwrap();
            let Some((_, _, Value::F32(want))) = tensors.iter().find(|(n, _, _)| n == name) else { panic!("{name}") };
            for (g, w) in got.iter().zip(want) {
                assert_eq!(*g, half::f16::from_f32(*w).to_f32(), "{name}");
            }
        }
    });
}

#[test]
fn checkpoint_without_fc_and_counters_loads() {
    let fx = Fixture::load();
    let tensors: Vec<_> =
        formula_tensors(&fx).into_iter().filter(|(n, _, _)| !n.starts_with("fc.") && !n.ends_with("num_batches_tracked")).collect();
    with_checkpoint("nofc", checkpoint_bytes(&tensors, false), |path| {
        InceptionV3::load(path, &Device::Cpu).unwrap();
    });
}

#[test]
fn mismatched_checkpoint_lists_every_problem() {
    let fx = Fixture::load();
    let mut tensors = formula_tensors(&fx);
    // Missing: drop one; mis-shaped: transpose a 1×7 kernel into 7×1; unexpected: add one.
    tensors.retain(|(n, _, _)| n != "Mixed_6c.branch7x7_1.bn.running_mean");
    for (n, s, _) in tensors.iter_mut() {
        if n == "Mixed_6b.branch7x7_2.conv.weight" {
            *s = vec![128, 128, 7, 1];
        }
    }
    tensors.push(("AuxLogits.fc.weight".into(), vec![2], Value::F32(vec![0.0, 1.0])));
    with_checkpoint("bad", checkpoint_bytes(&tensors, false), |path| {
        let err = InceptionV3::load(path, &Device::Cpu).unwrap_err();
        assert!(matches!(err, FidError::Network(_)), "{err:?}");
        let msg = err.to_string();
        let path = path.display().to_string();
        for needle in [
            "missing tensor Mixed_6c.branch7x7_1.bn.running_mean",
            "Mixed_6b.branch7x7_2.conv.weight has shape [128, 128, 7, 1]",
            "unexpected tensor AuxLogits.fc.weight",
            &path,
        ] {
            assert!(msg.contains(needle), "error message lacks {needle:?}:\n{msg}");
        }
    });
}

#[test]
fn unreadable_checkpoint_and_bad_input_are_errors() {
    let dir = temp_dir("bad-checkpoints");
    let missing = dir.join("absent.safetensors");
    let err = InceptionV3::load(&missing, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("absent.safetensors"), "{err}");

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not safetensors").unwrap();
    assert!(InceptionV3::load(&garbage, &Device::Cpu).is_err());

    // Wrong input shapes are errors, not panics (checked before any computation).
    let store = sparsedm_layers::ParamStore::new(Device::Cpu, 0);
    let net = InceptionV3::new(&store).unwrap();
    let x = Tensor::zeros(&[1, 1, 299, 299], &Device::Cpu).unwrap();
    assert!(matches!(net.forward(&x), Err(FidError::ShapeMismatch { .. })));
    let x = Tensor::zeros(&[1, 3, 32, 32], &Device::Cpu).unwrap();
    assert!(matches!(net.forward(&x), Err(FidError::ShapeMismatch { .. })));
    assert!(matches!(preprocess(&Tensor::zeros(&[3, 32, 32], &Device::Cpu).unwrap()), Err(FidError::ShapeMismatch { .. })));
}
