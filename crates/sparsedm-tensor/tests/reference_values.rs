//! Forward values (and a few backward values) of the less obvious ops
//! against PyTorch 2.11.0 (CPU, float32). The reference file
//! `fixtures/op_refs.safetensors` was produced by `fixtures/make_op_refs.py`
//! (seeded; it records each call, e.g. `F.interpolate(x, size=(29, 31),
//! mode="bilinear", align_corners=False)`); inputs are stored beside the
//! outputs so no PyTorch is needed here.

use sparsedm_tensor::testing::assert_close;
use sparsedm_tensor::{Result, Tensor, load_safetensors};
use std::collections::HashMap;

const TOL: f32 = 1e-5;

fn refs() -> HashMap<String, Tensor> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/op_refs.safetensors");
    load_safetensors(path).expect("reading op_refs.safetensors").into_iter().collect()
}

fn cmp(r: &HashMap<String, Tensor>, key: &str, got: Result<Tensor>, tol: f32) {
    let got = got.unwrap_or_else(|e| panic!("{key}: {e}"));
    let want = &r[key];
    assert_eq!(got.shape(), want.shape(), "{key}: shape");
    assert_close(key, &got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap(), tol);
}

#[test]
fn activations_and_softmax() {
    let r = refs();
    let x = &r["in.img"];
    cmp(&r, "out.gelu", x.gelu(), TOL);
    cmp(&r, "out.silu", x.silu(), TOL);
    cmp(&r, "out.sigmoid", x.sigmoid(), TOL);
    cmp(&r, "out.tanh", x.tanh(), TOL);
    cmp(&r, "out.softmax_w", x.softmax(3), TOL);
    cmp(&r, "out.softmax_c", x.softmax(1), TOL);
    cmp(&r, "out.log_softmax_h", x.log_softmax(2), TOL);
    cmp(&r, "out.var_hw_unbiased", x.var_dims(&[2, 3], false, true), TOL);
}

#[test]
fn norms() {
    let r = refs();
    cmp(&r, "out.layer_norm", r["in.seq"].layer_norm(Some(&r["in.lw"]), Some(&r["in.lb"]), 1e-5), TOL);
    cmp(&r, "out.group_norm", r["in.g"].group_norm(3, Some(&r["in.gw"]), Some(&r["in.gb"]), 1e-6), TOL);
    cmp(&r, "out.batch_norm", r["in.img"].batch_norm_inference(&r["in.rm"], &r["in.rv"], Some(&r["in.w3"]), Some(&r["in.b3"]), 1e-3), TOL);
}

#[test]
fn pools_and_resizes() {
    let r = refs();
    let x = &r["in.img"];
    cmp(&r, "out.avg_pool_incl", x.avg_pool2d(3, 1, 1, true), TOL);
    cmp(&r, "out.avg_pool_excl", x.avg_pool2d(3, 1, 1, false), TOL);
    cmp(&r, "out.avg_pool_excl_s2", x.avg_pool2d(3, 2, 1, false), TOL);
    cmp(&r, "out.max_pool", x.max_pool2d(3, 2, 0), TOL);
    cmp(&r, "out.max_pool_pad", x.max_pool2d(3, 1, 1), TOL);
    cmp(&r, "out.adaptive_avg", x.adaptive_avg_pool2d_1x1(), TOL);
    cmp(&r, "out.upsample_nearest", x.upsample_nearest2d(2), TOL);
    cmp(&r, "out.bilinear_up", x.resize_bilinear(29, 31), TOL);
    cmp(&r, "out.bilinear_down", x.resize_bilinear(4, 5), TOL);
    let small = x.narrow(0, 0, 1).unwrap().narrow(1, 0, 1).unwrap().narrow(2, 0, 7).unwrap().narrow(3, 0, 7).unwrap();
    cmp(&r, "out.bilinear_299", small.resize_bilinear(299, 299), TOL);
    cmp(&r, "out.pad", x.pad(&[(0, 0), (0, 0), (0, 3), (2, 1)], 0.25), TOL);
}

/// Gradients of Σ out ⊙ cot for the listed inputs.
fn grads(out: &Tensor, cot: &Tensor, vars: &[&Tensor]) -> Vec<Tensor> {
    let g = out.mul(cot).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter().map(|v| g.get(v).expect("gradient").clone()).collect()
}

#[test]
fn conv_attention_layer_norm_with_gradients() {
    let r = refs();
    let (x, w, b) = (r["in.img"].to_var(), r["in.cw"].to_var(), r["in.cb"].to_var());
    let y = x.conv2d(&w, Some(&b), (2, 2), (1, 1)).unwrap();
    cmp(&r, "out.conv", Ok(y.clone()), TOL);
    let g = grads(&y, &r["cot.conv"], &[&x, &w, &b]);
    for (key, t) in ["grad.conv.x", "grad.conv.w", "grad.conv.b"].iter().zip(g) {
        cmp(&r, key, Ok(t), 1e-4);
    }

    let (q, k, v) = (r["in.q"].to_var(), r["in.k"].to_var(), r["in.v"].to_var());
    let a = Tensor::scaled_dot_product_attention(&q, &k, &v, None).unwrap();
    cmp(&r, "out.attn", Ok(a.clone()), TOL);
    let g = grads(&a, &r["cot.attn"], &[&q, &k, &v]);
    for (key, t) in ["grad.attn.q", "grad.attn.k", "grad.attn.v"].iter().zip(g) {
        cmp(&r, key, Ok(t), 1e-4);
    }

    let (s, lw, lb) = (r["in.seq"].to_var(), r["in.lw"].to_var(), r["in.lb"].to_var());
    let ln = s.layer_norm(Some(&lw), Some(&lb), 1e-5).unwrap();
    let g = grads(&ln, &r["cot.layer_norm"], &[&s, &lw, &lb]);
    for (key, t) in ["grad.layer_norm.x", "grad.layer_norm.w", "grad.layer_norm.b"].iter().zip(g) {
        cmp(&r, key, Ok(t), 1e-4);
    }
}
