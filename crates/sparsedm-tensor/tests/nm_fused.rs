//! The N:M calls with a pre-norm block's layer norm and residual taken in
//! (`NmFuse`: `y = norm(x)·Wᵀ + b + residual`) against the same work done
//! apart — the `layer_norm` op, the plain kernel, then the sum — bit for
//! bit, on every instruction set and kernel this CPU runs (the row-wise
//! AVX2 kernel fuses both; the other paths run them apart by design, and
//! must still give the same result). Shapes around the 8/16/64-token tiles
//! and the 32-row slabs, with and without every part.

#[path = "../examples/support/nm_data.rs"]
mod nm_data;

use nm_data::{lcg, masked};
use sparsedm_tensor::nm_cpu::{
    Isa, MlpActivation, NmFuse, NmKernel, NmLinear, NormParams, RowNorm, nm_mlp_forward, nm_mlp_forward_fused, nm_mlp_fused_with,
    nm_mlp_with, spmm_fused_with, spmm_kernel_with,
};
use sparsedm_tensor::{Device, Tensor};

const EPS: f32 = 1e-6;

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    // Offset and spread so the norm has a mean and a scale to remove.
    (0..len).map(|_| 0.3 + 3.0 * lcg(&mut s)).collect()
}

/// The `layer_norm` op on `rows` rows of `inp`.
fn layer_norm(x: &[f32], rows: usize, inp: usize, n: &RowNorm<'_>) -> Vec<f32> {
    let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), &[v.len()], &Device::Cpu).unwrap();
    let (w, b) = (n.weight.map(t), n.bias.map(t));
    let x = Tensor::from_vec(x.to_vec(), &[rows, inp], &Device::Cpu).unwrap();
    x.layer_norm(w.as_ref(), b.as_ref(), n.eps).unwrap().to_vec_f32().unwrap()
}

/// Every (instruction set, kernel) this CPU runs.
fn kernels() -> Vec<(Isa, NmKernel)> {
    let mut v = Vec::new();
    for (isa, ok) in Isa::all() {
        if !ok {
            println!("skipping the {isa:?} path: this CPU does not have it");
            continue;
        }
        for k in [NmKernel::Patterns, NmKernel::Rows] {
            if k.runs_on(isa) {
                v.push((isa, k));
            }
        }
    }
    v
}

/// The norms tried: none, affine, scale only, neither part.
fn norms<'a>(w: &'a [f32], b: &'a [f32]) -> [Option<RowNorm<'a>>; 4] {
    [
        None,
        Some(RowNorm { weight: Some(w), bias: Some(b), eps: EPS }),
        Some(RowNorm { weight: Some(w), bias: None, eps: EPS }),
        Some(RowNorm { weight: None, bias: None, eps: 1e-5 }),
    ]
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.to_bits() == w.to_bits(), "{what}: element {i}: fused {g}, apart {w}");
    }
}

#[test]
fn fused_linear_equals_norm_then_kernel_then_add_bit_for_bit() {
    let kernels = kernels();
    let mut checked = 0;
    for &(n, m) in &[(2, 4), (1, 4), (1, 8), (3, 16)] {
        for &inp in &[16, 48, 144] {
            for &out in &[5, 24, 33, 70] {
                let seed = (n * 1000 + m * 100 + inp + out) as u64;
                let w = masked(out, inp, n, m, seed);
                let bias = data(out, seed + 1);
                let layer = NmLinear::new(&w, out, inp, Some(&bias), n, m).unwrap();
                let (nw, nb) = (data(inp, seed + 2), data(inp, seed + 3));
                for rows in [1, 7, 64, 65, 130] {
                    let x = data(rows * inp, seed + 4 + rows as u64);
                    let res = data(rows * out, seed + 5 + rows as u64);
                    for norm in norms(&nw, &nb) {
                        let xn = norm.as_ref().map_or_else(|| x.clone(), |n| layer_norm(&x, rows, inp, n));
                        for residual in [None, Some(res.as_slice())] {
                            let fuse = NmFuse { norm, residual };
                            for &(isa, kernel) in &kernels {
                                let mut want = vec![f32::NAN; rows * out];
                                spmm_kernel_with(isa, kernel, &xn, rows, layer.weight(), Some(&bias), &mut want).unwrap();
                                if let Some(r) = residual {
                                    want.iter_mut().zip(r).for_each(|(y, r)| *y += r);
                                }
                                let mut got = vec![f32::NAN; rows * out];
                                spmm_fused_with(isa, kernel, &x, rows, layer.weight(), Some(&bias), &fuse, &mut got).unwrap();
                                let what = format!(
                                    "{n}:{m} rows {rows} {inp}->{out} {isa:?} {kernel:?} norm {} residual {}",
                                    norm.is_some(),
                                    residual.is_some()
                                );
                                assert_bits(&what, &got, &want);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 4 * 3 * 4 * 5 * 4 * 2 * kernels.len());
}

#[test]
fn fused_mlp_equals_norm_then_mlp_then_add_bit_for_bit() {
    let mut isas: Vec<Isa> = kernels().into_iter().map(|(i, _)| i).collect();
    isas.dedup();
    let mut checked = 0;
    for &(n, m) in &[(2, 4), (1, 8)] {
        for &(inp, hid, out) in &[(32, 24, 8), (48, 200, 40)] {
            let seed = (n * 100 + m + inp + hid) as u64;
            let (w1, w2) = (masked(hid, inp, n, m, seed), masked(out, hid, n, m, seed + 1));
            let fc1 = NmLinear::new(&w1, hid, inp, Some(&data(hid, seed + 2)), n, m).unwrap();
            let fc2 = NmLinear::new(&w2, out, hid, Some(&data(out, seed + 3)), n, m).unwrap();
            let (nw, nb) = (data(inp, seed + 4), data(inp, seed + 5));
            for rows in [1, 9, 64, 130] {
                let x = data(rows * inp, seed + 6);
                let res = data(rows * out, seed + 7);
                for norm in norms(&nw, &nb) {
                    let xn = norm.as_ref().map_or_else(|| x.clone(), |n| layer_norm(&x, rows, inp, n));
                    for residual in [None, Some(res.as_slice())] {
                        for &isa in &isas {
                            let mut want = vec![f32::NAN; rows * out];
                            nm_mlp_with(isa, &fc1, MlpActivation::Gelu, &fc2, &xn, rows, &mut want).unwrap();
                            if let Some(r) = residual {
                                want.iter_mut().zip(r).for_each(|(y, r)| *y += r);
                            }
                            let mut got = vec![f32::NAN; rows * out];
                            let fuse = NmFuse { norm, residual };
                            nm_mlp_fused_with(isa, &fc1, MlpActivation::Gelu, &fc2, &x, rows, &fuse, &mut got).unwrap();
                            let what = format!(
                                "mlp {n}:{m} rows {rows} {inp}->{hid}->{out} {isa:?} norm {} residual {}",
                                norm.is_some(),
                                residual.is_some()
                            );
                            assert_bits(&what, &got, &want);
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 2 * 4 * 4 * 2 * isas.len());
}

/// The tensor calls take `[..., in]` input, `[in]` norm parameters and a
/// `[..., out]` residual (here a strided view, read through a copy), and
/// give what the tensor ops apart give.
#[test]
fn tensor_calls_equal_the_ops_apart_and_check_their_shapes() {
    let cpu = Device::Cpu;
    let (inp, hid, out, n, m) = (64, 96, 64, 1, 4);
    let layer = NmLinear::new(&masked(out, inp, n, m, 7), out, inp, Some(&data(out, 8)), n, m).unwrap();
    let fc2 = NmLinear::new(&masked(out, hid, n, m, 9), out, hid, Some(&data(out, 10)), n, m).unwrap();
    let fc1 = NmLinear::new(&masked(hid, inp, n, m, 11), hid, inp, Some(&data(hid, 12)), n, m).unwrap();
    let x = Tensor::from_vec(data(3 * 70 * inp, 13), &[3, 70, inp], &cpu).unwrap();
    // The residual as a transposed view of a [70, 3, out] buffer.
    let r = Tensor::from_vec(data(70 * 3 * out, 14), &[70, 3, out], &cpu).unwrap().transpose(0, 1).unwrap();
    let (nw, nb) = (Tensor::from_vec(data(inp, 15), &[inp], &cpu).unwrap(), Tensor::from_vec(data(inp, 16), &[inp], &cpu).unwrap());
    let norm = NormParams { weight: Some(&nw), bias: Some(&nb), eps: EPS };
    let xn = x.layer_norm(Some(&nw), Some(&nb), EPS).unwrap();

    let got = layer.forward_tensor_fused(&x, Some(norm), Some(&r)).unwrap();
    let want = r.add(&layer.forward_tensor(&xn).unwrap()).unwrap();
    assert_eq!(got.shape(), &[3, 70, out]);
    assert_bits("linear", &got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap());

    // The MLP may run fused or apart (timed per shape): equal to rounding.
    for _ in 0..4 {
        let got = nm_mlp_forward_fused(&fc1, MlpActivation::Gelu, &fc2, &x, Some(norm), Some(&r)).unwrap().to_vec_f32().unwrap();
        let want = r.add(&nm_mlp_forward(&fc1, MlpActivation::Gelu, &fc2, &xn).unwrap()).unwrap().to_vec_f32().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "mlp element {i}: {g} vs {w}");
        }
    }

    // Shapes that do not fit are errors naming them.
    let bad_r = Tensor::zeros(&[3, 70, out + 1], &cpu).unwrap();
    let e = layer.forward_tensor_fused(&x, None, Some(&bad_r)).unwrap_err().to_string();
    assert!(e.contains("65"), "{e}");
    let short = Tensor::zeros(&[inp - 1], &cpu).unwrap();
    let e = layer.forward_tensor_fused(&x, Some(NormParams { weight: Some(&short), bias: None, eps: EPS }), None).unwrap_err().to_string();
    assert!(e.contains("63"), "{e}");
    let e = nm_mlp_forward_fused(&fc1, MlpActivation::Gelu, &fc2, &x, None, Some(&bad_r)).unwrap_err().to_string();
    assert!(e.contains("65"), "{e}");
    // And at the slice level.
    let mut y = vec![0f32; 2 * out];
    let fuse = NmFuse { norm: None, residual: Some(&[0.0; 3]) };
    let isa = Isa::best();
    assert!(
        spmm_fused_with(isa, NmKernel::for_weight(isa, layer.weight()), &data(2 * inp, 1), 2, layer.weight(), None, &fuse, &mut y).is_err()
    );
    // Empty inputs give empty outputs.
    let e0 = Tensor::zeros(&[0, inp], &cpu).unwrap();
    let r0 = Tensor::zeros(&[0, out], &cpu).unwrap();
    assert_eq!(layer.forward_tensor_fused(&e0, Some(norm), Some(&r0)).unwrap().shape(), &[0, out]);
}
