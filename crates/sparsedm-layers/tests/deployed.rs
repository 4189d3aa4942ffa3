//! The deployed N:M path of Linear and Conv2d (`nn/deployed.rs`) on the CPU:
//! under `no_grad` a layer whose forward weight is N:M runs the `nm_cpu`
//! kernels on a weight compressed once, and gives the masked dense forward
//! (the same layer with grad mode on, i.e. `x·(w ⊙ m)ᵀ + b` through the
//! dense GEMM / convolution) within 1e-5 relative, for several N:M
//! patterns and shapes that are not multiples of the SIMD width; the cache
//! follows every change of weight, bias, mode and training flag.
//!
//! Every test pins the kernels' dense-vs-N:M choice to the N:M kernel
//! (`force_path`), so the SpMM itself is what is compared, whatever the
//! machine's timings would choose.

use sparsedm_layers::{Attention, Conv2d, Conv2dConfig, Init, LayerNorm, Linear, NmPattern, NonDivisible, ParamStore, SparseMode};
use sparsedm_tensor::nm_cpu::{NmPath, force_path};
use sparsedm_tensor::{Device, Rng, Tensor, no_grad};

const DEV: Device = Device::Cpu;
const REL: f32 = 1e-5;

const PATTERNS: [(usize, usize); 14] =
    [(2, 4), (1, 4), (1, 8), (4, 8), (2, 32), (3, 16), (1, 2), (31, 32), (3, 4), (5, 9), (2, 3), (7, 12), (1, 32), (16, 32)];

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(Rng::new(seed).normal_vec(n), shape, &DEV).unwrap()
}

/// `max |a − b| ≤ REL · max |b|`, naming `what` on failure.
fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let err = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err <= REL * scale, "{what}: max error {err} > {REL} × {scale}");
}

/// The masked dense forward: grad mode on, so the layer takes its ordinary
/// path (`effective_weight()` and the dense op), detached for comparison.
fn dense_forward(f: impl Fn() -> Tensor) -> Tensor {
    f().detach()
}

fn deployed_forward(f: impl Fn() -> Tensor) -> Tensor {
    let _g = no_grad();
    f()
}

#[test]
fn linear_nm_path_equals_masked_dense_forward() {
    force_path(Some(NmPath::Sparse));
    let mut seed = 1;
    for (n, m) in PATTERNS {
        for (inp, out, rows) in [(m * 3, 5, 1), (m * 8, 17, 7), (m * 12, 33, 70), (64usize.div_ceil(m) * m, 20, 130)] {
            seed += 1;
            let store = ParamStore::new(DEV, seed);
            let lin = Linear::new(&store.pp("fc"), inp, out, true).unwrap();
            lin.slot().set_mode(SparseMode::srste(NmPattern::new(n, m).unwrap())).unwrap();
            store.set_training(false);
            let x = randn(&[rows, inp], seed + 100);
            let dense = dense_forward(|| lin.forward(&x).unwrap());
            let nm = deployed_forward(|| lin.forward(&x).unwrap());
            assert_eq!(lin.slot().deployed_kind(), Some("nm-cpu"), "{n}:{m} [{out}, {inp}]");
            assert_close(&nm, &dense, &format!("Linear {n}:{m} [{out}, {inp}] × {rows} rows"));
            // A leading batch dimension goes through the same path.
            let x3 = randn(&[2, rows, inp], seed + 200);
            assert_close(
                &deployed_forward(|| lin.forward(&x3).unwrap()),
                &dense_forward(|| lin.forward(&x3).unwrap()),
                &format!("Linear {n}:{m} batched"),
            );
            assert_eq!(lin.slot().deploy_builds(), 1, "compressed once for both calls");
        }
    }
}

#[test]
fn conv2d_nm_path_equals_masked_dense_forward() {
    force_path(Some(NmPath::Sparse));
    let mut seed = 50;
    for (n, m) in [(2, 4), (1, 4), (1, 8), (4, 8), (2, 32), (5, 9), (31, 32), (2, 3)] {
        for (c, o, k, s, p, bias) in [(m, 5, 3, 1, 1, true), (2 * m, 16, 1, 1, 0, false), (3 * m, 7, 3, 2, 1, true), (m, 3, 2, 1, 0, true)]
        {
            seed += 1;
            let store = ParamStore::new(DEV, seed);
            let cfg = Conv2dConfig { kernel: (k, k), stride: (s, s), padding: (p, p), bias };
            let conv = Conv2d::new(&store.pp("conv"), c, o, cfg).unwrap();
            conv.slot().set_mode(SparseMode::Fixed { pattern: NmPattern::new(n, m).unwrap(), transposable: false }).unwrap();
            store.set_training(false);
            let x = randn(&[3, c, 7, 9], seed + 100);
            let dense = dense_forward(|| conv.forward(&x).unwrap());
            let nm = deployed_forward(|| conv.forward(&x).unwrap());
            assert_eq!(conv.slot().deployed_kind(), Some("nm-cpu-conv"));
            assert_close(&nm, &dense, &format!("Conv2d {n}:{m} in {c} out {o} k {k} s {s} p {p}"));
        }
    }
}

#[test]
fn the_cache_follows_weight_bias_and_mode_changes() {
    force_path(Some(NmPath::Sparse));
    let store = ParamStore::new(DEV, 7);
    let lin = Linear::new(&store.pp("fc"), 64, 24, true).unwrap();
    lin.slot().set_mode(SparseMode::srste(NmPattern::TWO_FOUR)).unwrap();
    store.set_training(false);
    let x = randn(&[9, 64], 8);
    let check = |what: &str| {
        let nm = deployed_forward(|| lin.forward(&x).unwrap());
        assert_close(&nm, &dense_forward(|| lin.forward(&x).unwrap()), what);
        nm
    };
    let first = check("initial");
    assert_eq!(lin.slot().deploy_builds(), 1);
    check("again");
    assert_eq!(lin.slot().deploy_builds(), 1, "an unchanged weight is not recompressed");

    // An optimizer-like in-place update (the trainer samples between steps):
    // the masks move with the weights, and the next forward sees them.
    lin.weight().update_f32(|w| w.iter_mut().enumerate().for_each(|(i, v)| *v += 0.3 * ((i % 7) as f32 - 3.0))).unwrap();
    let updated = check("after update_f32");
    assert_eq!(lin.slot().deploy_builds(), 2);
    assert_ne!(first.to_vec_f32().unwrap(), updated.to_vec_f32().unwrap(), "the update changed the output");

    // `set_data` (EMA swaps, checkpoint loads) through another handle of the same buffer.
    let handle = store.get("fc.weight").unwrap();
    handle.set_data(&randn(&[24, 64], 9)).unwrap();
    check("after set_data");
    assert_eq!(lin.slot().deploy_builds(), 3);

    // The bias.
    lin.bias().unwrap().set_data(&randn(&[24], 10)).unwrap();
    check("after a bias update");
    assert_eq!(lin.slot().deploy_builds(), 4);

    // A new mode: another pattern.
    lin.slot().set_mode(SparseMode::srste(NmPattern::new(1, 8).unwrap())).unwrap();
    check("after switching to 1:8");
    assert_eq!(lin.slot().deploy_builds(), 5);

    // Back to dense: no deployed N:M weight, the plain forward.
    lin.slot().set_mode(SparseMode::Dense).unwrap();
    let y = deployed_forward(|| lin.forward(&x).unwrap());
    assert_close(&y, &x.linear(lin.weight(), lin.bias()).unwrap(), "dense mode");
    assert_eq!(lin.slot().deploy_builds(), 5, "a dense layer builds nothing");
}

#[test]
fn training_never_takes_the_deployed_path() {
    force_path(Some(NmPath::Sparse));
    let store = ParamStore::new(DEV, 11);
    let lin = Linear::new(&store.pp("fc"), 32, 8, true).unwrap();
    lin.slot().set_mode(SparseMode::srste(NmPattern::TWO_FOUR)).unwrap();
    let x = randn(&[4, 32], 12);
    // Grad mode on: the SR-STE forward, tracked, with its gradient.
    let y = lin.forward(&x).unwrap();
    assert!(y.is_tracked());
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(lin.weight()).is_some());
    assert_eq!(lin.slot().deploy_builds(), 0);

    // Untrained masks are dense while training, masked in evaluation.
    lin.slot().set_mode(SparseMode::Untrained { pattern: NmPattern::TWO_FOUR }).unwrap();
    store.set_training(true);
    assert_eq!(lin.slot().deployed_pattern(), None);
    let y = deployed_forward(|| lin.forward(&x).unwrap());
    assert_close(&y, &x.linear(lin.weight(), lin.bias()).unwrap(), "untrained, training: dense weight");
    store.set_training(false);
    assert_eq!(lin.slot().deployed_pattern(), Some(NmPattern::TWO_FOUR));
    let y = deployed_forward(|| lin.forward(&x).unwrap());
    assert_close(&y, &dense_forward(|| lin.forward(&x).unwrap()), "untrained, eval: masked");
    assert_eq!(lin.slot().deploy_builds(), 1);
}

#[test]
fn non_grouped_masks_stay_dense() {
    force_path(Some(NmPath::Sparse));
    let store = ParamStore::new(DEV, 13);
    // in = 30 is not a multiple of 4: the default leaves the layer dense.
    let lin = Linear::new(&store.pp("fc"), 30, 8, true).unwrap();
    lin.slot().set_mode(SparseMode::srste(NmPattern::TWO_FOUR)).unwrap();
    store.set_training(false);
    assert_eq!(lin.slot().deployed_pattern(), None);
    let x = randn(&[3, 30], 14);
    let y = deployed_forward(|| lin.forward(&x).unwrap());
    assert_close(&y, &x.linear(lin.weight(), lin.bias()).unwrap(), "left dense");
    assert_eq!(lin.slot().deploy_builds(), 0);
}

/// A mask the N:M kernels do not take (flat-index groups, as the DDPM
/// UNet's 128-channel convolutions get at 5:9): without
/// grad mode the layer runs dense on `w ⊙ m` built once per weight version
/// instead of recomputing the mask every forward, with the values of the
/// tracked forward; an update, a new mode and the training flag of an
/// untrained mask are all followed.
#[test]
fn undeployed_masks_are_built_once_per_weight_version() {
    let store = ParamStore::new(DEV, 15);
    // in = 30, not a multiple of 4; 8 · 30 weights are, so flat-index groups.
    let lin = Linear::new(&store.pp("fc"), 30, 8, true).unwrap();
    lin.slot().configure(SparseMode::srste(NmPattern::TWO_FOUR), NonDivisible::FlatIndex).unwrap();
    store.set_training(false);
    assert_eq!(lin.slot().deployed_pattern(), None);
    let x = randn(&[5, 30], 16);
    let check = |what: &str| {
        let y = deployed_forward(|| lin.forward(&x).unwrap());
        let tracked = dense_forward(|| lin.forward(&x).unwrap());
        assert_eq!(y.to_vec_f32().unwrap(), tracked.to_vec_f32().unwrap(), "{what}: the tracked forward's values");
        let dense = x.linear(lin.weight(), lin.bias()).unwrap();
        assert_ne!(y.to_vec_f32().unwrap(), dense.to_vec_f32().unwrap(), "{what}: the mask is applied");
        y
    };
    let first = check("flat-index SR-STE");
    check("again");
    assert_eq!(lin.slot().masked_weight_builds(), 1, "built once for an unchanged weight");
    lin.weight().update_f32(|w| w.iter_mut().enumerate().for_each(|(i, v)| *v += 0.5 * ((i % 5) as f32 - 2.0))).unwrap();
    let updated = check("after update_f32");
    assert_ne!(first.to_vec_f32().unwrap(), updated.to_vec_f32().unwrap());
    assert_eq!(lin.slot().masked_weight_builds(), 2, "rebuilt after the update");
    lin.slot().configure(SparseMode::Ste { pattern: NmPattern::new(1, 4).unwrap() }, NonDivisible::FlatIndex).unwrap();
    check("a new mode");
    assert_eq!(lin.slot().masked_weight_builds(), 3, "rebuilt for the new mode");

    // An untrained mask: the dense weight while training (nothing kept), the masked one in evaluation.
    lin.slot().configure(SparseMode::Untrained { pattern: NmPattern::TWO_FOUR }, NonDivisible::FlatIndex).unwrap();
    store.set_training(true);
    let y = deployed_forward(|| lin.forward(&x).unwrap());
    assert_eq!(y.to_vec_f32().unwrap(), x.linear(lin.weight(), lin.bias()).unwrap().to_vec_f32().unwrap(), "untrained, training");
    assert_eq!(lin.slot().masked_weight_builds(), 3);
    store.set_training(false);
    check("untrained, evaluation");
    assert_eq!(lin.slot().masked_weight_builds(), 4);

    // A 5:9 conv with 4 input channels (groups run along the channels; 4 is
    // not a multiple of 9, its 6·4·3·3 weights are: flat-index), SR-STE and ASP.
    let conv = Conv2d::new(&store.pp("conv"), 4, 6, Conv2dConfig { kernel: (3, 3), stride: (1, 1), padding: (1, 1), bias: true }).unwrap();
    let xc = randn(&[2, 4, 5, 5], 17);
    for mode in [
        SparseMode::srste(NmPattern::new(5, 9).unwrap()),
        SparseMode::Fixed { pattern: NmPattern::new(5, 9).unwrap(), transposable: false },
    ] {
        conv.slot().configure(mode, NonDivisible::FlatIndex).unwrap();
        let before = conv.slot().masked_weight_builds();
        let y = deployed_forward(|| conv.forward(&xc).unwrap());
        let again = deployed_forward(|| conv.forward(&xc).unwrap());
        let tracked = dense_forward(|| conv.forward(&xc).unwrap());
        assert_eq!(y.to_vec_f32().unwrap(), tracked.to_vec_f32().unwrap(), "conv {mode:?}");
        assert_eq!(again.to_vec_f32().unwrap(), tracked.to_vec_f32().unwrap(), "conv {mode:?}, cached");
        assert_eq!(conv.slot().masked_weight_builds(), before + 1, "conv {mode:?}: one build");
    }
}

/// A pre-norm block's layers (`residual + layer(norm(x))`: a Linear, the
/// GELU MLP, the attention with its norm into `qkv` and residual out of
/// `proj`) deployed N:M give the ops apart with the masked dense weights;
/// the norm has non-trivial affine parameters, the rows do not fill whole
/// token tiles.
#[test]
fn prenorm_block_layers_take_their_norm_and_residual_into_the_nm_call() {
    force_path(Some(NmPath::Sparse));
    let (d, hid, heads) = (48, 96, 3);
    for (n, m) in [(2, 4), (1, 8)] {
        let store = ParamStore::new(DEV, 70 + n as u64);
        let pattern = NmPattern::new(n, m).unwrap();
        let norm = LayerNorm::new(&store.pp("norm"), d, 1e-6, true).unwrap();
        for (name, seed) in [("norm.weight", 1), ("norm.bias", 2)] {
            store.get(name).unwrap().set_data(&randn(&[d], seed)).unwrap();
        }
        let lin = Linear::new(&store.pp("lin"), d, d, true).unwrap();
        let fc1 = Linear::new(&store.pp("fc1"), d, hid, true).unwrap();
        let fc2 = Linear::new(&store.pp("fc2"), hid, d, true).unwrap();
        let init = (Init::DefaultFanIn(d), Init::DefaultFanIn(d));
        let attn = Attention::new(&store.pp("attn"), d, heads, true, None, init).unwrap();
        for l in [&lin, &fc1, &fc2, &attn.qkv, &attn.proj] {
            l.slot().set_mode(SparseMode::srste(pattern)).unwrap();
        }
        store.set_training(false);
        let x = randn(&[2, 37, d], 3);
        let r = randn(&[2, 37, d], 4);
        let what = format!("{n}:{m}");
        let dense = dense_forward(|| r.add(&lin.forward(&norm.forward(&x).unwrap()).unwrap()).unwrap());
        let nm = deployed_forward(|| lin.forward_fused(&x, Some(&norm), Some(&r)).unwrap());
        assert_close(&nm, &dense, &format!("linear {what}"));
        let dense = dense_forward(|| r.add(&fc1.gelu_mlp(&fc2, &norm.forward(&x).unwrap()).unwrap()).unwrap());
        let nm = deployed_forward(|| fc1.gelu_mlp_fused(&fc2, &x, Some(&norm), Some(&r)).unwrap());
        assert_close(&nm, &dense, &format!("mlp {what}"));
        let dense = dense_forward(|| x.add(&attn.forward(&norm.forward(&x).unwrap()).unwrap()).unwrap());
        let nm = deployed_forward(|| attn.forward_fused(&x, Some(&norm), Some(&x)).unwrap());
        assert_close(&nm, &dense, &format!("attention {what}"));
        // With grad mode on the fused call is the ops in turn, gradients included.
        let xv = x.to_var();
        let y = lin.forward_fused(&xv, Some(&norm), Some(&xv)).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let xw = x.to_var();
        let y2 = xw.add(&lin.forward(&norm.forward(&xw).unwrap()).unwrap()).unwrap();
        let g2 = y2.sum_all().unwrap().backward().unwrap();
        assert_close(g.get(&xv).unwrap(), g2.get(&xw).unwrap(), &format!("gradient {what}"));
    }
}

#[test]
fn a_linear_on_a_concatenation_takes_its_parts_apart_or_deployed() {
    // `forward_cat` (U-ViT's long skips) against `forward` of the
    // concatenation: dense, masked (SR-STE, grad mode: one product per
    // part, gradients included) and deployed N:M (no grad: concatenated
    // for the kernels).
    force_path(Some(NmPath::Sparse));
    let store = ParamStore::new(DEV, 90);
    let (d, out) = (32, 24);
    let lin = Linear::new(&store.pp("skip"), 2 * d, out, true).unwrap();
    let (x, s) = (randn(&[3, 17, d], 5), randn(&[3, 17, d], 6));
    let whole = |l: &Linear, a: &Tensor, b: &Tensor| l.forward(&Tensor::cat(&[a, b], 2).unwrap()).unwrap();
    assert_close(&lin.forward_cat(&[&x, &s]).unwrap(), &whole(&lin, &x, &s), "dense");
    lin.slot().set_mode(SparseMode::srste(NmPattern::new(2, 4).unwrap())).unwrap();
    let (xv, sv) = (x.to_var(), s.to_var());
    let y = lin.forward_cat(&[&xv, &sv]).unwrap();
    let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let (xw, sw) = (x.to_var(), s.to_var());
    let y2 = whole(&lin, &xw, &sw);
    let g2 = y2.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(&y, &y2, "masked");
    assert_close(g.get(&xv).unwrap(), g2.get(&xw).unwrap(), "masked: gradient of x");
    assert_close(g.get(&sv).unwrap(), g2.get(&sw).unwrap(), "masked: gradient of the skip");
    assert_close(g.get(lin.weight()).unwrap(), g2.get(lin.weight()).unwrap(), "masked: weight gradient");
    store.set_training(false);
    let dense = dense_forward(|| whole(&lin, &x, &s));
    let nm = deployed_forward(|| lin.forward_cat(&[&x, &s]).unwrap());
    assert_close(&nm, &dense, "deployed 2:4");
    assert!(lin.slot().deployed_kind().is_some_and(|k| k != "dense"), "the deployed path ran: {:?}", lin.slot().deployed_kind());
}
