//! `.npz` reading/writing against files written by numpy.
//!
//! The `tests/fixtures/*.npz` files and `numpy_expected.json` were produced by
//! `tests/fixtures/make_numpy_npz.py` with numpy 2.4.6 (`np.savez` / `np.savez_compressed`);
//! the script documents each file. The expected values are exact (integer formulas, stored as
//! `repr` floats), so reads are compared bit for bit. Files written by this crate were checked
//! once by hand with `np.load` (see the crate's report); the automated tests need no Python.

use sparsedm_testkit::Scratch;
use std::path::{Path, PathBuf};

use sparsedm_fid::{
    FeatureStats, FidError, NpzImageWriter, U8Images, read_images_npz, read_labels_npz, read_stats_npz, write_images_npz, write_stats_npz,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("numpy_expected.json")).unwrap()).unwrap()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// A fresh directory under cargo's per-target temporary directory.
/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn temp_dir(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), &format!("fid-npz-{name}"))
}

#[test]
fn reads_numpy_float64_stats_exactly() {
    let e = expected();
    let stats = read_stats_npz(fixture("stats_f64.npz")).unwrap();
    assert_eq!(stats.mu, f64s(&e["mu"]));
    assert_eq!(stats.sigma, f64s(&e["sigma"]));
    assert_eq!(stats.n, 0);
    // np.savez_compressed (deflate) gives the same.
    assert_eq!(read_stats_npz(fixture("stats_compressed.npz")).unwrap(), stats);
}

#[test]
fn reads_numpy_float32_stats_widened() {
    let e = expected();
    let stats = read_stats_npz(fixture("stats_f32.npz")).unwrap();
    let mu32: Vec<f64> = f64s(&e["mu"]).iter().map(|&v| f64::from(v as f32)).collect();
    let sigma32: Vec<f64> = f64s(&e["sigma"]).iter().map(|&v| f64::from(v as f32)).collect();
    assert_eq!(stats.mu, mu32);
    assert_eq!(stats.sigma, sigma32);
}

#[test]
fn reads_fortran_ordered_sigma_row_major() {
    // numpy wrote a non-symmetric matrix in Fortran order; we must return it row-major as numpy
    // indexes it (sigma[i, j] at i*d + j).
    let e = expected();
    let stats = read_stats_npz(fixture("stats_fortran.npz")).unwrap();
    assert_eq!(stats.sigma, f64s(&e["sigma_nonsymmetric"]));
}

#[test]
fn stats_errors_name_file_and_key() {
    let missing = fixture("stats_missing_sigma.npz");
    let err = read_stats_npz(&missing).unwrap_err();
    match &err {
        FidError::MissingKey { path, key, present } => {
            assert_eq!(path, &missing);
            assert_eq!(key, "sigma");
            assert_eq!(present, &vec!["mu".to_string()]);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("stats_missing_sigma.npz") && err.to_string().contains("`sigma`"), "{err}");

    let bad = fixture("stats_bad_shape.npz");
    let err = read_stats_npz(&bad).unwrap_err();
    match &err {
        FidError::BadArray { path, key, reason } => {
            assert_eq!(path, &bad);
            assert_eq!(key, "sigma");
            assert!(reason.contains("[8, 8]") && reason.contains("[8, 7]"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }

    // An image npz is not a stats npz.
    let err = read_stats_npz(fixture("images_u8.npz")).unwrap_err();
    assert!(matches!(err, FidError::MissingKey { ref key, .. } if key == "mu"), "{err}");

    // Not a zip at all / no such file.
    let err = read_stats_npz(fixture("numpy_expected.json")).unwrap_err();
    assert!(matches!(err, FidError::Zip { .. }), "{err}");
    let err = read_stats_npz(fixture("does_not_exist.npz")).unwrap_err();
    assert!(matches!(err, FidError::Io { ref path, .. } if path.ends_with("does_not_exist.npz")), "{err}");
}

#[test]
fn wrong_dtype_is_an_error() {
    let p = fixture("stats_int_dtype.npz");
    let err = read_stats_npz(&p).unwrap_err();
    match &err {
        FidError::BadArray { path, key, reason } => {
            assert_eq!(path, &p);
            assert_eq!(key, "mu");
            assert!(reason.contains("<i4"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
    // Float stats are not uint8 images.
    let err = read_images_npz(fixture("stats_f64.npz")).unwrap_err();
    assert!(matches!(err, FidError::MissingKey { .. }), "{err}");
}

#[test]
fn stats_round_trip() {
    let dir = temp_dir("stats");
    let d = 5;
    let mu: Vec<f64> = (0..d).map(|i| (i as f64).sqrt() - 1.0 / 3.0).collect();
    let sigma: Vec<f64> = (0..d * d).map(|k| ((k / d) as f64 + 1.0) * ((k % d) as f64 + 1.0) / 7.0).collect();
    let stats = FeatureStats::new(mu, sigma, 42).unwrap();
    let p = dir.join("stats.npz");
    write_stats_npz(&p, &stats).unwrap();
    let back = read_stats_npz(&p).unwrap();
    assert_eq!(back.mu, stats.mu);
    assert_eq!(back.sigma, stats.sigma);
    assert_eq!(back.n, 0, "n is not part of the pytorch-fid format");
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("stats.npz")]);

    // Rewriting the numpy-made file reproduces its values.
    let numpy = read_stats_npz(fixture("stats_f64.npz")).unwrap();
    let p2 = dir.join("again.npz");
    write_stats_npz(&p2, &numpy).unwrap();
    assert_eq!(read_stats_npz(&p2).unwrap(), numpy);

    // Inconsistent stats are refused before anything is written.
    let bad = FeatureStats { mu: vec![0.0; 2], sigma: vec![0.0; 3], n: 0 };
    assert!(matches!(write_stats_npz(dir.join("bad.npz"), &bad), Err(FidError::ShapeMismatch { .. })));
    assert!(!dir.join("bad.npz").exists());
}

#[test]
fn reads_numpy_images_exactly() {
    let e = expected();
    let shape: Vec<usize> = e["images_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let pixels: Vec<u8> = e["images"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    for name in ["images_u8.npz", "images_u8_compressed.npz"] {
        let imgs = read_images_npz(fixture(name)).unwrap();
        assert_eq!(vec![imgs.n, imgs.height, imgs.width, imgs.channels], shape, "{name}");
        assert_eq!(imgs.data, pixels, "{name}");
    }
    // The stats file has no arr_0.
    let err = read_images_npz(fixture("stats_f64.npz")).unwrap_err();
    assert!(matches!(err, FidError::MissingKey { ref key, .. } if key == "arr_0"), "{err}");
}

/// Class labels beside the images: numpy's `np.savez(path, images, labels)` (guided-diffusion's
/// class-conditional sample dump; `images_labels.npz`, made by make_numpy_npz.py with labels
/// 2, 0, 7) reads back, ours writes the same layout (numpy 2.4.6 read it: `np.load(f)["arr_1"]`
/// is int64 [2, 0, 7]), and a file without them has none.
#[test]
fn class_labels_are_arr_1_as_numpy_saves_them() {
    let numpy = fixture("images_labels.npz");
    assert_eq!(read_labels_npz(&numpy).unwrap(), Some(vec![2, 0, 7]));
    let imgs = read_images_npz(&numpy).unwrap();
    assert_eq!(imgs, read_images_npz(fixture("images_u8.npz")).unwrap(), "the labels do not disturb arr_0");
    assert_eq!(read_labels_npz(fixture("images_u8.npz")).unwrap(), None);
    let err = read_labels_npz(fixture("images_labels_f32.npz")).unwrap_err().to_string();
    assert!(err.contains("arr_1") && err.contains("not int64") && err.contains("images_labels_f32.npz"), "{err}");

    let dir = temp_dir("labels");
    let ours = dir.join("ours.npz");
    let mut wr = NpzImageWriter::create(&ours, imgs.n, imgs.height, imgs.width, imgs.channels).unwrap();
    wr.push(&imgs.data).unwrap();
    wr.finish_with_labels(&[2, 0, 7]).unwrap();
    assert_eq!(read_labels_npz(&ours).unwrap(), Some(vec![2, 0, 7]));
    assert_eq!(read_images_npz(&ours).unwrap(), imgs);
    // One label per image, or nothing is written.
    let short = dir.join("short.npz");
    let mut wr = NpzImageWriter::create(&short, imgs.n, imgs.height, imgs.width, imgs.channels).unwrap();
    wr.push(&imgs.data).unwrap();
    assert!(matches!(wr.finish_with_labels(&[1, 2]), Err(FidError::ShapeMismatch { .. })));
    assert!(!short.exists());
}

#[test]
fn images_round_trip_and_streaming_writer() {
    let dir = temp_dir("images");
    let (n, h, w, c) = (4, 3, 2, 3);
    let data: Vec<u8> = (0..n * h * w * c).map(|i| (i * 37 % 256) as u8).collect();
    let imgs = U8Images { data: data.clone(), n, height: h, width: w, channels: c };
    let p = dir.join("samples.npz");
    write_images_npz(&p, &imgs).unwrap();
    assert_eq!(read_images_npz(&p).unwrap(), imgs);

    // Streaming: two pushes.
    let p2 = dir.join("streamed.npz");
    let mut wr = NpzImageWriter::create(&p2, n, h, w, c).unwrap();
    let img_bytes = h * w * c;
    wr.push(&data[..img_bytes]).unwrap();
    // A partial image is refused.
    assert!(matches!(wr.push(&data[..img_bytes - 1]), Err(FidError::ShapeMismatch { .. })));
    wr.push(&data[img_bytes..]).unwrap();
    assert_eq!(wr.written(), n);
    // More than declared is refused.
    assert!(wr.push(&data[..img_bytes]).is_err());
    wr.finish().unwrap();
    assert_eq!(read_images_npz(&p2).unwrap(), imgs);

    // Finishing short of the declared count fails and leaves no file.
    let p3 = dir.join("short.npz");
    let mut wr = NpzImageWriter::create(&p3, n, h, w, c).unwrap();
    wr.push(&data[..img_bytes]).unwrap();
    assert!(matches!(wr.finish(), Err(FidError::InvalidArgument { .. })));
    assert!(!p3.exists());
    // Dropping an unfinished writer leaves nothing either.
    let p4 = dir.join("dropped.npz");
    drop(NpzImageWriter::create(&p4, n, h, w, c).unwrap());
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["samples.npz", "streamed.npz"]);

    // Bad geometry.
    assert!(NpzImageWriter::create(dir.join("x.npz"), 1, 2, 2, 4).is_err());
    assert!(NpzImageWriter::create(dir.join("x.npz"), 1, 0, 2, 3).is_err());
    let wrong = U8Images { data: vec![0; 5], n: 1, height: 1, width: 2, channels: 3 };
    assert!(write_images_npz(dir.join("x.npz"), &wrong).is_err());
}

/// Writes an `.npz` with one entry `name` = an `.npy` header declaring `shape`/`dtype` followed
/// by `payload` raw bytes (a lying header, as a corrupt or truncated file would have).
fn write_lying_npz(path: &Path, name: &str, dtype: npyz::DType, shape: &[u64], payload: &[u8]) {
    use npyz::WriterBuilder;
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(name, opts).unwrap();
    npyz::WriteOptions::new_header_only().dtype(dtype).shape(shape).writer(&mut zip).write_header_only().unwrap();
    zip.write_all(payload).unwrap();
    zip.finish().unwrap();
}

#[test]
fn lying_headers_are_errors_without_huge_allocations() {
    use npyz::AutoSerialize;
    let dir = temp_dir("lying");
    // sigma claims 2^40 float64 values but holds 4.
    let p = dir.join("huge_sigma.npz");
    {
        use npyz::WriterBuilder;
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
        let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("mu.npy", opts).unwrap();
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&[2]).writer(&mut zip).begin_nd().unwrap();
        w.extend([1.0f64, 2.0]).unwrap();
        w.finish().unwrap();
        zip.start_file("sigma.npy", opts).unwrap();
        npyz::WriteOptions::new_header_only()
            .dtype(<f64 as AutoSerialize>::default_dtype())
            .shape(&[1 << 20, 1 << 20])
            .writer(&mut zip)
            .write_header_only()
            .unwrap();
        zip.write_all(&[0; 32]).unwrap();
        zip.finish().unwrap();
    }
    let err = read_stats_npz(&p).unwrap_err();
    assert!(matches!(&err, FidError::BadArray { key, reason, .. } if key == "sigma" && reason.contains("needs more bytes")), "{err}");

    // arr_0 claims 1000 images of 4x5x3 but holds 60 bytes (one image).
    let p = dir.join("short_images.npz");
    write_lying_npz(&p, "arr_0.npy", <u8 as AutoSerialize>::default_dtype(), &[1000, 4, 5, 3], &[0; 60]);
    for err in [read_images_npz(&p).unwrap_err(), sparsedm_fid::NpzImages::open(&p).unwrap_err()] {
        assert!(matches!(&err, FidError::BadArray { key, reason, .. } if key == "arr_0" && reason.contains("truncated")), "{err}");
        assert!(err.to_string().contains("short_images.npz"), "{err}");
    }
    // Wrong image layout: [N, 3, H, W] (NCHW) is refused with the shape in the message.
    let p = dir.join("nchw.npz");
    write_lying_npz(&p, "arr_0.npy", <u8 as AutoSerialize>::default_dtype(), &[1, 3, 4, 5], &[0; 60]);
    let err = read_images_npz(&p).unwrap_err();
    assert!(err.to_string().contains("[1, 3, 4, 5]"), "{err}");
}

/// The temporaries that writers of an npz in ended processes left beside it are removed; a live
/// process's (this one's) and other files are kept.
#[cfg(target_os = "linux")]
#[test]
fn stale_temporaries_of_ended_writers_are_removed() {
    let dir = sparsedm_testkit::Scratch::new("npz-stale");
    let out = dir.join("samples.npz");
    // pid_max is at most 2^22 on Linux: this process id is never running.
    let stale = dir.join("samples.npz.tmp-4194305");
    let live = dir.join(format!("samples.npz.tmp-{}", std::process::id()));
    let other = dir.join("other.npz.tmp-4194305");
    for f in [&stale, &live, &other] {
        std::fs::write(f, b"partial").unwrap();
    }
    assert_eq!(sparsedm_fid::remove_stale_temporaries(&out), vec![stale.clone()]);
    assert!(!stale.exists() && live.exists() && other.exists());
    assert!(sparsedm_fid::remove_stale_temporaries(&out).is_empty());
}
