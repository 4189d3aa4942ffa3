//! The N:M convolution (`NmConv2d`) against a direct convolution computed
//! in f64 with the masked weight: the N:M path this CPU takes (on AVX2 the
//! row-wise kernel straight on NCHW), the im2col route (the one taken on
//! AVX-512 and the portable kernels) and the dense path, over geometries
//! that exercise the direct route's edges: tiles of 64 output pixels that
//! span several output rows or end part-way through an image, output rows
//! that do not divide 64, strides 1 and 2, kernels 1 to 5 with padding 0
//! to 2 (windows leaving the image on every side), output channels that
//! fill no whole slab of 32, zero to three images, and patterns whose M is
//! not a power of two.

use sparsedm_tensor::nm_cpu::{NmConv2d, NmPath};
use sparsedm_tensor::{Device, Tensor};

/// Tolerance relative to `Σ|x·w| + |b|` of each output: the paths differ
/// only in summation order and fused rounding.
const REL_TOL: f64 = 1e-5;

mod xorshift;
use xorshift::Rng;

/// A random `[o, c, kh, kw]` weight that is `n:m` along `c` at every
/// `(o, ky, kx)`: the `n` largest magnitudes of each group kept.
fn nm_conv_weight(rng: &mut Rng, [o, c, kh, kw]: [usize; 4], n: usize, m: usize) -> Vec<f32> {
    let mut w = rng.vec(o * c * kh * kw);
    let at = |oi: usize, ci: usize, y: usize, x: usize| ((oi * c + ci) * kh + y) * kw + x;
    for oi in 0..o {
        for y in 0..kh {
            for x in 0..kw {
                for g in (0..c).step_by(m) {
                    let mut idx: Vec<usize> = (g..g + m).map(|ci| at(oi, ci, y, x)).collect();
                    idx.sort_by(|&a, &b| w[b].abs().total_cmp(&w[a].abs()));
                    idx[n..].iter().for_each(|&i| w[i] = 0.0);
                }
            }
        }
    }
    w
}

/// The convolution in f64 and, per output, `Σ|x·w| + |b|`.
#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f32],
    nb: usize,
    (c, h, w): (usize, usize, usize),
    wt: &[f32],
    [o, _, kh, kw]: [usize; 4],
    bias: &[f32],
    (s, p): (usize, usize),
) -> (Vec<f64>, Vec<f64>, [usize; 2]) {
    let (ho, wo) = ((h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1);
    let mut y = vec![0f64; nb * o * ho * wo];
    let mut mag = vec![0f64; nb * o * ho * wo];
    for b in 0..nb {
        for oi in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let (mut acc, mut m) = (bias[oi] as f64, bias[oi].abs() as f64);
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let (iy, ix) = ((oy * s + ky) as isize - p as isize, (ox * s + kx) as isize - p as isize);
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                    continue;
                                }
                                let v = x[((b * c + ci) * h + iy as usize) * w + ix as usize] as f64
                                    * wt[((oi * c + ci) * kh + ky) * kw + kx] as f64;
                                acc += v;
                                m += v.abs();
                            }
                        }
                    }
                    let k = ((b * o + oi) * ho + oy) * wo + ox;
                    (y[k], mag[k]) = (acc, m);
                }
            }
        }
    }
    (y, mag, [ho, wo])
}

#[test]
fn nm_convolutions_equal_the_masked_direct_convolution() {
    let mut rng = Rng(0x5eed_c0de);
    // (images, c, o, h, w, kernel, stride, padding, n, m)
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize, usize, usize);
    let cases: [Case; 15] = [
        (2, 8, 5, 9, 9, 3, 1, 1, 2, 4),     // 81 pixels: a full tile and 17 more; wo = 9
        (1, 16, 37, 16, 16, 3, 1, 1, 1, 8), // 4 tiles of 4 output rows each; 37 channels: a slab and 5
        (3, 4, 70, 7, 5, 3, 2, 1, 2, 4),    // stride 2, 12 pixels an image
        (1, 8, 8, 4, 4, 1, 1, 0, 1, 4),     // 1x1, 16 pixels
        (2, 12, 6, 11, 13, 5, 1, 2, 3, 4),  // 5x5 windows leaving the image on every side
        (1, 9, 7, 10, 10, 3, 1, 0, 5, 9),   // M = 9, no padding
        (1, 32, 33, 8, 8, 3, 1, 1, 31, 32), // 31:32, one full tile
        (2, 6, 4, 6, 6, 2, 1, 0, 2, 3),     // 2x2 kernel, M = 3
        (1, 8, 16, 33, 3, 3, 1, 1, 2, 8),   // tall and narrow: tiles span 21 output rows
        (1, 16, 3, 8, 8, 3, 2, 1, 4, 8),    // stride 2 downsample
        (1, 4, 2, 1, 1, 1, 1, 0, 2, 4),     // one pixel
        (1, 4, 9, 3, 3, 3, 1, 2, 1, 2),     // padding 2 on a 3x3 input: 5x5 output
        (2, 64, 40, 12, 12, 3, 1, 1, 2, 4), // 144 pixels an image: tiles across the image's rows
        (1, 8, 12, 3, 70, 3, 1, 1, 2, 4),   // rows of 70: a tile ends inside the first row
        (0, 8, 4, 5, 5, 3, 1, 1, 2, 4),     // no image at all
    ];
    let mut checked = 0;
    for (nb, c, o, h, w, k, s, p, n, m) in cases {
        let shape = [o, c, k, k];
        let wt = nm_conv_weight(&mut rng, shape, n, m);
        let bias = rng.vec(o);
        let x = rng.vec(nb * c * h * w);
        let conv = NmConv2d::new(&wt, shape, Some(&bias), (s, s), (p, p), n, m).unwrap();
        let xt = Tensor::from_vec(x.clone(), &[nb, c, h, w], &Device::Cpu).unwrap();
        let (want, mag, [ho, wo]) = reference(&x, nb, (c, h, w), &wt, shape, &bias, (s, p));
        let runs = [
            ("N:M path", conv.forward_with(NmPath::Sparse, &xt).unwrap()),
            ("im2col route", conv.forward_im2col(&xt).unwrap()),
            ("dense path", conv.forward_with(NmPath::Dense, &xt).unwrap()),
        ];
        for (what, got) in runs {
            assert_eq!(got.shape(), &[nb, o, ho, wo], "{what}");
            for (i, (g, (r, mg))) in got.to_vec_f32().unwrap().iter().zip(want.iter().zip(&mag)).enumerate() {
                let err = (*g as f64 - r).abs();
                assert!(
                    err <= REL_TOL * mg.max(1e-30),
                    "{what} {n}:{m} [{nb}, {c}, {h}, {w}] k{k} s{s} p{p} -> {o}: output {i} is {g}, want {r} (|err| {err:.3e}, scale {mg:.3e})"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 15 * 3);
}

/// The timed choice: the first `forward_tensor` of a shape times the dense
/// convolution against the N:M routes this CPU has and files the winner
/// for that shape (images rounded up to a power of two); whichever won,
/// the output is the convolution's, and the call counts once on its path.
#[test]
fn the_first_call_of_a_shape_files_its_route() {
    use sparsedm_tensor::nm_cpu::{chosen_conv_path, layer_calls};
    let mut rng = Rng(77);
    let (nb, c, o, h, w) = (3, 16, 24, 12, 12);
    let shape = [o, c, 3, 3];
    let wt = nm_conv_weight(&mut rng, shape, 1, 4);
    let bias = rng.vec(o);
    let x = rng.vec(nb * c * h * w);
    let conv = NmConv2d::new(&wt, shape, Some(&bias), (1, 1), (1, 1), 1, 4).unwrap();
    assert_eq!(chosen_conv_path(&conv, nb, h, w), None, "nothing timed yet");
    let xt = Tensor::from_vec(x.clone(), &[nb, c, h, w], &Device::Cpu).unwrap();
    let (want, mag, _) = reference(&x, nb, (c, h, w), &wt, shape, &bias, (1, 1));
    for call in 0..2 {
        let before = layer_calls();
        let got = conv.forward_tensor(&xt).unwrap().to_vec_f32().unwrap();
        let after = layer_calls();
        for (i, (g, (r, mg))) in got.iter().zip(want.iter().zip(&mag)).enumerate() {
            assert!((*g as f64 - r).abs() <= REL_TOL * mg, "call {call}: output {i} is {g}, want {r}");
        }
        let path = chosen_conv_path(&conv, nb, h, w);
        assert!(path.is_some(), "call {call}: no route filed");
        // One layer call, counted on the filed route's path (tuning included).
        let sparse = path == Some(sparsedm_tensor::nm_cpu::NmPath::Sparse);
        let counted = (after.dense - before.dense, after.sparse - before.sparse);
        assert_eq!(counted, if sparse { (0, 1) } else { (1, 0) }, "call {call}: layer calls on {path:?}");
        assert_eq!(chosen_conv_path(&conv, 4, h, w), path, "3 and 4 images share the key");
    }
    assert_eq!(chosen_conv_path(&conv, 8, h, w), None, "8 images are another shape");
}
