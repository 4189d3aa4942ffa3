//! The deployed 2:4 path at model level on CUDA (`sparsedm-layers`'
//! `nn/deployed.rs` → `sparsedm_tensor::nm_cuda::Sparse24Linear` →
//! cuSPARSELt): a small U-ViT masked 2:4 by SparseDM's policy, at the bf16
//! matmul precision, samples through cuSPARSELt under `no_grad` and gives
//! the dense masked forward (grad mode on: the bf16 cuBLAS GEMMs) within
//! bf16 tolerance; each weight is compressed once, and again only after it
//! changes. A weight that is not 2:4 (a 4:8 mask) is refused by
//! cuSPARSELt's prune check and the layer falls back to the dense product
//! (no error: the model still samples, bit-identical to the dense forward).
//! A DDPM UNet masked 2:4 on every layer runs its Conv2d layers as im2col +
//! cuSPARSELt (`sparsedm_tensor::nm_cuda_conv::Sparse24Conv2d`, kind
//! `cusparselt-2:4-conv`), each weight compressed once, within bf16
//! tolerance of its masked dense forward; a convolution cuSPARSELt cannot
//! take (3 output channels) runs dense.
//!
//! Runs on a real GPU, or on the CUDA simulator in CI
//! (`SPARSEDM_CUDA_SIM=1`, which enforces cuSPARSELt's constraints);
//! skipped without either unless `SPARSEDM_REQUIRE_GPU=1`.
//!
//! On a real GPU a deployed layer times the dense bf16 GEMM against
//! cuSPARSELt once per shape and keeps the faster (`nm_cuda.rs`); these
//! models' layers are tiny, so there the dense GEMM can win and the
//! "sparse" forward equals the dense one to the bit — what made the UNet
//! check fail on an H200 (2026-12-04) while it passed on the simulator,
//! which always runs the sparse path. The forwards that check the 2:4 path
//! therefore pin it ([`Pinned`]), as the CPU tests do.

use sparsedm_diffusion::{EpsModel, UNet, UNetConfig, UViT, UViTConfig};
use sparsedm_kernels::testing::gpu_or_skip;
use sparsedm_layers::{NamedPolicy, NmPattern, ParamStore, Policy, SparseMode, apply_policy};
use sparsedm_tensor::nm_cpu::{NmPath, force_path};
use sparsedm_tensor::nm_cuda::compressions;
use sparsedm_tensor::{Device, MatmulPrecision, Rng, Tensor, no_grad, set_matmul_precision};
use std::sync::Mutex;

/// The matmul precision and the compression counter are process-wide:
/// the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn cfg() -> UViTConfig {
    UViTConfig { img_size: 8, patch_size: 2, embed_dim: 64, depth: 3, num_heads: 2, num_classes: 5, ..Default::default() }
}

fn inputs(dev: Device) -> (Tensor, Tensor, Tensor) {
    let x = Tensor::randn(&[4, 3, 8, 8], &mut Rng::new(2), &Device::Cpu).unwrap().to_device(&dev).unwrap();
    let t = Tensor::from_vec(vec![10.0, 300.0, 600.0, 990.0], &[4], &dev).unwrap();
    let y = Tensor::from_vec_i64(vec![0, 4, 2, 1], &[4], &dev).unwrap();
    (x, t, y)
}

/// Pins every deployed layer to the sparse path (no timed choice) while it
/// lives, also if the test panics.
struct Pinned;

impl Pinned {
    fn sparse() -> Pinned {
        force_path(Some(NmPath::Sparse));
        Pinned
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        force_path(None);
    }
}

/// `max |a − b|` and `max |b|`.
fn err(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    (a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())), scale)
}

fn kinds(store: &ParamStore, kind: &str) -> usize {
    store.sparse_slots().iter().filter(|(_, s)| s.deployed_kind() == Some(kind)).count()
}

#[test]
fn gpu_uvit_24_samples_through_cusparselt_like_the_dense_masked_forward() {
    let Some(gpu) = gpu_or_skip("gpu_uvit_24_samples_through_cusparselt_like_the_dense_masked_forward") else { return };
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = Device::Cuda(gpu.ordinal());
    set_matmul_precision(MatmulPrecision::Bf16);
    let store = ParamStore::new(dev, 5);
    let model = UViT::new(&store, &cfg()).unwrap();
    apply_policy(&store, &Policy::named(NamedPolicy::SparseDmUvit), NmPattern::TWO_FOUR, SparseMode::srste).unwrap();
    store.set_training(false);
    let (x, t, y) = inputs(dev);
    let fwd = || model.predict_eps(&x, &t, Some(&y)).unwrap();

    let dense = fwd().detach();
    let before = compressions();
    let sparse = {
        let (_g, _p) = (no_grad(), Pinned::sparse());
        fwd()
    };
    let deployed = kinds(&store, "cusparselt-2:4");
    assert!(deployed >= 9, "only {deployed} layers went through cuSPARSELt");
    assert_eq!(compressions() - before, deployed, "one compression per deployed layer");
    let (e, scale) = err(&sparse, &dense);
    // bf16 operands on both sides; the 2:4 path also rounds each layer's output to bf16.
    assert!(e <= 3e-2 * scale, "2:4 vs dense masked: max error {e} > 3e-2 × {scale}");
    assert!(e > 0.0, "the 2:4 path rounds its outputs to bf16: an exact match means it did not run");

    // Sampling again reuses the compressed weights.
    {
        let (_g, _p) = (no_grad(), Pinned::sparse());
        let again = fwd();
        assert_eq!(compressions() - before, deployed, "no recompression for unchanged weights");
        assert_eq!(again.to_vec_f32().unwrap(), sparse.to_vec_f32().unwrap());
    }

    // A training step changes one weight: only that layer is compressed again,
    // and the next sample follows the new weights.
    let w = store.get("mid_block.mlp.fc1.weight").unwrap();
    let fresh = Tensor::randn(w.shape(), &mut Rng::new(9), &Device::Cpu).unwrap().affine(0.02, 0.0).unwrap().to_device(&dev).unwrap();
    w.set_data(&fresh).unwrap();
    let dense2 = fwd().detach();
    let sparse2 = {
        let (_g, _p) = (no_grad(), Pinned::sparse());
        fwd()
    };
    assert_eq!(compressions() - before, deployed + 1, "exactly the changed layer is recompressed");
    let (e2, scale2) = err(&sparse2, &dense2);
    assert!(e2 <= 3e-2 * scale2, "after the update: max error {e2} > 3e-2 × {scale2}");
    let (moved, _) = err(&sparse2, &sparse);
    assert!(moved > 10.0 * e2, "the output did not follow the weight update ({moved})");
    // Unpinned, each layer takes the faster path for its shape (timed once
    // on a real GPU): whichever it is, the same values within bf16.
    let chosen = {
        let _g = no_grad();
        fwd()
    };
    let (e3, _) = err(&chosen, &dense2);
    assert!(e3 <= 3e-2 * scale2, "timed choice: max error {e3} > 3e-2 × {scale2}");
    set_matmul_precision(MatmulPrecision::F32);
}

#[test]
fn gpu_non_24_weights_and_f32_precision_run_dense() {
    let Some(gpu) = gpu_or_skip("gpu_non_24_weights_and_f32_precision_run_dense") else { return };
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = Device::Cuda(gpu.ordinal());
    let (x, t, y) = inputs(dev);

    // 4:8 masks keep up to 4 of every 4 inputs: cuSPARSELt's prune check
    // refuses such weights, and each layer falls back to the dense product.
    set_matmul_precision(MatmulPrecision::Bf16);
    let store = ParamStore::new(dev, 6);
    let model = UViT::new(&store, &cfg()).unwrap();
    apply_policy(&store, &Policy::named(NamedPolicy::SparseDmUvit), NmPattern::new(4, 8).unwrap(), SparseMode::srste).unwrap();
    store.set_training(false);
    let fwd = || model.predict_eps(&x, &t, Some(&y)).unwrap();
    let dense = fwd().detach();
    let before = compressions();
    let out = {
        let _g = no_grad();
        fwd()
    };
    assert_eq!(compressions(), before, "no 4:8 weight may be compressed as 2:4");
    assert_eq!(kinds(&store, "cusparselt-2:4"), 0);
    assert!(kinds(&store, "dense") >= 9);
    assert_eq!(out.to_vec_f32().unwrap(), dense.to_vec_f32().unwrap(), "the fallback is the dense masked forward");

    // f32 matmuls: cuSPARSELt has no f32 2:4 mode, so 2:4 layers stay dense.
    set_matmul_precision(MatmulPrecision::F32);
    let store = ParamStore::new(dev, 7);
    let model = UViT::new(&store, &cfg()).unwrap();
    apply_policy(&store, &Policy::named(NamedPolicy::SparseDmUvit), NmPattern::TWO_FOUR, SparseMode::srste).unwrap();
    store.set_training(false);
    let fwd = || model.predict_eps(&x, &t, Some(&y)).unwrap();
    let dense = fwd().detach();
    let out = {
        let _g = no_grad();
        fwd()
    };
    assert_eq!(compressions(), before);
    assert_eq!(kinds(&store, "cusparselt-2:4"), 0);
    assert_eq!(out.to_vec_f32().unwrap(), dense.to_vec_f32().unwrap());
}

#[test]
fn gpu_unet_24_convolutions_run_through_cusparselt_like_the_dense_masked_forward() {
    let Some(gpu) = gpu_or_skip("gpu_unet_24_convolutions_run_through_cusparselt_like_the_dense_masked_forward") else { return };
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = Device::Cuda(gpu.ordinal());
    set_matmul_precision(MatmulPrecision::Bf16);
    // Every conv kind of the UNet: 3×3 stride 1, the stride-2 downsampling
    // conv, 1×1 shortcuts and attention projections, the 3-channel ends.
    let cfg = UNetConfig {
        ch: 32,
        out_ch: 3,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![4],
        dropout: 0.0,
        resamp_with_conv: true,
        in_channels: 3,
        resolution: 8,
        widths: None,
        num_groups: 32,
    };
    let store = ParamStore::new(dev, 11);
    let model = UNet::new(&store, &cfg).unwrap();
    apply_policy(&store, &Policy::named(NamedPolicy::All), NmPattern::TWO_FOUR, SparseMode::srste).unwrap();
    store.set_training(false);
    let x = Tensor::randn(&[2, 3, 8, 8], &mut Rng::new(4), &Device::Cpu).unwrap().to_device(&dev).unwrap();
    let t = Tensor::from_vec(vec![3.0, 700.0], &[2], &dev).unwrap();
    let fwd = || model.predict_eps(&x, &t, None).unwrap();

    // Grad mode on: the dense masked forward (bf16 cuBLAS GEMMs).
    let dense = fwd().detach();
    let before = compressions();
    let sparse = {
        let (_g, _p) = (no_grad(), Pinned::sparse());
        fwd()
    };
    let convs = kinds(&store, "cusparselt-2:4-conv");
    let linears = kinds(&store, "cusparselt-2:4");
    assert!(convs >= 10, "only {convs} Conv2d layers went through cuSPARSELt");
    assert_eq!(compressions() - before, convs + linears, "one compression per deployed layer");
    // conv_in's 3 input channels leave its mask dense (nothing to deploy);
    // conv_out's 3 outputs are not a cuSPARSELt shape: refused, it runs dense.
    let kind = |name: &str| store.sparse_slots().into_iter().find(|(n, _)| n == name).unwrap().1.deployed_kind();
    assert_eq!(kind("conv_in"), None, "conv_in");
    assert_eq!(kind("conv_out"), Some("dense"), "conv_out");
    let (e, scale) = err(&sparse, &dense);
    // bf16 operands on both sides; the 2:4 path also rounds each layer's
    // output to bf16 (2^-9 relative) before the f32 epilogue ops.
    assert!(e <= 3e-2 * scale, "2:4 vs dense masked: max error {e} > 3e-2 × {scale}");
    assert!(e > 0.0, "the 2:4 path rounds its outputs to bf16: an exact match means it did not run");
    {
        let (_g, _p) = (no_grad(), Pinned::sparse());
        let again = fwd();
        assert_eq!(compressions() - before, convs + linears, "no recompression for unchanged weights");
        assert_eq!(again.to_vec_f32().unwrap(), sparse.to_vec_f32().unwrap(), "deterministic");
    }
    set_matmul_precision(MatmulPrecision::F32);
}
