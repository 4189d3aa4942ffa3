//! N:M compressed weights and the CPU SpMM kernels against the masked dense
//! product computed in f64: every instruction set this CPU has (AVX-512,
//! AVX2+FMA) plus the portable one, patterns from 1:2 to 31:32, shapes that
//! are not multiples of the SIMD width, with and without bias.

use sparsedm_tensor::nm_cpu::{
    Isa, LayerCalls, MlpActivation, NmKernel, NmLinear, NmPath, NmWeight, ROW_BLOCK, chosen_path, dense_linear, file_choice, layer_calls,
    nm_mlp_forward, nm_mlp_with, spmm_kernel_with, spmm_with, spmm_with_slab,
};
use sparsedm_tensor::{Device, Tensor};

/// Tolerance relative to the magnitude of the sum (`Σ|x·w| + |b|`): the
/// paths only differ in summation order and in fused vs separate rounding.
const REL_TOL: f64 = 1e-5;

const PATTERNS: [(usize, usize); 10] = [(1, 2), (2, 4), (1, 4), (1, 8), (4, 8), (2, 8), (3, 16), (31, 32), (1, 32), (16, 32)];

mod xorshift;
use xorshift::Rng;

/// A random `[out, inp]` weight that is `n:m` along `inp` (full groups; a
/// partial tail group stays dense). Some groups get fewer than `n` non-zeros.
fn nm_weight(rng: &mut Rng, out: usize, inp: usize, n: usize, m: usize) -> Vec<f32> {
    let mut w = rng.vec(out * inp);
    for o in 0..out {
        for g in 0..inp / m {
            let grp = &mut w[o * inp + g * m..o * inp + (g + 1) * m];
            let keep = if rng.below(5) == 0 { rng.below(n + 1) } else { n };
            let mut idx: Vec<usize> = (0..m).collect();
            for i in 0..m {
                let j = i + rng.below(m - i);
                idx.swap(i, j);
            }
            for &p in &idx[keep..] {
                grp[p] = 0.0;
            }
        }
    }
    w
}

/// `x·wᵀ + b` in f64 and the per-element scale `Σ|x·w| + |b|`.
fn reference(x: &[f32], rows: usize, w: &[f32], out: usize, inp: usize, bias: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; rows * out];
    let mut s = vec![0f64; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let b = bias.map_or(0.0, |b| b[o] as f64);
            let (mut acc, mut mag) = (b, b.abs());
            for k in 0..inp {
                let p = x[r * inp + k] as f64 * w[o * inp + k] as f64;
                acc += p;
                mag += p.abs();
            }
            y[r * out + o] = acc;
            s[r * out + o] = mag;
        }
    }
    (y, s)
}

fn assert_close(what: &str, got: &[f32], want: &[f64], scale: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= REL_TOL * s.max(f64::MIN_POSITIVE), "{what}: element {i}: got {g}, want {w} (error {err:e}, scale {s:e})");
    }
}

/// The instruction sets to test: each one this CPU has; the others are
/// reported as skipped.
fn isas() -> Vec<Isa> {
    let mut v = Vec::new();
    for (isa, ok) in Isa::all() {
        if ok {
            v.push(isa);
        } else {
            println!("skipping the {isa:?} path: this CPU does not have it");
        }
    }
    v
}

#[test]
fn spmm_matches_masked_dense_for_every_pattern_shape_and_isa() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let isas = isas();
    let mut checked = 0;
    for &(n, m) in &PATTERNS {
        // Full groups, several groups, and a dense tail (in % m != 0).
        for inp in [m, 3 * m, 2 * m + 3] {
            for out in [1, 5, 17, 64] {
                let w = nm_weight(&mut rng, out, inp, n, m);
                let nm = NmWeight::compress(&w, out, inp, n, m).unwrap();
                for rows in [1, 7, 33, 130] {
                    let x = rng.vec(rows * inp);
                    let b = rng.vec(out);
                    for bias in [None, Some(b.as_slice())] {
                        let (want, scale) = reference(&x, rows, &w, out, inp, bias);
                        for &isa in &isas {
                            let mut y = vec![f32::NAN; rows * out];
                            spmm_with(isa, &x, rows, &nm, bias, &mut y).unwrap();
                            let what = format!("{n}:{m} rows {rows} in {inp} out {out} bias {} {isa:?}", bias.is_some());
                            assert_close(&what, &y, &want, &scale);
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, PATTERNS.len() * 3 * 4 * 4 * 2 * isas.len());
}

#[test]
fn both_kernels_match_masked_dense_on_every_isa_that_runs_them() {
    // The row-wise kernel (AVX2) and the pattern kernel, each on every
    // instruction set that has it: several 64-token tiles with a partial
    // last one (130; 100 and 85 leave 36 and 21 tokens: partial tiles of 5
    // and 3 registers), one token, 32-row slabs with a partial last one (70),
    // column chunks of 64 (rounded to m) with a partial last one and a
    // dense tail (in % m != 0).
    let mut rng = Rng(0x5EED);
    let mut rows_kernel_runs = 0;
    for &(n, m) in &PATTERNS {
        for &(rows, inp, out) in &[(130, 5 * m + 3, 70), (1, 9 * m, 33), (64, 300, 8), (100, 2 * m, 40), (85, 4 * m + 1, 9)] {
            let w = nm_weight(&mut rng, out, inp, n, m);
            let nm = NmWeight::compress(&w, out, inp, n, m).unwrap();
            let x = rng.vec(rows * inp);
            let b = rng.vec(out);
            for bias in [None, Some(b.as_slice())] {
                let (want, scale) = reference(&x, rows, &w, out, inp, bias);
                for isa in isas() {
                    for kernel in [NmKernel::Patterns, NmKernel::Rows] {
                        let mut y = vec![f32::NAN; rows * out];
                        let r = spmm_kernel_with(isa, kernel, &x, rows, &nm, bias, &mut y);
                        if !kernel.runs_on(isa) {
                            let e = r.unwrap_err().to_string();
                            assert!(e.contains("row-wise") && e.contains(&format!("{isa:?}")), "{e}");
                            continue;
                        }
                        r.unwrap();
                        let what = format!("{n}:{m} rows {rows} in {inp} out {out} bias {} {isa:?} {kernel:?}", bias.is_some());
                        assert_close(&what, &y, &want, &scale);
                        rows_kernel_runs += usize::from(kernel == NmKernel::Rows);
                    }
                }
            }
        }
    }
    if Isa::Avx2Fma.is_available() {
        assert_eq!(rows_kernel_runs, PATTERNS.len() * 5 * 2);
        assert_eq!(NmKernel::for_weight(Isa::Avx2Fma, &NmWeight::compress(&[1.0, 0.0], 1, 2, 1, 2).unwrap()), NmKernel::Rows);
    } else {
        println!("skipping the row-wise kernel: this CPU has no AVX2 + FMA");
    }
    assert_eq!(NmKernel::for_weight(Isa::Portable, &NmWeight::compress(&[1.0, 0.0], 1, 2, 1, 2).unwrap()), NmKernel::Patterns);
}

#[test]
fn spmm_matches_at_model_like_shapes_with_chunks_and_split_outputs() {
    // Enough columns for several L1 chunks (1024 columns each on AVX2 and
    // the portable path, 256 on AVX-512; 1100 leaves a partial last chunk
    // on all), 257 tokens (one U-ViT-S/2 image:
    // a 1-row last tile), few tiles (output rows split between threads),
    // and many tiles per slab of output rows.
    let mut rng = Rng(7);
    for &(n, m) in &[(2, 4), (1, 4), (1, 8), (3, 16)] {
        for &(rows, inp, out) in &[(257, 512, 96), (65, 1024, 40), (2, 2048, 12), (700, 300, 30), (33, 1100, 20)] {
            let w = nm_weight(&mut rng, out, inp, n, m);
            let nm = NmWeight::compress(&w, out, inp, n, m).unwrap();
            let x = rng.vec(rows * inp);
            let b = rng.vec(out);
            let (want, scale) = reference(&x, rows, &w, out, inp, Some(&b));
            for isa in isas() {
                let mut y = vec![f32::NAN; rows * out];
                spmm_with(isa, &x, rows, &nm, Some(&b), &mut y).unwrap();
                assert_close(&format!("{n}:{m} {rows}x{inp}->{out} {isa:?}"), &y, &want, &scale);
                // One row block per L2 slab: many (slab, token tile) items.
                let mut y = vec![f32::NAN; rows * out];
                spmm_with_slab(isa, 1, &x, rows, &nm, Some(&b), &mut y).unwrap();
                assert_close(&format!("{n}:{m} {rows}x{inp}->{out} {isa:?} small slabs"), &y, &want, &scale);
            }
        }
    }
}

#[test]
fn dense_and_sparse_paths_agree_and_the_choice_is_cached() {
    let mut rng = Rng(11);
    let (rows, inp, out, n, m) = (96, 256, 80, 2, 4);
    let w = nm_weight(&mut rng, out, inp, n, m);
    let b = rng.vec(out);
    let layer = NmLinear::new(&w, out, inp, Some(&b), n, m).unwrap();
    let x = rng.vec(rows * inp);
    let (want, scale) = reference(&x, rows, &w, out, inp, Some(&b));
    let mut yd = vec![f32::NAN; rows * out];
    let mut ys = vec![f32::NAN; rows * out];
    layer.forward_with(NmPath::Dense, &x, rows, &mut yd).unwrap();
    layer.forward_with(NmPath::Sparse, &x, rows, &mut ys).unwrap();
    assert_close("dense path", &yd, &want, &scale);
    assert_close("sparse path", &ys, &want, &scale);
    // Dense and sparse within 1e-5 of each other, relative to the sum's scale.
    let both: Vec<f64> = yd.iter().map(|&v| v as f64).collect();
    assert_close("sparse vs dense", &ys, &both, &scale);

    assert_eq!(chosen_path(layer.key(rows)), None, "no choice before the first forward");
    let mut y = vec![f32::NAN; rows * out];
    layer.forward(&x, rows, &mut y).unwrap();
    let path = chosen_path(layer.key(rows)).expect("the first forward files a choice");
    assert_close(&format!("forward ({path:?})"), &y, &want, &scale);
    // Rows in the same power-of-two bucket reuse the choice.
    assert_eq!(layer.key(rows), layer.key(128));
    let mut y2 = vec![f32::NAN; rows * out];
    layer.forward(&x, rows, &mut y2).unwrap();
    assert_eq!(chosen_path(layer.key(rows)), Some(path));
    assert_close("second forward", &y2, &want, &scale);
}

/// Each N:M layer call counts once, on the path it ran (what `bench
/// --pattern` reports as the layers the N:M kernels ran): a Linear's on
/// the path filed for its shape, tuning included; an MLP's two layers
/// (run apart or fused) as two.
#[test]
fn layer_calls_count_each_layer_on_its_path() {
    let mut rng = Rng(23);
    let (rows, inp, hid, out) = (64, 64, 96, 48);
    let w1 = nm_weight(&mut rng, hid, inp, 1, 4);
    let w2 = nm_weight(&mut rng, out, hid, 1, 4);
    let fc1 = NmLinear::new(&w1, hid, inp, None, 1, 4).unwrap();
    let fc2 = NmLinear::new(&w2, out, hid, None, 1, 4).unwrap();
    let xv = rng.vec(rows * inp);
    let delta = |a: LayerCalls, b: LayerCalls| (b.dense - a.dense, b.sparse - a.sparse);
    let mut y = vec![f32::NAN; rows * hid];
    for _ in 0..2 {
        let before = layer_calls();
        fc1.forward(&xv, rows, &mut y).unwrap();
        let path = chosen_path(fc1.key(rows)).expect("a choice");
        assert_eq!(delta(before, layer_calls()), if path == NmPath::Sparse { (0, 1) } else { (1, 0) }, "one call on {path:?}");
    }
    let x = Tensor::from_vec(xv, &[rows, inp], &Device::Cpu).unwrap();
    // The first MLP call times fc2 (its shape is new), a later one with
    // both layers on the kernels times the two ways (apart or fused): the
    // timing runs are not calls, each MLP call is two.
    for i in 0..3 {
        let before = layer_calls();
        nm_mlp_forward(&fc1, MlpActivation::Gelu, &fc2, &x).unwrap();
        let (d, s) = delta(before, layer_calls());
        assert_eq!(d + s, 2, "MLP call {i}: two layer calls ({d} dense, {s} sparse)");
    }
    // Both layers filed on the kernels: the next call of a new row count
    // times apart against fused (deterministically, whatever the timings).
    let rows2 = 2 * rows;
    let x2 = Tensor::from_vec(rng.vec(rows2 * inp), &[rows2, inp], &Device::Cpu).unwrap();
    file_choice(fc1.key(rows2), NmPath::Sparse);
    file_choice(fc2.key(rows2), NmPath::Sparse);
    let before = layer_calls();
    nm_mlp_forward(&fc1, MlpActivation::Gelu, &fc2, &x2).unwrap();
    assert_eq!(delta(before, layer_calls()), (0, 2), "the MLP call that timed apart against fused is two sparse calls");
}

#[test]
fn forward_tensor_keeps_leading_dims() {
    let mut rng = Rng(5);
    let (inp, out, n, m) = (24, 10, 1, 8);
    let w = nm_weight(&mut rng, out, inp, n, m);
    let layer = NmLinear::new(&w, out, inp, None, n, m).unwrap();
    let xv = rng.vec(2 * 3 * inp);
    let x = Tensor::from_vec(xv.clone(), &[2, 3, inp], &Device::Cpu).unwrap();
    let y = layer.forward_tensor(&x).unwrap();
    assert_eq!(y.shape(), &[2, 3, out]);
    let (want, scale) = reference(&xv, 6, &w, out, inp, None);
    assert_close("forward_tensor", &y.to_vec_f32().unwrap(), &want, &scale);
    let bad = Tensor::from_vec(vec![0.0; 2 * 23], &[2, 23], &Device::Cpu).unwrap();
    assert!(layer.forward_tensor(&bad).is_err());
}

#[test]
fn forward_tensor_reads_views_in_place_or_copied_alike() {
    // A contiguous input is read in place, a transposed view or a
    // narrowed one through a copy: all give the
    // masked dense result, with the bias, on every element of the output
    // (which the kernels write without zeroing it first).
    let mut rng = Rng(21);
    let (inp, out, n, m) = (40, 19, 2, 8);
    let w = nm_weight(&mut rng, out, inp, n, m);
    let b = rng.vec(out);
    let layer = NmLinear::new(&w, out, inp, Some(&b), n, m).unwrap();
    let xv = rng.vec(37 * inp);
    let (want, scale) = reference(&xv, 37, &w, out, inp, Some(&b));
    let x = Tensor::from_vec(xv.clone(), &[37, inp], &Device::Cpu).unwrap();
    // The same values as [inp, 37] transposed back: a non-contiguous view.
    let xt = x.transpose(0, 1).unwrap().contiguous().unwrap().transpose(0, 1).unwrap();
    assert!(!xt.is_contiguous());
    // A narrowed view with an offset: rows 5.. of a larger tensor.
    let mut padded = rng.vec(5 * inp);
    padded.extend_from_slice(&xv);
    let xn = Tensor::from_vec(padded, &[42, inp], &Device::Cpu).unwrap().narrow(0, 5, 37).unwrap();
    for (what, input) in [("contiguous", &x), ("transposed view", &xt), ("narrowed view", &xn)] {
        let y = layer.forward_tensor(input).unwrap();
        assert_eq!(y.shape(), &[37, out]);
        assert_close(what, &y.to_vec_f32().unwrap(), &want, &scale);
    }
}

#[test]
fn dense_linear_matches_reference_and_checks_lengths() {
    let mut rng = Rng(3);
    let (rows, inp, out) = (9, 13, 6);
    let w = rng.vec(out * inp);
    let x = rng.vec(rows * inp);
    let b = rng.vec(out);
    let (want, scale) = reference(&x, rows, &w, out, inp, Some(&b));
    let mut y = vec![f32::NAN; rows * out];
    dense_linear(&x, rows, &w, out, inp, Some(&b), &mut y).unwrap();
    assert_close("dense_linear", &y, &want, &scale);
    assert!(dense_linear(&x, rows, &w, out, inp, Some(&b), &mut y[1..]).is_err());
}

#[test]
fn compressed_format_round_trips() {
    let mut rng = Rng(42);
    for &(n, m) in &PATTERNS {
        for (out, inp) in [(1, m), (7, 4 * m), (9, 2 * m + 1)] {
            let w = nm_weight(&mut rng, out, inp, n, m);
            let c = NmWeight::compress(&w, out, inp, n, m).unwrap();
            assert_eq!(c.expand(), w, "{n}:{m} {out}x{inp}: expand(compress(w)) != w");
            assert_eq!(c.entries_per_row(), (inp / m) * n + inp % m);
            assert_eq!(c.row_blocks(), out.div_ceil(ROW_BLOCK));
            // Checkpoint form: kept values + in-group positions.
            let (vals, pos) = (c.kept_values(), c.positions());
            assert_eq!(vals.len(), out * c.entries_per_row());
            assert_eq!(pos.len(), out * (inp / m) * n);
            assert!(pos.iter().all(|&p| (p as usize) < m));
            let back = NmWeight::from_kept(out, inp, n, m, &vals, &pos).unwrap();
            assert_eq!(back, c, "{n}:{m}: from_kept(kept_values, positions) differs");
            assert_eq!(back.expand(), w);
        }
    }
    // Duplicate or unordered positions are refused.
    let c = NmWeight::compress(&[1.0, 0.0, 2.0, 0.0], 1, 4, 2, 4).unwrap();
    assert_eq!(c.positions(), vec![0, 2]);
    assert!(NmWeight::from_kept(1, 4, 2, 4, &[1.0, 2.0], &[2, 2]).is_err());
    assert!(NmWeight::from_kept(1, 4, 2, 4, &[1.0, 2.0], &[0, 4]).is_err());
    assert!(NmWeight::from_kept(1, 4, 2, 4, &[1.0], &[0, 2]).is_err());
}

#[test]
fn non_nm_weights_and_bad_patterns_are_refused() {
    // Row 1, group 2 (columns 8..12) holds three non-zeros at 2:4.
    let (out, inp) = (3, 16);
    let mut w = vec![0f32; out * inp];
    w[inp + 8] = 1.0;
    w[inp + 9] = -2.0;
    w[inp + 11] = 3.0;
    let err = NmWeight::compress(&w, out, inp, 2, 4).unwrap_err().to_string();
    assert!(err.contains("row 1") && err.contains("group 2") && err.contains("columns 8..12"), "{err}");
    // NaN counts as a non-zero.
    w[inp + 11] = f32::NAN;
    assert!(NmWeight::compress(&w, out, inp, 2, 4).is_err());
    // The same weight is fine at 3:4, and a dense tail is never checked.
    w[inp + 11] = 3.0;
    assert!(NmWeight::compress(&w, out, inp, 3, 4).is_ok());
    assert!(NmWeight::compress(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 1, 6, 1, 4).is_err());
    assert!(NmWeight::compress(&[1.0, 0.0, 0.0, 0.0, 1.0, 1.0], 1, 6, 1, 4).is_ok());
    // Patterns and lengths.
    assert!(NmWeight::compress(&[0.0; 4], 1, 4, 0, 4).is_err());
    assert!(NmWeight::compress(&[0.0; 4], 1, 4, 5, 4).is_err());
    assert!(NmWeight::compress(&[0.0; 64], 1, 64, 1, 64).is_err());
    assert!(NmWeight::compress(&[0.0; 4], 1, 5, 1, 4).is_err());
}

#[test]
fn spmm_checks_lengths_and_unavailable_isas() {
    let c = NmWeight::compress(&[1.0, 0.0, 0.0, 0.0], 1, 4, 1, 4).unwrap();
    let mut y = [0.0; 2];
    assert!(spmm_with(Isa::Portable, &[1.0; 8], 2, &c, None, &mut y).is_ok());
    assert_eq!(y, [1.0, 1.0]);
    assert!(spmm_with(Isa::Portable, &[1.0; 7], 2, &c, None, &mut y).is_err());
    assert!(spmm_with(Isa::Portable, &[1.0; 8], 2, &c, Some(&[1.0, 2.0]), &mut y).is_err());
    for (isa, ok) in Isa::all() {
        assert_eq!(spmm_with(isa, &[1.0; 8], 2, &c, None, &mut y).is_ok(), ok, "{isa:?}");
    }
}

mod checkpoint {
    use super::{Rng, nm_weight};
    use sparsedm_tensor::nm_cpu::{NmValueDtype, is_nm_checkpoint, load_nm_checkpoint_bytes, nm_checkpoint_bytes};
    use sparsedm_tensor::{Device, Tensor};
    use std::collections::HashMap;

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A conv weight `[o, c, kh, kw]` that is n:m along `c` at every kernel position.
    fn nm_conv(rng: &mut Rng, o: usize, c: usize, kh: usize, kw: usize, n: usize, m: usize) -> Vec<f32> {
        // n:m rows in (o, kh, kw, c) order, permuted to (o, c, kh, kw).
        let ohwc = nm_weight(rng, o * kh * kw, c, n, m);
        let mut w = vec![0f32; ohwc.len()];
        for oi in 0..o {
            for ci in 0..c {
                for y in 0..kh {
                    for x in 0..kw {
                        w[((oi * c + ci) * kh + y) * kw + x] = ohwc[((oi * kh + y) * kw + x) * c + ci];
                    }
                }
            }
        }
        w
    }

    #[test]
    fn checkpoint_round_trips_linear_conv_and_dense_tensors() {
        let mut rng = Rng(21);
        let lin = nm_weight(&mut rng, 6, 10, 2, 4); // in % m = 2: dense tail
        let conv = nm_conv(&mut rng, 4, 8, 3, 3, 2, 8);
        let lin3 = nm_weight(&mut rng, 5, 96, 3, 32); // 5-bit positions
        let bias = rng.vec(6);
        let tensors = vec![
            ("b.lin.weight".to_string(), t(lin.clone(), &[6, 10])),
            ("b.lin.bias".to_string(), t(bias.clone(), &[6])),
            ("conv.weight".to_string(), t(conv.clone(), &[4, 8, 3, 3])),
            ("odd.weight".to_string(), t(lin3.clone(), &[5, 96])),
        ];
        let patterns =
            HashMap::from([("b.lin.weight".to_string(), (2, 4)), ("conv.weight".to_string(), (2, 8)), ("odd.weight".to_string(), (3, 32))]);
        let bytes = nm_checkpoint_bytes(&tensors, &patterns, NmValueDtype::F32).unwrap();
        assert!(is_nm_checkpoint(&bytes));
        let loaded = load_nm_checkpoint_bytes(&bytes).unwrap();
        let names: Vec<&str> = loaded.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["b.lin.bias", "b.lin.weight", "conv.weight", "odd.weight"]);
        type Want<'a> = (&'a Vec<f32>, &'a [usize], Option<(usize, usize)>);
        let want: HashMap<&str, Want> = HashMap::from([
            ("b.lin.bias", (&bias, &[6][..], None)),
            ("b.lin.weight", (&lin, &[6, 10][..], Some((2, 4)))),
            ("conv.weight", (&conv, &[4, 8, 3, 3][..], Some((2, 8)))),
            ("odd.weight", (&lin3, &[5, 96][..], Some((3, 32)))),
        ]);
        for l in &loaded {
            let (v, shape, pat) = want[l.name.as_str()];
            assert_eq!(l.tensor.shape(), shape, "{}", l.name);
            assert_eq!(&l.tensor.to_vec_f32().unwrap(), v, "{}", l.name);
            assert_eq!(l.pattern, pat, "{}", l.name);
        }
        // f16 values: the same as rounding the dense weights to f16.
        let bytes16 = nm_checkpoint_bytes(&tensors, &patterns, NmValueDtype::F16).unwrap();
        for l in load_nm_checkpoint_bytes(&bytes16).unwrap() {
            let (v, _, _) = want[l.name.as_str()];
            let r: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
            assert_eq!(l.tensor.to_vec_f32().unwrap(), r, "{} (f16)", l.name);
        }
    }

    #[test]
    fn checkpoint_refuses_bad_input() {
        let w = t(vec![1.0, 1.0, 1.0, 0.0], &[1, 4]);
        let tensors = vec![("w".to_string(), w)];
        let err = nm_checkpoint_bytes(&tensors, &HashMap::from([("w".to_string(), (2, 4))]), NmValueDtype::F32).unwrap_err().to_string();
        assert!(err.contains("w:") && err.contains("row 0, group 0"), "{err}");
        assert!(nm_checkpoint_bytes(&tensors, &HashMap::from([("x".to_string(), (2, 4))]), NmValueDtype::F32).is_err());
        let conv = vec![("c".to_string(), t(vec![0.0; 6], &[1, 6, 1, 1]))];
        assert!(nm_checkpoint_bytes(&conv, &HashMap::from([("c".to_string(), (1, 4))]), NmValueDtype::F32).is_err());
        // A plain safetensors file is not this format.
        let plain = sparsedm_tensor::io::safetensors_bytes(&tensors, None).unwrap();
        assert!(!is_nm_checkpoint(&plain));
        assert!(load_nm_checkpoint_bytes(&plain).is_err());
        assert!(load_nm_checkpoint_bytes(b"not safetensors").is_err());
    }

    /// U-ViT-S/2 (CIFAR-10: width 512, 13 blocks, MLP 2048, 257 tokens) at
    /// 2:4 on the 52 Linears of the `sparsedm-uvit` policy, f16: the
    /// compressed file against a dense f16 file of the same tensors.
    #[test]
    fn uvit_s2_2of4_f16_checkpoint_is_at_most_0_6_of_dense() {
        let mut rng = Rng(77);
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let mut patterns = HashMap::new();
        let mut add = |name: String, shape: &[usize], nm: bool, rng: &mut Rng| {
            let len: usize = shape.iter().product();
            let v = if nm { nm_weight(rng, shape[0], shape[1], 2, 4) } else { rng.vec(len) };
            if nm {
                patterns.insert(name.clone(), (2, 4));
            }
            tensors.push((name, t(v, shape)));
        };
        add("patch_embed.proj.weight".into(), &[512, 3, 2, 2], false, &mut rng);
        add("patch_embed.proj.bias".into(), &[512], false, &mut rng);
        add("pos_embed".into(), &[1, 257, 512], false, &mut rng);
        let blocks: Vec<String> = (0..6)
            .map(|i| format!("in_blocks.{i}"))
            .chain(["mid_block".to_string()])
            .chain((0..6).map(|i| format!("out_blocks.{i}")))
            .collect();
        for b in &blocks {
            for (p, shape, nm) in [
                ("norm1.weight", &[512][..], false),
                ("norm1.bias", &[512], false),
                ("attn.qkv.weight", &[1536, 512], true),
                ("attn.proj.weight", &[512, 512], true),
                ("attn.proj.bias", &[512], false),
                ("norm2.weight", &[512], false),
                ("norm2.bias", &[512], false),
                ("mlp.fc1.weight", &[2048, 512], true),
                ("mlp.fc1.bias", &[2048], false),
                ("mlp.fc2.weight", &[512, 2048], true),
                ("mlp.fc2.bias", &[512], false),
            ] {
                add(format!("{b}.{p}"), shape, nm, &mut rng);
            }
            if b.starts_with("out_blocks") {
                add(format!("{b}.skip_linear.weight"), &[512, 1024], false, &mut rng);
                add(format!("{b}.skip_linear.bias"), &[512], false, &mut rng);
            }
        }
        for (p, shape) in [
            ("norm.weight", &[512][..]),
            ("norm.bias", &[512]),
            ("decoder_pred.weight", &[12, 512]),
            ("decoder_pred.bias", &[12]),
            ("final_layer.weight", &[3, 3, 3, 3]),
            ("final_layer.bias", &[3]),
        ] {
            add(p.into(), shape, false, &mut rng);
        }
        assert_eq!(patterns.len(), 52);
        let dense = nm_checkpoint_bytes(&tensors, &HashMap::new(), NmValueDtype::F16).unwrap();
        let sparse = nm_checkpoint_bytes(&tensors, &patterns, NmValueDtype::F16).unwrap();
        let ratio = sparse.len() as f64 / dense.len() as f64;
        println!("U-ViT-S/2 2:4 f16: compressed {} bytes, dense {} bytes, ratio {ratio:.4}", sparse.len(), dense.len());
        assert!(ratio <= 0.6, "compressed/dense = {ratio}");
        // Loads to the same (f16-rounded) model.
        let loaded = load_nm_checkpoint_bytes(&sparse).unwrap();
        assert_eq!(loaded.len(), tensors.len());
        let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for l in &loaded {
            let want: Vec<f32> = by_name[l.name.as_str()].to_vec_f32().unwrap().iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
            assert_eq!(l.tensor.to_vec_f32().unwrap(), want, "{}", l.name);
        }
    }
}

/// `fc2(gelu(fc1(x)))` as the reference for the fused MLP: each layer in
/// f64, the hidden activations rounded to f32 and put through the
/// library's GELU (itself tested against PyTorch), and a per-output scale
/// that also carries the first layer's rounding through the second
/// (`Σ|w₂|·(|h| + 1.2·scale₁) + |b₂|`; GELU's slope stays below 1.2).
#[allow(clippy::too_many_arguments)]
fn mlp_reference(
    x: &[f32],
    rows: usize,
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
    (inp, hid, out): (usize, usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let (h, s1) = reference(x, rows, w1, hid, inp, Some(b1));
    let h32: Vec<f32> = h.iter().map(|&v| v as f32).collect();
    let g = Tensor::from_vec(h32, &[rows, hid], &Device::Cpu).unwrap().gelu().unwrap().to_vec_f32().unwrap();
    let (y, _) = reference(&g, rows, w2, out, hid, Some(b2));
    let mut scale = vec![0f64; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut m = (b2[o] as f64).abs();
            for k in 0..hid {
                let i = r * hid + k;
                m += (w2[o * hid + k] as f64).abs() * ((g[i] as f64).abs() + 1.2 * s1[i]);
            }
            scale[r * out + o] = m;
        }
    }
    (y, scale)
}

#[test]
fn fused_mlp_matches_the_layers_apart_for_patterns_shapes_and_isas() {
    // Hidden widths that are not a multiple of the row block (padded bias),
    // wide enough for several column chunks in the second layer, token
    // counts around the 16/32/64-token tiles (a 1-row last tile), inputs
    // with a dense tail group.
    let mut rng = Rng(0xA11CE);
    let isas = isas();
    let mut checked = 0;
    for &(n, m) in &[(2, 4), (1, 4), (1, 8), (3, 16)] {
        // (300, …): the first layer spans several column chunks of the
        // row-wise kernel (its sums go through the Yᵀ tile between chunks).
        for &(inp, hid, out) in &[(32, 20, 8), (2 * m + 3, 37, 13), (64, 600, 24), (300, 40, 24)] {
            let w1 = nm_weight(&mut rng, hid, inp, n, m);
            let w2 = nm_weight(&mut rng, out, hid, n, m);
            let (b1, b2) = (rng.vec(hid), rng.vec(out));
            let fc1 = NmLinear::new(&w1, hid, inp, Some(&b1), n, m).unwrap();
            let fc2 = NmLinear::new(&w2, out, hid, Some(&b2), n, m).unwrap();
            for rows in [1, 7, 64, 65, 257] {
                let x = rng.vec(rows * inp);
                let (want, scale) = mlp_reference(&x, rows, &w1, &b1, &w2, &b2, (inp, hid, out));
                for &isa in &isas {
                    let mut y = vec![f32::NAN; rows * out];
                    nm_mlp_with(isa, &fc1, MlpActivation::Gelu, &fc2, &x, rows, &mut y).unwrap();
                    assert_close(&format!("mlp {n}:{m} rows {rows} {inp}->{hid}->{out} {isa:?}"), &y, &want, &scale);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 4 * 4 * 5 * isas.len());
}

#[test]
fn nm_mlp_forward_keeps_leading_dims_and_refuses_mismatched_layers() {
    let mut rng = Rng(5);
    let (inp, hid, out, n, m) = (48, 40, 12, 1, 4);
    let (w1, w2) = (nm_weight(&mut rng, hid, inp, n, m), nm_weight(&mut rng, out, hid, n, m));
    let (b1, b2) = (rng.vec(hid), rng.vec(out));
    let fc1 = NmLinear::new(&w1, hid, inp, Some(&b1), n, m).unwrap();
    let fc2 = NmLinear::new(&w2, out, hid, Some(&b2), n, m).unwrap();
    let x = rng.vec(3 * 70 * inp);
    let xt = Tensor::from_vec(x.clone(), &[3, 70, inp], &Device::Cpu).unwrap();
    let (want, scale) = mlp_reference(&x, 210, &w1, &b1, &w2, &b2, (inp, hid, out));
    // Whatever path the dispatch takes (apart while the layers time their
    // kernels, then fused or apart), the result is the MLP's.
    for _ in 0..4 {
        let y = nm_mlp_forward(&fc1, MlpActivation::Gelu, &fc2, &xt).unwrap();
        assert_eq!(y.shape(), &[3, 70, out]);
        assert_close("nm_mlp_forward", &y.to_vec_f32().unwrap(), &want, &scale);
    }
    // fc2 does not take fc1's outputs; an input of the wrong width.
    let err = nm_mlp_forward(&fc1, MlpActivation::Gelu, &fc1, &xt).unwrap_err().to_string();
    assert!(err.contains("[40, 48]"), "{err}");
    let bad = Tensor::from_vec(vec![0.0; 2 * 47], &[2, 47], &Device::Cpu).unwrap();
    let err = nm_mlp_forward(&fc1, MlpActivation::Gelu, &fc2, &bad).unwrap_err().to_string();
    assert!(err.contains("47"), "{err}");
    let mut y = vec![0.0; 5];
    assert!(nm_mlp_with(Isa::Portable, &fc1, MlpActivation::Gelu, &fc2, &x[..inp], 1, &mut y).is_err());
}
