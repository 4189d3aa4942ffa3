//! The training modes of a sparse slot (MODELS_AND_METHOD §4 SR-STE, §5 apex ASP, §7.2 SparseDM):
//! exact gradient identities against an independently computed reference, the fixed (ASP) mask
//! life cycle, the untrained-mask ablation, and that masks stay valid N:M (and transposable 2:4)
//! through optimizer steps.
//!
//! The reference gradient `g_masked` is the gradient of the same loss with respect to a *plain
//! variable* holding `w ⊙ m`, where `m` comes from `compute_mask` (itself checked against the
//! PyTorch fixtures in `nm_masks.rs`); the identities are checked with `==`, no tolerance.

use sparsedm_layers::{
    Conv2d, Conv2dConfig, LayersError, Linear, MaskOutcome, NmPattern, NonDivisible, ParamStore, SRSTE_LAMBDA, SparseMode, SparseSlot,
    WeightLayout, check_nm, check_transposable, compute_mask,
};
use sparsedm_tensor::{Device, Rng, Tensor};

const DEV: Device = Device::Cpu;

fn pat(s: &str) -> NmPattern {
    s.parse().unwrap()
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(Rng::new(seed).normal_vec(n), shape, &DEV).unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

/// A layer under test: its slot, bias, and forward.
trait Layer {
    fn slot(&self) -> &SparseSlot;
    fn bias(&self) -> &Tensor;
    fn forward(&self, x: &Tensor) -> Tensor;
    /// The same layer computed with an arbitrary weight tensor and bias.
    fn forward_with(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor;
    fn input_shape(&self) -> Vec<usize>;
}

impl Layer for Linear {
    fn slot(&self) -> &SparseSlot {
        Linear::slot(self)
    }
    fn bias(&self) -> &Tensor {
        Linear::bias(self).unwrap()
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        Linear::forward(self, x).unwrap()
    }
    fn forward_with(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        x.matmul(&w.t().unwrap()).unwrap().add(b).unwrap()
    }
    fn input_shape(&self) -> Vec<usize> {
        vec![3, self.in_dim()]
    }
}

impl Layer for Conv2d {
    fn slot(&self) -> &SparseSlot {
        Conv2d::slot(self)
    }
    fn bias(&self) -> &Tensor {
        Conv2d::bias(self).unwrap()
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        Conv2d::forward(self, x).unwrap()
    }
    fn forward_with(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let c = self.config();
        x.conv2d(w, Some(b), c.stride, c.padding).unwrap()
    }
    fn input_shape(&self) -> Vec<usize> {
        vec![2, self.weight().shape()[1], 5, 5]
    }
}

fn linear(store: &ParamStore, name: &str, inp: usize, out: usize, seed: u64) -> Linear {
    let l = Linear::new(&store.pp(name), inp, out, true).unwrap();
    l.weight().set_data(&randn(&[out, inp], seed)).unwrap();
    l
}

fn conv(store: &ParamStore, name: &str, inp: usize, out: usize, seed: u64) -> Conv2d {
    let c = Conv2d::new(&store.pp(name), inp, out, Conv2dConfig::square(3, 1, 1)).unwrap();
    c.weight().set_data(&randn(&[out, inp, 3, 3], seed)).unwrap();
    c
}

/// `sum(layer(x) ⊙ r)`: gradient of the weight through the slot, and the reference gradient
/// `g_masked` with respect to a plain variable holding `w ⊙ mask`, plus both outputs.
struct Grads {
    slot_grad: Vec<f32>,
    slot_bias_grad: Vec<f32>,
    slot_out: Vec<f32>,
    g_masked: Vec<f32>,
    ref_bias_grad: Vec<f32>,
    ref_out: Vec<f32>,
}

fn grads(layer: &dyn Layer, mask: &[f32], seed: u64) -> Grads {
    let x = randn(&layer.input_shape(), seed);
    let y = layer.forward(&x);
    let r = randn(y.shape(), seed + 1);
    let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let w = layer.slot().weight();
    let masked: Vec<f32> = vals(w).iter().zip(mask).map(|(w, m)| w * m).collect();
    let wm = Tensor::from_vec(masked, w.shape(), &DEV).unwrap().to_var();
    let b = layer.bias().detach().to_var();
    let y2 = layer.forward_with(&x, &wm, &b);
    let g2 = y2.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    Grads {
        slot_grad: vals(g.get(w).unwrap()),
        slot_bias_grad: vals(g.get(layer.bias()).unwrap()),
        slot_out: vals(&y),
        g_masked: vals(g2.get(&wm).unwrap()),
        ref_bias_grad: vals(g2.get(&b).unwrap()),
        ref_out: vals(&y2),
    }
}

fn magnitude_mask(slot: &SparseSlot, p: NmPattern) -> Vec<f32> {
    compute_mask(&vals(slot.weight()), slot.layout(), p, NonDivisible::LeaveDense).unwrap().0
}

fn assert_straight_through(layer: &dyn Layer, p: NmPattern, lambda: f32) {
    let slot = layer.slot();
    let mode = if lambda == 0.0 { SparseMode::Ste { pattern: p } } else { SparseMode::SrSte { pattern: p, lambda } };
    slot.set_mode(mode).unwrap();
    let w = vals(slot.weight());
    let m = magnitude_mask(slot, p);
    assert!(m.contains(&0.0) && m.contains(&1.0));
    let g = grads(layer, &m, 11);
    assert_eq!(g.slot_out, g.ref_out, "forward uses w ⊙ m");
    assert_eq!(g.slot_bias_grad, g.ref_bias_grad);
    let expected: Vec<f32> =
        g.g_masked.iter().zip(&w).zip(&m).map(|((g, w), m)| g + if *m == 0.0 { lambda * (1.0 - m) * w } else { 0.0 }).collect();
    assert_eq!(g.slot_grad, expected, "{} weight gradient = g_masked + λ(1−m)⊙w with λ = {lambda}", slot.layout());
    // The weight itself is untouched: SR-STE keeps dense weights.
    assert_eq!(vals(slot.weight()), w);
    if lambda != 0.0 {
        // The decay term is really there (not only where it rounds away).
        let differs = g.slot_grad.iter().zip(&g.g_masked).filter(|(a, b)| a != b).count();
        assert!(differs > 0, "λ term missing");
    }
}

#[test]
fn srste_gradient_identity_linear() {
    let store = ParamStore::new(DEV, 0);
    let l = linear(&store, "fc", 16, 8, 1);
    assert_straight_through(&l, pat("2:4"), 0.05);
    assert_straight_through(&l, pat("2:4"), SRSTE_LAMBDA);
    assert_straight_through(&l, pat("1:8"), SRSTE_LAMBDA);
    assert_straight_through(&l, pat("3:16"), 0.3);
}

#[test]
fn srste_gradient_identity_conv2d() {
    let store = ParamStore::new(DEV, 0);
    let c = conv(&store, "conv", 8, 4, 2);
    assert_straight_through(&c, pat("2:4"), 0.05);
    assert_straight_through(&c, pat("2:4"), SRSTE_LAMBDA);
    assert_straight_through(&c, pat("1:8"), 0.5);
}

#[test]
fn ste_is_srste_without_decay() {
    let store = ParamStore::new(DEV, 0);
    let l = linear(&store, "fc", 16, 8, 3);
    assert_straight_through(&l, pat("2:4"), 0.0);
    let c = conv(&store, "conv", 8, 4, 4);
    assert_straight_through(&c, pat("1:4"), 0.0);
    // SrSte with λ = 0 is the same thing.
    let store = ParamStore::new(DEV, 0);
    let l = linear(&store, "fc", 16, 8, 3);
    l.slot().set_mode(SparseMode::SrSte { pattern: pat("2:4"), lambda: 0.0 }).unwrap();
    let m = magnitude_mask(l.slot(), pat("2:4"));
    let g = grads(&l, &m, 5);
    assert_eq!(g.slot_grad, g.g_masked);
}

#[test]
fn srste_mask_follows_the_weights_every_forward() {
    let store = ParamStore::new(DEV, 0);
    let l = linear(&store, "fc", 8, 2, 6);
    l.slot().set_mode(SparseMode::srste(pat("2:4"))).unwrap();
    let before = vals(&l.slot().current_mask().unwrap().unwrap());
    // Swap the magnitudes around: the next forward must use the new mask.
    let w: Vec<f32> = vals(l.weight()).iter().map(|v| 1.0 / v).collect();
    l.weight().set_data(&Tensor::from_vec(w.clone(), &[2, 8], &DEV).unwrap()).unwrap();
    let after = vals(&l.slot().current_mask().unwrap().unwrap());
    assert_ne!(before, after);
    let x = randn(&[1, 8], 7);
    let y = vals(&Linear::forward(&l, &x).unwrap());
    let wm: Vec<f32> = w.iter().zip(&after).map(|(w, m)| w * m).collect();
    let wm = Tensor::from_vec(wm, &[2, 8], &DEV).unwrap();
    let y2 = vals(&x.matmul(&wm.t().unwrap()).unwrap().add(Linear::bias(&l).unwrap()).unwrap());
    assert_eq!(y, y2);
}

fn assert_fixed(layer: &dyn Layer, p: NmPattern) {
    let slot = layer.slot();
    let w0 = vals(slot.weight());
    let m0 = magnitude_mask(slot, p);
    slot.set_mode(SparseMode::Fixed { pattern: p, transposable: false }).unwrap();
    // ASP's compute_sparse_masks: the weight is pruned in place.
    let w1 = vals(slot.weight());
    assert_eq!(w1, w0.iter().zip(&m0).map(|(w, m)| w * m).collect::<Vec<_>>());
    assert_eq!(vals(&slot.current_mask().unwrap().unwrap()), m0);
    // Gradient: g ⊙ m (ASP masks the gradient before the step).
    let g = grads(layer, &m0, 21);
    assert_eq!(g.slot_out, g.ref_out);
    let expected: Vec<f32> = g.g_masked.iter().zip(&m0).map(|(g, m)| g * m).collect();
    assert_eq!(g.slot_grad, expected);
    // A step that moves every weight (e.g. momentum from before pruning) and changes the
    // magnitude ranking; after_optimizer_step re-applies the *same* mask.
    let drift: Vec<f32> = w1.iter().enumerate().map(|(i, w)| w * 0.01 + 3.0 * ((i * 7919 % 13) as f32 - 6.0)).collect();
    slot.weight().set_data(&Tensor::from_vec(drift.clone(), slot.weight().shape(), &DEV).unwrap()).unwrap();
    assert_ne!(magnitude_mask(slot, p), m0, "a recomputed mask would differ: the test is meaningful");
    slot.after_optimizer_step().unwrap();
    assert_eq!(vals(slot.weight()), drift.iter().zip(&m0).map(|(w, m)| w * m).collect::<Vec<_>>());
    assert_eq!(vals(&slot.current_mask().unwrap().unwrap()), m0, "the mask is computed once");
}

#[test]
fn fixed_asp_masks_gradients_and_weights_with_a_mask_computed_once() {
    let store = ParamStore::new(DEV, 0);
    assert_fixed(&linear(&store, "fc", 16, 8, 8), pat("2:4"));
    assert_fixed(&conv(&store, "conv", 8, 4, 9), pat("2:4"));
    assert_fixed(&linear(&store, "fc2", 32, 8, 10), pat("1:8"));
}

#[test]
fn untrained_is_dense_in_training_and_masked_in_eval() {
    let store = ParamStore::new(DEV, 0);
    let l = linear(&store, "fc", 16, 8, 12);
    let c = conv(&store, "conv", 8, 4, 13);
    for layer in [&l as &dyn Layer, &c as &dyn Layer] {
        let slot = layer.slot();
        let w = vals(slot.weight());
        slot.set_mode(SparseMode::Untrained { pattern: pat("2:4") }).unwrap();
        assert_eq!(vals(slot.weight()), w, "set_mode leaves the weights alone");
        let m = magnitude_mask(slot, pat("2:4"));
        let x = randn(&layer.input_shape(), 14);
        let dense = vals(&layer.forward_with(&x, &slot.weight().detach(), &layer.bias().detach()));
        let masked_w = Tensor::from_vec(w.iter().zip(&m).map(|(w, m)| w * m).collect(), slot.weight().shape(), &DEV).unwrap();
        let masked = vals(&layer.forward_with(&x, &masked_w, &layer.bias().detach()));
        assert_ne!(dense, masked);
        store.set_training(true);
        assert_eq!(vals(&layer.forward(&x)), dense, "training: dense");
        // Training gradient is the plain dense one.
        let g = grads(layer, &vec![1.0; w.len()], 15);
        assert_eq!(g.slot_grad, g.g_masked);
        store.set_training(false);
        assert_eq!(vals(&layer.forward(&x)), masked, "evaluation: masked");
        assert_eq!(vals(&slot.deployed_weight().unwrap()), vals(&masked_w));
        store.set_training(true);
    }
}

/// A minimal Adam (β = 0.9, 0.999, ε = 1e-8) over the store's parameters, state by tensor id.
struct Adam {
    lr: f32,
    t: i32,
    state: std::collections::HashMap<usize, (Vec<f32>, Vec<f32>)>,
}

impl Adam {
    fn step(&mut self, store: &ParamStore, grads: &sparsedm_tensor::GradStore) {
        self.t += 1;
        let (b1, b2) = (0.9f32, 0.999f32);
        for (_, p) in store.params() {
            let Some(g) = grads.get(&p) else { continue };
            let g = vals(g);
            let (m, v) = self.state.entry(p.id()).or_insert_with(|| (vec![0.0; g.len()], vec![0.0; g.len()]));
            let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
            let lr = self.lr;
            p.update_f32(|w| {
                for i in 0..w.len() {
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    w[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + 1e-8);
                }
            })
            .unwrap();
        }
    }
}

/// Plain SGD.
fn sgd(store: &ParamStore, grads: &sparsedm_tensor::GradStore, lr: f32) {
    for (_, p) in store.params() {
        if let Some(g) = grads.get(&p) {
            let g = vals(g);
            p.update_f32(|w| w.iter_mut().zip(&g).for_each(|(w, g)| *w -= lr * g)).unwrap();
        }
    }
}

/// Trains `fc` (Linear 32→16) followed by `conv` (Conv2d 16→8... applied to a reshaped input)
/// for a few steps in `mode`, checking after every step that each deployed weight is valid N:M
/// (and transposable when asked). Returns how often the masks changed.
fn train_and_check(mode: SparseMode, use_adam: bool) -> usize {
    let p = mode.pattern().unwrap();
    let transposable = matches!(mode, SparseMode::Fixed { transposable: true, .. });
    let store = ParamStore::new(DEV, 42);
    let fc = linear(&store, "fc", 32, 16, 30);
    let cv = conv(&store, "conv", 16, 8, 31);
    for s in [fc.slot(), cv.slot()] {
        s.set_mode(mode).unwrap();
    }
    let x = randn(&[4, 32], 32);
    let target = randn(&[4, 8, 2, 2], 33);
    let mut adam = Adam { lr: 0.05, t: 0, state: Default::default() };
    let mut changes = 0;
    let mut last = (vals(&fc.slot().current_mask().unwrap().unwrap()), vals(&cv.slot().current_mask().unwrap().unwrap()));
    let mut losses = Vec::new();
    for _ in 0..8 {
        // [4, 16] -> [4, 16, 1, 1] broadcast to 2x2 via padding-free conv on a 2x2 map.
        let h = Linear::forward(&fc, &x).unwrap().gelu().unwrap();
        let h = h.reshape(&[4, 16, 1, 1]).unwrap().broadcast_as(&[4, 16, 2, 2]).unwrap().contiguous().unwrap();
        let y = Conv2d::forward(&cv, &h).unwrap();
        let loss = y.sub(&target).unwrap().sqr().unwrap().mean_all().unwrap();
        losses.push(vals(&loss)[0]);
        let grads = loss.backward().unwrap();
        if use_adam {
            adam.step(&store, &grads);
        } else {
            sgd(&store, &grads, 0.05);
        }
        store.after_optimizer_step().unwrap();
        for s in [fc.slot(), cv.slot()] {
            let d = vals(&s.deployed_weight().unwrap());
            check_nm(&d, s.layout(), p, NonDivisible::LeaveDense).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            if transposable {
                check_transposable(&d, s.layout()).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            }
            if matches!(mode, SparseMode::Fixed { .. }) {
                // ASP: the stored weight itself is pruned, not only the deployed copy.
                assert_eq!(vals(s.weight()), d);
            }
        }
        let now = (vals(&fc.slot().current_mask().unwrap().unwrap()), vals(&cv.slot().current_mask().unwrap().unwrap()));
        if now != last {
            changes += 1;
        }
        last = now;
    }
    assert!(losses.last().unwrap() < losses.first().unwrap(), "{mode:?} trains: {losses:?}");
    changes
}

#[test]
fn masks_stay_valid_through_optimizer_steps() {
    for adam in [false, true] {
        for p in ["2:4", "1:4", "2:8"] {
            let p = pat(p);
            let dynamic = train_and_check(SparseMode::SrSte { pattern: p, lambda: SRSTE_LAMBDA }, adam);
            train_and_check(SparseMode::Ste { pattern: p }, adam);
            let fixed = train_and_check(SparseMode::Fixed { pattern: p, transposable: false }, adam);
            assert_eq!(fixed, 0, "a fixed mask never changes");
            let _ = dynamic; // SR-STE masks may or may not flip in 8 steps; validity is what counts.
        }
        let fixed_t = train_and_check(SparseMode::Fixed { pattern: pat("2:4"), transposable: true }, adam);
        assert_eq!(fixed_t, 0);
    }
}

#[test]
fn transposable_fixed_mask_is_valid_along_both_dimensions() {
    let store = ParamStore::new(DEV, 0);
    let l = linear(&store, "fc", 16, 12, 50);
    let c = conv(&store, "conv", 8, 8, 51);
    for s in [l.slot(), c.slot()] {
        s.set_mode(SparseMode::Fixed { pattern: pat("2:4"), transposable: true }).unwrap();
        assert_eq!(s.plan().unwrap().name(), "transposable");
        let d = vals(s.weight());
        check_transposable(&d, s.layout()).unwrap();
        check_nm(&d, s.layout(), pat("2:4"), NonDivisible::LeaveDense).unwrap();
    }
}

#[test]
fn invalid_modes_are_rejected_before_anything_changes() {
    let store = ParamStore::new(DEV, 0);
    let l = linear(&store, "fc", 16, 8, 60);
    l.slot().set_mode(SparseMode::srste(pat("2:4"))).unwrap();
    let w = vals(l.weight());
    // Transposable masks are 2:4 only.
    let e = l.slot().set_mode(SparseMode::Fixed { pattern: pat("1:4"), transposable: true }).unwrap_err();
    assert!(e.to_string().contains("2:4 only"), "{e}");
    assert_eq!(l.slot().mode(), SparseMode::srste(pat("2:4")));
    assert_eq!(vals(l.weight()), w);
    // Flat-index groups need numel % M == 0: 7×6 = 42 is not a multiple of 4.
    let odd = linear(&store, "odd", 6, 7, 61);
    let e = odd.slot().configure(SparseMode::Fixed { pattern: pat("2:4"), transposable: false }, NonDivisible::FlatIndex).unwrap_err();
    assert!(matches!(e, LayersError::FlatIndexNotDivisible { .. }), "{e}");
    assert_eq!(odd.slot().mode(), SparseMode::Dense);
}

#[test]
fn non_divisible_inputs_follow_the_slot_setting() {
    let store = ParamStore::new(DEV, 0);
    let l = linear(&store, "fc", 6, 8, 70);
    let w = vals(l.weight());
    l.slot().set_mode(SparseMode::Fixed { pattern: pat("2:4"), transposable: false }).unwrap();
    assert_eq!(l.slot().last_outcome(), Some(MaskOutcome::LeftDense));
    assert_eq!(vals(l.weight()), w, "left dense");
    l.slot().set_non_divisible(NonDivisible::FlatIndex).unwrap();
    assert_eq!(l.slot().last_outcome(), Some(MaskOutcome::FlatIndex));
    let d = vals(l.weight());
    check_nm(&d, WeightLayout::linear(8, 6).unwrap(), pat("2:4"), NonDivisible::FlatIndex).unwrap();
    assert_eq!(d.iter().filter(|v| **v == 0.0).count(), 24);
    // Transposable on a weight that does not tile: the input dim follows the setting.
    let t = linear(&store, "t", 6, 8, 71);
    t.slot().configure(SparseMode::Fixed { pattern: pat("2:4"), transposable: true }, NonDivisible::LeaveDense).unwrap();
    assert_eq!(t.slot().plan().unwrap().name(), "left-dense");
}
