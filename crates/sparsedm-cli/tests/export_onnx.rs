//! `sparsedm export --format onnx` graphs run in a real ONNX runtime
//! (tract, pure Rust) and agree with our forward within 1e-4 relative:
//! the shipped demo U-ViT (at two batch sizes from one graph: the batch is
//! dynamic), the class-conditional tiny U-ViT loaded from a `.pth` (against
//! the PyTorch reference output of its fixture), and that model pruned to
//! 2:4, whose pruned weights are stored in the file byte for byte.

use sparsedm_tensor::testing::assert_close;
use sparsedm_tensor::{Device, Rng, Tensor, load_safetensors, no_grad};
use sparsedm_testkit::Scratch;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, TValue, Tensor as TractTensor};

fn cli_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn diffusion_fixture(name: &str) -> PathBuf {
    cli_dir().join("../sparsedm-diffusion/tests/fixtures").join(name)
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::new("export-onnx")
}

fn sparsedm(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsedm")).args(args).output().expect("run the sparsedm binary")
}

fn ok(run: &Output, what: &str) {
    assert!(run.status.success(), "{what} failed: {}", String::from_utf8_lossy(&run.stderr));
}

/// An ONNX input: f32 or i64 values with a shape.
enum Input {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
}

/// Runs `path` in tract on `inputs`; returns the first output's shape and values.
fn run_onnx(path: &Path, inputs: Vec<Input>) -> (Vec<usize>, Vec<f32>) {
    let model = tract_onnx::onnx().model_for_path(path).expect("tract reads the graph");
    let model = model.into_optimized().expect("tract types and optimizes the graph").into_runnable().expect("a runnable plan");
    let values: Vec<TValue> = inputs
        .into_iter()
        .map(|i| match i {
            Input::F32(s, v) => TractTensor::from_shape(&s, &v).unwrap().into(),
            Input::I64(s, v) => TractTensor::from_shape(&s, &v).unwrap().into(),
        })
        .collect();
    let out = model.run(values.into_iter().collect()).expect("tract runs the graph");
    let view = out[0].to_plain_array_view::<f32>().unwrap();
    (view.shape().to_vec(), view.iter().copied().collect())
}

fn export(args: &[&str], out: &Path) {
    let mut a: Vec<&std::ffi::OsStr> =
        vec!["export".as_ref(), "--format".as_ref(), "onnx".as_ref(), "--out".as_ref(), out.as_os_str(), "--force".as_ref()];
    a.extend(args.iter().map(std::ffi::OsStr::new));
    ok(&sparsedm(&a), "sparsedm export");
}

#[test]
fn demo_uvit_runs_in_tract_like_our_forward_at_any_batch() {
    let scratch = scratch_dir();
    let ckpt = cli_dir().join("assets/demo_shapes_uvit_dense.safetensors");
    let onnx = scratch.join("demo.onnx");
    export(&["--checkpoint", ckpt.to_str().unwrap()], &onnx);
    let r = sparsedm_train::restore::restore(&ckpt, true, None).unwrap();
    let [c, h, w] = r.bundle.config.input_shape();
    let mut rng = Rng::new(7);
    for (b, times) in [(2usize, vec![12.5f32, 731.0]), (3, vec![1.0, 250.0, 999.0])] {
        let x = Tensor::randn(&[b, c, h, w], &mut rng, &Device::Cpu).unwrap();
        let t = Tensor::from_vec(times.clone(), &[b], &Device::Cpu).unwrap();
        let want = {
            let _g = no_grad();
            r.bundle.model.predict_eps(&x, &t, None).unwrap()
        };
        let (shape, got) = run_onnx(&onnx, vec![Input::F32(vec![b, c, h, w], x.to_vec_f32().unwrap()), Input::F32(vec![b], times)]);
        assert_eq!(shape, want.shape());
        assert_close(&format!("demo U-ViT, batch {b}"), &got, &want.to_vec_f32().unwrap(), 1e-4);
    }
}

/// The conditional tiny U-ViT's fixture inputs and PyTorch output.
fn cond_fixture() -> (Vec<Input>, Vec<usize>, Vec<f32>) {
    let io: std::collections::HashMap<String, Tensor> =
        load_safetensors(diffusion_fixture("uvit_tiny_cond.io.safetensors")).unwrap().into_iter().collect();
    let x = &io["input.x"];
    let t = &io["input.timesteps"];
    let y = &io["input.y"];
    let y: Vec<i64> = match y.to_vec_i64() {
        Ok(v) => v,
        Err(_) => y.to_vec_f32().unwrap().into_iter().map(|v| v as i64).collect(),
    };
    let inputs = vec![
        Input::F32(x.shape().to_vec(), x.to_vec_f32().unwrap()),
        Input::F32(t.shape().to_vec(), t.to_vec_f32().unwrap()),
        Input::I64(vec![y.len()], y),
    ];
    (inputs, io["output"].shape().to_vec(), io["output"].to_vec_f32().unwrap())
}

#[test]
fn conditional_uvit_from_pth_matches_the_pytorch_reference() {
    let scratch = scratch_dir();
    let pth = cli_dir().join("../sparsedm-tensor/tests/fixtures/pth/uvit_tiny_cond.pth");
    let config = diffusion_fixture("uvit_tiny_cond.json");
    let onnx = scratch.join("cond.onnx");
    export(&["--weights", pth.to_str().unwrap(), "--arch", "uvit", "--config", config.to_str().unwrap()], &onnx);
    let (inputs, want_shape, want) = cond_fixture();
    let (shape, got) = run_onnx(&onnx, inputs);
    assert_eq!(shape, want_shape);
    assert_close("conditional U-ViT vs PyTorch", &got, &want, 1e-4);
}

#[test]
fn pruned_2of4_weights_are_stored_exactly() {
    let scratch = scratch_dir();
    let config = diffusion_fixture("uvit_tiny_cond.json");
    let pruned = scratch.join("cond_2of4.safetensors");
    let _ = std::fs::remove_file(&pruned);
    let weights = diffusion_fixture("uvit_tiny_cond.weights.safetensors");
    let run = sparsedm(&[
        "prune".as_ref(),
        "--arch".as_ref(),
        "uvit".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--pattern".as_ref(),
        "2:4".as_ref(),
        "--policy".as_ref(),
        "sparsedm-uvit".as_ref(),
        "--out".as_ref(),
        pruned.as_os_str(),
    ]);
    ok(&run, "sparsedm prune");
    let onnx = scratch.join("cond_2of4.onnx");
    export(&["--checkpoint", pruned.to_str().unwrap(), "--arch", "uvit", "--config", config.to_str().unwrap()], &onnx);
    let bytes = std::fs::read(&onnx).unwrap();
    let tensors = load_safetensors(&pruned).unwrap();
    let fc1 = &tensors.iter().find(|(k, _)| k == "in_blocks.0.mlp.fc1.weight").unwrap().1;
    let v = fc1.to_vec_f32().unwrap();
    assert!(v.chunks(4).all(|g| g.iter().filter(|x| **x == 0.0).count() >= 2), "the pruned weight is 2:4");
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert!(bytes.windows(raw.len()).any(|w| w == raw.as_slice()), "the 2:4 weight is stored as it is, [out, in], zeros in place");
    // And the pruned graph still computes what our forward does.
    let r = sparsedm_train::restore::restore(
        &pruned,
        true,
        Some(&sparsedm_train::restore::ExternalModel {
            arch: sparsedm_diffusion::Arch::UViT,
            config: serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap(),
            schedule: None,
        }),
    )
    .unwrap();
    let (inputs, _, _) = cond_fixture();
    let (x, t, y) = match &inputs[..] {
        [Input::F32(xs, xv), Input::F32(ts, tv), Input::I64(ys, yv)] => (
            Tensor::from_vec(xv.clone(), xs, &Device::Cpu).unwrap(),
            Tensor::from_vec(tv.clone(), ts, &Device::Cpu).unwrap(),
            Tensor::from_vec_i64(yv.clone(), ys, &Device::Cpu).unwrap(),
        ),
        _ => unreachable!(),
    };
    let want = {
        let _g = no_grad();
        r.bundle.model.predict_eps(&x, &t, Some(&y)).unwrap()
    };
    let (_, got) = run_onnx(&onnx, inputs);
    assert_close("2:4 U-ViT", &got, &want.to_vec_f32().unwrap(), 1e-4);
}

#[test]
fn ddpm_unet_matches_the_pytorch_reference() {
    let scratch = scratch_dir();
    let weights = diffusion_fixture("ddpm_unet_tiny.weights.safetensors");
    let config = diffusion_fixture("ddpm_unet_tiny.json");
    let onnx = scratch.join("unet.onnx");
    export(&["--weights", weights.to_str().unwrap(), "--arch", "ddpm-unet", "--config", config.to_str().unwrap()], &onnx);
    let io: std::collections::HashMap<String, Tensor> =
        load_safetensors(diffusion_fixture("ddpm_unet_tiny.io.safetensors")).unwrap().into_iter().collect();
    let (x, t) = (&io["input.x"], &io["input.t"]);
    let inputs = vec![Input::F32(x.shape().to_vec(), x.to_vec_f32().unwrap()), Input::F32(t.shape().to_vec(), t.to_vec_f32().unwrap())];
    let (shape, got) = run_onnx(&onnx, inputs);
    assert_eq!(shape, io["output"].shape());
    assert_close("DDPM UNet vs PyTorch", &got, &io["output"].to_vec_f32().unwrap(), 1e-4);
}
