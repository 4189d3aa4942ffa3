//! The fused scaled dot-product attention against the composed math path
//! (`softmax(q·kᵀ·scale)·v` from matmul, scale and softmax ops): outputs
//! and the gradients of q, k and v, on strided head views of a packed qkv
//! tensor, broadcast batch dims, key counts other than the query count,
//! and problems large enough to be split into several query tiles.
//! (Finite differences of the fused op are in `grad_tests.rs`.)

use sparsedm_tensor::{Device, Rng, Tensor, no_grad};

const DEV: Device = Device::Cpu;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, &mut Rng::new(seed), &DEV).unwrap()
}

/// The math path, op by op.
fn composed(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Tensor {
    let s = q.matmul(&k.t().unwrap()).unwrap().mul_scalar(scale).unwrap();
    let last = s.rank() - 1;
    s.softmax(last).unwrap().matmul(v).unwrap()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    let scale = b.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs() / scale).fold(0.0, f32::max)
}

/// Output and q/k/v gradients of the fused op and of the composition, for
/// variables `q0, k0, v0` passed through `view` (which may slice them out of
/// one packed tensor), under the loss Σ out ⊙ r.
fn compare(name: &str, inputs: [Tensor; 3], view: impl Fn(&[Tensor; 3]) -> [Tensor; 3], scale: f32, tol: f32) {
    let vars: [Tensor; 3] = inputs.map(|t| t.to_var());
    let run = |fused: bool| {
        let [q, k, v] = view(&vars);
        let out = if fused { Tensor::scaled_dot_product_attention(&q, &k, &v, Some(scale)).unwrap() } else { composed(&q, &k, &v, scale) };
        let r = randn(out.shape(), 7);
        let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<Tensor> = vars.iter().map(|x| grads.get(x).expect("gradient").clone()).collect();
        (out, g)
    };
    let (of, gf) = run(true);
    let (oc, gc) = run(false);
    let d = max_rel_diff(&of, &oc);
    assert!(d <= tol, "{name}: output differs from the math path by {d}");
    for (i, (a, b)) in gf.iter().zip(&gc).enumerate() {
        let d = max_rel_diff(a, b);
        assert!(d <= tol, "{name}: gradient of input {i} differs from the math path by {d}");
    }
    // Without a graph the fused op keeps no probabilities; same values.
    let _g = no_grad();
    let [q, k, v] = view(&vars);
    let o = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(scale)).unwrap();
    assert!(!o.is_tracked());
    assert!(max_rel_diff(&o, &oc) <= tol, "{name}: no-grad output differs");
}

#[test]
fn fused_attention_equals_the_math_path() {
    let id = |t: &[Tensor; 3]| t.clone();
    compare("plain", [randn(&[2, 3, 5, 4], 1), randn(&[2, 3, 5, 4], 2), randn(&[2, 3, 5, 4], 3)], id, 0.5, 1e-6);
    compare("lk != lq, dv != d", [randn(&[2, 7, 3], 4), randn(&[2, 9, 3], 5), randn(&[2, 9, 6], 6)], id, 0.3, 1e-6);
    // k and v broadcast over the leading batch dim.
    compare("broadcast", [randn(&[3, 2, 6, 4], 8), randn(&[2, 6, 4], 9), randn(&[1, 2, 6, 5], 10)], id, 0.5, 1e-6);
    // Several query tiles: 1100 keys give tiles of 119 query rows (2^17 scores).
    compare("tiled", [randn(&[1, 2, 130, 8], 11), randn(&[1, 2, 1100, 8], 12), randn(&[1, 2, 1100, 8], 13)], id, 0.35, 1e-5);
}

/// Without a graph the fused op computes each tile's scores transposed and
/// takes the softmax down the columns (no probabilities kept); with one it
/// keeps the probabilities row by row. Both are the same operations in the
/// same order, so their outputs agree to the bit: query counts below, at
/// and off a multiple of the 16 columns a pass handles, several tiles, and
/// the demo model's and U-ViT-S/2's head shapes.
#[test]
fn inference_attention_gives_the_training_path_bits() {
    let shapes: [(&[usize], &[usize], usize); 6] = [
        (&[2, 3, 5, 4], &[2, 3, 5, 4], 4),
        (&[1, 2, 16, 8], &[1, 2, 23, 8], 3),
        (&[1, 2, 41, 9], &[1, 2, 41, 9], 7),
        (&[1, 1, 300, 5], &[1, 1, 1100, 5], 6),
        (&[2, 4, 65, 32], &[2, 4, 65, 32], 32),
        (&[1, 2, 257, 64], &[1, 2, 257, 64], 64),
    ];
    for (i, (qs, ks, dv)) in shapes.into_iter().enumerate() {
        let seed = 100 + 3 * i as u64;
        let (q, k) = (randn(qs, seed), randn(ks, seed + 1));
        let mut vs = ks.to_vec();
        *vs.last_mut().unwrap() = dv;
        let v = randn(&vs, seed + 2);
        let trained = {
            let qv = q.to_var();
            let o = Tensor::scaled_dot_product_attention(&qv, &k, &v, None).unwrap();
            assert!(o.is_tracked());
            o.to_vec_f32().unwrap()
        };
        let _g = no_grad();
        let inferred = Tensor::scaled_dot_product_attention(&q, &k, &v, None).unwrap().to_vec_f32().unwrap();
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&inferred), bits(&trained), "q {qs:?} k {ks:?} dv {dv}: inference and training outputs differ");
    }
}

#[test]
fn fused_attention_reads_heads_of_a_packed_qkv() {
    // U-ViT's layout: [B, L, 3·H·D] -> [3, B, H, L, D] views, no copies.
    let (b, l, h, d) = (2, 17, 3, 5);
    let split = move |t: &[Tensor; 3]| {
        let qkv = t[0].reshape(&[b, l, 3, h, d]).unwrap().permute(&[2, 0, 3, 1, 4]).unwrap();
        [0, 1, 2].map(|i| qkv.narrow(0, i, 1).unwrap().squeeze(0).unwrap())
    };
    // Only the first input is used; the others are unused variables.
    let packed = [randn(&[b, l, 3 * h * d], 20), randn(&[1], 21), randn(&[1], 22)];
    let vars: [Tensor; 3] = packed.map(|t| t.to_var());
    let [q, k, v] = split(&vars);
    assert!(!q.is_contiguous());
    let r = randn(&[b, h, l, d], 23);
    let fused = Tensor::scaled_dot_product_attention(&q, &k, &v, None).unwrap();
    // The output's heads are interleaved in memory as q's are ([B, L, H, D]),
    // so merging them back for the output projection is a free view.
    assert!(fused.transpose(1, 2).unwrap().is_contiguous(), "the output is not laid out as [B, L, H, D]");
    let math = composed(&q, &k, &v, 1.0 / (d as f32).sqrt());
    assert!(max_rel_diff(&fused, &math) <= 1e-6);
    let gf = fused.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let gm = math.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let d = max_rel_diff(gf.get(&vars[0]).unwrap(), gm.get(&vars[0]).unwrap());
    assert!(d <= 1e-6, "packed qkv gradient differs by {d}");
}

#[test]
fn packed_qkv_attention_equals_the_three_head_views() {
    // scaled_dot_product_attention_qkv on the packed [3, B, H, L, D] view
    // against the op on its three narrowed views: the same output, and the
    // same gradient of the projection output [B, L, 3·H·D].
    // Also a contiguous packed [3, B, L, D] input (no heads) with a scale.
    let (b, l, h, d) = (2, 19, 3, 4);
    let x = randn(&[b, l, 3 * h * d], 40).to_var();
    let qkv = x.reshape(&[b, l, 3, h, d]).unwrap().permute(&[2, 0, 3, 1, 4]).unwrap();
    let views = [0, 1, 2].map(|i| qkv.narrow(0, i, 1).unwrap().squeeze(0).unwrap());
    let r = randn(&[b, h, l, d], 41);
    let packed = Tensor::scaled_dot_product_attention_qkv(&qkv, None).unwrap();
    let three = Tensor::scaled_dot_product_attention(&views[0], &views[1], &views[2], None).unwrap();
    assert_eq!(packed.to_vec_f32().unwrap(), three.to_vec_f32().unwrap());
    let gp = packed.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let gt = three.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let dg = max_rel_diff(gp.get(&x).unwrap(), gt.get(&x).unwrap());
    assert!(dg <= 1e-6, "packed qkv gradient differs by {dg}");

    let y = randn(&[3, 2, 7, 5], 42).to_var();
    let packed = Tensor::scaled_dot_product_attention_qkv(&y, Some(0.4)).unwrap();
    let parts = [0, 1, 2].map(|i| y.narrow(0, i, 1).unwrap().squeeze(0).unwrap());
    let math = composed(&parts[0], &parts[1], &parts[2], 0.4);
    assert!(max_rel_diff(&packed, &math) <= 1e-6);
    let r = randn(&[2, 7, 5], 43);
    let gp = packed.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let gm = math.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let dg = max_rel_diff(gp.get(&y).unwrap(), gm.get(&y).unwrap());
    assert!(dg <= 1e-6, "contiguous packed gradient differs by {dg}");
    assert!(gp.get(&y).unwrap().is_contiguous());

    // Without a graph: the same values, nothing tracked.
    let _g = no_grad();
    let o = Tensor::scaled_dot_product_attention_qkv(&y, Some(0.4)).unwrap();
    assert!(!o.is_tracked());
    assert!(max_rel_diff(&o, &math) <= 1e-6);
    // Anything but three stacked parts is refused, naming the op.
    let e = Tensor::scaled_dot_product_attention_qkv(&randn(&[2, 4, 3], 44), None).unwrap_err();
    assert!(e.to_string().contains("attention_qkv"), "{e}");
    assert!(Tensor::scaled_dot_product_attention_qkv(&randn(&[3, 4], 45), None).is_err());
}

#[test]
fn fused_attention_rejects_mismatched_shapes() {
    let q = randn(&[2, 4, 3], 30);
    let e = Tensor::scaled_dot_product_attention(&q, &randn(&[2, 4, 5], 31), &randn(&[2, 4, 3], 32), None).unwrap_err();
    assert!(e.to_string().contains("attention"), "{e}");
    let e = Tensor::scaled_dot_product_attention(&q, &randn(&[2, 4, 3], 33), &randn(&[2, 5, 3], 34), None).unwrap_err();
    assert!(e.to_string().contains("[2, 5, 3]"), "{e}");
    assert!(Tensor::scaled_dot_product_attention(&q, &randn(&[3, 4, 3], 35), &randn(&[3, 4, 3], 36), None).is_err());
    assert!(Tensor::scaled_dot_product_attention(&randn(&[3], 37), &q, &q, None).is_err());
}

/// Empty problems (no tokens, no channels, no images) give empty outputs
/// and gradients of the right shapes, with and without a graph — no
/// layout checks trip on the strides of empty views.
#[test]
fn empty_attention_problems_give_empty_results() {
    for (b, l, h, d) in [(2, 0, 3, 4), (2, 5, 3, 0), (0, 5, 3, 4)] {
        let x = randn(&[b, l, 3 * h * d], 50).to_var();
        let qkv = x.reshape(&[b, l, 3, h, d]).unwrap().permute(&[2, 0, 3, 1, 4]).unwrap();
        let y = Tensor::scaled_dot_product_attention_qkv(&qkv, None).unwrap();
        assert_eq!(y.shape(), &[b, h, l, d]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(&x).expect("gradient").shape(), x.shape());
        let _g = no_grad();
        assert_eq!(Tensor::scaled_dot_product_attention_qkv(&qkv, None).unwrap().shape(), &[b, h, l, d]);
    }
}

/// The short-sequence kernel (`attention_short.rs`, AVX2 + FMA, up to 96
/// keys) against the `gemm` path it replaces, in inference and in training
/// (output, kept probabilities through the gradients): the same bits on U-ViT's packed qkv heads (the demo model's 65
/// tokens × 32 channels), contiguous heads, query and key counts off the
/// register and block sizes, channel counts not a multiple of 8 for q·kᵀ,
/// wide values, two query tiles, and a scale.
#[test]
fn short_sequence_attention_gives_the_gemm_paths_bits() {
    use sparsedm_tensor::backend::cpu::set_short_attention;
    let bits = |t: &Tensor| t.to_vec_f32().unwrap().iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    // (batch, heads, queries, keys, d, dv, packed)
    let cases: [(usize, usize, usize, usize, usize, usize, bool); 8] = [
        (3, 4, 65, 65, 32, 32, true),
        (2, 2, 65, 65, 32, 32, false),
        (1, 3, 17, 19, 5, 8, false),
        (2, 1, 40, 7, 13, 24, false),
        (1, 2, 96, 96, 64, 64, true),
        (1, 1, 9, 90, 3, 40, false),
        (1, 1, 1500, 90, 8, 16, false),
        (2, 2, 33, 33, 32, 32, true),
    ];
    for (i, &(b, h, lq, lk, d, dv, packed)) in cases.iter().enumerate() {
        let seed = 300 + 5 * i as u64;
        let (q, k, v) = if packed {
            // [B, L, 3, H, D] -> [3, B, H, L, D]: q, k, v views of one tensor.
            assert!(lq == lk && d == dv);
            let qkv = randn(&[b, lq, 3 * h * d], seed).reshape(&[b, lq, 3, h, d]).unwrap().permute(&[2, 0, 3, 1, 4]).unwrap();
            let [q, k, v] = [0, 1, 2].map(|j| qkv.narrow(0, j, 1).unwrap().squeeze(0).unwrap());
            (q, k, v)
        } else {
            (randn(&[b, h, lq, d], seed), randn(&[b, h, lk, d], seed + 1), randn(&[b, h, lk, dv], seed + 2))
        };
        let scale = Some(0.37);
        let trained = bits(&Tensor::scaled_dot_product_attention(&q.to_var(), &k, &v, scale).unwrap());
        // Training: the probabilities the short kernel keeps give the gemm
        // path's output and gradients to the bit.
        let r = randn(&[b, h, lq, dv], seed + 3);
        let train = |short: bool| {
            let was = set_short_attention(short);
            let vars = [&q, &k, &v].map(|t| t.to_var());
            let out = Tensor::scaled_dot_product_attention(&vars[0], &vars[1], &vars[2], scale).unwrap();
            let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            set_short_attention(was);
            let mut all = vec![bits(&out)];
            all.extend(vars.iter().map(|x| bits(grads.get(x).expect("gradient"))));
            all
        };
        let what = format!("case {i}: [{b}, {h}] q {lq} k {lk} d {d} dv {dv} packed {packed}");
        assert!(train(true) == train(false), "{what}: training with the short-sequence kernel differs from the gemm path");
        let _g = no_grad();
        let short = bits(&Tensor::scaled_dot_product_attention(&q, &k, &v, scale).unwrap());
        let was = set_short_attention(false);
        let gemm = bits(&Tensor::scaled_dot_product_attention(&q, &k, &v, scale).unwrap());
        set_short_attention(was);
        assert!(short == gemm, "{what}: the short-sequence kernel differs from the gemm path");
        assert!(short == trained, "{what}: inference differs from the training path");
    }
}
