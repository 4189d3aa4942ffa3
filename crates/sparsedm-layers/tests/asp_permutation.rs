//! apex ASP's channel permutation search and its application to a store:
//! the search reaches the optimum an exhaustive enumeration finds on small
//! matrices, never keeps less than the identity order, strictly more on a
//! constructed case, and permuting producer and consumer together leaves a
//! two-layer network's output unchanged.

use sparsedm_layers::method::permutation::{SearchOptions, kept_magnitude_permuted, search_permutation};
use sparsedm_layers::{ChannelPlan, Linear, NamedPolicy, NmPattern, ParamStore, PermutationGroup, Policy, permute_channels};
use sparsedm_tensor::{Device, Rng, Tensor};

/// Deterministic pseudo-random weights in (−1, 1) with a spread of magnitudes.
fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let t = Tensor::randn(&[rows * cols], &mut rng, &Device::Cpu).unwrap();
    t.to_vec_f32().unwrap()
}

/// The best kept magnitude over every partition of the columns into
/// groups of M (the exhaustive search the module doc compares against):
/// the first free column opens the next group, so each partition is
/// visited once.
fn exhaustive_best(w: &[f32], cols: usize, pattern: NmPattern) -> f64 {
    fn rec(w: &[f32], cols: usize, pattern: NmPattern, used: &mut Vec<bool>, order: &mut Vec<usize>, best: &mut f64) {
        if order.len() == cols {
            let v = kept_magnitude_permuted(w, cols, Some(order), pattern).unwrap();
            if v > *best {
                *best = v;
            }
            return;
        }
        let m = pattern.m();
        if order.len().is_multiple_of(m) {
            // A new group starts with the lowest unused column.
            let first = (0..cols).find(|&c| !used[c]).unwrap();
            used[first] = true;
            order.push(first);
            rec(w, cols, pattern, used, order, best);
            order.pop();
            used[first] = false;
            return;
        }
        let last = *order.last().unwrap();
        for c in last + 1..cols {
            if !used[c] {
                used[c] = true;
                order.push(c);
                rec(w, cols, pattern, used, order, best);
                order.pop();
                used[c] = false;
            }
        }
    }
    let mut best = f64::NEG_INFINITY;
    rec(w, cols, pattern, &mut vec![false; cols], &mut Vec::new(), &mut best);
    best
}

#[test]
fn search_finds_the_exhaustive_optimum_on_small_matrices() {
    let p = NmPattern::TWO_FOUR;
    for (rows, cols, seed) in [(6, 8, 1), (5, 12, 2), (4, 12, 3), (3, 16, 4)] {
        let w = matrix(rows, cols, seed);
        let perm = search_permutation(&w, cols, p, &SearchOptions::default()).unwrap();
        let found = kept_magnitude_permuted(&w, cols, Some(&perm), p).unwrap();
        let best = exhaustive_best(&w, cols, p);
        let identity = kept_magnitude_permuted(&w, cols, None, p).unwrap();
        eprintln!("{rows}x{cols}: identity {identity:.5}, search {found:.5}, exhaustive {best:.5}");
        assert!((found - best).abs() <= 1e-9 * best, "{rows}x{cols} seed {seed}: search {found} vs exhaustive {best}");
        assert!(best > identity, "{rows}x{cols}: the case should leave room for a permutation to help");
    }
}

#[test]
fn kept_magnitude_is_what_the_mask_keeps() {
    // One row, two groups: [4 3 2 1 | 8 7 6 5] keeps 4+3 + 8+7; swapping
    // columns changes nothing the mask cannot see.
    let w = [4.0, -3.0, 2.0, 1.0, 8.0, 7.0, -6.0, 5.0];
    let p = NmPattern::TWO_FOUR;
    assert_eq!(kept_magnitude_permuted(&w, 8, None, p).unwrap(), 22.0);
    // [4 3 8 7 | 2 1 6 5]: 8+7 + 6+5.
    assert_eq!(kept_magnitude_permuted(&w, 8, Some(&[0, 1, 4, 5, 2, 3, 6, 7]), p).unwrap(), 26.0);
    assert!(kept_magnitude_permuted(&w, 8, Some(&[0, 0, 1, 2, 3, 4, 5, 6]), p).is_err(), "not a permutation");
    assert!(kept_magnitude_permuted(&w, 6, None, p).is_err(), "6 columns are not groups of 4");
}

#[test]
fn constructed_case_gains_strictly_and_never_loses() {
    // Each row's large values sit in the same group under the identity
    // order: two of them are lost to the 2:4 mask; spread over both groups
    // every large value is kept.
    let w = [
        9.0, 8.0, 7.0, 6.0, 0.1, 0.2, 0.3, 0.4, //
        8.0, 9.0, 6.0, 7.0, 0.4, 0.3, 0.2, 0.1,
    ];
    let p = NmPattern::TWO_FOUR;
    let perm = search_permutation(&w, 8, p, &SearchOptions::default()).unwrap();
    let before = kept_magnitude_permuted(&w, 8, None, p).unwrap();
    let after = kept_magnitude_permuted(&w, 8, Some(&perm), p).unwrap();
    assert!((before - (17.0 + 0.7 + 17.0 + 0.7)).abs() < 1e-5, "{before}");
    assert!((after - 60.0).abs() < 1e-5, "every large value kept: {after}");
    for seed in 10..16 {
        let w = matrix(16, 64, seed);
        let perm = search_permutation(&w, 64, p, &SearchOptions::default()).unwrap();
        let before = kept_magnitude_permuted(&w, 64, None, p).unwrap();
        let after = kept_magnitude_permuted(&w, 64, Some(&perm), p).unwrap();
        assert!(after >= before, "seed {seed}: {after} < {before}");
    }
}

#[test]
fn wide_matrices_are_searched_in_windows() {
    let p = NmPattern::TWO_FOUR;
    let cols = 2 * sparsedm_layers::method::permutation::WINDOW + 16;
    let w = matrix(4, cols, 7);
    let opts = SearchOptions { escape_attempts: 5, seed: 3 };
    let perm = search_permutation(&w, cols, p, &opts).unwrap();
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..cols).collect::<Vec<_>>());
    // Columns stay in their window.
    for (j, &c) in perm.iter().enumerate() {
        assert_eq!(j / sparsedm_layers::method::permutation::WINDOW, c / sparsedm_layers::method::permutation::WINDOW);
    }
    assert!(kept_magnitude_permuted(&w, cols, Some(&perm), p).unwrap() > kept_magnitude_permuted(&w, cols, None, p).unwrap());
}

#[test]
fn patterns_beyond_the_search_limit_are_refused() {
    let p: NmPattern = "4:16".parse().unwrap();
    let err = search_permutation(&matrix(2, 32, 1), 32, p, &SearchOptions::default()).unwrap_err().to_string();
    assert!(err.contains("4:16") && err.contains("M up to 8"), "{err}");
}

/// fc1 (in → hidden) → GELU → fc2 (hidden → out): permuting fc1's output
/// rows and bias with fc2's input columns keeps the output; the magnitude
/// kept by fc2's 2:4 mask grows.
#[test]
fn permuting_a_pair_keeps_the_function_and_gains_magnitude() {
    let store = ParamStore::new(Device::Cpu, 5);
    let fc1 = Linear::new(&store.pp("fc1"), 16, 64, true).unwrap();
    let fc2 = Linear::new(&store.pp("fc2"), 64, 16, true).unwrap();
    let mut rng = Rng::new(9);
    let x = Tensor::randn(&[3, 16], &mut rng, &Device::Cpu).unwrap();
    let forward = || fc2.forward(&fc1.forward(&x).unwrap().gelu().unwrap()).unwrap().to_vec_f32().unwrap();
    let before = forward();
    let plan = ChannelPlan {
        groups: vec![PermutationGroup { consumers: vec!["fc2".into()], producers: vec!["fc1.weight".into(), "fc1.bias".into()] }],
        unpermutable: vec![("fc1".into(), "reads the input".into())],
    };
    let policy = Policy::named(NamedPolicy::Asp);
    let report = permute_channels(&store, &plan, &policy, NmPattern::TWO_FOUR, &SearchOptions::default()).unwrap();
    let after = forward();
    for (a, b) in before.iter().zip(&after) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "output changed: {a} vs {b}");
    }
    assert_eq!(report.applied(), 1, "{report}");
    assert!(report.kept_with > report.kept_without, "{report}");
    assert_eq!(report.unpermuted, vec![("fc1".to_string(), "reads the input".to_string())]);
    let g = &report.groups[0];
    assert!((report.kept_with - report.kept_without - (g.kept_after - g.kept_before)).abs() < 1e-3, "{report}");
    let text = report.to_string();
    assert!(text.contains("without") && text.contains("1 (fc1): reads the input"), "{text}");
}

#[test]
fn a_plan_that_does_not_fit_the_model_is_an_error_and_changes_nothing() {
    let store = ParamStore::new(Device::Cpu, 5);
    Linear::new(&store.pp("fc1"), 16, 64, true).unwrap();
    Linear::new(&store.pp("fc2"), 64, 16, true).unwrap();
    let snapshot: Vec<Vec<f32>> = store.state_dict().iter().map(|(_, t)| t.to_vec_f32().unwrap()).collect();
    let policy = Policy::named(NamedPolicy::Asp);
    for (group, needle) in [
        (PermutationGroup { consumers: vec!["fc3".into()], producers: vec![] }, "no Linear/Conv2d fc3"),
        (PermutationGroup { consumers: vec!["fc2".into()], producers: vec!["fc2.weight".into()] }, "cannot produce the 64 channels"),
        (PermutationGroup { consumers: vec!["fc2".into()], producers: vec!["fc1.nothing".into()] }, "no tensor fc1.nothing"),
    ] {
        let plan = ChannelPlan { groups: vec![group], unpermutable: vec![] };
        let err = permute_channels(&store, &plan, &policy, NmPattern::TWO_FOUR, &SearchOptions::default()).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    let now: Vec<Vec<f32>> = store.state_dict().iter().map(|(_, t)| t.to_vec_f32().unwrap()).collect();
    assert_eq!(snapshot, now);
}
