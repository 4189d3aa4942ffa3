//! `sparsedm fid score` on statistics files: the printed FID equals pytorch-fid's, and bad
//! inputs fail with a clear message and a non-zero exit code.
//!
//! Fixtures: `crates/sparsedm-fid/tests/fixtures/frechet.safetensors` and `frechet.json`, copied
//! unchanged from the project's shared reference fixtures (`frechet.*`): per case `mu_a`,
//! `sigma_a`, `mu_b`, `sigma_b` (float64, `sigma = np.cov(rowvar=False)`) and the distance
//! computed by pytorch-fid's `calculate_frechet_distance` (scipy `sqrtm`) in float64. The test
//! writes each side as a pytorch-fid `.npz` and runs the binary on the two files.
//!
//! The image path (`fid stats`, `fid score` on image sources, KID) runs on a few synthetic
//! images with a synthetic Inception checkpoint (saved from a `ParamStore` under the official
//! names), so it checks the plumbing, not the values (those are the Inception parity test's
//! job in sparsedm-fid).

use safetensors::{Dtype, SafeTensors};
use sparsedm_fid::{FeatureStats, write_stats_npz};
use sparsedm_fid::{InceptionV3, U8Images, write_images_npz};
use sparsedm_layers::ParamStore;
use sparsedm_tensor::Device;
use sparsedm_testkit::Scratch;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fid_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sparsedm-fid/tests/fixtures").join(name)
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::new("fid-cli")
}

fn sparsedm(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsedm")).args(args).output().expect("run the sparsedm binary")
}

fn f64_tensor(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F64, "{name}");
    t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Writes the two sides of `case` as `.npz` statistics (file names start with `tag`, one per
/// test, since tests run in parallel); returns their paths.
fn write_case(scratch: &Scratch, tag: &str, case: &str) -> (PathBuf, PathBuf) {
    let bytes = std::fs::read(fid_fixture("frechet.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let side = |s: &str| {
        let stats =
            FeatureStats::new(f64_tensor(&st, &format!("{case}.mu_{s}")), f64_tensor(&st, &format!("{case}.sigma_{s}")), 0).unwrap();
        let path = scratch.join(format!("{tag}_{case}_{s}.npz"));
        write_stats_npz(&path, &stats).unwrap();
        path
    };
    (side("a"), side("b"))
}

fn expected(case: &str) -> f64 {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(fid_fixture("frechet.json")).unwrap()).unwrap();
    json["cases"][case]["fd"].as_f64().expect("fd")
}

/// The value of the one `FID <value>` line of stdout.
fn printed_fid(out: &Output) -> f64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FID ")).collect();
    assert_eq!(lines.len(), 1, "expected one FID line, got stdout:\n{stdout}");
    lines[0]["FID ".len()..].trim().parse().unwrap_or_else(|e| panic!("cannot parse {:?}: {e}", lines[0]))
}

#[test]
fn score_of_two_stats_files_is_pytorch_fids_distance() {
    let scratch = scratch_dir();
    for (case, tol) in [("small", 1e-6), ("wide", 1e-6), ("singular", 1e-4)] {
        let (a, b) = write_case(&scratch, "score", case);
        let out = sparsedm(&[Path::new("fid"), Path::new("score"), &a, &b]);
        assert!(out.status.success(), "{case}: {}", String::from_utf8_lossy(&out.stderr));
        let (got, want) = (printed_fid(&out), expected(case));
        let rel = (got - want).abs() / want.abs();
        println!("{case}: printed {got}, pytorch-fid {want}, rel err {rel:.2e}");
        assert!(rel <= tol, "{case}: printed {got}, expected {want} (rel err {rel:.2e} > {tol:e})");
        // Symmetric in its operands.
        let swapped = printed_fid(&sparsedm(&[Path::new("fid"), Path::new("score"), &b, &a]));
        assert!((swapped - got).abs() <= 1e-9 * got.abs(), "{case}: {swapped} vs {got}");
    }
}

/// Runs `fid score` and returns (exit success, stderr).
fn score_err(a: &Path, b: &Path) -> (bool, String) {
    let out = sparsedm(&[Path::new("fid"), Path::new("score"), a, b]);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// An `.npz` with the given f64 arrays, written with the stats writer and renamed keys: the
/// archive of `write_stats_npz` with `mu.npy`/`sigma.npy` renamed (zip entry names are
/// stored uncompressed in local and central headers, both rewritten here).
fn npz_with_keys(scratch: &Scratch, name: &str, mu_key: &str, sigma_key: &str) -> PathBuf {
    assert_eq!(mu_key.len(), 2);
    assert_eq!(sigma_key.len(), 5);
    let path = scratch.join(name);
    write_stats_npz(&path, &FeatureStats::new(vec![0.0, 1.0], vec![1.0, 0.0, 0.0, 1.0], 0).unwrap()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    for (from, to) in [(b"mu.npy".as_slice(), format!("{mu_key}.npy")), (b"sigma.npy".as_slice(), format!("{sigma_key}.npy"))] {
        let mut i = 0;
        while i + from.len() <= bytes.len() {
            if &bytes[i..i + from.len()] == from {
                bytes[i..i + from.len()].copy_from_slice(to.as_bytes());
                i += from.len();
            } else {
                i += 1;
            }
        }
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn wrong_npz_keys_fail_naming_the_key() {
    let scratch = scratch_dir();
    let (good, _) = write_case(&scratch, "keys", "small");

    // `mu` present, `sigma` renamed: the missing key is named.
    let missing_sigma = npz_with_keys(&scratch, "no_sigma.npz", "mu", "sigmx");
    let (ok, err) = score_err(&missing_sigma, &good);
    assert!(!ok, "must fail");
    assert!(err.contains("sigma") && err.contains("no_sigma.npz"), "stderr: {err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "one error line:\n{err}");

    // Neither statistics nor images: the expected keys and the present ones are named.
    let neither = npz_with_keys(&scratch, "neither.npz", "mm", "sssss");
    let (ok, err) = score_err(&good, &neither);
    assert!(!ok, "must fail");
    for needle in ["neither.npz", "`mu`", "`sigma`", "`arr_0`", "mm", "sssss"] {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
}

#[test]
fn other_bad_inputs_fail_clearly() {
    let scratch = scratch_dir();
    let (good, _) = write_case(&scratch, "bad", "small");
    let (wide, _) = write_case(&scratch, "bad", "wide");

    // Mismatched dimensions (64 vs 256).
    let (ok, err) = score_err(&good, &wide);
    assert!(!ok);
    assert!(err.contains("dimension") && err.contains("64") && err.contains("256"), "stderr: {err}");

    // A missing file.
    let (ok, err) = score_err(&good, &scratch.join("does_not_exist.npz"));
    assert!(!ok);
    assert!(err.contains("does_not_exist.npz"), "stderr: {err}");

    // An image source without --inception.
    let dir = scratch.join("empty_image_dir");
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("a.png");
    std::fs::write(&img, b"not a png").unwrap();
    let (ok, err) = score_err(&good, &dir);
    assert!(!ok);
    assert!(err.contains("a.png") || err.contains("--inception"), "stderr: {err}");

    // `fid stats` with unreadable weights.
    let out = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["fid", "stats", "--inception"])
        .arg(scratch.join("no_weights.safetensors"))
        .arg("--images")
        .arg(&good)
        .arg("--out")
        .arg(scratch.join("out.npz"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error:"), "stderr: {err}");
}

/// `n` synthetic 32×32 RGB images as an `arr_0` `.npz`.
fn images_npz(scratch: &Scratch, name: &str, n: usize, seed: u32) -> PathBuf {
    let data =
        (0..n * 32 * 32 * 3).map(|i| (((i as u32) ^ seed.wrapping_mul(0x5bd1_e995)).wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let path = scratch.join(name);
    write_images_npz(&path, &U8Images { data, n, height: 32, width: 32, channels: 3 }).unwrap();
    path
}

#[test]
fn stats_and_score_on_image_sources() {
    let scratch = scratch_dir();
    // An Inception checkpoint with the official names: convolutions He-uniform (so activations
    // keep their scale through the ~50 layers; PyTorch's default init shrinks them towards 0),
    // batch norms at their initial values.
    let weights = scratch.join("inception_init.safetensors");
    let store = ParamStore::new(Device::Cpu, 7);
    InceptionV3::new(&store).unwrap();
    for (k, (name, t)) in store.state_dict().into_iter().enumerate() {
        if name.ends_with("conv.weight") {
            let fan_in: usize = t.shape()[1..].iter().product();
            let bound = (6.0 / fan_in as f64).sqrt();
            let v: Vec<f32> = (0..t.elem_count() as u64)
                .map(|i| {
                    // splitmix64 (a plain Weyl sequence is low-discrepancy: its weights cancel).
                    let mut z = ((k as u64) << 40 | i).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    (((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * bound) as f32
                })
                .collect();
            t.set_data(&sparsedm_tensor::Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    store.save_safetensors(&weights, None).unwrap();
    let a = images_npz(&scratch, "img_a.npz", 2, 1);
    let b = images_npz(&scratch, "img_b.npz", 2, 99);
    let stats_a = scratch.join("img_a_stats.npz");

    let out = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["fid", "stats", "--batch", "1", "--inception"])
        .arg(&weights)
        .arg("--images")
        .arg(&a)
        .arg("--out")
        .arg(&stats_a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(sparsedm_fid::read_stats_npz(&stats_a).unwrap().dim() == 2048);

    let run = |x: &Path, y: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
            .args(["fid", "score", "--inception"])
            .arg(&weights)
            .arg(x)
            .arg(y)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    // Statistics file vs images, and images vs images (which adds KID): the same FID.
    let from_stats = printed_fid(&run(&stats_a, &b));
    let both = run(&a, &b);
    let from_images = printed_fid(&both);
    assert!(from_stats > 1e-3 && (from_stats - from_images).abs() <= 1e-6 * from_stats, "{from_stats} vs {from_images}");
    let stdout = String::from_utf8_lossy(&both.stdout);
    let kid: Vec<&str> = stdout.lines().filter(|l| l.starts_with("KID ")).collect();
    assert_eq!(kid.len(), 1, "stdout:\n{stdout}");
    let mean: f64 = kid[0]["KID ".len()..].split('±').next().unwrap().trim().parse().unwrap();
    assert!(mean.is_finite(), "{}", kid[0]);

    // Statistics of another dimension are refused before any extraction.
    let (small, _) = write_case(&scratch, "img", "small");
    let out = Command::new(env!("CARGO_BIN_EXE_sparsedm"))
        .args(["fid", "score", "--inception"])
        .arg(&weights)
        .arg(&small)
        .arg(&b)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("64-d") && err.contains("2048"), "stderr: {err}");

    // Image sources need the weights.
    let (ok, err) = score_err(&a, &stats_a);
    assert!(!ok);
    assert!(err.contains("--inception") && err.contains("img_a.npz"), "stderr: {err}");
    let _ = std::fs::remove_file(&weights); // 95 MB
}
