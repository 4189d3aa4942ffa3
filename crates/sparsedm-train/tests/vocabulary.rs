//! The typed config vocabulary: every choice field refuses a value it does
//! not know with the accepted ones in the message (no silent fallback), and
//! the presets' spellings, `--set` overrides and the config's own TOML
//! round trip keep working.

mod common;

use common::{TINY, tmp};
use sparsedm_layers::{ModeKind, NmPattern};
use sparsedm_tensor::Device;
use sparsedm_train::vocab::{LrScheduleKind, SparseMethod, Teacher};
use sparsedm_train::{RunConfig, Trainer};

/// A sparse run of the tiny model with `sets` applied.
fn sparse(sets: &[&str]) -> Result<RunConfig, String> {
    let mut all: Vec<String> = vec!["sparse.pattern=\"2:4\"".into(), "sparse.teacher=\"none\"".into()];
    all.extend(sets.iter().map(|s| s.to_string()));
    RunConfig::parse(TINY, "tiny", &all).map_err(|e| e.to_string())
}

#[test]
fn unknown_values_are_refused_with_the_accepted_ones() {
    // (override, what the message must name: the bad value and the accepted spellings)
    let cases: &[(&str, &[&str])] = &[
        ("sparse.method=\"sr_ste\"", &["sr_ste", "srste", "ste", "fixed", "progressive"]),
        ("sparse.teacher=\"inti\"", &["inti", "init", "none", "checkpoint path"]),
        ("sparse.pattern=\"2/4\"", &["2/4", "N:M", "2:4"]),
        ("sparse.pattern=\"5:4\"", &["5:4", "N:M with 1 <= N <= M <= 32"]),
        ("sparse.policy=\"asp,\"", &["asp,", "sparsedm-uvit, asp, all"]),
        ("sparse.progressive=\"2:4\"", &["2:4", "N:M@STEP"]),
        ("lr_scheduler.name=\"linear\"", &["linear", "customized", "cosine", "constant"]),
        ("train.schedule=\"vp-linaer\"", &["vp-linaer", "vp-linear", "vp-cosine", "ddpm-linear", "scaled-linear"]),
        ("dataset.name=\"cifar100\"", &["cifar100", "shapes", "cifar10", "celeba64", "folder"]),
        ("optimizer.name=\"sgd\"", &["sgd", "adamw"]),
    ];
    for (set, needles) in cases {
        let err = sparse(&[set]).expect_err(set);
        for n in *needles {
            assert!(err.contains(n), "{set}: {n:?} missing from {err:?}");
        }
        let field = set.split('=').next().unwrap();
        assert!(err.starts_with(&format!("tiny: {field}: ")), "{set}: the message starts with the field: {err:?}");
        assert_eq!(err.lines().count(), 1, "{set}: one line: {err:?}");
    }
}

#[test]
fn inconsistent_sparse_sections_are_refused() {
    let err = sparse(&["sparse.method=\"progressive\""]).unwrap_err();
    assert!(err.contains("needs sparse.progressive"), "{err}");
    let err = sparse(&["sparse.progressive=\"15:16@0,2:4@10\""]).unwrap_err();
    assert!(err.contains("only used by sparse.method = \"progressive\""), "{err}");
    // A progressive run ends at its last stage's pattern, which must be sparse.pattern and must
    // start before the run ends (else the run would end at an earlier stage's pattern, silently).
    let err = sparse(&["sparse.method=progressive", "sparse.progressive=\"7:8@0,1:4@2\""]).unwrap_err();
    assert!(err.contains("sparse.pattern = 2:4 but sparse.progressive = \"7:8@0,1:4@2\" ends at 1:4"), "{err}");
    let err = sparse(&["sparse.method=progressive", "sparse.progressive=\"7:8@0,2:4@4\""]).unwrap_err();
    assert!(err.contains("last stage (2:4@4) starts at or after train.n_steps = 4, so the run would end at 7:8, not 2:4"), "{err}");
    let err = sparse(&["sparse.transposable=true"]).unwrap_err();
    assert!(err.contains("needs sparse.method = \"fixed\""), "{err}");
    let err = sparse(&["sparse.teacher=\"init\""]).unwrap_err();
    assert!(err.contains("needs train.init"), "{err}");
}

#[test]
fn known_spellings_parse_into_the_vocabulary_and_round_trip() {
    let c = sparse(&["sparse.method=asp", "lr_scheduler.name=cosine", "sparse.pattern=\"1:8\""]).unwrap();
    let s = c.sparse.as_ref().unwrap();
    assert_eq!(s.method, SparseMethod::Fixed, "asp is the alias of fixed");
    let c2 = sparse(&["sparse.method=\"sr-ste\""]).unwrap();
    assert_eq!(c2.sparse.as_ref().unwrap().method, SparseMethod::SrSte, "sr-ste, the paper's spelling, is the alias of srste");
    assert_eq!(s.method.mode_kind(2e-4, true), ModeKind::Fixed { transposable: true });
    assert_eq!(s.pattern, NmPattern::new(1, 8).unwrap());
    assert_eq!(s.teacher, Teacher::None);
    assert_eq!(c.lr_scheduler.name, LrScheduleKind::Cosine);
    let c =
        sparse(&["sparse.teacher=\"runs/dense.safetensors\"", "sparse.method=progressive", "sparse.progressive=\"7:8@0,2:4@3\""]).unwrap();
    assert_eq!(c.sparse.as_ref().unwrap().teacher, Teacher::Checkpoint("runs/dense.safetensors".into()));
    // What a checkpoint stores parses back to the same config.
    let back = RunConfig::parse(&c.to_toml().unwrap(), "round trip", &[]).unwrap();
    assert_eq!(back, c);
    let text = c.to_toml().unwrap();
    assert!(text.contains("method = \"progressive\"") && text.contains("progressive = \"7:8@0,2:4@3\""), "{text}");
}

#[test]
fn a_policy_glob_that_selects_no_layer_is_refused_naming_the_accepted_policies() {
    let cfg = sparse(&["sparse.policy=\"sparsedm-uvit,sparsedm_uvit\""]).unwrap();
    let err = Trainer::new(cfg, &tmp("vocab-policy"), false, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("\"sparsedm_uvit\" selects none of the model's"), "{err}");
    assert!(err.contains("sparsedm-uvit, asp, all"), "{err}");
}

#[test]
fn train_precision_is_typed_and_the_cpu_refuses_reduced_precision() {
    use sparsedm_train::vocab::Precision;
    let err = RunConfig::parse(TINY, "tiny", &["train.precision=\"fp16\"".into()]).unwrap_err().to_string();
    assert!(err.starts_with("tiny: train.precision: "), "{err}");
    for n in ["fp16", "f32", "tf32", "bf16"] {
        assert!(err.contains(n), "{n:?} missing from {err:?}");
    }
    assert_eq!(err.lines().count(), 1, "{err}");
    // Unset by default (the device decides), and round-trips when set.
    assert_eq!(RunConfig::parse(TINY, "tiny", &[]).unwrap().train.precision, None);
    for p in Precision::ALL {
        let c = RunConfig::parse(TINY, "tiny", &[format!("train.precision=\"{p}\"")]).unwrap();
        assert_eq!(c.train.precision, Some(p));
        assert_eq!(RunConfig::parse(&c.to_toml().unwrap(), "round trip", &[]).unwrap(), c);
    }
    // The CPU computes in f32 only: tf32/bf16 runs are refused before anything is written.
    for p in ["tf32", "bf16"] {
        let cfg = RunConfig::parse(TINY, "tiny", &[format!("train.precision=\"{p}\"")]).unwrap();
        let scratch = tmp(&format!("vocab-precision-{p}"));
        let dir = scratch.join("run");
        let err = Trainer::new(cfg, &dir, false, Device::Cpu).unwrap_err().to_string();
        assert!(err.starts_with(&format!("train.precision {p}: CPU matrix products are f32 only")), "{err}");
        assert!(!dir.exists(), "nothing written for a refused run, not even its folder");
    }
    let cfg = RunConfig::parse(TINY, "tiny", &["train.precision=\"f32\"".into()]).unwrap();
    assert_eq!(Trainer::new(cfg, &tmp("vocab-precision-f32"), false, Device::Cpu).unwrap().precision(), Precision::F32);
}

/// `DatasetKind::name` is the config spelling (what messages print), and its label count is
/// what the opened dataset reports.
#[test]
fn dataset_names_are_the_config_spellings() {
    use sparsedm_train::vocab::DatasetKind;
    for kind in [DatasetKind::Shapes, DatasetKind::Cifar10, DatasetKind::Celeba64, DatasetKind::Folder] {
        let cfg = RunConfig::parse(TINY, "tiny", &[format!("dataset.name=\"{kind}\""), "dataset.path=\"x\"".into()]).unwrap();
        assert_eq!(cfg.dataset.name, kind);
    }
    let shapes = sparsedm_train::build::dataset(&RunConfig::parse(TINY, "tiny", &[]).unwrap()).unwrap();
    assert_eq!(shapes.num_classes(), DatasetKind::Shapes.label_classes());
    assert_eq!(sparsedm_train::data::cifar::CLASSES, 10);
}
