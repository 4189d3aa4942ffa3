//! GPU parity of every kernel launcher of `sparsedm-kernels` against the CPU implementation the
//! rest of the project uses (`sparsedm-tensor` ops, `sparsedm-layers` masks, the CPU `Rng`, the
//! CPU AdamW formula), on a real device. Without a GPU each test prints why and returns; with
//! `SPARSEDM_REQUIRE_GPU=1` (set by the GPU bundle's run.sh) a missing GPU fails instead.
//!
//! The same kernels also run on the CPU under emulation in `kernels_emulated_*.rs`; this file
//! checks what emulation cannot: the PTX as the driver compiles it, launch configurations, cuBLAS.

use std::sync::Arc;

use sparsedm_kernels::abi::{SdmLayout, binary, reduce, unary};
use sparsedm_kernels::gemm::{F32Math, GemmShape, Operand, gemm};
use sparsedm_kernels::ops;
use sparsedm_kernels::testing::gpu_or_skip;
use sparsedm_kernels::{DeviceBuffer, Gpu, GpuDType};
use sparsedm_layers::layout::WeightLayout;
use sparsedm_layers::mask::{NonDivisible, compute_mask};
use sparsedm_layers::pattern::NmPattern;
use sparsedm_tensor::{Device, Rng, Tensor};

const CPU: Device = Device::Cpu;

fn gpu(test: &str) -> Option<Arc<Gpu>> {
    gpu_or_skip(test)
}

fn randn(n: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed).normal_vec(n)
}

fn up(g: &Gpu, v: &[f32]) -> DeviceBuffer {
    g.upload(v).expect("upload")
}

fn down(g: &Gpu, b: &DeviceBuffer, n: usize) -> Vec<f32> {
    g.download::<f32>(b, 0, n).expect("download")
}

fn out(g: &Gpu, n: usize) -> DeviceBuffer {
    g.alloc(n * 4).expect("alloc")
}

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &CPU).expect("tensor")
}

/// Largest |a − b| / (1 + |b|); NaNs must coincide.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f32, 0usize);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        if a.is_nan() || b.is_nan() {
            assert!(a.is_nan() && b.is_nan(), "{what}[{i}]: got {a}, want {b}");
            continue;
        }
        if a == b {
            continue;
        }
        let e = (a - b).abs() / (1.0 + b.abs());
        if e > worst.0 || e.is_nan() {
            worst = (e, i);
        }
    }
    assert!(worst.0 <= tol, "{what}: error {:.3e} at {} (got {}, want {})", worst.0, worst.1, got[worst.1], want[worst.1]);
}

fn contiguous(shape: &[usize]) -> SdmLayout {
    SdmLayout::contiguous(shape).expect("rank")
}

#[test]
fn gpu_gemm_f32_all_transposes_and_batches_match_cpu_matmul() {
    let Some(g) = gpu("gpu_gemm_f32") else { return };
    let (b, m, n, k) = (3, 37, 29, 45);
    let a = randn(b * m * k, 1);
    let bm = randn(b * k * n, 2);
    let want = t(&a, &[b, m, k]).matmul(&t(&bm, &[b, k, n])).unwrap().to_vec_f32().unwrap();
    // Transposed storage of the same operands.
    let at: Vec<f32> = (0..b)
        .flat_map(|z| (0..k).flat_map(move |kk| (0..m).map(move |i| (z, i, kk))))
        .map(|(z, i, kk)| a[z * m * k + i * k + kk])
        .collect();
    let bt: Vec<f32> = (0..b)
        .flat_map(|z| (0..n).flat_map(move |j| (0..k).map(move |kk| (z, kk, j))))
        .map(|(z, kk, j)| bm[z * k * n + kk * n + j])
        .collect();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (da, db) = (up(&g, if ta { &at } else { &a }), up(&g, if tb { &bt } else { &bm }));
        let mut c = out(&g, b * m * n);
        let s = GemmShape { m, n, k, batch: b, input: GpuDType::F32, output: GpuDType::F32, f32_math: F32Math::Exact };
        let oa = Operand { buf: &da, offset: 0, ld: if ta { m } else { k }, batch_stride: m * k, trans: ta };
        let ob = Operand { buf: &db, offset: 0, ld: if tb { k } else { n }, batch_stride: k * n, trans: tb };
        gemm(&g, &s, 1.0, oa, ob, 0.0, &mut c, 0, n, m * n).unwrap();
        assert_close(&format!("gemm trans=({ta},{tb})"), &down(&g, &c, b * m * n), &want, 1e-5);
    }
    // Broadcast B over the batch (stride 0) and accumulate with beta = 1.
    let db = up(&g, &bm[..k * n]);
    let da = up(&g, &a);
    let mut c = up(&g, &vec![1.0; b * m * n]);
    let s = GemmShape { m, n, k, batch: b, input: GpuDType::F32, output: GpuDType::F32, f32_math: F32Math::Exact };
    gemm(
        &g,
        &s,
        2.0,
        Operand { buf: &da, offset: 0, ld: k, batch_stride: m * k, trans: false },
        Operand { buf: &db, offset: 0, ld: n, batch_stride: 0, trans: false },
        1.0,
        &mut c,
        0,
        n,
        m * n,
    )
    .unwrap();
    let w0 = t(&a, &[b, m, k]).matmul(&t(&bm[..k * n], &[k, n])).unwrap().affine(2.0, 1.0).unwrap().to_vec_f32().unwrap();
    assert_close("gemm broadcast + beta", &down(&g, &c, b * m * n), &w0, 1e-5);
    // An operand too short for its shape is an error, not an out-of-bounds read.
    let short = up(&g, &a[..10]);
    let err = gemm(
        &g,
        &s,
        1.0,
        Operand { buf: &short, offset: 0, ld: k, batch_stride: m * k, trans: false },
        Operand { buf: &db, offset: 0, ld: n, batch_stride: 0, trans: false },
        0.0,
        &mut c,
        0,
        n,
        m * n,
    );
    assert!(err.is_err());
}

#[test]
fn gpu_gemm_half_precisions_match_f32_within_rounding() {
    let Some(g) = gpu("gpu_gemm_half") else { return };
    let (m, n, k) = (64, 48, 96);
    let a = randn(m * k, 3);
    let b = randn(k * n, 4);
    let want = t(&a, &[m, k]).matmul(&t(&b, &[k, n])).unwrap().to_vec_f32().unwrap();
    for dt in [GpuDType::F16, GpuDType::BF16] {
        let (fa, fb) = (up(&g, &a), up(&g, &b));
        let (mut ha, mut hb) = (g.alloc(m * k * 2).unwrap(), g.alloc(k * n * 2).unwrap());
        ops::copy::cast(&g, m * k, GpuDType::F32, &fa, dt, &mut ha).unwrap();
        ops::copy::cast(&g, k * n, GpuDType::F32, &fb, dt, &mut hb).unwrap();
        let mut c = out(&g, m * n);
        let s = GemmShape { m, n, k, batch: 1, input: dt, output: GpuDType::F32, f32_math: F32Math::Exact };
        gemm(
            &g,
            &s,
            1.0,
            Operand { buf: &ha, offset: 0, ld: k, batch_stride: 0, trans: false },
            Operand { buf: &hb, offset: 0, ld: n, batch_stride: 0, trans: false },
            0.0,
            &mut c,
            0,
            n,
            0,
        )
        .unwrap();
        // Inputs rounded to 8 (bf16) or 11 (f16) bits: relative error ~ sqrt(k)·2^-8.
        let tol = if dt == GpuDType::BF16 { 0.1 } else { 0.01 };
        assert_close(&format!("gemm {dt}"), &down(&g, &c, m * n), &want, tol);
    }
}

#[test]
fn gpu_copy_cast_fill_and_strided_views() {
    let Some(g) = gpu("gpu_copy") else { return };
    let x = randn(6 * 7, 5);
    let dx = up(&g, &x);
    // Transpose [6,7] -> [7,6] through strides.
    let src = SdmLayout::new(&[7, 6], &[1, 7], 0).unwrap();
    let mut y = out(&g, 42);
    ops::copy::copy_strided(&g, GpuDType::F32, &dx, &src, &mut y, &contiguous(&[7, 6])).unwrap();
    let want = t(&x, &[6, 7]).t().unwrap().contiguous().unwrap().to_vec_f32().unwrap();
    assert_eq!(down(&g, &y, 42), want);
    // Casts round to nearest even like `half`.
    for dt in [GpuDType::F16, GpuDType::BF16] {
        let mut h = g.alloc(42 * 2).unwrap();
        ops::copy::cast(&g, 42, GpuDType::F32, &dx, dt, &mut h).unwrap();
        let mut back = out(&g, 42);
        ops::copy::cast(&g, 42, dt, &h, GpuDType::F32, &mut back).unwrap();
        let want: Vec<f32> = match dt {
            GpuDType::F16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
            _ => x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
        };
        assert_eq!(down(&g, &back, 42), want, "{dt} round trip");
    }
    ops::copy::fill(&g, GpuDType::F32, 42, 2.5, &mut y).unwrap();
    assert!(down(&g, &y, 42).iter().all(|&v| v == 2.5));
    // A view reaching past its buffer is refused.
    let far = SdmLayout::new(&[7, 7], &[1, 7], 0).unwrap();
    assert!(ops::copy::copy_strided(&g, GpuDType::F32, &dx, &far, &mut y, &contiguous(&[7, 7])).is_err());
}

#[test]
fn gpu_unary_and_binary_ops_match_cpu() {
    let Some(g) = gpu("gpu_elementwise") else { return };
    let n = 1000;
    let mut x = randn(n, 6);
    x[3] = f32::NAN;
    x[4] = f32::INFINITY;
    x[5] = -0.0;
    let xt = t(&x, &[n]);
    let dx = up(&g, &x);
    let pos: Vec<f32> = x.iter().map(|v| v.abs() + 0.1).collect();
    let (post, dpos) = (t(&pos, &[n]), up(&g, &pos));
    let cases: Vec<(&str, i32, f32, f32, &Tensor, &DeviceBuffer, Tensor)> = vec![
        ("neg", unary::NEG, 0.0, 0.0, &xt, &dx, xt.neg().unwrap()),
        ("exp", unary::EXP, 0.0, 0.0, &xt, &dx, xt.exp().unwrap()),
        ("log", unary::LOG, 0.0, 0.0, &post, &dpos, post.log().unwrap()),
        ("sqrt", unary::SQRT, 0.0, 0.0, &post, &dpos, post.sqrt().unwrap()),
        ("rsqrt", unary::RSQRT, 0.0, 0.0, &post, &dpos, post.rsqrt().unwrap()),
        ("powf", unary::POWF, 1.5, 0.0, &post, &dpos, post.powf(1.5).unwrap()),
        ("sqr", unary::SQR, 0.0, 0.0, &xt, &dx, xt.sqr().unwrap()),
        ("abs", unary::ABS, 0.0, 0.0, &xt, &dx, xt.abs().unwrap()),
        ("tanh", unary::TANH, 0.0, 0.0, &xt, &dx, xt.tanh().unwrap()),
        ("sigmoid", unary::SIGMOID, 0.0, 0.0, &xt, &dx, xt.sigmoid().unwrap()),
        ("relu", unary::RELU, 0.0, 0.0, &xt, &dx, xt.relu().unwrap()),
        ("gelu", unary::GELU, 0.0, 0.0, &xt, &dx, xt.gelu().unwrap()),
        ("silu", unary::SILU, 0.0, 0.0, &xt, &dx, xt.silu().unwrap()),
        ("affine", unary::AFFINE, 3.0, -1.0, &xt, &dx, xt.affine(3.0, -1.0).unwrap()),
        ("clamp", unary::CLAMP, -0.5, 0.5, &xt, &dx, xt.clamp(-0.5, 0.5).unwrap()),
    ];
    for (name, op, a, b, input, buf, want) in cases {
        let mut y = out(&g, n);
        ops::elementwise::unary(&g, GpuDType::F32, op, a, b, buf, &contiguous(&[n]), &mut y).unwrap();
        let _ = input;
        assert_close(name, &down(&g, &y, n), &want.to_vec_f32().unwrap(), 2e-6);
    }
    // Binary with broadcasting: [20, 50] ∘ [50] (row vector, stride 0 over rows).
    let (r, c) = (20, 50);
    let a = randn(r * c, 7);
    let b: Vec<f32> = randn(c, 8).iter().map(|v| v.abs() + 0.5).collect();
    let (da, db) = (up(&g, &a), up(&g, &b));
    let bl = SdmLayout::new(&[r, c], &[0, 1], 0).unwrap();
    let (at, bt) = (t(&a, &[r, c]), t(&b, &[c]));
    for (name, op, want) in [
        ("add", binary::ADD, at.add(&bt).unwrap()),
        ("sub", binary::SUB, at.sub(&bt).unwrap()),
        ("mul", binary::MUL, at.mul(&bt).unwrap()),
        ("div", binary::DIV, at.div(&bt).unwrap()),
        ("maximum", binary::MAX, at.maximum(&bt).unwrap()),
    ] {
        let mut y = out(&g, r * c);
        ops::elementwise::binary(&g, GpuDType::F32, op, &da, &contiguous(&[r, c]), &db, &bl, &mut y).unwrap();
        assert_close(name, &down(&g, &y, r * c), &want.to_vec_f32().unwrap(), 1e-6);
    }
}

#[test]
fn gpu_activation_backward_ops_match_cpu_autograd() {
    let Some(g) = gpu("gpu_activation_bwd") else { return };
    let n = 777;
    let x = randn(n, 9);
    let gy = randn(n, 10);
    let (dx, dgy) = (up(&g, &x), up(&g, &gy));
    type Act = fn(&Tensor) -> sparsedm_tensor::Result<Tensor>;
    let acts: [(&str, i32, Act); 2] = [("gelu", binary::GELU_BWD, Tensor::gelu), ("silu", binary::SILU_BWD, Tensor::silu)];
    for (name, op, f) in acts {
        let v = t(&x, &[n]).to_var();
        let y = f(&v).unwrap().mul(&t(&gy, &[n])).unwrap().sum_all().unwrap();
        let want = y.backward().unwrap().get(&v).unwrap().to_vec_f32().unwrap();
        let mut out_b = out(&g, n);
        ops::elementwise::binary(&g, GpuDType::F32, op, &dgy, &contiguous(&[n]), &dx, &contiguous(&[n]), &mut out_b).unwrap();
        assert_close(name, &down(&g, &out_b, n), &want, 1e-5);
    }
}

#[test]
fn gpu_reductions_match_cpu() {
    let Some(g) = gpu("gpu_reduce") else { return };
    let (o, r, i) = (5, 333, 7);
    let x = randn(o * r * i, 11);
    let dx = up(&g, &x);
    let xt = t(&x, &[o, r, i]);
    let cases = [
        ("sum", reduce::SUM, xt.sum_dims(&[1], false).unwrap()),
        ("mean", reduce::MEAN, xt.mean_dims(&[1], false).unwrap()),
        ("max", reduce::MAX, xt.max_dim(1, false).unwrap()),
    ];
    for (name, op, want) in cases {
        let mut y = out(&g, o * i);
        ops::reduce::reduce(&g, GpuDType::F32, o, r, i, op, &dx, &mut y).unwrap();
        assert_close(name, &down(&g, &y, o * i), &want.to_vec_f32().unwrap(), 1e-5);
    }
    // A long full reduction (one output) and determinism.
    let n = 1 << 20;
    let big = randn(n, 12);
    let dbig = up(&g, &big);
    let mut y1 = out(&g, 1);
    let mut y2 = out(&g, 1);
    ops::reduce::reduce(&g, GpuDType::F32, 1, n, 1, reduce::SUM, &dbig, &mut y1).unwrap();
    ops::reduce::reduce(&g, GpuDType::F32, 1, n, 1, reduce::SUM, &dbig, &mut y2).unwrap();
    let want: f64 = big.iter().map(|&v| v as f64).sum();
    let (a, b) = (down(&g, &y1, 1)[0], down(&g, &y2, 1)[0]);
    assert_eq!(a.to_bits(), b.to_bits(), "sum is deterministic");
    assert!((a as f64 - want).abs() < 1e-2, "sum {a} vs {want}");
}

#[test]
fn gpu_softmax_and_standardize_match_cpu() {
    let Some(g) = gpu("gpu_softmax_norm") else { return };
    let (rows, cols) = (67, 513);
    let x: Vec<f32> = randn(rows * cols, 13).iter().map(|v| v * 4.0).collect();
    let gy = randn(rows * cols, 14);
    let (dx, dgy) = (up(&g, &x), up(&g, &gy));
    for log in [false, true] {
        let v = t(&x, &[rows, cols]).to_var();
        let y = if log { v.log_softmax(1) } else { v.softmax(1) }.unwrap();
        let loss = y.mul(&t(&gy, &[rows, cols])).unwrap().sum_all().unwrap();
        let gx_want = loss.backward().unwrap().get(&v).unwrap().to_vec_f32().unwrap();
        let mut dy = out(&g, rows * cols);
        ops::softmax::softmax(&g, GpuDType::F32, log, rows, cols, &dx, &mut dy).unwrap();
        assert_close(if log { "log_softmax" } else { "softmax" }, &down(&g, &dy, rows * cols), &y.to_vec_f32().unwrap(), 2e-6);
        let mut dgx = out(&g, rows * cols);
        ops::softmax::softmax_bwd(&g, GpuDType::F32, log, rows, cols, &dy, &dgy, &mut dgx).unwrap();
        assert_close("softmax backward", &down(&g, &dgx, rows * cols), &gx_want, 1e-5);
    }
    let v = t(&x, &[rows, cols]).to_var();
    let y = v.standardize_last(1e-5).unwrap();
    let loss = y.mul(&t(&gy, &[rows, cols])).unwrap().sum_all().unwrap();
    let gx_want = loss.backward().unwrap().get(&v).unwrap().to_vec_f32().unwrap();
    let (mut dy, mut mean, mut rstd) = (out(&g, rows * cols), out(&g, rows), out(&g, rows));
    ops::norm::standardize_fwd(&g, GpuDType::F32, rows, cols, 1e-5, &dx, &mut dy, &mut mean, &mut rstd).unwrap();
    assert_close("standardize", &down(&g, &dy, rows * cols), &y.to_vec_f32().unwrap(), 1e-5);
    let mut dgx = out(&g, rows * cols);
    ops::norm::standardize_bwd(&g, GpuDType::F32, rows, cols, &dy, &rstd, &dgy, &mut dgx).unwrap();
    assert_close("standardize backward", &down(&g, &dgx, rows * cols), &gx_want, 1e-4);
}

#[test]
fn gpu_conv2d_via_im2col_and_gemm_matches_cpu_conv2d() {
    let Some(g) = gpu("gpu_conv") else { return };
    use ops::conv::ConvGeometry;
    let (n, c, h, w, co) = (2, 5, 11, 9, 7);
    let geo = ConvGeometry { n, c, h, w, kh: 3, kw: 3, stride: (2, 1), padding: (1, 1) };
    let (oh, ow) = geo.output().unwrap();
    let x = randn(n * c * h * w, 15);
    let wt = randn(co * c * 9, 16);
    let want = t(&x, &[n, c, h, w]).conv2d(&t(&wt, &[co, c, 3, 3]), None, (2, 1), (1, 1)).unwrap().to_vec_f32().unwrap();
    let (dx, dw) = (up(&g, &x), up(&g, &wt));
    let kk = geo.col_rows();
    let mut cols = out(&g, n * kk * oh * ow);
    ops::conv::im2col(&g, GpuDType::F32, &geo, &dx, &mut cols).unwrap();
    let mut y = out(&g, n * co * oh * ow);
    // y[b] [co, oh·ow] = W [co, kk] · cols[b] [kk, oh·ow]
    let s = GemmShape { m: co, n: oh * ow, k: kk, batch: n, input: GpuDType::F32, output: GpuDType::F32, f32_math: F32Math::Exact };
    gemm(
        &g,
        &s,
        1.0,
        Operand { buf: &dw, offset: 0, ld: kk, batch_stride: 0, trans: false },
        Operand { buf: &cols, offset: 0, ld: oh * ow, batch_stride: kk * oh * ow, trans: false },
        0.0,
        &mut y,
        0,
        oh * ow,
        co * oh * ow,
    )
    .unwrap();
    assert_close("conv2d", &down(&g, &y, n * co * oh * ow), &want, 1e-5);
    // col2im is im2col's adjoint: <col2im(u), x> = <u, im2col(x)>.
    let u = randn(n * kk * oh * ow, 17);
    let du = up(&g, &u);
    let mut back = out(&g, n * c * h * w);
    ops::conv::col2im(&g, GpuDType::F32, &geo, &du, &mut back).unwrap();
    let lhs: f64 = down(&g, &back, n * c * h * w).iter().zip(&x).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
    let rhs: f64 = down(&g, &cols, n * kk * oh * ow).iter().zip(&u).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
    assert!((lhs - rhs).abs() < 1e-3 * (1.0 + rhs.abs()), "adjoint: {lhs} vs {rhs}");
}

#[test]
fn gpu_pooling_and_resizing_match_cpu() {
    let Some(g) = gpu("gpu_pool") else { return };
    use ops::pool::PoolGeometry;
    let (nc, h, w) = (6, 13, 10);
    let x = randn(nc * h * w, 18);
    let xt = t(&x, &[1, nc, h, w]);
    let dx = up(&g, &x);
    let geo = PoolGeometry { nc, h, w, k: 3, s: 2, p: 1 };
    let (oh, ow) = geo.output().unwrap();
    let (mut y, mut arg) = (out(&g, nc * oh * ow), g.alloc(nc * oh * ow * 8).unwrap());
    ops::pool::maxpool2d_fwd(&g, &geo, &dx, &mut y, &mut arg).unwrap();
    assert_close("max_pool2d", &down(&g, &y, nc * oh * ow), &xt.max_pool2d(3, 2, 1).unwrap().to_vec_f32().unwrap(), 0.0);
    for cip in [true, false] {
        let mut y = out(&g, nc * oh * ow);
        ops::pool::avgpool2d_fwd(&g, &geo, cip, &dx, &mut y).unwrap();
        assert_close("avg_pool2d", &down(&g, &y, nc * oh * ow), &xt.avg_pool2d(3, 2, 1, cip).unwrap().to_vec_f32().unwrap(), 1e-6);
    }
    let mut y = out(&g, nc * h * w * 4);
    ops::pool::upsample_nearest2d(&g, nc, h, w, 2, &dx, &mut y).unwrap();
    assert_close("upsample", &down(&g, &y, nc * h * w * 4), &xt.upsample_nearest2d(2).unwrap().to_vec_f32().unwrap(), 0.0);
    let (rh, rw) = (29, 17);
    let mut y = out(&g, nc * rh * rw);
    ops::pool::resize_bilinear(&g, nc, h, w, rh, rw, &dx, &mut y).unwrap();
    assert_close("resize_bilinear", &down(&g, &y, nc * rh * rw), &xt.resize_bilinear(rh, rw).unwrap().to_vec_f32().unwrap(), 1e-6);
}

#[test]
fn gpu_index_select_and_its_gradient_match_cpu() {
    let Some(g) = gpu("gpu_index") else { return };
    let (rows, dim) = (11, 24);
    let table = randn(rows * dim, 19);
    let idx: Vec<i64> = vec![3, 0, 10, 3, 7, 3];
    let di = g.upload(&idx).unwrap();
    let dt = up(&g, &table);
    let mut y = out(&g, idx.len() * dim);
    ops::index::index_select(&g, GpuDType::F32, 1, idx.len(), dim, rows, &di, &dt, &mut y).unwrap();
    let v = t(&table, &[rows, dim]).to_var();
    let ids = Tensor::from_vec_i64(idx.clone(), &[idx.len()], &CPU).unwrap();
    let sel = v.index_select(0, &ids).unwrap();
    assert_close("index_select", &down(&g, &y, idx.len() * dim), &sel.to_vec_f32().unwrap(), 0.0);
    let gy = randn(idx.len() * dim, 20);
    let want = sel.mul(&t(&gy, &[idx.len(), dim])).unwrap().sum_all().unwrap().backward().unwrap().get(&v).unwrap().to_vec_f32().unwrap();
    let dgy = up(&g, &gy);
    let mut gx = out(&g, rows * dim);
    ops::index::index_add_bwd(&g, 1, idx.len(), dim, rows, &di, &dgy, &mut gx).unwrap();
    assert_close("index_select backward", &down(&g, &gx, rows * dim), &want, 1e-6);
}

#[test]
fn gpu_adamw_and_ema_follow_the_cpu_formulas() {
    let Some(g) = gpu("gpu_optim") else { return };
    let n = 4099;
    let (mut p, grad, mut m, mut v) = (randn(n, 21), randn(n, 22), vec![0f32; n], vec![0f32; n]);
    let (dp, dg, dm, dv) = (up(&g, &p), up(&g, &grad), up(&g, &m), up(&g, &v));
    let (mut dp, mut dm, mut dv) = (dp, dm, dv);
    for step in 1..=3u64 {
        let t = sparsedm_tensor::AdamWScalars::new(1e-3, (0.9, 0.999), 1e-8, 0.03, step);
        let s = ops::optim::AdamWScalars {
            lr: t.lr,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            decay: t.decay,
            step_size: t.step_size,
            bc2_sqrt: t.bc2_sqrt,
        };
        ops::optim::adamw_step(&g, n, &s, &mut dp, &dg, &mut dm, &mut dv).unwrap();
        // The CPU AdamW of sparsedm-train, operation for operation.
        for i in 0..n {
            let gi = grad[i];
            p[i] *= s.decay;
            m[i] += (1.0 - s.beta1) * (gi - m[i]);
            v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * gi * gi;
            let denom = v[i].sqrt() / s.bc2_sqrt + s.eps;
            p[i] -= s.step_size * m[i] / denom;
        }
    }
    assert_close("adamw params", &down(&g, &dp, n), &p, 1e-6);
    assert_close("adamw exp_avg", &down(&g, &dm, n), &m, 1e-6);
    assert_close("adamw exp_avg_sq", &down(&g, &dv, n), &v, 1e-6);
    let mut e = randn(n, 23);
    let mut de = up(&g, &e);
    ops::optim::ema_update(&g, n, 0.9999, &mut de, &dp).unwrap();
    for (ei, pi) in e.iter_mut().zip(&p) {
        *ei = 0.9999 * *ei + (1.0 - 0.9999) * pi;
    }
    assert_close("ema", &down(&g, &de, n), &e, 1e-6);
}

#[test]
fn gpu_nm_masks_and_srste_gradient_match_the_layers_crate() {
    let Some(g) = gpu("gpu_nm_mask") else { return };
    // Linear and conv layouts, with ties and a NaN.
    for (shape, pat) in [(vec![48usize, 64], "2:4"), (vec![16, 32, 3, 3], "2:4"), (vec![8, 32], "1:32"), (vec![8, 64], "7:8")] {
        let layout = WeightLayout::from_shape(&shape).unwrap();
        let pattern: NmPattern = pat.parse().unwrap();
        let n: usize = shape.iter().product();
        let mut w: Vec<f32> = randn(n, 24).iter().map(|v| (v * 4.0).round() / 4.0).collect();
        w[5] = f32::NAN;
        let (want, _) = compute_mask(&w, layout, pattern, NonDivisible::LeaveDense).unwrap();
        let (out_f, inp, k) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
        let dw = up(&g, &w);
        let mut dm = out(&g, n);
        let (nn, mm) = (pattern.n(), pattern.m());
        ops::sparse::nm_mask(&g, out_f, inp, k, nn, mm, &dw, &mut dm).unwrap();
        assert_eq!(down(&g, &dm, n), want, "mask {shape:?} {pat}");
    }
    let n = 1000;
    let (gr, w) = (randn(n, 25), randn(n, 26));
    let mask: Vec<f32> = (0..n).map(|i| if i % 4 < 2 { 1.0 } else { 0.0 }).collect();
    let (dgr, dw, dmask) = (up(&g, &gr), up(&g, &w), up(&g, &mask));
    let mut o = out(&g, n);
    ops::sparse::srste_grad(&g, n, 2e-4, &dgr, &dw, &dmask, &mut o).unwrap();
    let want: Vec<f32> = (0..n).map(|i| gr[i] + 2e-4 * (1.0 - mask[i]) * w[i]).collect();
    assert_close("srste_grad", &down(&g, &o, n), &want, 1e-7);
}

#[test]
fn gpu_philox_streams_equal_the_cpu_rng() {
    let Some(g) = gpu("gpu_rng") else { return };
    let n = 10_001;
    let (seed, counter) = (0x1234_5678_9abc_def0u64, 77u64);
    let mut cpu = Rng::from_state(seed, counter);
    let want_u = cpu.uniform_vec(n, -2.0, 3.0);
    let mut y = out(&g, n);
    ops::rng::uniform(&g, n, seed, counter, -2.0, 3.0, &mut y).unwrap();
    assert_eq!(down(&g, &y, n), want_u, "uniforms are bit-identical");
    let counter2 = counter + ops::rng::blocks_used(n);
    assert_eq!(cpu.state(), (seed, counter2), "both advance by ceil(n/4) blocks");
    let want_n = cpu.normal_vec(n);
    ops::rng::normal(&g, n, seed, counter2, &mut y).unwrap();
    assert_close("normals", &down(&g, &y, n), &want_n, 1e-5);
}

#[test]
fn gpu_allocator_reuses_blocks() {
    let Some(g) = gpu("gpu_pool_reuse") else { return };
    // A size class no other test uses (tests share the device and run concurrently, so global
    // miss counts would race): every allocation after the first must get the same cached block.
    let bytes = (37 << 20) + 1;
    let before = g.memory_stats();
    let first = g.alloc(bytes).unwrap().device_ptr();
    for i in 0..100 {
        let b = g.alloc(bytes).unwrap();
        assert_eq!(b.device_ptr(), first, "allocation {i} did not reuse the cached block");
    }
    let after = g.memory_stats();
    assert!(after.hits - before.hits >= 100, "100 same-size allocations hit the cache: {before:?} -> {after:?}");
}
