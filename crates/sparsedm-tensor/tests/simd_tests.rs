//! The CPU kernels give bit-identical results at every vector instruction
//! set this machine has (`sparsedm_tensor::simd`): element-wise maps over
//! contiguous, strided and broadcast operands, softmax, layer norm (and
//! the backward of both, and of GELU), the fused attention, prefix sums and the AdamW/EMA updates, each computed
//! at the baseline level and compared with the AVX2 and AVX-512 levels
//! (skipped, with a line saying so, for a level the CPU lacks).

use sparsedm_tensor::simd::{SimdLevel, force_simd_level};
use sparsedm_tensor::{AdamWScalars, Device, Rng, Tensor};

const DEV: Device = Device::Cpu;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, &mut Rng::new(seed), &DEV).unwrap()
}

/// Every kernel result to compare, flattened.
fn results() -> Vec<(&'static str, Vec<f32>)> {
    // Odd sizes so vector loops have remainders.
    let x = randn(&[5, 37, 23], 1).mul_scalar(3.0).unwrap();
    let y = randn(&[5, 37, 23], 2);
    let bias = randn(&[23], 3);
    let xt = x.transpose(1, 2).unwrap();
    let v = |t: Tensor| t.to_vec_f32().unwrap();
    let mut out = vec![
        ("gelu", v(x.gelu().unwrap())),
        ("silu", v(x.silu().unwrap())),
        ("exp", v(x.exp().unwrap())),
        ("tanh", v(x.tanh().unwrap())),
        ("sigmoid", v(x.sigmoid().unwrap())),
        ("gelu strided", v(xt.gelu().unwrap())),
        ("add", v(x.add(&y).unwrap())),
        ("mul broadcast", v(x.mul(&bias).unwrap())),
        ("div", v(x.div(&y.abs().unwrap().add_scalar(0.5).unwrap()).unwrap())),
        ("sub strided", v(xt.sub(&y.transpose(1, 2).unwrap()).unwrap())),
        ("softmax", v(x.softmax(2).unwrap())),
        ("log_softmax", v(x.log_softmax(2).unwrap())),
        ("layer_norm", v(x.layer_norm(Some(&bias), Some(&bias), 1e-5).unwrap())),
        // The demo model's width, 37 rows (groups of 16 with a partial
        // one, pairs with an odd row out), a large mean.
        ("layer_norm 128", v(randn(&[37, 128], 19).add_scalar(300.0).unwrap().layer_norm(None, None, 1e-5).unwrap())),
        ("sum prefix", v(x.sum_dims(&[0, 1], false).unwrap())),
    ];
    // Backward kernels (softmax, log-softmax, layer norm, GELU): the input's
    // gradient under the loss Σ f(x) ⊙ r.
    let r = randn(&[5, 37, 23], 12);
    let grad = |f: &dyn Fn(&Tensor) -> Tensor| {
        let xv = x.to_var();
        let grads = f(&xv).mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        v(grads.get(&xv).expect("gradient").clone())
    };
    out.push(("softmax bwd", grad(&|t| t.softmax(2).unwrap())));
    out.push(("log_softmax bwd", grad(&|t| t.log_softmax(2).unwrap())));
    out.push(("layer_norm bwd", grad(&|t| t.layer_norm(Some(&bias), Some(&bias), 1e-5).unwrap())));
    out.push(("gelu bwd", grad(&|t| t.gelu().unwrap())));
    let (q, k, vv) = (randn(&[3, 2, 41, 9], 4), randn(&[3, 2, 41, 9], 5), randn(&[3, 2, 41, 7], 6));
    out.push(("attention", v(Tensor::scaled_dot_product_attention(&q, &k, &vv, None).unwrap())));
    // The demo model's heads: the short-sequence kernel at the AVX2 and
    // AVX-512 levels, the gemm path at the baseline.
    let (q, k, vv) = (randn(&[2, 2, 65, 32], 16), randn(&[2, 2, 65, 32], 17), randn(&[2, 2, 65, 32], 18));
    out.push(("attention short", v(Tensor::scaled_dot_product_attention(&q, &k, &vv, None).unwrap())));
    // Several query tiles (1100 keys: 119 queries a tile), the last one partial.
    let (q, k, vv) = (randn(&[1, 1, 300, 5], 13), randn(&[1, 1, 1100, 5], 14), randn(&[1, 1, 1100, 3], 15));
    out.push(("attention tiled", v(Tensor::scaled_dot_product_attention(&q, &k, &vv, None).unwrap())));
    // AdamW and EMA in place on fresh copies.
    let p = randn(&[3001], 7);
    let (m, s2, g) = (randn(&[3001], 8), randn(&[3001], 9).abs().unwrap(), randn(&[3001], 10));
    let sc = AdamWScalars::new(1e-3, (0.9, 0.999), 1e-8, 0.03, 3);
    p.adamw_step_(&g, &m, &s2, &sc).unwrap();
    out.push(("adamw p", v(p.clone())));
    out.push(("adamw m", v(m)));
    out.push(("adamw v", v(s2)));
    let e = randn(&[3001], 11);
    e.ema_update_(&p, 0.99).unwrap();
    out.push(("ema", v(e)));
    out
}

#[test]
fn every_simd_level_gives_the_baseline_bits() {
    assert_eq!(force_simd_level(Some(SimdLevel::Base)), SimdLevel::Base);
    let base = results();
    for level in [SimdLevel::Avx2, SimdLevel::Avx512] {
        let got = force_simd_level(Some(level));
        if got != level {
            eprintln!("skipping {level:?}: this CPU lacks it (best is {got:?})");
            continue;
        }
        for ((name, want), (_, have)) in base.iter().zip(results()) {
            let same = want.iter().zip(&have).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name} at {level:?} differs from the baseline");
        }
    }
    force_simd_level(None);
}
