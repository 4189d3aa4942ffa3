//! Training a class-conditional U-ViT (`nnet.num_classes > 0` on a labelled dataset):
//! - `dataset.p_uncond` trains the null label of classifier-free guidance (U-ViT's CFG
//!   datasets swap a label for it with that probability); without it the null label's
//!   embedding gets no gradient at all;
//! - the run's preview grid samples with labels (and `sample.cfg_scale` guidance), where it
//!   used to fail at the first grid ("the model has 4 classes and needs labels");
//! - a model and dataset that disagree on labels are refused when the run is set up, naming
//!   the keys, before anything is written.

mod common;

use common::{TINY, tmp};
use sparsedm_tensor::Device;
use sparsedm_train::data::LoaderConfig;
use sparsedm_train::data::loader::make_batch;
use sparsedm_train::{RunConfig, TrainStep, Trainer, build};

fn config(sets: &[&str]) -> RunConfig {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    RunConfig::parse(TINY, "tiny", &sets).unwrap()
}

/// Each row of `label_emb.weight` after one step, and whether it moved from the start.
fn label_rows_moved(sets: &[&str]) -> Vec<bool> {
    let cfg = config(sets);
    let data = build::dataset(&cfg).unwrap();
    let batch = make_batch(data.as_ref(), &LoaderConfig { batch_size: 16, seed: 1, random_flip: false, prefetch: 1 }, 0).unwrap();
    let mut step = TrainStep::new(&cfg, Device::Cpu, None).unwrap();
    let row = |step: &TrainStep| {
        let params = step.student().store.params();
        let (_, w) = params.iter().find(|(n, _)| n == "label_emb.weight").expect("a label embedding");
        w.to_vec_f32().unwrap()
    };
    let before = row(&step);
    step.run(&batch).unwrap();
    let after = row(&step);
    let d = before.len() / 4;
    (0..4).map(|r| before[r * d..(r + 1) * d] != after[r * d..(r + 1) * d]).collect()
}

#[test]
fn p_uncond_trains_the_null_label_and_only_it_does() {
    // No weight decay: a row without gradient stays exactly where it was (AdamW's update is 0/ε).
    let base = ["nnet.num_classes=4", "optimizer.weight_decay=0", "lr_scheduler.warmup_steps=0"];
    let plain = label_rows_moved(&base);
    assert_eq!(plain, [true, true, true, false], "without p_uncond the three shape labels train, the null label (3) does not");
    let cfg: Vec<&str> = base.iter().copied().chain(["dataset.p_uncond=0.5"]).collect();
    let guided = label_rows_moved(&cfg);
    assert!(guided[3], "with p_uncond = 0.5 some of the 16 labels became the null label 3, which trained");
    assert!(guided[..3].iter().any(|&m| m), "the real labels train too");
}

#[test]
fn a_class_conditional_run_draws_its_preview_grid_with_labels() {
    let dir = tmp("cond-grid");
    let run = dir.join("run");
    let cfg = config(&["nnet.num_classes=4", "dataset.p_uncond=0.15", "sample.cfg_scale=1.0", "sample.grid=6", "sample.steps=2"]);
    let mut t = Trainer::new(cfg, &run, false, Device::Cpu).unwrap();
    t.train_step().unwrap();
    let grid = t.sample_grid().unwrap();
    assert!(grid.is_file(), "{} was written", grid.display());
    // The export a `sample` reads keeps what it needs to draw labels: the dataset and p_uncond.
    let export = dir.join("model.safetensors");
    t.export_model(&export, true).unwrap();
    let restored = sparsedm_train::restore::restore_on(&export, true, None, Device::Cpu).unwrap();
    let run_cfg = restored.run.expect("the export carries its run config");
    assert_eq!(run_cfg.dataset.p_uncond, 0.15);
    assert_eq!(run_cfg.dataset.name.label_classes(), 3);
}

#[test]
fn labels_that_do_not_fit_are_refused_before_the_run_is_made() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["dataset.p_uncond=0.1"], &["dataset.p_uncond = 0.1", "class-conditional models only"]),
        (&["nnet.num_classes=3", "dataset.p_uncond=0.1"], &["nnet.num_classes = 3", "nnet.num_classes = 4"]),
        (&["nnet.num_classes=2"], &["nnet.num_classes = 2", "fewer than the 3 class labels of shapes"]),
        (&["nnet.num_classes=4", "sample.cfg_scale=2"], &["sample.cfg_scale = 2", "dataset.p_uncond"]),
    ];
    for (sets, needles) in cases {
        let dir = tmp("cond-refused");
        let run = dir.join("run");
        let e = Trainer::new(config(sets), &run, false, Device::Cpu).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "{sets:?}: {e:?} does not name {n:?}");
        }
        assert!(!run.exists(), "{sets:?}: a refused run leaves no folder");
    }
    let e = RunConfig::parse(TINY, "tiny", &["dataset.p_uncond=1.0".into()]).unwrap_err().to_string();
    assert!(e.contains("dataset.p_uncond = 1"), "{e}");
    // An unlabelled dataset cannot feed a class-conditional model.
    let cfg = config(&["nnet.num_classes=4"]);
    let e = sparsedm_train::validate::check_labels(&cfg, Some(4), 0).unwrap_err().to_string();
    assert!(e.contains("nnet.num_classes = 4") && e.contains("has none"), "{e}");
    sparsedm_train::validate::check_labels(&cfg, Some(4), 3).unwrap();
    sparsedm_train::validate::check_labels(&config(&[]), None, 3).unwrap();
}

/// Writes a `size`×`size` PNG of one colour.
fn png(path: &std::path::Path, size: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(size, size, image::Rgb(rgb)).save(path).unwrap();
}

/// `dataset.class_folders` labels a folder's images by class sub-folder, as torchvision's
/// `ImageFolder`: classes sorted by name (nested folders belong to their class), so a
/// class-conditional model trains on any labelled image collection; images outside a class
/// folder, an empty class and the key on another dataset are refused.
#[test]
fn class_folders_label_a_folder_of_images() {
    let dir = tmp("class-folders");
    let data = dir.join("data");
    for (i, f) in ["b_dog/1.png", "b_dog/2.png", "a_cat/1.png", "a_cat/nested/2.png", "a_cat/3.png"].iter().enumerate() {
        png(&data.join(f), 16, [i as u8 * 40, 10, 200]);
    }
    let path = format!("dataset.path=\"{}\"", data.display());
    let sets = [
        "dataset.name=\"folder\"",
        &path,
        "dataset.class_folders=true",
        "nnet.num_classes=3",
        "dataset.p_uncond=0.1",
        "sample.grid=4",
        "sample.steps=2",
    ];
    let cfg = config(&sets);
    assert_eq!(cfg.dataset.label_classes().unwrap(), 2);
    let ds = build::dataset(&cfg).unwrap();
    assert_eq!(ds.num_classes(), 2);
    let labels: Vec<i64> = (0..ds.len()).map(|i| ds.label(i).unwrap()).collect();
    assert_eq!(labels, [0, 0, 0, 1, 1], "a_cat's three images (one nested) are class 0, b_dog's two class 1");
    assert!(ds.describe().contains("in 2 class folders"), "{}", ds.describe());
    let mut t = Trainer::new(cfg, &dir.join("run"), false, Device::Cpu).unwrap();
    t.train_step().unwrap();
    assert!(t.sample_grid().unwrap().is_file());
    // Without the key the same folder is unlabelled, and a class-conditional model is refused.
    let plain = config(&["dataset.name=\"folder\"", &path, "nnet.num_classes=3"]);
    assert_eq!(plain.dataset.label_classes().unwrap(), 0);
    let e = Trainer::new(plain, &dir.join("plain"), false, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("dataset.name = folder has none"), "{e}");

    png(&data.join("stray.png"), 16, [0, 0, 0]);
    let e = build::dataset(&config(&sets)).err().expect("refused").to_string();
    assert!(e.contains("stray.png") && e.contains("has no class"), "{e}");
    std::fs::remove_file(data.join("stray.png")).unwrap();
    std::fs::create_dir_all(data.join("c_empty")).unwrap();
    let e = build::dataset(&config(&sets)).err().expect("refused").to_string();
    assert!(e.contains("class folder 2 (c_empty) holds no PNG or JPEG images"), "{e}");
    let e = RunConfig::parse(TINY, "tiny", &["dataset.class_folders=true".into()]).unwrap_err().to_string();
    assert!(e.contains("dataset.class_folders applies to dataset.name = \"folder\""), "{e}");
}
