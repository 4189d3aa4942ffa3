//! Image sources on small files generated inside the tests (PNG/JPEG written with the `image`
//! crate, fake CIFAR-10 binaries) plus the numpy-written `tests/fixtures/images_u8*.npz`
//! (see `tests/fixtures/make_numpy_npz.py`: `arr_0[n,h,w,c] = (7n + 13h + 3w + 101c) % 256`).

use sparsedm_testkit::Scratch;
use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use sparsedm_fid::{Cifar10, CifarSplit, FidError, ImageBatch, ImageFolder, ImageSource, NpzImageWriter, NpzImages, open_image_source};

/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn temp_dir(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), &format!("fid-img-{name}"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn collect(src: &dyn ImageSource, batch: usize) -> Vec<ImageBatch> {
    src.batches(batch).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

/// Value of pixel (c, y, x) of image `i` of a batch.
fn px(b: &ImageBatch, i: usize, c: usize, y: usize, x: usize) -> f32 {
    b.data[((i * 3 + c) * b.height + y) * b.width + x]
}

const W: u32 = 4;
const H: u32 = 3;

fn rgb_value(x: u32, y: u32, c: u32, salt: u32) -> u8 {
    ((x * 50 + y * 20 + c * 70 + salt * 9) % 256) as u8
}

/// a.png (RGB), sub/c.png (gray), sub/d.png (RGBA), sub/deeper/e.jpg (RGB), notes.txt (ignored).
fn make_folder(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    RgbImage::from_fn(W, H, |x, y| Rgb([0, 1, 2].map(|c| rgb_value(x, y, c, 1)))).save(dir.join("a.png")).unwrap();
    GrayImage::from_fn(W, H, |x, y| Luma([rgb_value(x, y, 0, 2)])).save(dir.join("sub/c.png")).unwrap();
    RgbaImage::from_fn(W, H, |x, y| Rgba([rgb_value(x, y, 0, 3), rgb_value(x, y, 1, 3), rgb_value(x, y, 2, 3), 17]))
        .save(dir.join("sub/d.png"))
        .unwrap();
    RgbImage::from_fn(W, H, |_, _| Rgb([200, 100, 50])).save(dir.join("sub/deeper/e.jpg")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
}

#[test]
fn folder_recursive_sorted_rgb_conversion() {
    let dir = temp_dir("folder");
    make_folder(&dir);
    let folder = ImageFolder::open(&dir).unwrap();
    let names: Vec<String> = folder.files().iter().map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["a.png", "sub/c.png", "sub/d.png", "sub/deeper/e.jpg"]);
    assert_eq!(folder.len(), 4);
    assert_eq!(folder.image_size(), (H as usize, W as usize));

    let batches = collect(&folder, 3);
    assert_eq!(batches.iter().map(|b| b.shape()).collect::<Vec<_>>(), [[3, 3, 3, 4], [1, 3, 3, 4]]);
    let b = &batches[0];
    for y in 0..H {
        for x in 0..W {
            let (xu, yu) = (x as usize, y as usize);
            for c in 0..3u32 {
                // RGB exact.
                assert_eq!(px(b, 0, c as usize, yu, xu), f32::from(rgb_value(x, y, c, 1)) / 255.0);
                // Gray replicated to the three channels.
                assert_eq!(px(b, 1, c as usize, yu, xu), f32::from(rgb_value(x, y, 0, 2)) / 255.0);
                // RGBA: alpha dropped, colour kept.
                assert_eq!(px(b, 2, c as usize, yu, xu), f32::from(rgb_value(x, y, c, 3)) / 255.0);
            }
        }
    }
    // JPEG is lossy: a flat colour survives within a few grey levels.
    let j = &batches[1];
    for (c, want) in [200.0f32, 100.0, 50.0].iter().enumerate() {
        let got = px(j, 0, c, 1, 1) * 255.0;
        assert!((got - want).abs() <= 3.0, "jpeg channel {c}: {got} vs {want}");
    }
    // Values in [0, 1].
    assert!(batches.iter().flat_map(|b| &b.data).all(|v| (0.0..=1.0).contains(v)));
    // Deterministic across iterations and batch sizes.
    let one_by_one: Vec<f32> = collect(&folder, 1).into_iter().flat_map(|b| b.data).collect();
    let all: Vec<f32> = batches.into_iter().flat_map(|b| b.data).collect();
    assert_eq!(one_by_one, all);
    assert!(matches!(folder.batches(0), Err(FidError::InvalidArgument { .. })));
}

#[test]
fn folder_errors_name_the_file() {
    // Differing sizes.
    let dir = temp_dir("sizes");
    make_folder(&dir);
    RgbImage::new(5, 3).save(dir.join("sub/zz.png")).unwrap();
    let err = ImageFolder::open(&dir).unwrap_err();
    match &err {
        FidError::ImageSizeMismatch { path, width: 5, height: 3, first, expected_width: 4, expected_height: 3 } => {
            assert!(path.ends_with("sub/zz.png"), "{err}");
            assert!(first.ends_with("a.png"), "{err}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("zz.png"), "{err}");

    // Garbage in a .png: rejected when the folder is opened.
    let dir = temp_dir("garbage");
    make_folder(&dir);
    std::fs::write(dir.join("sub/bad.png"), b"this is not a png").unwrap();
    let err = ImageFolder::open(&dir).unwrap_err();
    assert!(matches!(&err, FidError::ImageDecode { path, .. } if path.ends_with("sub/bad.png")), "{err}");
    assert!(err.to_string().contains("bad.png"));

    // A PNG with a valid header but truncated pixel data: found while decoding its batch; the
    // iterator yields that error (naming the file) and stops.
    let dir = temp_dir("truncated");
    make_folder(&dir);
    let mut bytes = Vec::new();
    RgbImage::from_fn(W, H, |x, y| Rgb([x as u8 * 60, y as u8 * 80, 7]))
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(dir.join("sub/c2_trunc.png"), &bytes[..bytes.len() - 30]).unwrap();
    let folder = ImageFolder::open(&dir).unwrap();
    let results: Vec<_> = folder.batches(2).unwrap().collect();
    assert!(results[0].is_ok(), "a.png, sub/c.png are fine");
    let err = results[1].as_ref().unwrap_err();
    assert!(matches!(err, FidError::ImageDecode { path, .. } if path.ends_with("sub/c2_trunc.png")), "{err}");
    assert_eq!(results.len(), 2, "iteration stops after an error (3 batches otherwise)");

    // No images.
    let dir = temp_dir("empty");
    std::fs::write(dir.join("x.txt"), "hi").unwrap();
    assert!(matches!(ImageFolder::open(&dir), Err(FidError::NoImages { .. })));
    // Missing directory.
    assert!(matches!(ImageFolder::open(dir.join("nope")), Err(FidError::Io { .. })));
}

/// CIFAR record `k`: label k % 10, pixel (c, y, x) = (k*31 + c*97 + y*5 + x) % 256.
fn cifar_record(k: usize) -> Vec<u8> {
    let mut r = vec![(k % 10) as u8];
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                r.push(((k * 31 + c * 97 + y * 5 + x) % 256) as u8);
            }
        }
    }
    r
}

fn write_cifar(path: &Path, records: std::ops::Range<usize>) {
    let bytes: Vec<u8> = records.flat_map(cifar_record).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cifar_binary_files() {
    let dir = temp_dir("cifar");
    let f1 = dir.join("one.bin");
    let f2 = dir.join("two.bin");
    write_cifar(&f1, 0..3);
    write_cifar(&f2, 3..5);
    let cifar = Cifar10::from_files([&f1, &f2]).unwrap();
    assert_eq!(cifar.len(), 5);
    assert_eq!(cifar.image_size(), (32, 32));
    assert_eq!(cifar.labels().unwrap(), vec![0, 1, 2, 3, 4]);
    // Batches cross the file boundary.
    let batches = collect(&cifar, 4);
    assert_eq!(batches.iter().map(|b| b.n).collect::<Vec<_>>(), [4, 1]);
    for (k, (bi, i)) in [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)].into_iter().enumerate() {
        let b = &batches[bi];
        for (c, y, x) in [(0, 0, 0), (1, 7, 3), (2, 31, 31)] {
            let want = ((k * 31 + c * 97 + y * 5 + x) % 256) as f32 / 255.0;
            assert_eq!(px(b, i, c, y, x), want, "record {k} ({c},{y},{x})");
        }
    }

    // Wrong size: named.
    let bad = dir.join("bad.bin");
    let mut bytes: Vec<u8> = (0..2).flat_map(cifar_record).collect();
    bytes.extend([1, 2, 3]);
    std::fs::write(&bad, bytes).unwrap();
    let err = Cifar10::from_files([&bad]).unwrap_err();
    assert!(matches!(&err, FidError::BadCifarFile { path, .. } if path == &bad), "{err}");
    assert!(err.to_string().contains("bad.bin"));

    // Split from a directory; a missing file is named.
    let d = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    for i in 1..=4 {
        write_cifar(&d.join(format!("data_batch_{i}.bin")), (i - 1)..i);
    }
    let err = Cifar10::from_dir(&dir, CifarSplit::Train).unwrap_err();
    assert!(matches!(&err, FidError::Io { path, .. } if path.ends_with("data_batch_5.bin")), "{err}");
    write_cifar(&d.join("data_batch_5.bin"), 4..5);
    write_cifar(&d.join("test_batch.bin"), 7..9);
    let train = Cifar10::from_dir(&dir, CifarSplit::Train).unwrap();
    assert_eq!(train.labels().unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(Cifar10::from_dir(&d, CifarSplit::Test).unwrap().labels().unwrap(), vec![7, 8]);
    assert_eq!(Cifar10::from_dir(&dir, CifarSplit::All).unwrap().len(), 7);
    // Auto-detection picks the training split.
    let src = open_image_source(&dir).unwrap();
    assert_eq!(src.len(), 5);
    let src = open_image_source(&f1).unwrap();
    assert_eq!(src.len(), 3);

    // File shrinks after opening: the batch error names it.
    let shrink = dir.join("shrink.bin");
    write_cifar(&shrink, 0..3);
    let c = Cifar10::from_files([&shrink]).unwrap();
    std::fs::write(&shrink, cifar_record(0)).unwrap();
    let results: Vec<_> = c.batches(2).unwrap().collect();
    assert_eq!(results.len(), 1);
    assert!(matches!(&results[0], Err(FidError::BadCifarFile { path, .. }) if path == &shrink));
}

#[test]
fn npz_arr0_source() {
    let e: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("numpy_expected.json")).unwrap()).unwrap();
    assert_eq!(e["images_shape"], serde_json::json!([3, 4, 5, 3]));
    for name in ["images_u8.npz", "images_u8_compressed.npz"] {
        let src = NpzImages::open(fixture(name)).unwrap();
        assert_eq!(src.len(), 3);
        assert_eq!(src.image_size(), (4, 5));
        let batches = collect(&src, 2);
        assert_eq!(batches.iter().map(|b| b.shape()).collect::<Vec<_>>(), [[2, 3, 4, 5], [1, 3, 4, 5]]);
        for n in 0..3 {
            let (b, i) = (&batches[n / 2], n % 2);
            for c in 0..3 {
                for y in 0..4 {
                    for x in 0..5 {
                        let want = ((n * 7 + y * 13 + x * 3 + c * 101) % 256) as f32 / 255.0;
                        assert_eq!(px(b, i, c, y, x), want, "{name} image {n} ({c},{y},{x})");
                    }
                }
            }
        }
        // open_image_source dispatches on the extension.
        assert_eq!(open_image_source(fixture(name)).unwrap().len(), 3);
    }

    // Grayscale arr_0 [N, H, W, 1] is replicated to RGB.
    let dir = temp_dir("npzsrc");
    let p = dir.join("gray.npz");
    let mut w = NpzImageWriter::create(&p, 2, 2, 2, 1).unwrap();
    w.push(&[0, 51, 102, 255, 1, 2, 3, 4]).unwrap();
    w.finish().unwrap();
    let b = &collect(&NpzImages::open(&p).unwrap(), 8)[0];
    assert_eq!(b.shape(), [2, 3, 2, 2]);
    for c in 0..3 {
        assert_eq!(&b.data[c * 4..c * 4 + 4], &[0.0, 0.2, 0.4, 1.0]);
    }

    // Wrong array kinds are errors naming file and key.
    let err = NpzImages::open(fixture("stats_f64.npz")).unwrap_err();
    assert!(matches!(&err, FidError::MissingKey { key, .. } if key == "arr_0"), "{err}");
    // Truncated file.
    let bytes = std::fs::read(fixture("images_u8.npz")).unwrap();
    let cut = dir.join("cut.npz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = NpzImages::open(&cut).unwrap_err();
    assert!(err.to_string().contains("cut.npz"), "{err}");
}

#[test]
fn open_image_source_folder_and_bad_paths() {
    let dir = temp_dir("dispatch");
    make_folder(&dir);
    let src = open_image_source(&dir).unwrap();
    assert_eq!(src.len(), 4);
    assert!(src.describe().contains("4 images"));
    assert!(matches!(open_image_source(dir.join("notes.txt")), Err(FidError::InvalidArgument { .. })));
    assert!(matches!(open_image_source(dir.join("missing")), Err(FidError::Io { .. })));
}
