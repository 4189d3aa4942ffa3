//! Behaviour of the public API beyond numerics: errors instead of panics,
//! dtypes, in-place updates, no-grad scopes, safetensors round trips.

use sparsedm_tensor::{DType, Device, Error, Rng, Tensor, load_safetensors, load_safetensors_metadata, no_grad, save_safetensors};
use sparsedm_testkit::Scratch;

const DEV: Device = Device::Cpu;

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &DEV).unwrap()
}

#[test]
fn shape_errors_name_the_op_and_shapes() {
    let a = t(&[0.0; 6], &[2, 3]);
    let b = t(&[0.0; 8], &[2, 4]);
    let e = a.add(&b).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "add", .. }), "{e}");
    assert_eq!(e.to_string(), "add: shape mismatch between [2, 3] and [2, 4]");
    assert!(matches!(a.matmul(&b).unwrap_err(), Error::ShapeMismatch { op: "matmul", .. }));
    assert!(matches!(a.reshape(&[4, 2, 1]).unwrap_err(), Error::ElementCount { op: "reshape", .. }));
    assert!(matches!(a.transpose(0, 2).unwrap_err(), Error::DimOutOfRange { op: "transpose", .. }));
    assert!(a.narrow(1, 2, 2).is_err());
    assert!(Tensor::from_vec(vec![1.0; 5], &[2, 3], &DEV).is_err());
    let img = t(&[0.0; 16], &[1, 1, 4, 4]);
    assert!(img.conv2d(&t(&[0.0; 18], &[1, 2, 3, 3]), None, (1, 1), (0, 0)).is_err());
    assert!(img.max_pool2d(5, 1, 0).is_err());
    assert!(img.group_norm(3, None, None, 1e-5).is_err());
    assert!(Tensor::cat(&[&a, &b], 0).is_err());
    assert!(a.index_select(1, &Tensor::from_vec_i64(vec![3], &[1], &DEV).unwrap()).is_err());
    assert!(a.index_select(1, &a).is_err(), "f32 indices must be refused");
    assert!(a.dropout(1.0, true, &mut Rng::new(0)).is_err());
    assert!(t(&[1.0], &[1]).var_dims(&[0], false, true).is_err());
}

#[test]
fn cuda_requests_are_clear_errors() {
    // Device 0 where no GPU is usable; on a GPU machine an ordinal no machine has.
    let ordinal = if sparsedm_tensor::cuda::is_available() { 4096 } else { 0 };
    let e = Tensor::zeros(&[2], &Device::Cuda(ordinal)).unwrap_err();
    assert!(e.to_string().contains(&format!("CUDA device {ordinal} is not available")), "{e}");
    assert!(Device::parse("cuda:1").unwrap() == Device::Cuda(1));
    assert!(Device::parse("tpu").is_err());
}

#[test]
fn dtypes_convert_and_compute_refuses_non_f32() {
    let x = t(&[1.5, -2.25, 65504.0, 1e-8], &[4]);
    let h = x.to_dtype(DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    assert_eq!(h.to_vec_f32().unwrap(), vec![1.5, -2.25, 65504.0, 0.0]);
    let bf = x.to_dtype(DType::BF16).unwrap();
    assert_eq!(bf.to_vec_f32().unwrap()[..2], [1.5, -2.25]);
    assert!(matches!(h.exp().unwrap_err(), Error::UnsupportedDType { op: "exp", .. }));
    let i = t(&[2.9, -1.2], &[2]).to_dtype(DType::I64).unwrap();
    assert_eq!(i.to_vec_i64().unwrap(), vec![2, -1]);
    // Gradients flow through float casts.
    let v = t(&[1.0, 2.0], &[2]).to_var();
    let g = v.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&v).unwrap().to_vec_f32().unwrap(), vec![2.0, 4.0]);
}

#[test]
fn views_share_storage_and_set_data_updates_in_place() {
    let w = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]).to_var();
    let view = w.t().unwrap();
    w.set_data(&t(&[5.0, 6.0, 7.0, 8.0], &[2, 2])).unwrap();
    assert_eq!(view.to_vec_f32().unwrap(), vec![5.0, 7.0, 6.0, 8.0]);
    // set_data from a view of itself reads before writing.
    w.set_data(&w.t().unwrap()).unwrap();
    assert_eq!(w.to_vec_f32().unwrap(), vec![5.0, 7.0, 6.0, 8.0]);
    w.update_f32(|d| d.iter_mut().for_each(|x| *x *= 2.0)).unwrap();
    assert_eq!(w.to_vec_f32().unwrap(), vec![10.0, 14.0, 12.0, 16.0]);
    assert!(view.set_data(&w).is_err(), "non-contiguous destination");
}

#[test]
fn no_grad_and_detach_cut_the_graph() {
    let w = t(&[1.0, 2.0], &[2]).to_var();
    {
        let _g = no_grad();
        assert!(!w.sqr().unwrap().is_tracked());
    }
    assert!(w.sqr().unwrap().is_tracked());
    let loss = w.mul(&w.detach()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(g.get(&w).unwrap().to_vec_f32().unwrap(), vec![1.0, 2.0]);
    let c = t(&[1.0], &[1]);
    assert!(matches!(c.sum_all().unwrap().backward().unwrap_err(), Error::Backward(_)));
    assert!(matches!(w.sqr().unwrap().backward().unwrap_err(), Error::Backward(_)), "non-scalar loss");
    // Masks and data are untracked: no gradient is stored for them.
    let mask = t(&[1.0, 0.0], &[2]);
    let g = w.mul(&mask).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.len(), 1);
    assert!(g.get(&mask).is_none());
    assert_eq!(g.get(&w).unwrap().to_vec_f32().unwrap(), vec![1.0, 0.0]);
}

#[test]
fn deep_graphs_do_not_overflow_the_stack() {
    let w = t(&[1.0], &[1]).to_var();
    let mut x = w.clone();
    // Rules of several kinds (some keep handles to their inputs).
    let one = t(&[1.0], &[1]);
    for i in 0..100_000 {
        x = match i % 3 {
            0 => x.add_scalar(0.0).unwrap(),
            1 => x.mul(&one).unwrap(),
            _ => x.reshape(&[1]).unwrap(),
        };
    }
    let g = x.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&w).unwrap().to_vec_f32().unwrap(), vec![1.0]);
    // Dropping the graph (the last handle to its output) is iterative too:
    // a recursive drop overflowed the stack in release builds.
    drop(x);
}

#[test]
fn safetensors_round_trip_and_errors() {
    let dir = Scratch::new("io");
    let path = dir.join("ck.safetensors");
    let a = Tensor::randn(&[3, 4], &mut Rng::new(1), &DEV).unwrap();
    let b = Tensor::from_vec_i64(vec![7, -1], &[2], &DEV).unwrap();
    let h = a.to_dtype(DType::BF16).unwrap();
    let meta: std::collections::HashMap<String, String> = [("step".to_string(), "12".to_string())].into_iter().collect();
    let empty = Tensor::zeros(&[0, 3], &DEV).unwrap().to_dtype(DType::F16).unwrap();
    let named = [("a".into(), a.t().unwrap()), ("b".into(), b), ("h".into(), h), ("e".into(), empty)];
    save_safetensors(&path, &named, Some(meta.clone())).unwrap();
    // The streamed file is the in-memory serialisation, byte for byte.
    assert_eq!(std::fs::read(&path).unwrap(), sparsedm_tensor::safetensors_bytes(&named, Some(meta.clone())).unwrap());
    // Its size from shapes alone, with and without metadata, for header
    // lengths that do and do not need padding (names of 1 to 8 letters).
    assert_eq!(sparsedm_tensor::safetensors_len(&named, Some(meta)).unwrap(), std::fs::metadata(&path).unwrap().len() as usize);
    for k in 1..=8 {
        let some: Vec<(String, Tensor)> = named.iter().map(|(n, t)| (n.repeat(k), t.clone())).collect();
        let want = sparsedm_tensor::safetensors_bytes(&some, None).unwrap().len();
        assert_eq!(sparsedm_tensor::safetensors_len(&some, None).unwrap(), want, "names of {k} letters");
    }
    let back: std::collections::HashMap<_, _> = load_safetensors(&path).unwrap().into_iter().collect();
    assert_eq!(back["a"].to_vec_f32().unwrap(), a.t().unwrap().to_vec_f32().unwrap());
    assert_eq!(back["b"].to_vec_i64().unwrap(), vec![7, -1]);
    assert_eq!(back["h"].dtype(), DType::BF16);
    assert_eq!((back["e"].shape(), back["e"].dtype()), (&[0usize, 3][..], DType::F16));
    assert_eq!(load_safetensors_metadata(&path).unwrap()["step"], "12");
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    std::fs::write(dir.join("bad.safetensors"), b"not a safetensors file").unwrap();
    let e = load_safetensors(dir.join("bad.safetensors")).unwrap_err();
    assert!(
        e.to_string().contains("bad.safetensors")
            && e.to_string().contains("this is no safetensors file but a text file, not a checkpoint"),
        "{e}"
    );
    // Files a user gives where a checkpoint belongs are named for what they are.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let onnx = [&[0x08u8, 0x08, 0x12, 0x08][..], b"sparsedm"].concat();
    let npy = b"\x93NUMPY\x01\0v\0{'descr': '<f4'}".to_vec();
    for (name, content, what) in [
        ("grid.png", png, "a PNG image"),
        ("model.onnx", onnx, "an ONNX model (what `sparsedm export --format onnx` writes"),
        ("x.npy", npy, "a NumPy .npy array"),
        ("config.toml", b"seed = 0\narch = \"uvit\"\n".to_vec(), "a TOML file (a run config goes to --config)"),
        ("uvit_s2.json", b"{\"img_size\": 32}".to_vec(), "a JSON file"),
        ("download.pth.safetensors", b"\n<!DOCTYPE html><html>".to_vec(), "an HTML or XML page"),
    ] {
        std::fs::write(dir.join(name), content).unwrap();
        for e in [load_safetensors(dir.join(name)).unwrap_err(), load_safetensors_metadata(dir.join(name)).unwrap_err()] {
            let e = e.to_string();
            assert!(e.contains(name) && e.contains(&format!("this is no safetensors file but {what}")), "{name}: {e}");
        }
    }
    let e = load_safetensors(dir.join("missing.safetensors")).unwrap_err();
    assert!(e.to_string().contains("missing.safetensors"), "{e}");
}

/// The metadata of a safetensors file comes from its header alone, checked as the full reader
/// checks the file's layout: the same map as the writer's (none: empty), and one clear error for a
/// truncated file, a padded one, a header longer than the file, a header that is not JSON, a
/// shape that does not match its bytes, and a missing file (the loader too). A file whose data region is sparse on disk (1 GiB apparent size) answers
/// with its metadata, the header being all that is read.
#[test]
fn safetensors_metadata_reads_the_header_only_and_checks_the_layout() {
    let dir = Scratch::new("io-meta");
    let path = dir.join("m.safetensors");
    let a = Tensor::randn(&[5, 7], &mut Rng::new(4), &DEV).unwrap();
    let meta: std::collections::HashMap<String, String> = [("sparsedm.config", "x = 1\n[y]\nz = \"w\""), ("step", "3"), ("empty", "")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    save_safetensors(&path, &[("a".into(), a.clone()), ("b".into(), a.sum_all().unwrap())], Some(meta.clone())).unwrap();
    assert_eq!(load_safetensors_metadata(&path).unwrap(), meta);
    let plain = dir.join("plain.safetensors");
    save_safetensors(&plain, &[("a".into(), a)], None).unwrap();
    assert!(load_safetensors_metadata(&plain).unwrap().is_empty());

    let bytes = std::fs::read(&path).unwrap();
    let fails = |name: &str, content: &[u8], needle: &str| {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        let e = load_safetensors_metadata(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
    };
    fails("truncated.safetensors", &bytes[..bytes.len() - 1], "not a valid safetensors file");
    fails("padded.safetensors", &[&bytes[..], &[0u8]].concat(), "not a valid safetensors file");
    fails("short.safetensors", &bytes[..5], "not a valid safetensors file");
    let mut long = bytes.clone();
    long[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    fails("long-header.safetensors", &long, "header length");
    let mut garbled = bytes.clone();
    garbled[8] = b'#';
    fails("garbled.safetensors", &garbled, "its header");
    // The header through the safetensors crate's checks: a shape that does not match its bytes.
    let wrong = br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    fails("wrong-shape.safetensors", &[&(wrong.len() as u64).to_le_bytes()[..], wrong, &[0u8; 8]].concat(), "not a valid safetensors file");
    // The loader reads the same header first: the same files are refused, naming them.
    for name in ["truncated.safetensors", "padded.safetensors", "wrong-shape.safetensors", "garbled.safetensors"] {
        let e = load_safetensors(dir.join(name)).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("not a valid safetensors file"), "load {name}: {e}");
    }
    let e = load_safetensors_metadata(dir.join("missing.safetensors")).unwrap_err().to_string();
    assert!(e.contains("missing.safetensors"), "{e}");

    // A 1 GiB tensor whose bytes are a hole in the file: the metadata comes back at once.
    let header = br#"{"__metadata__":{"k":"v"},"big":{"dtype":"F32","shape":[268435456],"data_offsets":[0,1073741824]}}"#;
    let big = dir.join("big.safetensors");
    let mut f = std::fs::File::create(&big).unwrap();
    std::io::Write::write_all(&mut f, &[&(header.len() as u64).to_le_bytes()[..], header].concat()).unwrap();
    f.set_len(8 + header.len() as u64 + (1 << 30)).unwrap();
    drop(f);
    assert_eq!(load_safetensors_metadata(&big).unwrap()["k"], "v");
}

/// Empty views and an empty index list are valid inputs with empty results, not panics
/// (a zero-sized dimension used to reach `chunks_mut(0)` in the strided walker).
#[test]
fn empty_views_and_empty_index_lists_give_empty_results() {
    let table = Tensor::randn(&[5, 3], &mut Rng::new(2), &DEV).unwrap();
    let none = Tensor::from_vec_i64(vec![], &[0], &DEV).unwrap();
    assert_eq!(none.to_vec_i64().unwrap(), Vec::<i64>::new());
    let sel = table.index_select(0, &none).unwrap();
    assert_eq!(sel.shape(), &[0, 3]);
    assert!(sel.to_vec_f32().unwrap().is_empty());
    let narrow = table.narrow(1, 1, 0).unwrap();
    assert_eq!(narrow.shape(), &[5, 0]);
    assert!(narrow.t().unwrap().contiguous().unwrap().to_vec_f32().unwrap().is_empty());
}

#[test]
fn large_cat_and_pad_place_every_element() {
    // Large enough that the copies run in parallel over rows: a cat along
    // the last dim of a contiguous tensor and a transposed view (strided
    // source, strided boxes), a cat along the first dim, and a pad.
    let dev = Device::Cpu;
    let mut rng = Rng::new(3);
    let (r, a, b) = (300, 70, 90);
    let x = Tensor::randn(&[r, a], &mut rng, &dev).unwrap();
    let y = Tensor::randn(&[b, r], &mut rng, &dev).unwrap().t().unwrap();
    let (xv, yv) = (x.to_vec_f32().unwrap(), y.to_vec_f32().unwrap());
    let c = Tensor::cat(&[&x, &y], 1).unwrap().to_vec_f32().unwrap();
    for i in 0..r {
        assert_eq!(&c[i * (a + b)..i * (a + b) + a], &xv[i * a..(i + 1) * a], "row {i}, x part");
        assert_eq!(&c[i * (a + b) + a..(i + 1) * (a + b)], &yv[i * b..(i + 1) * b], "row {i}, y part");
    }
    let c0 = Tensor::cat(&[&y.t().unwrap(), &x.t().unwrap()], 0).unwrap();
    assert_eq!(c0.shape(), &[b + a, r]);
    let c0 = c0.to_vec_f32().unwrap();
    for i in 0..r {
        assert_eq!(c0[i], yv[i * b], "first row of the y part, column {i}");
        assert_eq!(c0[b * r + i], xv[i * a], "first row of the x part, column {i}");
    }
    let p = x.pad(&[(2, 1), (0, 3)], -1.0).unwrap();
    assert_eq!(p.shape(), &[r + 3, a + 3]);
    let p = p.to_vec_f32().unwrap();
    assert_eq!(p[0], -1.0);
    assert_eq!(p[2 * (a + 3)], xv[0]);
    assert_eq!(p[2 * (a + 3) + a], -1.0);
    assert_eq!(p[(r + 1) * (a + 3) + a - 1], xv[r * a - 1]);
    assert_eq!(p[(r + 3) * (a + 3) - 1], -1.0);
}

#[test]
fn linear_cat_is_the_linear_of_the_concatenation() {
    // Parts of 3-D tensors, a transposed (strided) part, a zero-width part,
    // three parts, with and without bias; rows above the threading
    // threshold so the products are banded. Summation order differs from
    // one GEMM over the concatenation (one product per part), hence a tolerance.
    let mut rng = Rng::new(5);
    let mut randn = |shape: &[usize]| Tensor::randn(shape, &mut rng, &DEV).unwrap();
    let (a, b, c) = (randn(&[4, 300, 64]), randn(&[4, 300, 48]), randn(&[4, 300, 16]));
    let bt = randn(&[4, 48, 300]).transpose(1, 2).unwrap();
    let e = Tensor::zeros(&[4, 300, 0], &DEV).unwrap();
    let w = randn(&[40, 128]);
    let bias = randn(&[40]);
    let close = |got: &Tensor, want: &Tensor| {
        assert_eq!(got.shape(), want.shape());
        let (g, w) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        let worst = g.iter().zip(&w).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0f32, f32::max);
        assert!(worst < 1e-5, "worst {worst}");
    };
    for (parts, bias) in [(vec![&a, &b, &c], Some(&bias)), (vec![&a, &bt, &c], None), (vec![&e, &a, &b, &c], Some(&bias))] {
        let want = Tensor::cat(&parts, 2).unwrap().linear(&w, bias).unwrap();
        close(&Tensor::linear_cat(&parts, &w, bias).unwrap(), &want);
    }
    // Bad shapes name the op.
    let e1 = Tensor::linear_cat(&[&a, &b], &w, None).unwrap_err();
    assert!(matches!(e1, Error::ShapeMismatch { op: "linear_cat", .. }), "{e1}");
    let e2 = Tensor::linear_cat(&[&a, &randn(&[4, 299, 64])], &w, None).unwrap_err();
    assert!(matches!(e2, Error::ShapeMismatch { op: "linear_cat", .. }), "{e2}");
    let e3 = Tensor::linear_cat(&[&a, &b, &c], &w, Some(&randn(&[41]))).unwrap_err();
    assert!(matches!(e3, Error::ShapeMismatch { op: "linear_cat", .. }), "{e3}");
    assert!(Tensor::linear_cat(&[], &w, None).is_err());
}

/// A saved safetensors file has the permissions of any new file of the process (`File::create`
/// under the umask), not the `rw-------` of the safetensors crate's private temporary file:
/// a checkpoint must be readable by whoever may read the user's other files. An existing file
/// (rewritten, as with `--force`) is replaced the same way, and no temporary file is left.
#[cfg(unix)]
#[test]
fn saved_safetensors_get_a_new_files_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("io-mode");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let probe = dir.join("probe");
    std::fs::File::create(&probe).unwrap();
    let expected = mode(&probe);
    std::fs::remove_file(&probe).unwrap();
    let path = dir.join("w.safetensors");
    let a = Tensor::randn(&[3, 4], &mut Rng::new(1), &DEV).unwrap();
    save_safetensors(&path, &[("a".into(), a.clone())], None).unwrap();
    assert_eq!(mode(&path), expected, "a new file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    save_safetensors(&path, &[("a".into(), a)], None).unwrap();
    assert_eq!(mode(&path), expected, "a rewritten file");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("w.safetensors")]);
}
