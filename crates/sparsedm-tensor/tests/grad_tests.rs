//! Every differentiable op's gradient against central finite differences
//! (`testing::grad_check`: the gradient of Σ f(x)⊙r for a random r), with
//! broadcasting cases. Inputs of ops with kinks (relu, abs, max, clamp,
//! max-pool) are kept away from the kinks so the differences are valid.

use sparsedm_tensor::testing::grad_check;
use sparsedm_tensor::{Device, Result, Rng, Tensor};

const DEV: Device = Device::Cpu;
const EPS: f32 = 1e-2;
const TOL: f32 = 1e-2;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, &mut Rng::new(seed), &DEV).unwrap()
}

/// Random values with |x| in [0.2, 1.2] (away from kinks at 0).
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let mag = rng.uniform_vec(n, 0.2, 1.2);
    let sign = rng.uniform_vec(n, -1.0, 1.0);
    let v = mag.iter().zip(&sign).map(|(m, s)| if *s < 0.0 { -m } else { *m }).collect();
    Tensor::from_vec(v, shape, &DEV).unwrap()
}

/// Distinct values (a shuffled ramp), so maxima have no near-ties.
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let keys = Rng::new(seed).uniform_vec(n, 0.0, 1.0);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut v = vec![0f32; n];
    for (rank, &i) in order.iter().enumerate() {
        v[i] = rank as f32 * 0.1 - n as f32 * 0.05;
    }
    Tensor::from_vec(v, shape, &DEV).unwrap()
}

fn check(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let err = grad_check(inputs, f, EPS, 99).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(err < TOL, "{name}: gradient relative error {err:.3e}");
}

#[test]
fn binary_ops_with_broadcasting() {
    let a = randn(&[2, 3, 4], 1);
    let b = randn(&[3, 1], 2);
    let pos = randn(&[4], 3).abs().unwrap().add_scalar(0.5).unwrap();
    check("add", &[a.clone(), b.clone()], |t| t[0].add(&t[1]));
    check("sub", &[a.clone(), b.clone()], |t| t[0].sub(&t[1]));
    check("mul", &[a.clone(), b.clone()], |t| t[0].mul(&t[1]));
    check("div", &[a.clone(), pos.clone()], |t| t[0].div(&t[1]));
    check("div_lhs_broadcast", &[pos, a.clone()], |t| t[0].div(&t[1].abs()?.add_scalar(0.5)?));
    check("maximum", &[distinct(&[2, 3], 4), distinct(&[2, 3], 5)], |t| t[0].maximum(&t[1].add_scalar(0.01)?));
    check("scalar_ops", std::slice::from_ref(&a), |t| t[0].affine(1.5, -0.3)?.mul_scalar(2.0)?.add_scalar(1.0));
    check("same_input_twice", &[a], |t| t[0].mul(&t[0]));
}

#[test]
fn unary_ops() {
    let x = randn(&[3, 5], 10);
    let pos = x.abs().unwrap().add_scalar(0.5).unwrap();
    let k = away_from_zero(&[3, 5], 11);
    check("neg", std::slice::from_ref(&x), |t| t[0].neg());
    check("exp", std::slice::from_ref(&x), |t| t[0].exp());
    check("log", std::slice::from_ref(&pos), |t| t[0].log());
    check("sqrt", std::slice::from_ref(&pos), |t| t[0].sqrt());
    check("rsqrt", std::slice::from_ref(&pos), |t| t[0].rsqrt());
    check("powf", std::slice::from_ref(&pos), |t| t[0].powf(2.5));
    check("sqr", std::slice::from_ref(&x), |t| t[0].sqr());
    check("abs", std::slice::from_ref(&k), |t| t[0].abs());
    check("tanh", std::slice::from_ref(&x), |t| t[0].tanh());
    check("sigmoid", std::slice::from_ref(&x), |t| t[0].sigmoid());
    check("relu", std::slice::from_ref(&k), |t| t[0].relu());
    check("gelu", std::slice::from_ref(&x), |t| t[0].gelu());
    check("silu", std::slice::from_ref(&x), |t| t[0].silu());
    check("clamp", &[k], |t| t[0].clamp(-0.5, 0.7));
}

#[test]
fn where_cond_routes_gradients() {
    let cond = Tensor::from_vec(vec![1.0, 0.0, 1.0], &[3], &DEV).unwrap();
    check("where", &[randn(&[2, 3], 20), randn(&[2, 1], 21)], move |t| Tensor::where_cond(&cond, &t[0], &t[1]));
}

#[test]
fn reductions() {
    let x = randn(&[2, 3, 4], 30);
    check("sum_all", std::slice::from_ref(&x), |t| t[0].sum_all());
    check("sum_prefix", std::slice::from_ref(&x), |t| t[0].sum_dims(&[0], false));
    check("sum_suffix", std::slice::from_ref(&x), |t| t[0].sum_dims(&[2], true));
    check("sum_middle", std::slice::from_ref(&x), |t| t[0].sum_dims(&[1], false));
    check("sum_outer_two", std::slice::from_ref(&x), |t| t[0].sum_dims(&[0, 2], false));
    check("mean", std::slice::from_ref(&x), |t| t[0].mean_dims(&[1, 2], true));
    check("var_unbiased", std::slice::from_ref(&x), |t| t[0].var_dims(&[2], false, true));
    check("var_biased", std::slice::from_ref(&x), |t| t[0].var_dims(&[0, 1], true, false));
    check("max_dim", &[distinct(&[2, 3, 4], 31)], |t| t[0].max_dim(1, false));
    check("max_last", &[distinct(&[2, 3, 4], 32)], |t| t[0].max_dim(2, true));
    check("sum_of_transposed", &[x], |t| t[0].transpose(0, 2)?.sum_dims(&[0], false));
}

#[test]
fn matmul_variants() {
    check("matmul_2d", &[randn(&[3, 4], 40), randn(&[4, 5], 41)], |t| t[0].matmul(&t[1]));
    check("matmul_batched", &[randn(&[2, 3, 4], 42), randn(&[2, 4, 5], 43)], |t| t[0].matmul(&t[1]));
    check("matmul_folded_weight", &[randn(&[2, 3, 4], 44), randn(&[5, 4], 45)], |t| t[0].matmul(&t[1].t()?));
    check("matmul_batch_broadcast", &[randn(&[2, 1, 3, 4], 46), randn(&[3, 4, 2], 47)], |t| t[0].matmul(&t[1]));
    check("matmul_transposed_lhs", &[randn(&[4, 3], 48), randn(&[4, 2], 49)], |t| t[0].t()?.matmul(&t[1]));
    check("linear_cat", &[randn(&[2, 3, 4], 50), randn(&[2, 3, 2], 51), randn(&[5, 6], 52), randn(&[5], 53)], |t| {
        Tensor::linear_cat(&[&t[0], &t[1]], &t[2], Some(&t[3]))
    });
    check("linear_cat_view_no_bias", &[randn(&[3, 2], 54), randn(&[4, 2], 55), randn(&[5, 7], 56)], |t| {
        Tensor::linear_cat(&[&t[0].t()?, &t[1].t()?], &t[2], None)
    });
}

#[test]
fn views() {
    let x = randn(&[2, 3, 4], 50);
    check("reshape_noncontiguous", std::slice::from_ref(&x), |t| t[0].transpose(0, 1)?.reshape(&[3, 8]));
    check("permute", std::slice::from_ref(&x), |t| t[0].permute(&[2, 0, 1])?.contiguous());
    check("narrow", std::slice::from_ref(&x), |t| t[0].narrow(2, 1, 2));
    check("broadcast_as", &[randn(&[3, 1], 51)], |t| t[0].broadcast_as(&[2, 3, 4]));
    check("unsqueeze_squeeze", std::slice::from_ref(&x), |t| t[0].unsqueeze(1)?.mul_scalar(2.0)?.squeeze(1));
    check("flatten", &[x], |t| t[0].flatten_from(1));
}

#[test]
fn data_movement() {
    let x = randn(&[2, 3, 4], 60);
    check("pad_asymmetric", std::slice::from_ref(&x), |t| t[0].pad(&[(0, 0), (1, 0), (2, 1)], 0.5));
    check("pad2d", &[randn(&[1, 2, 3, 3], 61)], |t| t[0].pad2d(0, 1, 0, 1, 0.0));
    check("cat", &[x.clone(), randn(&[2, 1, 4], 62)], |t| Tensor::cat(&[&t[0], &t[1]], 1));
    check("split", std::slice::from_ref(&x), |t| {
        let parts = t[0].split(&[1, 3], 2)?;
        parts[0].mul(&parts[1].narrow(2, 0, 1)?)
    });
    check("chunk", std::slice::from_ref(&x), |t| {
        let c = t[0].chunk(2, 2)?;
        c[0].sub(&c[1])
    });
    let idx = Tensor::from_vec_i64(vec![2, 0, 2], &[3], &DEV).unwrap();
    let i2 = idx.clone();
    check("index_select", &[x], move |t| t[0].index_select(1, &i2));
    let ids = Tensor::from_vec_i64(vec![1, 0, 1, 3], &[2, 2], &DEV).unwrap();
    check("embedding", &[randn(&[4, 3], 63)], move |t| t[0].embedding(&ids));
}

#[test]
fn normalisation() {
    let x = randn(&[2, 3, 8], 70);
    check("layer_norm", &[x.clone(), randn(&[8], 71), randn(&[8], 72)], |t| t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-5));
    check("layer_norm_weight_only", &[x.clone(), randn(&[8], 76)], |t| t[0].layer_norm(Some(&t[1]), None, 1e-5));
    check("layer_norm_bias_only", &[x.transpose(0, 1).unwrap(), randn(&[8], 77)], |t| t[0].layer_norm(None, Some(&t[1]), 1e-5));
    // The fused forward gives the bits of standardizing, then multiplying
    // and adding as separate ops.
    let (w, b) = (randn(&[8], 78), randn(&[8], 79));
    let fused = x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap().to_vec_f32().unwrap();
    let composed = x.standardize_last(1e-5).unwrap().mul(&w).unwrap().add(&b).unwrap().to_vec_f32().unwrap();
    assert!(fused.iter().zip(&composed).all(|(a, c)| a.to_bits() == c.to_bits()), "fused layer norm != composed");
    check("layer_norm_no_affine", &[x], |t| t[0].layer_norm(None, None, 1e-5));
    check("group_norm", &[randn(&[2, 4, 3, 3], 73), randn(&[4], 74), randn(&[4], 75)], |t| {
        t[0].group_norm(2, Some(&t[1]), Some(&t[2]), 1e-6)
    });
    let (m, v) = (randn(&[3], 76), randn(&[3], 77).abs().unwrap().add_scalar(0.5).unwrap());
    check("batch_norm", &[randn(&[2, 3, 2, 2], 78), randn(&[3], 79), randn(&[3], 80)], move |t| {
        t[0].batch_norm_inference(&m, &v, Some(&t[1]), Some(&t[2]), 1e-3)
    });
}

#[test]
fn softmax_and_attention() {
    let x = randn(&[2, 3, 5], 90);
    check("softmax_last", std::slice::from_ref(&x), |t| t[0].softmax(2));
    check("softmax_middle", std::slice::from_ref(&x), |t| t[0].softmax(1));
    check("log_softmax", std::slice::from_ref(&x), |t| t[0].log_softmax(2));
    check("log_softmax_first", &[x], |t| t[0].log_softmax(0));
    check("attention", &[randn(&[2, 2, 4, 3], 91), randn(&[2, 2, 4, 3], 92), randn(&[2, 2, 4, 3], 93)], |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], None)
    });
    check("attention_qkv", &[randn(&[3, 2, 4, 3], 94)], |t| {
        let qkv = t[0].permute(&[0, 2, 1, 3])?;
        Tensor::scaled_dot_product_attention_qkv(&qkv, Some(0.7))
    });
}

#[test]
fn convolution() {
    check("conv2d_stride_pad_bias", &[randn(&[2, 3, 5, 5], 100), randn(&[4, 3, 3, 3], 101), randn(&[4], 102)], |t| {
        t[0].conv2d(&t[1], Some(&t[2]), (2, 2), (1, 1))
    });
    check("conv2d_asymmetric", &[randn(&[1, 2, 6, 5], 103), randn(&[3, 2, 3, 1], 104)], |t| t[0].conv2d(&t[1], None, (1, 2), (0, 1)));
    check("conv2d_pointwise", &[randn(&[2, 3, 4, 4], 105), randn(&[5, 3, 1, 1], 106), randn(&[5], 107)], |t| {
        t[0].conv2d(&t[1], Some(&t[2]), (1, 1), (0, 0))
    });
    // Many images: the per-image parallel path.
    check("conv2d_batch", &[randn(&[5, 2, 4, 4], 108), randn(&[2, 2, 3, 3], 109)], |t| t[0].conv2d(&t[1], None, (1, 1), (1, 1)));
}

#[test]
fn pooling_and_resizing() {
    check("max_pool2d", &[distinct(&[1, 2, 5, 5], 110)], |t| t[0].max_pool2d(3, 2, 0));
    check("max_pool2d_pad", &[distinct(&[1, 2, 4, 4], 111)], |t| t[0].max_pool2d(3, 1, 1));
    let x = randn(&[2, 2, 5, 5], 112);
    check("avg_pool_include_pad", std::slice::from_ref(&x), |t| t[0].avg_pool2d(3, 1, 1, true));
    check("avg_pool_exclude_pad", std::slice::from_ref(&x), |t| t[0].avg_pool2d(3, 2, 1, false));
    check("adaptive_avg_pool", std::slice::from_ref(&x), |t| t[0].adaptive_avg_pool2d_1x1());
    check("upsample_nearest", &[randn(&[1, 2, 3, 3], 113)], |t| t[0].upsample_nearest2d(2));
    check("resize_bilinear_up", &[randn(&[1, 2, 3, 4], 114)], |t| t[0].resize_bilinear(7, 9));
    check("resize_bilinear_down", &[x], |t| t[0].resize_bilinear(3, 2));
}

#[test]
fn dropout_is_seeded() {
    check("dropout", &[randn(&[4, 8], 120)], |t| t[0].dropout(0.3, true, &mut Rng::new(5)));
    let x = Tensor::ones(&[1000], &DEV).unwrap();
    let a = x.dropout(0.25, true, &mut Rng::new(1)).unwrap().to_vec_f32().unwrap();
    let b = x.dropout(0.25, true, &mut Rng::new(1)).unwrap().to_vec_f32().unwrap();
    assert_eq!(a, b);
    let zeros = a.iter().filter(|&&v| v == 0.0).count();
    assert!((200..300).contains(&zeros), "{zeros} zeros of 1000 at p = 0.25");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    assert_eq!(x.dropout(0.25, false, &mut Rng::new(1)).unwrap().to_vec_f32().unwrap(), vec![1.0; 1000]);
}

#[test]
fn composite_network_gradient() {
    // A small conv → norm → attention-style stack, to exercise accumulation
    // through shared sub-expressions.
    check("composite", &[randn(&[2, 2, 4, 4], 130), randn(&[4, 2, 3, 3], 131), randn(&[4], 132)], |t| {
        let h = t[0].conv2d(&t[1], None, (1, 1), (1, 1))?.group_norm(2, Some(&t[2]), None, 1e-5)?.silu()?;
        let seq = h.flatten_from(2)?.transpose(1, 2)?; // [N, 16, 4]
        let att = Tensor::scaled_dot_product_attention(&seq, &seq, &seq, None)?;
        att.add(&seq)?.layer_norm(None, None, 1e-5)
    });
}

#[test]
fn grad_check_detects_a_wrong_gradient() {
    // x·detach(x) has autograd gradient x but true derivative 2x: the
    // checker must report a large error, or the tests above prove nothing.
    let err = grad_check(&[randn(&[3, 3], 140)], |t| t[0].mul(&t[0].detach()), EPS, 1).unwrap();
    assert!(err > 0.3, "grad_check missed a wrong gradient (error {err})");
}

#[test]
fn fused_linear() {
    check("linear_bias", &[randn(&[2, 3, 4], 150), randn(&[5, 4], 151), randn(&[5], 152)], |t| t[0].linear(&t[1], Some(&t[2])));
    check("linear_no_bias_transposed_input", &[randn(&[4, 3], 153), randn(&[2, 3], 154)], |t| t[0].t()?.t()?.linear(&t[1], None));
    // Same values as matmul + add.
    let (x, w, b) = (randn(&[7, 6], 155), randn(&[3, 6], 156), randn(&[3], 157));
    let fused = x.linear(&w, Some(&b)).unwrap().to_vec_f32().unwrap();
    let plain = x.matmul(&w.t().unwrap()).unwrap().add(&b).unwrap().to_vec_f32().unwrap();
    sparsedm_tensor::testing::assert_close("linear", &fused, &plain, 1e-6);
}

/// Layer norm's backward (one fused primitive) against the same gradients
/// through standardize, mul and add as separate ops: the input gradient
/// bit for bit, the weight and bias gradients (column sums, in another
/// order) to f32 rounding. Shapes with many parallel tasks, groups of
/// statistics rows cut short, rows not a multiple of the SIMD width, a
/// transposed input; every affine variant; inputs without gradients.
#[test]
fn fused_layer_norm_backward_matches_the_composed_one() {
    let sum_of_abs = |t: &Tensor| t.abs().unwrap().sum_all().unwrap().to_vec_f32().unwrap()[0];
    for (case, shape) in [[3usize, 700, 37], [4, 65, 128], [1, 5, 9], [2, 19, 512]].iter().enumerate() {
        let seed = 100 + 10 * case as u64;
        let d = shape[2];
        let x = randn(shape, seed).affine(2.0, 0.5).unwrap();
        let x = if case == 1 { x.transpose(0, 1).unwrap().contiguous().unwrap().transpose(0, 1).unwrap() } else { x };
        let r = randn(x.shape(), seed + 1);
        let (w, b) = (randn(&[d], seed + 2), randn(&[d], seed + 3));
        for (affine, (wt, bt)) in [(Some(&w), Some(&b)), (Some(&w), None), (None, Some(&b)), (None, None)].into_iter().enumerate() {
            for x_grad in [true, false] {
                if !x_grad && affine == 3 {
                    continue; // nothing to differentiate
                }
                let xv = if x_grad { x.to_var() } else { x.clone() };
                let (wv, bv) = (wt.map(Tensor::to_var), bt.map(Tensor::to_var));
                let loss = |y: Tensor| y.mul(&r).unwrap().sum_all().unwrap();
                let fused = loss(xv.layer_norm(wv.as_ref(), bv.as_ref(), 1e-5).unwrap()).backward().unwrap();
                let mut y = xv.standardize_last(1e-5).unwrap();
                if let Some(w) = &wv {
                    y = y.mul(w).unwrap();
                }
                if let Some(b) = &bv {
                    y = y.add(b).unwrap();
                }
                let composed = loss(y).backward().unwrap();
                let what = format!("{shape:?}, affine {affine}, x grad {x_grad}");
                match (fused.get(&xv), composed.get(&xv)) {
                    (Some(f), Some(c)) => {
                        let (f, c) = (f.to_vec_f32().unwrap(), c.to_vec_f32().unwrap());
                        assert!(f.iter().zip(&c).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: input gradients differ");
                    }
                    (None, None) => assert!(!x_grad, "{what}: no input gradient"),
                    _ => panic!("{what}: one path gave an input gradient, the other not"),
                }
                for p in wv.iter().chain(&bv) {
                    let (f, c) = (fused.get(p).expect("fused gradient"), composed.get(p).expect("composed gradient"));
                    // Sums over all rows: allow f32 rounding of Σ|g·x̂| (or Σ|g|).
                    let scale = sum_of_abs(&r.mul(&x.standardize_last(1e-5).unwrap()).unwrap()).max(sum_of_abs(&r));
                    for (i, (a, e)) in f.to_vec_f32().unwrap().iter().zip(c.to_vec_f32().unwrap()).enumerate() {
                        assert!((a - e).abs() <= 1e-6 * scale, "{what}: parameter gradient [{i}] {a} vs {e}");
                    }
                }
            }
        }
    }
}

/// Group norm (one fused primitive each way) against the standardization
/// of `[N, G, C/G·H·W]` rows, a multiply and an add as separate ops: the
/// output and the input gradient bit for bit, the weight and bias
/// gradients to f32 rounding. Many parallel tasks, groups of statistics
/// rows cut short, tasks that start mid-image, one channel per group,
/// rank 3, a transposed input;
/// every affine form; inputs without gradients.
#[test]
fn fused_group_norm_matches_the_composed_ops() {
    let sum_of_abs = |t: &Tensor| t.abs().unwrap().sum_all().unwrap().to_vec_f32().unwrap()[0];
    // [40, 6, 13, 17] in 3 groups: tasks of 37 rows, so a task's first row is not its first group.
    let cases: [(&[usize], usize); 7] = [
        (&[2, 4, 3, 3], 2),
        (&[64, 64, 8, 8], 8),
        (&[40, 6, 13, 17], 3),
        (&[3, 6, 5, 7], 3),
        (&[2, 32, 16, 16], 32),
        (&[4, 6, 10], 2),
        (&[5, 8, 4, 3], 4),
    ];
    for (case, &(shape, groups)) in cases.iter().enumerate() {
        let seed = 200 + 10 * case as u64;
        let c = shape[1];
        let x = randn(shape, seed).affine(1.5, -0.25).unwrap();
        // The last case reads a transposed view.
        let x = if case == 6 { x.transpose(2, 3).unwrap().contiguous().unwrap().transpose(2, 3).unwrap() } else { x };
        let r = randn(shape, seed + 1);
        let (w, b) = (randn(&[c], seed + 2), randn(&[c], seed + 3));
        let mut pshape = vec![1; shape.len() - 1];
        pshape[0] = c;
        for (affine, (wt, bt)) in [(Some(&w), Some(&b)), (Some(&w), None), (None, Some(&b)), (None, None)].into_iter().enumerate() {
            for x_grad in [true, false] {
                if !x_grad && affine == 3 {
                    continue; // nothing to differentiate
                }
                let what = format!("{shape:?} in {groups} groups, affine {affine}, x grad {x_grad}");
                let xv = if x_grad { x.to_var() } else { x.clone() };
                let (wv, bv) = (wt.map(Tensor::to_var), bt.map(Tensor::to_var));
                let fused = xv.group_norm(groups, wv.as_ref(), bv.as_ref(), 1e-6).unwrap();
                let n = shape[0];
                let mut composed = xv.reshape(&[n, groups, x.elem_count() / (n * groups)]).unwrap().standardize_last(1e-6).unwrap();
                composed = composed.reshape(shape).unwrap();
                if let Some(w) = &wv {
                    composed = composed.mul(&w.reshape(&pshape).unwrap()).unwrap();
                }
                if let Some(b) = &bv {
                    composed = composed.add(&b.reshape(&pshape).unwrap()).unwrap();
                }
                let (fy, cy) = (fused.to_vec_f32().unwrap(), composed.to_vec_f32().unwrap());
                assert!(fy.iter().zip(&cy).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: outputs differ");
                let loss = |y: Tensor| y.mul(&r).unwrap().sum_all().unwrap();
                let (gf, gc) = (loss(fused).backward().unwrap(), loss(composed).backward().unwrap());
                match (gf.get(&xv), gc.get(&xv)) {
                    (Some(f), Some(c)) => {
                        let (f, c) = (f.to_vec_f32().unwrap(), c.to_vec_f32().unwrap());
                        assert!(f.iter().zip(&c).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: input gradients differ");
                    }
                    (None, None) => assert!(!x_grad, "{what}: no input gradient"),
                    _ => panic!("{what}: one path gave an input gradient, the other not"),
                }
                let scale = sum_of_abs(&r.mul(&x).unwrap()).max(sum_of_abs(&r));
                for p in wv.iter().chain(&bv) {
                    let (f, e) = (gf.get(p).expect("fused gradient"), gc.get(p).expect("composed gradient"));
                    for (i, (a, e)) in f.to_vec_f32().unwrap().iter().zip(e.to_vec_f32().unwrap()).enumerate() {
                        assert!((a - e).abs() <= 1e-6 * scale, "{what}: parameter gradient [{i}] {a} vs {e}");
                    }
                }
            }
        }
    }
}
