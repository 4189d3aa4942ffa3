//! CPU ↔ CUDA parity of the tensor ops: every test runs an op on the CPU and
//! on device 0 from the same inputs (moved with `to_device`) and compares the
//! values and the gradients of `Σ out ⊙ r` (f32: 1e-5 relative to the CPU's
//! largest magnitude unless a test says why it needs more; bf16 matmul mode:
//! 1e-2). Without a GPU each test prints why it is skipped and passes, unless
//! `SPARSEDM_REQUIRE_GPU=1` (the H200 runs), where a missing GPU fails it.
//! The error tests at the end also run without a GPU.
#![cfg(feature = "cuda")]

use std::sync::RwLock;

use sparsedm_kernels::testing::gpu_or_skip;
use sparsedm_tensor::testing::assert_close;
use sparsedm_tensor::{DType, Device, Error, MatmulPrecision, Result, Rng, Tensor, set_matmul_precision};

const CPU: Device = Device::Cpu;

/// The matmul precision is process-wide: the bf16 test holds this for
/// writing, every other test for reading, so none sees the other's setting.
static PRECISION: RwLock<()> = RwLock::new(());

fn device(test: &str) -> Option<Device> {
    gpu_or_skip(test).map(|g| Device::Cuda(g.ordinal()))
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, &mut Rng::new(seed), &CPU).unwrap()
}

/// Values in (lo, hi), for ops with restricted domains.
fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, lo, hi, &mut Rng::new(seed), &CPU).unwrap()
}

/// Runs `f` on both devices and compares values and input gradients.
fn parity_tol(test: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>, tol: f32) {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device(test) else { return };
    check(test, dev, inputs, f, tol);
}

fn parity(test: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    parity_tol(test, inputs, f, 1e-5);
}

fn check(test: &str, dev: Device, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>, tol: f32) {
    let run = |d: &Device| -> (Vec<f32>, Vec<Vec<f32>>, Device) {
        let vars: Vec<Tensor> = inputs.iter().map(|t| t.to_device(d).unwrap().to_var()).collect();
        let out = f(&vars).unwrap_or_else(|e| panic!("{test} on {d}: {e}"));
        let r = Tensor::randn(out.shape(), &mut Rng::new(99), &CPU).unwrap().to_device(d).unwrap();
        let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let g = vars.iter().map(|v| grads.get(v).map(|g| g.to_vec_f32().unwrap()).unwrap_or_default()).collect();
        (out.to_vec_f32().unwrap(), g, out.device())
    };
    let (want, want_g, _) = run(&CPU);
    let (got, got_g, got_dev) = run(&dev);
    assert_eq!(got_dev, dev, "{test}: the result left the GPU");
    assert_close(&format!("{test}: values"), &got, &want, tol);
    for (i, (a, b)) in got_g.iter().zip(&want_g).enumerate() {
        assert_close(&format!("{test}: gradient of input {i}"), a, b, tol);
    }
}

// ----- (a) element-wise -------------------------------------------------------------------

#[test]
fn gpu_unary_ops() {
    let x = randn(&[3, 5, 7], 1);
    let pos = uniform(&[3, 5, 7], 0.2, 3.0, 2);
    type Op = fn(&Tensor) -> Result<Tensor>;
    let ops: [(&str, Op, bool); 17] = [
        ("neg", |t| t.neg(), false),
        ("exp", |t| t.exp(), false),
        ("log", |t| t.log(), true),
        ("sqrt", |t| t.sqrt(), true),
        ("rsqrt", |t| t.rsqrt(), true),
        ("powf", |t| t.powf(1.7), true),
        ("sqr", |t| t.sqr(), false),
        ("abs", |t| t.abs(), false),
        ("tanh", |t| t.tanh(), false),
        ("sigmoid", |t| t.sigmoid(), false),
        ("relu", |t| t.relu(), false),
        ("gelu", |t| t.gelu(), false),
        ("silu", |t| t.silu(), false),
        ("affine", |t| t.affine(-1.5, 0.25), false),
        ("mul_scalar", |t| t.mul_scalar(3.0), false),
        ("add_scalar", |t| t.add_scalar(-2.0), false),
        ("clamp", |t| t.clamp(-0.5, 0.7), false),
    ];
    for (name, f, positive) in ops {
        let input = if positive { &pos } else { &x };
        // Through a transposed view too: the kernels read strided inputs.
        parity(&format!("gpu_unary_ops/{name}"), std::slice::from_ref(input), |v| f(&v[0]));
        parity(&format!("gpu_unary_ops/{name}/strided"), std::slice::from_ref(input), |v| f(&v[0].transpose(0, 2)?));
    }
}

#[test]
fn gpu_binary_ops_broadcast() {
    let a = randn(&[2, 3, 4], 3);
    let b = uniform(&[3, 1], 0.5, 2.0, 4);
    type Op = fn(&Tensor, &Tensor) -> Result<Tensor>;
    let ops: [(&str, Op); 5] = [
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(b)),
        ("maximum", |a, b| a.maximum(b)),
    ];
    for (name, f) in ops {
        parity(&format!("gpu_binary_ops_broadcast/{name}"), &[a.clone(), b.clone()], |v| f(&v[0], &v[1]));
        parity(&format!("gpu_binary_ops_broadcast/{name}/swapped"), &[a.clone(), b.clone()], |v| f(&v[1], &v[0]));
        parity(&format!("gpu_binary_ops_broadcast/{name}/views"), &[a.clone(), b.clone()], |v| f(&v[0].permute(&[2, 0, 1])?, &v[1].t()?));
    }
}

#[test]
fn gpu_where_cond() {
    let cond = Tensor::from_vec(vec![1.0, 0.0, 0.0, 2.0, 0.0, -1.0], &[2, 3], &CPU).unwrap();
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_where_cond") else { return };
    // The condition follows the operands: the check runs the closure on the CPU and on `dev`.
    check(
        "gpu_where_cond",
        dev,
        &[randn(&[2, 3], 5), randn(&[3], 6)],
        |v| Tensor::where_cond(&cond.to_device(&v[0].device())?, &v[0], &v[1]),
        1e-6,
    );
}

#[test]
fn gpu_views_and_copies() {
    let x = randn(&[4, 6, 5], 7);
    parity("gpu_views/contiguous", std::slice::from_ref(&x), |v| v[0].permute(&[2, 0, 1])?.contiguous());
    parity("gpu_views/reshape_of_view", std::slice::from_ref(&x), |v| v[0].transpose(1, 2)?.reshape(&[4, 30]));
    parity("gpu_views/narrow", std::slice::from_ref(&x), |v| v[0].narrow(1, 2, 3)?.contiguous());
    parity("gpu_views/broadcast", &[randn(&[1, 5], 8)], |v| v[0].broadcast_as(&[3, 5])?.contiguous());
    parity("gpu_views/split", std::slice::from_ref(&x), |v| {
        let parts = v[0].split(&[1, 2, 3], 1)?;
        parts[2].mul(&parts[0].broadcast_as(&[4, 3, 5])?)
    });
    parity("gpu_views/cat", &[randn(&[2, 3], 9), randn(&[2, 4], 10)], |v| Tensor::cat(&[&v[0], &v[1].mul_scalar(2.0)?], 1));
    parity("gpu_views/cat_dim0_views", &[randn(&[3, 2], 9), randn(&[4, 2], 10)], |v| Tensor::cat(&[&v[0].t()?, &v[1].t()?], 1));
    parity("gpu_views/pad", std::slice::from_ref(&x), |v| v[0].pad(&[(1, 0), (0, 2), (3, 1)], -0.5));
    parity("gpu_views/pad2d_of_view", &[randn(&[2, 3, 4, 5], 11)], |v| v[0].transpose(2, 3)?.pad2d(1, 2, 0, 1, 0.0));
}

// ----- (b) reductions ---------------------------------------------------------------------

#[test]
fn gpu_reductions() {
    let x = randn(&[3, 4, 5, 6], 12);
    for dims in [vec![0], vec![1], vec![3], vec![0, 2], vec![1, 3], vec![0, 1, 2, 3], vec![2, 1]] {
        parity(&format!("gpu_reductions/sum{dims:?}"), std::slice::from_ref(&x), |v| v[0].sum_dims(&dims, false));
        parity(&format!("gpu_reductions/mean{dims:?}/keep"), std::slice::from_ref(&x), |v| v[0].mean_dims(&dims, true));
        parity(&format!("gpu_reductions/var{dims:?}"), std::slice::from_ref(&x), |v| v[0].var_dims(&dims, false, true));
    }
    parity("gpu_reductions/sum_all", std::slice::from_ref(&x), |v| v[0].sum_all());
    parity("gpu_reductions/sum_sq_all_of_view", std::slice::from_ref(&x), |v| v[0].permute(&[3, 1, 0, 2])?.sum_sq_all());
    parity("gpu_reductions/sum_sq_all_long", &[randn(&[37, 1000], 15)], |v| v[0].sum_sq_all());
    parity("gpu_reductions/mean_all_of_view", std::slice::from_ref(&x), |v| v[0].permute(&[3, 1, 0, 2])?.mean_all());
    parity("gpu_reductions/sum_to_shape", &[randn(&[4, 1, 6], 13), randn(&[3, 1, 5, 6], 14)], |v| v[0].mul(&v[1].sum_dims(&[0], false)?));
    for dim in 0..4 {
        parity(&format!("gpu_reductions/max_dim{dim}"), std::slice::from_ref(&x), |v| v[0].max_dim(dim, dim % 2 == 0));
    }
}

#[test]
fn gpu_max_with_ties_and_indices() {
    // Ties: the gradient and the index go to the first maximum, as on the CPU.
    let x = Tensor::from_vec(vec![1.0, 3.0, 3.0, 0.0, 2.0, 2.0, -1.0, 2.0], &[2, 4], &CPU).unwrap();
    parity("gpu_max_ties", std::slice::from_ref(&x), |v| v[0].max_dim(1, false));
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_max_with_ties_and_indices") else { return };
    let (v, i) = x.max_dim_with_index(1, false).unwrap();
    let (gv, gi) = x.to_device(&dev).unwrap().max_dim_with_index(1, false).unwrap();
    assert_eq!(gv.to_vec_f32().unwrap(), v.to_vec_f32().unwrap());
    assert_eq!(gi.device(), dev);
    assert_eq!(gi.to_vec_i64().unwrap(), i.to_vec_i64().unwrap());
}

// ----- (c) matrix products ----------------------------------------------------------------

#[test]
fn gpu_matmul_and_linear() {
    parity("gpu_matmul/2d", &[randn(&[5, 7], 15), randn(&[7, 3], 16)], |v| v[0].matmul(&v[1]));
    parity("gpu_matmul/batched_broadcast", &[randn(&[2, 1, 5, 7], 17), randn(&[3, 7, 4], 18)], |v| v[0].matmul(&v[1]));
    parity("gpu_matmul/transposed", &[randn(&[7, 5], 19), randn(&[4, 7], 20)], |v| v[0].t()?.matmul(&v[1].t()?));
    parity("gpu_matmul/batched_transposed", &[randn(&[3, 7, 5], 21), randn(&[3, 4, 7], 22)], |v| v[0].t()?.matmul(&v[1].t()?));
    parity("gpu_matmul/fold_batch", &[randn(&[2, 3, 6], 23), randn(&[6, 4], 24)], |v| v[0].matmul(&v[1]));
    parity("gpu_matmul/permuted_batch", &[randn(&[4, 2, 5], 25), randn(&[2, 5, 3], 26)], |v| v[0].permute(&[1, 0, 2])?.matmul(&v[1]));
    parity("gpu_linear/bias", &[randn(&[2, 3, 8], 27), randn(&[5, 8], 28), randn(&[5], 29)], |v| v[0].linear(&v[1], Some(&v[2])));
    parity("gpu_linear/no_bias", &[randn(&[4, 8], 30), randn(&[6, 8], 31)], |v| v[0].linear(&v[1], None));
    parity("gpu_linear/cat", &[randn(&[2, 3, 8], 32), randn(&[2, 3, 4], 33), randn(&[5, 12], 34), randn(&[5], 35)], |v| {
        Tensor::linear_cat(&[&v[0], &v[1]], &v[2], Some(&v[3]))
    });
    parity("gpu_attention", &[randn(&[2, 3, 6, 8], 32), randn(&[2, 3, 6, 8], 33), randn(&[2, 3, 6, 8], 34)], |v| {
        Tensor::scaled_dot_product_attention(&v[0], &v[1], &v[2], None)
    });
    // U-ViT's packed projection [B, L, 3·H·D] viewed as [3, B, H, L, D]: the
    // output comes back with its heads interleaved as [B, L, H, D] in memory.
    parity("gpu_attention/packed_qkv", &[randn(&[2, 6, 3 * 3 * 4], 35)], |v| {
        let qkv = v[0].reshape(&[2, 6, 3, 3, 4])?.permute(&[2, 0, 3, 1, 4])?;
        Tensor::scaled_dot_product_attention_qkv(&qkv, None)?.transpose(1, 2)?.reshape(&[2, 6, 12])
    });
}

#[test]
fn gpu_bf16_matmul_mode() {
    let _p = PRECISION.write().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_bf16_matmul_mode") else { return };
    set_matmul_precision(MatmulPrecision::Bf16);
    let result = std::panic::catch_unwind(|| {
        check("bf16/matmul", dev, &[randn(&[16, 32], 35), randn(&[32, 8], 36)], |v| v[0].matmul(&v[1]), 1e-2);
        check("bf16/matmul_transposed", dev, &[randn(&[32, 16], 37), randn(&[3, 8, 32], 38)], |v| v[0].t()?.matmul(&v[1].t()?), 1e-2);
        check("bf16/linear", dev, &[randn(&[4, 32], 39), randn(&[8, 32], 40), randn(&[8], 41)], |v| v[0].linear(&v[1], Some(&v[2])), 1e-2);
        check(
            "bf16/attention",
            dev,
            &[randn(&[2, 6, 16], 42), randn(&[2, 6, 16], 43), randn(&[2, 6, 16], 44)],
            |v| Tensor::scaled_dot_product_attention(&v[0], &v[1], &v[2], None),
            1e-2,
        );
        check(
            "bf16/conv2d",
            dev,
            &[randn(&[2, 3, 6, 6], 45), randn(&[4, 3, 3, 3], 46)],
            |v| v[0].conv2d(&v[1], None, (1, 1), (1, 1)),
            1e-2,
        );
        // The outputs stay f32 and differ from exact f32 (the operands were rounded).
        let (a, b) = (randn(&[16, 32], 47), randn(&[32, 8], 48));
        let exact = a.matmul(&b).unwrap().to_vec_f32().unwrap();
        let out = a.to_device(&dev).unwrap().matmul(&b.to_device(&dev).unwrap()).unwrap();
        assert_eq!(out.dtype(), DType::F32);
        assert_ne!(out.to_vec_f32().unwrap(), exact, "bf16 mode computed in f32");
    });
    set_matmul_precision(MatmulPrecision::F32);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

// ----- (d) softmax and normalisation ------------------------------------------------------

#[test]
fn gpu_softmax_and_norms() {
    let x = randn(&[3, 4, 10], 49);
    for dim in 0..3 {
        parity(&format!("gpu_softmax/dim{dim}"), std::slice::from_ref(&x), |v| v[0].softmax(dim));
        parity(&format!("gpu_log_softmax/dim{dim}"), std::slice::from_ref(&x), |v| v[0].log_softmax(dim));
    }
    parity("gpu_standardize", std::slice::from_ref(&x), |v| v[0].standardize_last(1e-5));
    parity("gpu_standardize/view", std::slice::from_ref(&x), |v| v[0].transpose(0, 2)?.standardize_last(1e-5));
    parity("gpu_layer_norm", &[x.clone(), randn(&[10], 50), randn(&[10], 51)], |v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5));
    // The backward's other forms (the GPU composes it, the CPU fuses it).
    parity("gpu_layer_norm/weight_only", &[x.clone(), randn(&[10], 55)], |v| v[0].layer_norm(Some(&v[1]), None, 1e-5));
    parity("gpu_layer_norm/bias_only_view", &[x.clone(), randn(&[10], 56)], |v| v[0].transpose(0, 1)?.layer_norm(None, Some(&v[1]), 1e-5));
    parity("gpu_layer_norm/plain", std::slice::from_ref(&x), |v| v[0].layer_norm(None, None, 1e-5));
    parity("gpu_group_norm", &[randn(&[2, 6, 4, 4], 52), randn(&[6], 53), randn(&[6], 54)], |v| {
        v[0].group_norm(3, Some(&v[1]), Some(&v[2]), 1e-5)
    });
    // The other forms (the GPU composes them, the CPU fuses them).
    parity("gpu_group_norm/weight_only_view", &[randn(&[2, 6, 4, 5], 57), randn(&[6], 58)], |v| {
        v[0].transpose(2, 3)?.group_norm(2, Some(&v[1]), None, 1e-5)
    });
    parity("gpu_group_norm/bias_only_rank3", &[randn(&[3, 4, 7], 59), randn(&[4], 60)], |v| v[0].group_norm(4, None, Some(&v[1]), 1e-5));
    parity("gpu_group_norm/plain", &[randn(&[2, 6, 3, 3], 61)], |v| v[0].group_norm(1, None, None, 1e-5));
}

// ----- (e) convolution, pooling, resampling, gathers --------------------------------------

#[test]
fn gpu_conv2d() {
    // (c, h, w, o, kh, kw, stride, padding, bias)
    let cases = [
        (3, 9, 8, 4, 3, 3, (1, 1), (1, 1), true),
        (2, 11, 9, 3, 3, 3, (2, 2), (0, 0), false),
        (4, 6, 7, 5, 1, 1, (1, 1), (0, 0), true),
        (2, 8, 8, 3, 1, 1, (2, 2), (0, 0), false),
        (3, 7, 9, 2, 5, 3, (1, 2), (2, 1), true),
    ];
    for (i, &(c, h, w, o, kh, kw, stride, padding, bias)) in cases.iter().enumerate() {
        let mut inputs = vec![randn(&[2, c, h, w], 60 + i as u64), randn(&[o, c, kh, kw], 70 + i as u64)];
        if bias {
            inputs.push(randn(&[o], 80 + i as u64));
        }
        parity(&format!("gpu_conv2d/{i}"), &inputs, |v| v[0].conv2d(&v[1], v.get(2), stride, padding));
    }
}

#[test]
fn gpu_pools_and_resampling() {
    let x = randn(&[2, 3, 9, 8], 90);
    for (k, s, p) in [(2, 2, 0), (3, 2, 1), (3, 1, 1)] {
        parity(&format!("gpu_max_pool2d/{k}{s}{p}"), std::slice::from_ref(&x), |v| v[0].max_pool2d(k, s, p));
        for include_pad in [false, true] {
            parity(&format!("gpu_avg_pool2d/{k}{s}{p}/{include_pad}"), std::slice::from_ref(&x), |v| v[0].avg_pool2d(k, s, p, include_pad));
        }
    }
    parity("gpu_adaptive_avg_pool", std::slice::from_ref(&x), |v| v[0].adaptive_avg_pool2d_1x1());
    parity("gpu_upsample", std::slice::from_ref(&x), |v| v[0].upsample_nearest2d(2));
    for (oh, ow) in [(13, 5), (4, 16), (9, 8)] {
        parity(&format!("gpu_resize_bilinear/{oh}x{ow}"), std::slice::from_ref(&x), |v| v[0].resize_bilinear(oh, ow));
    }
}

#[test]
fn gpu_index_select_and_embedding() {
    let x = randn(&[4, 5, 3], 91);
    let idx = Tensor::from_vec_i64(vec![4, 0, 0, 2], &[4], &CPU).unwrap();
    let ids = Tensor::from_vec_i64(vec![1, 3, 1, 0, 2, 2], &[2, 3], &CPU).unwrap();
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_index_select_and_embedding") else { return };
    let (gidx, gids) = (idx.to_device(&dev).unwrap(), ids.to_device(&dev).unwrap());
    check(
        "gpu_index_select",
        dev,
        std::slice::from_ref(&x),
        |v| v[0].index_select(1, if v[0].device() == CPU { &idx } else { &gidx }),
        1e-6,
    );
    check("gpu_embedding", dev, &[randn(&[4, 6], 92)], |v| v[0].embedding(if v[0].device() == CPU { &ids } else { &gids }), 1e-6);
    let bad = Tensor::from_vec_i64(vec![5], &[1], &CPU).unwrap().to_device(&dev).unwrap();
    assert!(matches!(x.to_device(&dev).unwrap().index_select(1, &bad), Err(Error::InvalidArgument { .. })));
}

// ----- construction, transfers, randomness, I/O -------------------------------------------

#[test]
fn gpu_construction_transfers_and_dtypes() {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_construction_transfers_and_dtypes") else { return };
    for (t, v) in [(Tensor::zeros(&[2, 3], &dev), 0.0), (Tensor::ones(&[2, 3], &dev), 1.0), (Tensor::full(-2.5, &[2, 3], &dev), -2.5)] {
        let t = t.unwrap();
        assert_eq!(t.device(), dev);
        assert_eq!(t.to_vec_f32().unwrap(), vec![v; 6]);
    }
    let x = randn(&[3, 4], 93);
    let g = x.to_device(&dev).unwrap();
    assert_eq!(g.to_device(&CPU).unwrap().to_vec_f32().unwrap(), x.to_vec_f32().unwrap());
    assert_eq!(g.t().unwrap().to_vec_f32().unwrap(), x.t().unwrap().to_vec_f32().unwrap());
    assert!(g.narrow(1, 1, 2).unwrap().to_scalar().is_err());
    assert_eq!(g.narrow(0, 2, 1).unwrap().narrow(1, 3, 1).unwrap().to_scalar().unwrap(), x.to_vec_f32().unwrap()[11]);
    for dt in [DType::F16, DType::BF16] {
        let want = x.to_dtype(dt).unwrap().to_cpu_storage().unwrap();
        let got = g.to_dtype(dt).unwrap();
        assert_eq!((got.dtype(), got.device()), (dt, dev));
        assert_eq!(format!("{:?}", got.to_cpu_storage().unwrap()), format!("{want:?}"), "{dt:?} cast");
        let moved = x.to_dtype(dt).unwrap().to_device(&dev).unwrap();
        assert_eq!(moved.dtype(), dt, "to_device keeps the dtype");
        assert_eq!(
            got.to_dtype(DType::F32).unwrap().to_vec_f32().unwrap(),
            x.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap().to_vec_f32().unwrap()
        );
    }
    // i64 round trip, including strided views (moved as 32-bit word pairs).
    let ints = Tensor::from_vec_i64((0..12).map(|i| i * 1_000_000_007).collect(), &[3, 4], &CPU).unwrap();
    let gi = ints.to_device(&dev).unwrap();
    assert_eq!(gi.t().unwrap().to_vec_i64().unwrap(), ints.t().unwrap().to_vec_i64().unwrap());
    // Gradients flow back through to_device.
    let v = x.to_var();
    let grads = v.to_device(&dev).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let gv = grads.get(&v).unwrap();
    assert_eq!(gv.device(), CPU);
    assert_close("grad through to_device", &gv.to_vec_f32().unwrap(), &x.mul_scalar(2.0).unwrap().to_vec_f32().unwrap(), 1e-6);
}

#[test]
fn gpu_in_place_updates_and_safetensors() {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_in_place_updates_and_safetensors") else { return };
    let w = randn(&[2, 3], 94).to_device(&dev).unwrap().to_var();
    let alias = w.reshape(&[6]).unwrap();
    w.update_f32(|d| d.iter_mut().for_each(|x| *x *= 2.0)).unwrap();
    let src = randn(&[2, 3], 95);
    w.set_data(&src).unwrap();
    assert_eq!(alias.to_vec_f32().unwrap(), src.to_vec_f32().unwrap(), "set_data from the host");
    let dsrc = randn(&[3, 2], 96).to_device(&dev).unwrap();
    w.set_data(&dsrc.t().unwrap()).unwrap();
    assert_eq!(w.to_vec_f32().unwrap(), dsrc.t().unwrap().to_vec_f32().unwrap(), "set_data device to device from a view");
    w.set_data(&w.mul_scalar(0.5).unwrap()).unwrap();
    let cpu_w = randn(&[2, 3], 97);
    cpu_w.set_data(&w).unwrap();
    assert_eq!(cpu_w.to_vec_f32().unwrap(), w.to_vec_f32().unwrap(), "set_data into the host from a GPU");
    let dir = sparsedm_testkit::Scratch::new("gpu-parity");
    let t = randn(&[4, 5], 98);
    let save = |name: &str, x: &Tensor| {
        let p = dir.join(name);
        sparsedm_tensor::save_safetensors(&p, &[("x".into(), x.clone())], None).unwrap();
        std::fs::read(p).unwrap()
    };
    assert_eq!(save("cpu.st", &t), save("gpu.st", &t.to_device(&dev).unwrap()));
}

#[test]
fn gpu_random_streams_match_the_cpu() {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_random_streams_match_the_cpu") else { return };
    let (mut rc, mut rg) = (Rng::new(7), Rng::new(7));
    for n in [1usize, 3, 4, 5, 1000, 4099] {
        let u = Tensor::rand_uniform(&[n], -1.0, 3.0, &mut rc, &CPU).unwrap().to_vec_f32().unwrap();
        let ug = Tensor::rand_uniform(&[n], -1.0, 3.0, &mut rg, &dev).unwrap().to_vec_f32().unwrap();
        assert_eq!(u.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), ug.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "uniform n={n}");
        assert_eq!(rc.state(), rg.state(), "counter after uniform n={n}");
        let z = Tensor::randn(&[n], &mut rc, &CPU).unwrap().to_vec_f32().unwrap();
        let zg = Tensor::randn(&[n], &mut rg, &dev).unwrap().to_vec_f32().unwrap();
        for (a, b) in zg.iter().zip(&z) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "normal n={n}: {a} vs {b}");
        }
        assert_eq!(rc.state(), rg.state(), "counter after randn n={n}");
    }
    let x = randn(&[5, 9], 100);
    let d = x.dropout(0.3, true, &mut rc).unwrap().to_vec_f32().unwrap();
    let dg = x.to_device(&dev).unwrap().dropout(0.3, true, &mut rg).unwrap().to_vec_f32().unwrap();
    assert_close("dropout", &dg, &d, 1e-6);
    assert_eq!(rc.state(), rg.state());
    let i = Tensor::randint(&[10], -3, 9, &mut rc, &CPU).unwrap().to_vec_i64().unwrap();
    let ig = Tensor::randint(&[10], -3, 9, &mut rg, &dev).unwrap();
    assert_eq!((ig.device(), ig.to_vec_i64().unwrap()), (dev, i));
}

// ----- errors -----------------------------------------------------------------------------

#[test]
fn gpu_mixed_devices_are_errors() {
    let _p = PRECISION.read().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device("gpu_mixed_devices_are_errors") else { return };
    let (c, g) = (randn(&[2, 3], 101), randn(&[2, 3], 102).to_device(&dev).unwrap());
    assert!(matches!(c.add(&g), Err(Error::DeviceMismatch { .. })));
    assert!(matches!(g.mul(&c), Err(Error::DeviceMismatch { .. })));
    assert!(matches!(g.matmul(&c.t().unwrap()), Err(Error::DeviceMismatch { .. })));
    assert!(Tensor::cat(&[&c, &g], 0).is_err());
    assert!(Tensor::where_cond(&g, &c, &g).is_err());
    assert!(g.linear(&c, None).is_err());
    let i64s = Tensor::from_vec_i64(vec![1, 2], &[2], &dev).unwrap();
    assert!(matches!(i64s.to_dtype(DType::F32), Err(Error::NotImplementedOnDevice { .. })));
}

/// Runs on every machine: what a CUDA request gives where no GPU is usable.
#[test]
fn cuda_requests_without_a_gpu_are_cuda_unavailable() {
    // No machine has 4096 GPUs: this ordinal is always refused, with one line.
    let e = Tensor::zeros(&[2], &Device::Cuda(4096)).unwrap_err();
    assert!(matches!(e, Error::CudaUnavailable { ordinal: 4096, .. }), "{e}");
    assert_eq!(e.to_string().lines().count(), 1, "{e}");
    if sparsedm_tensor::cuda::is_available() {
        return;
    }
    let dev = Device::Cuda(0);
    for r in [
        dev.ensure_available().err(),
        Tensor::zeros(&[2], &dev).err(),
        Tensor::from_vec(vec![1.0], &[1], &dev).err(),
        randn(&[2], 1).to_device(&dev).err(),
        Tensor::randn(&[2], &mut Rng::new(1), &dev).err(),
    ] {
        let e = r.expect("a CUDA request without a GPU succeeded");
        assert!(matches!(e, Error::CudaUnavailable { ordinal: 0, .. }), "{e}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
}
