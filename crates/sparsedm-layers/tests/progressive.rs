//! The "traditional progressive" baseline (MODELS_AND_METHOD §7.4): masks switched at stage
//! boundaries on the same weights and the same optimizer state — not a rebuilt model, which was
//! the bug of the paper's script.

use sparsedm_layers::{
    LayersError, Linear, NmPattern, NonDivisible, ParamStore, ProgressiveSchedule, SparseMode, Stage, apply_policy, check_nm,
};
use sparsedm_tensor::{Device, Rng, Tensor};
use std::collections::HashMap;

const DEV: Device = Device::Cpu;

fn pat(s: &str) -> NmPattern {
    s.parse().unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

#[test]
fn parses_the_papers_schedule() {
    let s: ProgressiveSchedule = "15:16@0,7:8@100000,3:4@200000,2:4@300000".parse().unwrap();
    assert_eq!(s.stages().len(), 4);
    assert_eq!(s.stages()[1], Stage { pattern: pat("7:8"), start: 100_000 });
    for (step, p) in [(0, "15:16"), (99_999, "15:16"), (100_000, "7:8"), (250_000, "3:4"), (300_000, "2:4"), (u64::MAX, "2:4")] {
        assert_eq!(s.pattern_at(step), pat(p), "step {step}");
    }
    assert_eq!(s.to_string(), "15:16@0,7:8@100000,3:4@200000,2:4@300000");
    let every = ProgressiveSchedule::every(&[pat("15:16"), pat("7:8"), pat("3:4"), pat("2:4")], 100_000).unwrap();
    assert_eq!(every, s);
    let spaced: ProgressiveSchedule = " 15:16 @ 0 , 2:4@100_000".parse().unwrap();
    assert_eq!(spaced.pattern_at(100_000), pat("2:4"));
}

#[test]
fn bad_schedules_are_errors() {
    for (bad, needle) in [
        ("", "not N:M@STEP"),
        ("2:4", "not N:M@STEP"),
        ("2:4@5", "step 0"),
        ("15:16@0,7:8@0", "increase"),
        ("15:16@0,7:8@200,3:4@100", "increase"),
        ("5:4@0", "impossible"),
        ("2:4@x", "non-negative integer"),
        ("2:4@-1", "non-negative integer"),
    ] {
        let e = bad.parse::<ProgressiveSchedule>().unwrap_err();
        assert!(matches!(e, LayersError::Schedule { .. }), "{bad}: {e}");
        assert!(e.to_string().contains(needle), "{bad}: {e}");
    }
    assert!(ProgressiveSchedule::new(vec![]).is_err());
}

/// Two sparse Linears and one dense one; a minimal SGD with momentum whose state is keyed by
/// tensor id (as a real optimizer's is keyed by parameter).
struct Setup {
    store: ParamStore,
    a: Linear,
    b: Linear,
    head: Linear,
}

fn setup() -> Setup {
    let store = ParamStore::new(DEV, 3);
    let a = Linear::new(&store.pp("a"), 32, 32, true).unwrap();
    let b = Linear::new(&store.pp("b"), 32, 16, true).unwrap();
    let head = Linear::new(&store.pp("head"), 16, 4, true).unwrap();
    Setup { store, a, b, head }
}

fn train_step(s: &Setup, x: &Tensor, y: &Tensor, momentum: &mut HashMap<usize, Vec<f32>>) -> f32 {
    let h = s.a.forward(x).unwrap().relu().unwrap();
    let out = s.head.forward(&s.b.forward(&h).unwrap().relu().unwrap()).unwrap();
    let loss = out.sub(y).unwrap().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    for (_, p) in s.store.params() {
        let Some(g) = grads.get(&p) else { continue };
        let g = vals(g);
        let m = momentum.entry(p.id()).or_insert_with(|| vec![0.0; g.len()]);
        p.update_f32(|w| {
            for i in 0..w.len() {
                m[i] = 0.9 * m[i] + g[i];
                w[i] -= 0.01 * m[i];
            }
        })
        .unwrap();
    }
    s.store.after_optimizer_step().unwrap();
    vals(&loss)[0]
}

fn run(mode_builder: fn(NmPattern) -> SparseMode) {
    let s = setup();
    let sched: ProgressiveSchedule = "15:16@0,7:8@3,3:4@6,2:4@9".parse().unwrap();
    apply_policy(&s.store, &"a,b".parse().unwrap(), sched.pattern_at(0), mode_builder).unwrap();
    sched.validate(&s.store, mode_builder).unwrap();
    let ids: Vec<usize> = s.store.params().iter().map(|(_, t)| t.id()).collect();
    let x = Tensor::from_vec(Rng::new(1).normal_vec(8 * 32), &[8, 32], &DEV).unwrap();
    let y = Tensor::from_vec(Rng::new(2).normal_vec(8 * 4), &[8, 4], &DEV).unwrap();
    let mut momentum = HashMap::new();
    let mut switches = Vec::new();
    for step in 0..12u64 {
        let before: Vec<Vec<f32>> = [&s.a, &s.b].iter().map(|l| vals(l.weight())).collect();
        if let Some(sw) = sched.apply(step, &s.store, mode_builder).unwrap() {
            assert_eq!(sw.layers, vec!["a".to_string(), "b".to_string()], "only the sparse layers switch");
            switches.push((step, sw.pattern));
            // Same weights: values are kept (SR-STE) or pruned in place (fixed), never re-initialised.
            for (l, w0) in [&s.a, &s.b].iter().zip(&before) {
                let w1 = vals(l.weight());
                for (a, b) in w0.iter().zip(&w1) {
                    assert!(*b == *a || *b == 0.0);
                }
            }
        }
        let p = sched.pattern_at(step);
        for l in [&s.a, &s.b] {
            assert_eq!(l.slot().mode().pattern(), Some(p));
            let d = vals(&l.slot().deployed_weight().unwrap());
            check_nm(&d, l.slot().layout(), p, NonDivisible::LeaveDense).unwrap();
        }
        assert_eq!(s.head.slot().mode(), SparseMode::Dense, "dense layers stay dense");
        train_step(&s, &x, &y, &mut momentum);
        // The optimizer keeps optimizing the same tensors: its state stays keyed by them.
        let now: Vec<usize> = s.store.params().iter().map(|(_, t)| t.id()).collect();
        assert_eq!(now, ids);
        assert_eq!(momentum.len(), ids.len());
    }
    assert_eq!(switches, vec![(3, pat("7:8")), (6, pat("3:4")), (9, pat("2:4"))]);
    // Resuming is stateless: applying an earlier step switches back.
    let sw = sched.apply(0, &s.store, mode_builder).unwrap().unwrap();
    assert_eq!(sw.pattern, pat("15:16"));
    assert!(sched.apply(1, &s.store, mode_builder).unwrap().is_none());
}

#[test]
fn switches_masks_in_place_with_srste() {
    run(SparseMode::srste);
}

#[test]
fn switches_masks_in_place_with_fixed_masks() {
    run(|p| SparseMode::Fixed { pattern: p, transposable: false });
}

#[test]
fn validate_reports_a_stage_that_cannot_be_built() {
    let s = setup();
    apply_policy(&s.store, &"a".parse().unwrap(), pat("2:4"), SparseMode::srste).unwrap();
    let sched: ProgressiveSchedule = "2:4@0,1:4@10".parse().unwrap();
    let fixed_t = |p| SparseMode::Fixed { pattern: p, transposable: true };
    let e = sched.validate(&s.store, fixed_t).unwrap_err();
    assert!(e.to_string().contains("1:4@10") && e.to_string().contains("layer a"), "{e}");
    let e = sched.apply(10, &s.store, fixed_t).unwrap_err();
    assert!(matches!(e, LayersError::Schedule { .. }), "{e}");
    assert_eq!(s.a.slot().mode(), SparseMode::srste(pat("2:4")), "nothing switched on error");
}
