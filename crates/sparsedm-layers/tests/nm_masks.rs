//! Golden tests of the N:M mask algorithms against reference fixtures, plus error handling.
//!
//! Fixtures `tests/fixtures/nm_masks.safetensors` and `nm_masks.json` are copied from the
//! project's shared reference fixtures (`/work/shared/fixtures/README.md`, part `nm_masks`). They
//! were produced by running the public reference implementations with PyTorch 2.11 on CPU in
//! float32 with fixed seeds:
//! * `linear.mask_N_M` / `conv.mask_N_M` for 11 ratios: the SR-STE rule of aojunzz/NM-sparsity
//!   (`devkit/sparse_ops/sparse_ops.py`, `Sparse` for the Linear weight [16, 64] and `Sparse_NHWC`
//!   for the Conv2d weight [8, 32, 3, 3]): keep the N largest |w| of every group of M consecutive
//!   weights along the input dimension (input channels at each (out, kh, kw) for the conv);
//! * `transposable.mask_2_4` for `transposable.weight` [16, 32]: an exhaustive search over the 90
//!   valid 4×4 patterns (two ones per row and per column) maximising the kept |w|; the JSON holds
//!   the optimal objective, which is what we compare (ties could allow other optimal masks).

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use sparsedm_layers::{
    BlockLine, LayersError, MaskOutcome, NmPattern, NonDivisible, TransposableMethod, WeightLayout, check_nm, check_transposable,
    compute_mask, kept_magnitude, mask_into, plan_mask, sparsity, transposable_mask, valid_4x4_patterns,
};

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Fixture {
    bytes: Vec<u8>,
    json: serde_json::Value,
}

impl Fixture {
    fn load() -> Self {
        let bytes = std::fs::read(fixture_path("nm_masks.safetensors")).expect("read safetensors");
        let json = serde_json::from_str(&std::fs::read_to_string(fixture_path("nm_masks.json")).expect("read json")).expect("parse json");
        Fixture { bytes, json }
    }

    /// `(shape, values)` of an f32 tensor.
    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = SafeTensors::deserialize(&self.bytes).expect("parse safetensors");
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let values = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        (t.shape().to_vec(), values)
    }

    fn patterns(&self) -> Vec<NmPattern> {
        self.json["patterns"]
            .as_array()
            .expect("patterns")
            .iter()
            .map(|p| p.as_str().expect("pattern string").parse().expect("valid pattern"))
            .collect()
    }
}

fn pat(s: &str) -> NmPattern {
    s.parse().unwrap()
}

/// splitmix64-based uniform values in [-1, 1).
fn random_weights(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Straightforward reference: gather each group (PyTorch multi-index order), stable-sort by |w|
/// descending (NaN-free inputs), keep the first N. `flat` = SparseDM flat-index grouping over the
/// explicitly permuted (out, kh, kw, in) copy.
fn naive_mask(w: &[f32], shape: &[usize], p: NmPattern, flat: bool) -> Vec<f32> {
    let (out, inp) = (shape[0], shape[1]);
    let k: usize = shape[2..].iter().product();
    let (n, m) = (p.n(), p.m());
    // Indices into `w` in (out, kernel position, in) order.
    let mut order = Vec::with_capacity(w.len());
    for o in 0..out {
        for q in 0..k {
            for c in 0..inp {
                order.push((o * inp + c) * k + q);
            }
        }
    }
    let groups: Vec<Vec<usize>> = if flat {
        order.chunks(m).map(<[usize]>::to_vec).collect()
    } else {
        order.chunks(inp).flat_map(|run| run.chunks(m).map(<[usize]>::to_vec)).collect()
    };
    let mut mask = vec![0.0; w.len()];
    for g in groups {
        assert_eq!(g.len(), m);
        let mut sorted = g.clone();
        sorted.sort_by(|&a, &b| w[b].abs().partial_cmp(&w[a].abs()).unwrap());
        for &i in &sorted[..n] {
            mask[i] = 1.0;
        }
    }
    mask
}

fn first_mismatch(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    a.iter().zip(b).enumerate().find(|(_, (x, y))| x != y).map(|(i, (&x, &y))| (i, x, y))
}

#[test]
fn fixture_lists_the_eleven_ratios() {
    let fx = Fixture::load();
    let names: Vec<String> = fx.patterns().iter().map(ToString::to_string).collect();
    assert_eq!(names, ["2:4", "1:4", "2:8", "4:8", "1:8", "1:16", "1:32", "31:32", "15:16", "7:8", "3:4"]);
}

#[test]
fn magnitude_masks_match_reference_exactly() {
    let fx = Fixture::load();
    for prefix in ["linear", "conv"] {
        let (shape, w) = fx.tensor(&format!("{prefix}.weight"));
        let layout = WeightLayout::from_shape(&shape).unwrap();
        for p in fx.patterns() {
            let name = format!("{prefix}.mask_{}_{}", p.n(), p.m());
            let (mshape, expected) = fx.tensor(&name);
            assert_eq!(mshape, shape, "{name}");
            let (mask, outcome) = compute_mask(&w, layout, p, NonDivisible::default()).unwrap();
            assert_eq!(outcome, MaskOutcome::Grouped, "{name}");
            if let Some((i, got, want)) = first_mismatch(&mask, &expected) {
                panic!("{name}: element {i} {:?}: got {got}, reference {want}", layout.multi_index(i));
            }
            // The mask and the masked weight are N:M along the input dimension, exactly N/M dense.
            check_nm(&mask, layout, p, NonDivisible::LeaveDense).unwrap();
            let masked: Vec<f32> = w.iter().zip(&mask).map(|(a, b)| a * b).collect();
            check_nm(&masked, layout, p, NonDivisible::LeaveDense).unwrap();
            assert_eq!(sparsity(&mask), p.sparsity(), "{name}");
            // The in-place form into a dirty buffer gives the same mask.
            let mut buf = vec![7.0; w.len()];
            mask_into(&w, &mut buf, layout, p, NonDivisible::FlatIndex).unwrap();
            assert_eq!(buf, mask, "{name} via mask_into");
        }
    }
}

/// The tie rule (earlier element kept) is deterministic but not exercised by the fixture: its
/// random weights have no equal magnitudes inside any group of the largest M.
#[test]
fn fixture_has_no_ties_within_groups() {
    let fx = Fixture::load();
    for prefix in ["linear", "conv"] {
        let (shape, w) = fx.tensor(&format!("{prefix}.weight"));
        let (out, inp) = (shape[0], shape[1]);
        let k: usize = shape[2..].iter().product();
        for o in 0..out {
            for q in 0..k {
                for g in 0..inp / 32 {
                    let mut mags: Vec<u32> = (g * 32..(g + 1) * 32).map(|c| w[(o * inp + c) * k + q].abs().to_bits()).collect();
                    mags.sort_unstable();
                    mags.dedup();
                    assert_eq!(mags.len(), 32, "{prefix}: tie at out {o}, position {q}");
                }
            }
        }
    }
}

#[test]
fn large_weights_with_ties_match_naive_reference() {
    // 2048×512 goes through the parallel path; quantised values create many ties.
    let shape = [2048usize, 512];
    let layout = WeightLayout::from_shape(&shape).unwrap();
    let w: Vec<f32> = random_weights(2048 * 512, 7).iter().map(|x| (x * 4.0).round()).collect();
    for p in ["2:4", "1:8", "7:8", "5:32"].map(pat) {
        let (mask, _) = compute_mask(&w, layout, p, NonDivisible::default()).unwrap();
        assert_eq!(first_mismatch(&mask, &naive_mask(&w, &shape, p, false)), None, "{p}");
    }
    let shape = [64usize, 128, 3, 3];
    let layout = WeightLayout::from_shape(&shape).unwrap();
    let w: Vec<f32> = random_weights(layout.numel(), 8).iter().map(|x| (x * 3.0).round()).collect();
    for p in ["2:4", "3:16"].map(pat) {
        let (mask, _) = compute_mask(&w, layout, p, NonDivisible::default()).unwrap();
        assert_eq!(first_mismatch(&mask, &naive_mask(&w, &shape, p, false)), None, "{p}");
    }
}

#[test]
fn transposable_exact_meets_reference_objective() {
    let fx = Fixture::load();
    let (shape, w) = fx.tensor("transposable.weight");
    let (_, reference_mask) = fx.tensor("transposable.mask_2_4");
    let layout = WeightLayout::from_shape(&shape).unwrap();
    let objective = fx.json["transposable"]["objective_sum_abs_kept"].as_f64().unwrap();
    assert_eq!(fx.json["transposable"]["valid_4x4_patterns"].as_u64(), Some(90));
    assert_eq!(valid_4x4_patterns().len(), 90);

    let mask = transposable_mask(&w, layout, TransposableMethod::Exact).unwrap();
    let ours = kept_magnitude(&w, &mask, layout).unwrap();
    let theirs = kept_magnitude(&w, &reference_mask, layout).unwrap();
    eprintln!("transposable objective: ours {ours}, reference mask {theirs}, json {objective}");
    // The reference summed in float32; we sum in float64.
    assert!((ours - objective).abs() <= 1e-5 * objective, "objective {ours} vs {objective}");
    assert!((theirs - objective).abs() <= 1e-5 * objective);
    assert!(ours >= theirs - 1e-9, "not optimal: {ours} < reference mask's {theirs}");

    // Valid 2:4 along rows and along columns, and exactly 2 per row/column of every block.
    check_transposable(&mask, layout).unwrap();
    check_nm(&mask, layout, NmPattern::TWO_FOUR, NonDivisible::LeaveDense).unwrap();
    let (rows, cols) = (shape[0], shape[1]);
    let transposed: Vec<f32> = (0..cols * rows).map(|i| mask[(i % rows) * cols + i / rows]).collect();
    let t_layout = WeightLayout::linear(cols, rows).unwrap();
    check_nm(&transposed, t_layout, NmPattern::TWO_FOUR, NonDivisible::LeaveDense).unwrap();
    assert_eq!(sparsity(&mask), 0.5);
}

#[test]
fn transposable_greedy_is_valid_and_within_half_of_optimum() {
    let fx = Fixture::load();
    let (shape, fixture_w) = fx.tensor("transposable.weight");
    let mut cases = vec![(shape, fixture_w)];
    for (seed, shape) in [(1u64, vec![64usize, 64]), (2, vec![128, 32]), (3, vec![8, 16, 3, 3])] {
        let n = shape.iter().product();
        cases.push((shape, random_weights(n, seed)));
    }
    // Heavy-tailed weights make the greedy choice matter more.
    cases.push((vec![32, 32], random_weights(1024, 4).iter().map(|x| x.powi(5)).collect()));
    for (shape, w) in cases {
        let layout = WeightLayout::from_shape(&shape).unwrap();
        let exact = transposable_mask(&w, layout, TransposableMethod::Exact).unwrap();
        let greedy = transposable_mask(&w, layout, TransposableMethod::Greedy).unwrap();
        check_transposable(&exact, layout).unwrap();
        check_transposable(&greedy, layout).unwrap();
        // Rows of each tile are the normal N:M groups (input channels at each (out, kh, kw)).
        check_nm(&exact, layout, NmPattern::TWO_FOUR, NonDivisible::LeaveDense).unwrap();
        check_nm(&greedy, layout, NmPattern::TWO_FOUR, NonDivisible::LeaveDense).unwrap();
        let e = kept_magnitude(&w, &exact, layout).unwrap();
        let g = kept_magnitude(&w, &greedy, layout).unwrap();
        assert!(g >= 0.5 * e, "{shape:?}: greedy {g} < half of exact {e}");
        assert!(sparsity(&greedy) >= 0.5);
    }
}

#[test]
fn transposable_conv_tiles_output_and_input_channels() {
    let shape = [8usize, 16, 3, 3];
    let layout = WeightLayout::from_shape(&shape).unwrap();
    let w = random_weights(layout.numel(), 11);
    let mask = transposable_mask(&w, layout, TransposableMethod::Exact).unwrap();
    // Columns: at each (in, ky, kx), every 4 consecutive output channels keep exactly 2.
    for ob in (0..8).step_by(4) {
        for c in 0..16 {
            for q in 0..9 {
                let kept: f32 = (ob..ob + 4).map(|o| mask[(o * 16 + c) * 9 + q]).sum();
                assert_eq!(kept, 2.0);
            }
        }
    }
    check_nm(&mask, layout, NmPattern::TWO_FOUR, NonDivisible::LeaveDense).unwrap();
}

#[test]
fn impossible_patterns_are_rejected() {
    let err = "5:4".parse::<NmPattern>().unwrap_err();
    assert!(matches!(err, LayersError::ImpossiblePattern { n: 5, m: 4 }));
    assert_eq!(err.to_string(), "impossible N:M pattern 5:4: need 1 <= N <= M <= 32");
    for s in ["0:4", "2:0", "3:33", "33:33", "0:0"] {
        assert!(matches!(s.parse::<NmPattern>(), Err(LayersError::ImpossiblePattern { .. })), "{s}");
    }
    for s in ["", "2", "2-4", "a:b", "2:4:8", "-2:4", "2.0:4"] {
        let err = s.parse::<NmPattern>().unwrap_err();
        assert_eq!(err, LayersError::PatternSyntax { input: s.to_owned() }, "{s}");
        assert!(err.to_string().contains("\"2:4\""));
    }
    assert!(NmPattern::new(32, 32).unwrap().is_dense());
}

#[test]
fn wrong_shapes_are_errors() {
    assert_eq!(WeightLayout::from_shape(&[4, 8, 3]), Err(LayersError::UnsupportedRank { shape: vec![4, 8, 3] }));
    assert!(matches!(WeightLayout::from_shape(&[8]), Err(LayersError::UnsupportedRank { .. })));
    assert!(matches!(WeightLayout::from_shape(&[0, 8, 3, 3]), Err(LayersError::EmptyDimension { .. })));
    let layout = WeightLayout::linear(4, 8).unwrap();
    let err = compute_mask(&[0.0; 31], layout, NmPattern::TWO_FOUR, NonDivisible::default()).unwrap_err();
    assert_eq!(err, LayersError::LengthMismatch { what: "weight", layout, expected: 32, actual: 31 });
    assert_eq!(err.to_string(), "weight has 31 elements but Linear weight [4, 8] needs 32");
    let mut short = [0.0; 16];
    let err = mask_into(&[0.0; 32], &mut short, layout, NmPattern::TWO_FOUR, NonDivisible::default()).unwrap_err();
    assert!(matches!(err, LayersError::LengthMismatch { what: "mask", .. }));
    // A hand-built layout is re-checked.
    let bad = WeightLayout::Conv2d { out: 4, inp: 4, kh: 0, kw: 3 };
    assert!(matches!(compute_mask(&[], bad, NmPattern::TWO_FOUR, NonDivisible::default()), Err(LayersError::EmptyDimension { .. })));
    let not_tileable = WeightLayout::linear(6, 8).unwrap();
    assert_eq!(
        transposable_mask(&[0.0; 48], not_tileable, TransposableMethod::Exact),
        Err(LayersError::TransposableShape { layout: not_tileable })
    );
    assert!(kept_magnitude(&[0.0; 48], &[0.0; 47], not_tileable).is_err());
}

#[test]
fn non_divisible_input_left_dense() {
    // Like the UNet's first conv: 3 input channels.
    let layout = WeightLayout::conv2d(16, 3, 3, 3).unwrap();
    let w = random_weights(layout.numel(), 5);
    assert_eq!(plan_mask(layout, NmPattern::TWO_FOUR, NonDivisible::LeaveDense), Ok(MaskOutcome::LeftDense));
    let (mask, outcome) = compute_mask(&w, layout, NmPattern::TWO_FOUR, NonDivisible::LeaveDense).unwrap();
    assert_eq!(outcome, MaskOutcome::LeftDense);
    assert!(mask.iter().all(|&x| x == 1.0));
    let err = check_nm(&mask, layout, NmPattern::TWO_FOUR, NonDivisible::LeaveDense).unwrap_err();
    assert_eq!(err, LayersError::InputNotDivisible { layout, inp: 3, pattern: NmPattern::TWO_FOUR });
    assert!(err.to_string().contains("input dimension 3 is not a multiple of M = 4"));
}

#[test]
fn non_divisible_input_flat_index_grouping() {
    // SparseDM's UNet first conv: [out, 3, 3, 3], 27 weights per output channel, groups of 4 in
    // (out, kh, kw, in) flat order crossing kernel and output-channel boundaries.
    for shape in [vec![112usize, 3, 3, 3], vec![16, 3, 3, 3], vec![6, 10], vec![4, 5, 1, 3]] {
        let layout = WeightLayout::from_shape(&shape).unwrap();
        let w = random_weights(layout.numel(), shape.iter().sum::<usize>() as u64);
        for p in ["2:4", "1:4", "3:4"].map(pat) {
            let (mask, outcome) = compute_mask(&w, layout, p, NonDivisible::FlatIndex).unwrap();
            assert_eq!(outcome, MaskOutcome::FlatIndex, "{shape:?}");
            assert_eq!(first_mismatch(&mask, &naive_mask(&w, &shape, p, true)), None, "{shape:?} {p}");
            assert_eq!(sparsity(&mask), p.sparsity(), "{shape:?} {p}: density must be exact");
            check_nm(&mask, layout, p, NonDivisible::FlatIndex).unwrap();
        }
    }
    // 81 elements are not a whole number of groups of 4: the reference's reshape would fail.
    let layout = WeightLayout::conv2d(3, 3, 3, 3).unwrap();
    let err = compute_mask(&[1.0; 81], layout, NmPattern::TWO_FOUR, NonDivisible::FlatIndex).unwrap_err();
    assert_eq!(err, LayersError::FlatIndexNotDivisible { layout, numel: 81, pattern: NmPattern::TWO_FOUR });
    assert!(matches!(
        check_nm(&[1.0; 81], layout, NmPattern::TWO_FOUR, NonDivisible::FlatIndex),
        Err(LayersError::FlatIndexNotDivisible { .. })
    ));
}

#[test]
fn validation_names_the_offending_group() {
    let fx = Fixture::load();
    let (shape, w) = fx.tensor("conv.weight");
    let layout = WeightLayout::from_shape(&shape).unwrap();
    let (mask, _) = compute_mask(&w, layout, NmPattern::TWO_FOUR, NonDivisible::default()).unwrap();
    let mut masked: Vec<f32> = w.iter().zip(&mask).map(|(a, b)| a * b).collect();
    check_nm(&masked, layout, NmPattern::TWO_FOUR, NonDivisible::default()).unwrap();
    // Revive every weight of the group out 5, kernel (1, 2), inputs 8..12; and a later group.
    for c in 8..12 {
        masked[((5 * 32 + c) * 3 + 1) * 3 + 2] = 0.25;
    }
    masked[((7 * 32 + 1) * 3) * 3] = 1.0;
    masked[((7 * 32) * 3) * 3] = 1.0;
    masked[((7 * 32 + 2) * 3) * 3] = 1.0;
    let err = check_nm(&masked, layout, NmPattern::TWO_FOUR, NonDivisible::default()).unwrap_err();
    assert_eq!(
        err,
        LayersError::NmViolation {
            layout,
            pattern: NmPattern::TWO_FOUR,
            out: 5,
            kernel_pos: Some((1, 2)),
            in_start: 8,
            in_end: 12,
            nonzeros: 4,
        }
    );
    assert_eq!(
        err.to_string(),
        "Conv2d weight [8, 32, 3, 3] is not 2:4 sparse: the group at out 5, kernel (kh 1, kw 2), \
         inputs 8..12, has 4 nonzeros (at most 2 allowed)"
    );

    // Linear: the dense weight itself violates 1:4 in its first group.
    let (shape, w) = fx.tensor("linear.weight");
    let layout = WeightLayout::from_shape(&shape).unwrap();
    let err = check_nm(&w, layout, pat("1:4"), NonDivisible::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Linear weight [16, 64] is not 1:4 sparse: the group at out 0, inputs 0..4, \
         has 4 nonzeros (at most 1 allowed)"
    );

    // Flat-index groups are named by their first and last element.
    let layout = WeightLayout::conv2d(4, 3, 3, 3).unwrap();
    let mut v = vec![0.0f32; layout.numel()];
    // Flat group 6 = flat positions 24..28: out 0 (ky 2, kx 2, c 0..3) and out 1 (ky 0, kx 0, c 0).
    let at = |o: usize, c: usize, ky: usize, kx: usize| ((o * 3 + c) * 3 + ky) * 3 + kx;
    for idx in [at(0, 0, 2, 2), at(0, 2, 2, 2), at(1, 0, 0, 0)] {
        v[idx] = -1.0;
    }
    let err = check_nm(&v, layout, NmPattern::TWO_FOUR, NonDivisible::FlatIndex).unwrap_err();
    assert_eq!(
        err,
        LayersError::FlatGroupViolation {
            layout,
            pattern: NmPattern::TWO_FOUR,
            group: 6,
            first: vec![0, 0, 2, 2],
            last: vec![1, 0, 0, 0],
            nonzeros: 3,
        }
    );

    // Transposable violations name the block and the line.
    let layout = WeightLayout::linear(8, 8).unwrap();
    let mut v = vec![0.0f32; 64];
    for o in 4..7 {
        v[o * 8 + 5] = 1.0; // column in 5 of the block at out 4..8, in 4..8 has 3 nonzeros
    }
    let err = check_transposable(&v, layout).unwrap_err();
    assert_eq!(
        err,
        LayersError::TransposableViolation { layout, out_start: 4, in_start: 4, kernel_pos: None, line: BlockLine::Column(5), nonzeros: 3 }
    );
    assert!(err.to_string().contains("column in 5 has 3 nonzeros"), "{err}");
}

#[test]
fn dense_pattern_keeps_everything() {
    let layout = WeightLayout::linear(4, 64).unwrap();
    let w = random_weights(256, 9);
    let (mask, outcome) = compute_mask(&w, layout, pat("32:32"), NonDivisible::default()).unwrap();
    assert_eq!(outcome, MaskOutcome::Grouped);
    assert!(mask.iter().all(|&x| x == 1.0));
}
