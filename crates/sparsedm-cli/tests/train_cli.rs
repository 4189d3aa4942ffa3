//! `sparsedm train` / `sample` through the real binary: a run killed with
//! SIGKILL between checkpoints and resumed ends with exactly the weights of
//! an uninterrupted run; corrupt inputs give one clear error and exit 1.

use sparsedm_testkit::Scratch;
#[cfg(unix)]
use sparsedm_testkit::process::{ctrl_c, ended, wait_for};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sparsedm");

const TINY: &str = r#"
seed = 5
arch = "uvit"
[nnet]
img_size = 16
patch_size = 4
embed_dim = 32
depth = 2
num_heads = 2
mlp_ratio = 2.0
[dataset]
name = "shapes"
resolution = 16
len = 128
[train]
n_steps = 40
batch_size = 8
save_interval = 4
keep_last = 2
ema_rate = 0.9
[optimizer]
lr = 1e-3
weight_decay = 0.03
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 4
[sample]
sampler = "dpm-solver-2"
steps = 4
"#;

/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn tmp(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), name)
}

fn final_model(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let path = dir.join("checkpoints").join("step_00000040.safetensors");
    sparsedm_tensor::load_safetensors(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|(n, _)| n.starts_with("model.") || n.starts_with("ema."))
        .map(|(n, t)| (n, t.to_vec_f32().unwrap()))
        .collect()
}

#[test]
fn killed_run_resumes_bit_identically() {
    let root = tmp("kill-resume");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();

    let (a, b) = (root.join("a"), root.join("b"));
    let st = Command::new(BIN).args(["train", "--config"]).arg(&cfg).arg("--out").arg(&a).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));

    let mut child =
        Command::new(BIN).args(["train", "--config"]).arg(&cfg).arg("--out").arg(&b).stderr(std::process::Stdio::null()).spawn().unwrap();
    let marker = b.join("checkpoints").join("step_00000008.safetensors");
    let start = Instant::now();
    while !marker.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!b.join("checkpoints").join("step_00000040.safetensors").exists(), "the run must be killed before it finishes");

    let st = Command::new(BIN).args(["train", "--resume"]).arg(&b).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (ma, mb) = (final_model(&a), final_model(&b));
    assert_eq!(ma.len(), mb.len());
    for ((na, va), (nb, vb)) in ma.iter().zip(&mb) {
        assert_eq!(na, nb);
        assert!(va == vb, "{na} differs between the uninterrupted and the resumed run");
    }
    // keep_last = 2: old checkpoints were rotated away, and no temp file is left.
    let left: Vec<_> = std::fs::read_dir(b.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.len() <= 3, "{left:?}");

    // Samples from the finished run, as PNG files and as npz.
    let ck = b.join("checkpoints").join("step_00000040.safetensors");
    let out = root.join("png");
    let st = Command::new(BIN).args(["sample", "--checkpoint"]).arg(&ck).args(["--n", "3", "--out"]).arg(&out).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
    let npz = root.join("s.npz");
    // What a sample killed mid-way leaves (its unfinished npz, under a process id no longer
    // running: pid_max is at most 2^22) is removed by the next sample to that file.
    let stale = root.join("s.npz.tmp-4194305");
    std::fs::write(&stale, b"partial").unwrap();
    let st =
        Command::new(BIN).args(["sample", "--checkpoint"]).arg(&ck).args(["--n", "2", "--steps", "3", "--out"]).arg(&npz).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    #[cfg(target_os = "linux")]
    {
        assert!(!stale.exists(), "the stale temporary is removed");
        assert!(String::from_utf8_lossy(&st.stderr).contains("the unfinished npz of an earlier sample that was killed"));
    }
    let imgs = sparsedm_fid::read_images_npz(&npz).unwrap();
    assert_eq!((imgs.n, imgs.height, imgs.width, imgs.channels), (2, 16, 16, 3));
    // `--out FILE.png`: one labelled grid that shows each of those images (same seed and
    // steps), every pixel as a 4×4 block (16 px samples are shown at 64 px).
    let grid = root.join("grid.png");
    let st = Command::new(BIN)
        .args(["sample", "--checkpoint"])
        .arg(&ck)
        .args(["--n", "2", "--steps", "3", "--out"])
        .arg(&grid)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let g = image::open(&grid).unwrap().to_rgb8();
    for i in 0..2 {
        let px = |x: usize, y: usize| &imgs.data[((i * 16 + y) * 16 + x) * 3..][..3];
        let at =
            |ox: u32, oy: u32| (0..64u32).all(|y| (0..64u32).all(|x| g.get_pixel(ox + x, oy + y).0 == px(x as usize / 4, y as usize / 4)));
        let found = (0..=g.height() - 64).any(|oy| (0..=g.width() - 64).any(|ox| at(ox, oy)));
        assert!(found, "image {i} of the npz is not in the {}x{} grid", g.width(), g.height());
    }
    assert!(!root.join("grid.png").is_dir());
}

fn fails_with(args: &[&str], needle: &str) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
}

#[test]
fn corrupt_inputs_give_clear_errors() {
    let root = tmp("corrupt");
    let bad_cifar = root.join("cifar");
    std::fs::create_dir_all(&bad_cifar).unwrap();
    std::fs::write(bad_cifar.join("data_batch_1.bin"), vec![0u8; 3000]).unwrap();
    let cfg = root.join("c.toml");
    std::fs::write(&cfg, TINY.replace("name = \"shapes\"", &format!("name = \"cifar10\"\npath = {:?}", bad_cifar.display().to_string())))
        .unwrap();
    let c = cfg.display().to_string();
    fails_with(&["train", "--config", &c, "--out", &root.join("r").display().to_string()], "data_batch_1.bin");
    fails_with(&["train", "--config", "no-such-preset"], "presets:");
    fails_with(&["train", "--config", "demo_shapes_uvit", "--set", "train.batch_size=0"], "batch_size");
    let junk = root.join("junk.safetensors");
    std::fs::write(&junk, b"garbage").unwrap();
    fails_with(&["sample", "--checkpoint", &junk.display().to_string(), "--n", "1", "--out", "x"], "junk.safetensors");
    fails_with(&["train", "--resume", &root.join("nothing").display().to_string()], "nothing");
    // Paths in the config are named by their key.
    let out = root.join("r").display().to_string();
    fails_with(
        &["train", "--config", "demo_shapes_uvit", "--set", "train.init=\"no/init.safetensors\"", "--out", &out],
        "train.init = \"no/init.safetensors\": No such file",
    );
    fails_with(
        &[
            "train",
            "--config",
            "demo_shapes_uvit",
            "--set",
            "sparse.pattern=\"2:4\"",
            "--set",
            "sparse.teacher=\"no/teacher.safetensors\"",
            "--out",
            &out,
        ],
        "sparse.teacher = \"no/teacher.safetensors\": No such file",
    );
    fails_with(
        &["train", "--config", "demo_shapes_uvit", "--set", &format!("train.init={:?}", root.display().to_string()), "--out", &out],
        "is a folder",
    );
}

/// `train.init` written by a run whose model differs (here its MLP width)
/// is refused before any step, naming the tensors and the `nnet` keys that
/// differ, so the user knows which `--set` builds the same model.
#[test]
fn init_from_a_differently_built_model_names_the_nnet_keys() {
    let root = tmp("init-mismatch");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let a = root.join("a");
    let short = ["--set", "train.n_steps=2", "--set", "train.save_interval=2", "--device", "cpu"];
    let st = Command::new(BIN).args(["train", "--config"]).arg(&cfg).arg("--out").arg(&a).args(short).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let model = root.join("a.safetensors");
    let st = Command::new(BIN)
        .args(["export", "--format", "safetensors", "--checkpoint"])
        .arg(a.join("checkpoints").join("step_00000002.safetensors"))
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let init = format!("train.init={}", model.display());
    let b = root.join("b");
    // A run of this config from `init` with another MLP width: refused before any step.
    let refused_wider = |init: &str| {
        let st = Command::new(BIN)
            .args(["train", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&b)
            .args(short)
            .args(["--set", init, "--set", "nnet.mlp_ratio=4.0"])
            .output()
            .unwrap();
        assert!(!st.status.success(), "a model of another width must not load");
        assert!(!b.join("checkpoints").exists(), "no step may run");
        String::from_utf8_lossy(&st.stderr).into_owned()
    };
    let err = refused_wider(&init);
    assert!(err.contains("does not match the model") && err.contains("mlp.fc1.weight"), "{err}");
    assert!(err.contains("nnet.mlp_ratio = 2.0 there, 4.0 here"), "{err}");
    // The same file with its model recorded as `prune`/`export` record official
    // weights' (arch + constructor arguments instead of a run config): named too.
    let recorded = root.join("recorded.safetensors");
    let mut meta = sparsedm_tensor::load_safetensors_metadata(&model).unwrap();
    let run = sparsedm_train::RunConfig::parse(&meta.remove("sparsedm.config").unwrap(), "t", &[]).unwrap();
    let described = sparsedm_diffusion::ModelConfig::from_json(sparsedm_diffusion::Arch::UViT, &run.nnet_json().unwrap()).unwrap();
    meta.insert(sparsedm_diffusion::MODEL_METADATA_KEY.to_string(), described.to_metadata());
    sparsedm_tensor::save_safetensors(&recorded, &sparsedm_tensor::load_safetensors(&model).unwrap(), Some(meta)).unwrap();
    let err = refused_wider(&format!("train.init={}", recorded.display()));
    assert!(err.contains("nnet.mlp_ratio = 2.0 there, 4.0 here"), "{err}");
    // The same model loads.
    let st = Command::new(BIN)
        .args(["train", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(root.join("c"))
        .args(short)
        .args(["--set", &init])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
}

/// `sparsedm ARGS` running in the background, its stderr captured.
fn started(args: &[&str]) -> std::process::Child {
    Command::new(BIN).args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Ctrl-C stops `train` after the step in progress with a checkpoint of that step (exit 130, and
/// it says how to continue); `--resume` goes on from it. Ctrl-C stops `sample` with no
/// unfinished npz left behind.
#[cfg(unix)]
#[test]
fn ctrl_c_saves_the_step_and_resume_continues_and_sample_leaves_no_partial_npz() {
    let root = tmp("ctrl-c");
    let cfg = root.join("long.toml");
    std::fs::write(&cfg, TINY.replace("n_steps = 40", "n_steps = 1000000").replace("save_interval = 4", "save_interval = 1000000"))
        .unwrap();
    let run = root.join("run");
    let child = started(&["train", "--device", "cpu", "--config", s(&cfg), "--out", s(&run)]);
    let metrics = run.join("metrics.jsonl");
    wait_for("three logged steps", || std::fs::read_to_string(&metrics).is_ok_and(|t| t.lines().count() >= 3));
    ctrl_c(child.id());
    let out = ended(child);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let saved: Vec<_> =
        std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(saved.len(), 1, "one checkpoint, of the step it stopped at: {saved:?}");
    let step: u64 = saved[0].strip_prefix("step_").and_then(|s| s.strip_suffix(".safetensors")).unwrap().parse().unwrap();
    assert!(step >= 3, "{saved:?}");
    let said = err.lines().last().unwrap();
    assert!(said.starts_with(&format!("interrupted: stopped at step {step} of 1000000")) && said.contains("--resume"), "{err}");
    let o = Command::new(BIN)
        .args(["train", "--device", "cpu", "--resume"])
        .arg(&run)
        .args(["--set", &format!("train.n_steps={}", step + 2)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains(&format!("from step {step}")) && err.contains(&format!("done at step {}", step + 2)),
        "{err}"
    );

    // sample: the npz's temporary file exists once sampling runs; after Ctrl-C neither it nor the npz is left.
    let ck = run.join("checkpoints").join(format!("step_{:08}.safetensors", step + 2));
    let npz = root.join("many.npz");
    let child = started(&["sample", "--device", "cpu", "--n", "1000000", "--steps", "50", "--checkpoint", s(&ck), "--out", s(&npz)]);
    let partial = || std::fs::read_dir(root.path()).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("many.npz.tmp"));
    wait_for("the npz's temporary file", partial);
    ctrl_c(child.id());
    let out = ended(child);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: stopped after") && err.contains("of 1000000 images; the unfinished npz is removed"), "{err}");
    assert!(!npz.exists() && !partial(), "nothing of the npz is left");
}

/// While a run trains, a second `train` in its folder is refused before it touches anything:
/// `--resume` (it would remove the running run's temporaries and write checkpoints beside its
/// own) and `--force` (it would delete the running run's checkpoints) both exit 1 naming the
/// process that holds the folder; the run's files are as they were. Once that process has
/// stopped, the folder is free again and the run resumes.
#[cfg(unix)]
#[test]
fn a_second_train_in_a_running_runs_folder_is_refused() {
    let root = tmp("busy-run");
    let cfg = root.join("long.toml");
    std::fs::write(&cfg, TINY.replace("n_steps = 40", "n_steps = 1000000").replace("save_interval = 4", "save_interval = 2")).unwrap();
    let run = root.join("run");
    let child = started(&["train", "--device", "cpu", "--config", s(&cfg), "--out", s(&run)]);
    let ckpts = run.join("checkpoints");
    let listed = || {
        let mut names: Vec<String> = std::fs::read_dir(&ckpts)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    wait_for("a checkpoint", || listed().iter().any(|n| n.ends_with(".safetensors")));
    // The holder is named where Linux's /proc/locks says who holds a lock.
    let holder = match std::fs::read_to_string("/proc/locks") {
        Ok(_) => format!("in use by another sparsedm process (pid {}:", child.id()),
        Err(_) => "in use by another sparsedm process".to_string(),
    };
    fails_with(&["train", "--device", "cpu", "--resume", s(&run)], &holder);
    fails_with(&["train", "--device", "cpu", "--config", s(&cfg), "--out", s(&run), "--force"], &holder);
    assert!(run.join("config.toml").is_file() && run.join("metrics.jsonl").is_file(), "--force removed nothing");
    assert!(!listed().is_empty(), "--force removed no checkpoint");
    ctrl_c(child.id());
    let out = ended(child);
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let newest: u64 = listed()
        .iter()
        .filter_map(|n| n.strip_prefix("step_").and_then(|n| n.strip_suffix(".safetensors")).and_then(|n| n.parse().ok()))
        .max()
        .unwrap();
    let o = Command::new(BIN)
        .args(["train", "--device", "cpu", "--resume", s(&run), "--set", &format!("train.n_steps={}", newest + 1)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains(&format!("done at step {}", newest + 1)), "{err}");
}

/// A class-conditional run (`nnet.num_classes = 4` on the 3-class shapes, `dataset.p_uncond`
/// training the null label) draws its preview grid with labels; `sample` of its checkpoint draws
/// each image's label from the run's dataset classes without `--class`, takes `--class` and
/// `--cfg-scale`, and refuses guidance for a run that never trained the null label; weights
/// without a run config (official ones) draw from every label but the last (U-ViT's null label).
/// An npz stores the drawn labels as `arr_1`, a PNG folder as `labels.csv`.
#[test]
fn class_conditional_runs_train_and_sample_with_labels() {
    let root = tmp("class-cond");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let run = |out: &Path, sets: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(["train", "--config"]).arg(&cfg).arg("--out").arg(out).args(["--set", "nnet.num_classes=4", "--set", "train.n_steps=2"]);
        for s in sets {
            c.args(["--set", s]);
        }
        let st = c.output().unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    };
    let guided = root.join("guided");
    run(&guided, &["dataset.p_uncond=0.2", "train.sample_interval=2", "sample.grid=4", "sample.cfg_scale=1.0"]);
    // The preview grid of a class-conditional run labels each cell: the white box in the first
    // cell's top-left corner (4 images of 16 px in 2 columns of 64 px cells).
    let preview = image::open(guided.join("samples").join("step_00000002.png")).unwrap().to_rgb8();
    let grid = sparsedm_train::figures::grid::GAP + 2 * (64 + sparsedm_train::figures::grid::GAP);
    let (x, y) =
        ((preview.width() - grid as u32) / 2 + sparsedm_train::figures::grid::GAP as u32, sparsedm_train::figures::grid::LABEL_BAND as u32);
    assert!(
        (0..8).all(|dy| preview.get_pixel(x, y + dy).0 == [255, 255, 255]),
        "the preview grid of a class-conditional run labels its cells"
    );
    let ck = guided.join("checkpoints").join("step_00000002.safetensors");
    let sample = |ck: &Path, out: &str, extra: &[&str]| {
        Command::new(BIN)
            .args(["sample", "--checkpoint"])
            .arg(ck)
            .args(["--n", "3", "--steps", "2", "--out"])
            .arg(root.join(out))
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = |st: std::process::Output| {
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        String::from_utf8_lossy(&st.stdout).into_owned()
    };
    let drawn = ok(sample(&ck, "drawn.npz", &[]));
    assert!(drawn.contains("class-conditional model: labels drawn uniformly from 0..=2"), "{drawn}");
    let stored = sparsedm_fid::read_labels_npz(root.join("drawn.npz")).unwrap().expect("the npz stores the labels");
    assert!(stored.len() == 3 && stored.iter().all(|l| (0..3).contains(l)), "{stored:?}");
    let images = |f: &str| sparsedm_fid::read_images_npz(root.join(f)).unwrap();
    let one = ok(sample(&ck, "drawn1.npz", &["--batch", "1"]));
    assert_eq!(images("drawn1.npz"), images("drawn.npz"), "{one}");
    assert_eq!(sparsedm_fid::read_labels_npz(root.join("drawn1.npz")).unwrap(), Some(stored.clone()), "the same labels whatever --batch");
    // A grid PNG shows each sample's class in its corner: the grid of the same draw's images and
    // labels, pixel for pixel.
    ok(sample(&ck, "drawn-grid.png", &[]));
    let u = images("drawn.npz");
    let imgs = sparsedm_train::samples::Images { data: u.data.clone(), n: u.n, h: u.height, w: u.width };
    let want = sparsedm_train::figures::grid::render_classes(&imgs, 2, "step_00000002", Some(&stored)).unwrap();
    assert!(image::open(root.join("drawn-grid.png")).unwrap().to_rgb8() == want, "the grid is not the labelled one");
    // A PNG folder lists them in labels.csv, one line per image in file order (--batch 2: rewritten
    // after each batch); --force replaces it with the new draw's.
    let listed = ok(sample(&ck, "drawn-png", &["--batch", "2"]));
    assert!(listed.contains("labels are listed in"), "{listed}");
    let csv = |dir: &str| std::fs::read_to_string(root.join(dir).join("labels.csv")).unwrap();
    let want: String =
        std::iter::once("file,label\n".to_string()).chain(stored.iter().enumerate().map(|(i, l)| format!("{i:06}.png,{l}\n"))).collect();
    assert_eq!(csv("drawn-png"), want);
    ok(sample(&ck, "drawn-png", &["--class", "2", "--force"]));
    assert_eq!(csv("drawn-png"), "file,label\n000000.png,2\n000001.png,2\n000002.png,2\n");
    let c0 = ok(sample(&ck, "c0.npz", &["--class", "0"]));
    assert!(c0.contains("label 0") && !c0.contains("null label"), "{c0}");
    // The last label of a run trained with p_uncond is the null one: sampling it is said to give
    // the model's unconditional samples.
    let c3 = ok(sample(&ck, "c3.npz", &["--class", "3"]));
    assert!(c3.contains("class 3 is the null label of classifier-free guidance (trained with dataset.p_uncond)"), "{c3}");
    assert_eq!(sparsedm_fid::read_labels_npz(root.join("c0.npz")).unwrap(), Some(vec![0, 0, 0]));
    ok(sample(&ck, "c1.npz", &["--class", "1"]));
    ok(sample(&ck, "c2.npz", &["--class", "2"]));
    // Image i with its stored label is image i drawn with that label for every image.
    let (all, size) = (images("drawn.npz"), 16 * 16 * 3);
    for (i, l) in stored.iter().enumerate() {
        let fixed = images(&format!("c{l}.npz"));
        assert_eq!(all.data[i * size..(i + 1) * size], fixed.data[i * size..(i + 1) * size], "image {i} was drawn with label {l}");
    }
    assert_ne!(std::fs::read(root.join("c0.npz")).unwrap(), std::fs::read(root.join("c2.npz")).unwrap(), "the label changes the images");
    let cfg_out = ok(sample(&ck, "g.npz", &["--cfg-scale", "1.5"]));
    assert!(cfg_out.contains("guidance scale 1.5"), "{cfg_out}");
    let refused = |st: std::process::Output, needle: &str| {
        let err = String::from_utf8_lossy(&st.stderr);
        assert_eq!(st.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    };
    refused(sample(&ck, "o.npz", &["--class", "4"]), "class 4 is out of range");

    // Trained without p_uncond: its last label is no null label, so guidance is refused.
    let plain = root.join("plain");
    run(&plain, &[]);
    let plain_ck = plain.join("checkpoints").join("step_00000002.safetensors");
    refused(sample(&plain_ck, "o.npz", &["--cfg-scale", "1"]), "dataset.p_uncond = 0");
    let p3 = ok(sample(&plain_ck, "p3.npz", &["--class", "3"]));
    assert!(!p3.contains("null label"), "{p3}");

    // The same weights without their run config (as official weights come): --class is needed.
    let export = root.join("export.safetensors");
    let st = Command::new(BIN)
        .args(["export", "--checkpoint"])
        .arg(&ck)
        .args(["--format", "safetensors", "--out"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let bare = root.join("bare.safetensors");
    sparsedm_tensor::save_safetensors(&bare, &sparsedm_tensor::load_safetensors(&export).unwrap(), None).unwrap();
    let json = root.join("uvit.json");
    std::fs::write(
        &json,
        r#"{"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "num_classes": 4}"#,
    )
    .unwrap();
    let official = |out: &str, extra: &[&str]| {
        let mut args: Vec<&str> = vec!["--arch", "uvit", "--config", json.to_str().unwrap()];
        args.extend(extra);
        sample(&bare, out, &args)
    };
    let official_drawn = ok(official("official_drawn.npz", &[]));
    assert!(official_drawn.contains("labels drawn uniformly from 0..=2"), "the null label 3 is not drawn: {official_drawn}");
    ok(official("official.npz", &["--class", "2", "--cfg-scale", "1.5"]));
    let o3 = ok(official("official3.npz", &["--class", "3"]));
    assert!(o3.contains("class 3 is the null label of classifier-free guidance (U-ViT's last label)"), "{o3}");
}
