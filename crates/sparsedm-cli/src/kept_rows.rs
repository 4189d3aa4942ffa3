//! Finished rows of `demo`/`repro` kept on disk, so that `repro --resume` does not make them
//! again. At paper scale a row is days of training, then hours of sampling (50,000 images of
//! 1000 sampler steps) and of Inception scoring; resuming a table interrupted in its fifth row
//! used to re-sample and re-score the four finished ones (their trainings were kept, their
//! results were not).
//!
//! A row's sampling (50,000 images, hours at paper scale) is kept as it goes, too: after each
//! batch its images are appended to `runs/<slug>.samples.u8` and where it stands (images done,
//! the random stream, seconds and N:M layer calls so far) written to `runs/<slug>.samples.json`,
//! so that `--resume` after a stop in sampling continues at the next batch — the same images an
//! uninterrupted draw makes ([`sparsedm_train::samples::generate_from`]).
//!
//! Each finished row is written as `runs/<slug>.row.json` (the row and the [`RowKey`] it was made
//! with) and `runs/<slug>.preview.npz` (its first samples, for the comparison figure), beside
//! the row's run folder; `--force` removes them with `runs/`. A kept row is used only when its key
//! equals the one the command would make it with, its grid and model files are still in the
//! output folder, and its training run's stored config is unchanged; otherwise the row is made
//! anew (its training still resumes from its checkpoints).

use crate::lab::Row;
use anyhow::{Context, Result};
use sparsedm_diffusion::NoiseSchedule;
use sparsedm_tensor::Rng;
use sparsedm_tensor::nm_cpu::LayerCalls;
use sparsedm_train::build::Bundle;
use sparsedm_train::experiment::{DrawSpec, draw_from};
use sparsedm_train::samples::{Images, SampleProgress};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything a row's result depends on, as the command spells it: the row (slug, method,
/// pattern, training steps), the recipe every row shares (the base run config, the dense
/// checkpoint's path), how samples are drawn and what they are judged against.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RowKey {
    pub slug: String,
    /// The method with its parameters (`Debug` of [`crate::lab::Method`]).
    pub method: String,
    pub pattern: Option<String>,
    pub steps: u64,
    /// The shared run config, as TOML.
    pub base: String,
    /// The dense checkpoint: its path and its weights ([`file_fingerprint`]), so that another
    /// model at the same path makes the rows again.
    pub dense: String,
    /// Sample count, sampler, steps, seed, clipping (`Debug` of the draw spec).
    pub draw: String,
    /// [`sparsedm_train::experiment::Judge::fingerprint`].
    pub judge: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    key: RowKey,
    /// The row's training run's `config.toml` when the row was made (trained rows).
    run_config: Option<String>,
    row: Row,
}

/// `path (N tensors, FNV-1a XXXXXXXXXXXXXXXX)`: a checkpoint named with a hash of its tensors —
/// each one's name, shape and values as f32, in name order — so that what the rows depend on is
/// compared, not the file's bytes: the same weights stored in f16 or f32, or with other metadata
/// (the dense row writes the weights it loaded back to the dense path), fingerprint alike, and
/// one changed weight does not. A U-ViT-S/2 checkpoint takes a fraction of a second, against
/// the hours of a paper-scale row.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let mut tensors = sparsedm_tensor::load_weights(path, None).with_context(|| format!("cannot read {}", path.display()))?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, t) in &tensors {
        eat(name.as_bytes());
        eat(&[0]);
        for &d in t.shape() {
            eat(&(d as u64).to_le_bytes());
        }
        let values = t.to_vec_f32().with_context(|| format!("{}: tensor {name}", path.display()))?;
        for v in values {
            eat(&v.to_bits().to_le_bytes());
        }
    }
    Ok(format!("{} ({} tensors, FNV-1a {h:016x})", path.display(), tensors.len()))
}

/// Records which dense checkpoint (its [`file_fingerprint`]) row `slug`'s fine-tuning starts
/// from, as `runs/<slug>.dense`. When `resuming` that run, a recorded checkpoint other than
/// `dense` is an error: the run's weights descend from the recorded one, so continuing it would
/// mix the two (a training run resumes from its own checkpoint, whatever `train.init` says).
pub fn stamp_dense(out: &Path, slug: &str, dense: &str, resuming: bool) -> Result<()> {
    let runs = out.join("runs");
    let stamp = runs.join(format!("{slug}.dense"));
    if resuming
        && let Ok(recorded) = std::fs::read_to_string(&stamp)
        && recorded != dense
    {
        anyhow::bail!(
            "{slug}: its training run {} started from another dense checkpoint ({recorded}), not {dense}: it cannot continue from this one; \
             give the checkpoint it started from, or run without --resume to make the row anew",
            runs.join(slug).display()
        );
    }
    std::fs::create_dir_all(&runs).with_context(|| format!("cannot create {}", runs.display()))?;
    sparsedm_tensor::write_atomic(&stamp, dense.as_bytes())?;
    Ok(())
}

fn json_path(runs: &Path, slug: &str) -> PathBuf {
    runs.join(format!("{slug}.row.json"))
}

fn preview_path(runs: &Path, slug: &str) -> PathBuf {
    runs.join(format!("{slug}.preview.npz"))
}

fn run_config(runs: &Path, slug: &str) -> Option<String> {
    std::fs::read_to_string(runs.join(slug).join("config.toml")).ok()
}

/// Where a row's sampling stood after its last finished batch.
#[derive(serde::Serialize, serde::Deserialize)]
struct Partial {
    key: RowKey,
    run_config: Option<String>,
    done: usize,
    /// The random stream after those images: `Rng::state`.
    rng: (u64, u64),
    seconds: f64,
    /// N:M layer calls on the N:M kernels and on the dense GEMM so far.
    calls: (u64, u64),
}

fn partial_paths(runs: &Path, slug: &str) -> (PathBuf, PathBuf) {
    (runs.join(format!("{slug}.samples.json")), runs.join(format!("{slug}.samples.u8")))
}

/// What a row's sampling measured: the images, the seconds they took and the N:M layer calls
/// (on the N:M kernels, on the dense GEMM), summed over the invocations that drew them.
pub struct Drawn {
    pub images: Images,
    pub seconds: f64,
    pub calls: (u64, u64),
}

/// Draws a row's samples, saving each batch as it is drawn; with `resume`, continues a sampling
/// of the same key that an earlier invocation stopped (else starts anew). `stop` is checked
/// after each batch ([`sparsedm_train::TrainError::Stopped`]).
// The batch sink returns the trainer's error type, as `draw_from` does.
#[allow(clippy::result_large_err)]
pub fn draw_kept(
    out: &Path,
    key: &RowKey,
    resume: bool,
    bundle: &Bundle,
    schedule: &dyn NoiseSchedule,
    spec: &DrawSpec,
    stop: &dyn Fn() -> bool,
) -> Result<Drawn> {
    let runs = out.join("runs");
    std::fs::create_dir_all(&runs).with_context(|| format!("cannot create {}", runs.display()))?;
    let (json, raw) = partial_paths(&runs, &key.slug);
    let [_, h, w] = bundle.config.input_shape();
    let image_bytes = h * w * 3;
    let earlier = if resume { continued(&runs, key, &json, &raw, image_bytes, spec.n) } else { None };
    let (from, mut seconds, mut calls) = match earlier {
        Some((p, data)) => {
            eprintln!("  {}: sampling continues at image {} of {}", key.slug, p.done, spec.n);
            let rng = Rng::from_state(p.rng.0, p.rng.1);
            (Some((Images { data, n: p.done, h, w }, SampleProgress { done: p.done, rng })), p.seconds, p.calls)
        }
        None => (None, 0.0, (0, 0)),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&raw)
        .with_context(|| format!("cannot write {}", raw.display()))?;
    let kept_bytes = from.as_ref().map_or(0, |(imgs, _)| imgs.data.len()) as u64;
    file.set_len(kept_bytes)
        .and_then(|()| file.seek(std::io::SeekFrom::Start(kept_bytes)).map(|_| ()))
        .with_context(|| format!("cannot write {}", raw.display()))?;
    let run_config = run_config(&runs, &key.slug);
    let (mut started, mut before) = (Instant::now(), sparsedm_tensor::nm_cpu::layer_calls());
    let images = draw_from(
        bundle,
        schedule,
        spec,
        from,
        |imgs, p| {
            let now = sparsedm_tensor::nm_cpu::layer_calls();
            seconds += started.elapsed().as_secs_f64();
            calls = add_calls(calls, before, now);
            (started, before) = (Instant::now(), now);
            let io = |e: std::io::Error| sparsedm_train::TrainError::Data { path: raw.clone(), msg: e.to_string() };
            file.write_all(&imgs.data).and_then(|()| file.flush()).map_err(io)?;
            let partial = Partial { key: key.clone(), run_config: run_config.clone(), done: p.done, rng: p.rng.state(), seconds, calls };
            let text = serde_json::to_vec(&partial).map_err(|e| sparsedm_train::TrainError::Config(e.to_string()))?;
            sparsedm_tensor::write_atomic(&json, &text).map_err(sparsedm_train::TrainError::from)?;
            Ok(())
        },
        stop,
    )?;
    Ok(Drawn { images, seconds, calls })
}

fn add_calls(sum: (u64, u64), before: LayerCalls, now: LayerCalls) -> (u64, u64) {
    (sum.0 + (now.sparse - before.sparse), sum.1 + (now.dense - before.dense))
}

/// The images and progress an earlier, stopped sampling of `key` saved, when they can be used.
fn continued(runs: &Path, key: &RowKey, json: &Path, raw: &Path, image_bytes: usize, n: usize) -> Option<(Partial, Vec<u8>)> {
    let text = std::fs::read_to_string(json).ok()?;
    let p: Partial = serde_json::from_str(&text).ok()?;
    if p.key != *key || p.run_config != run_config(runs, &key.slug) || p.done > n {
        eprintln!("  {}: the samples an earlier run drew are not used (made with other settings); sampling anew", key.slug);
        return None;
    }
    let mut data = std::fs::read(raw).ok()?;
    if data.len() < p.done * image_bytes {
        eprintln!("  {}: {} holds fewer images than its progress says; sampling anew", key.slug, raw.display());
        return None;
    }
    data.truncate(p.done * image_bytes);
    Some((p, data))
}

/// Writes a finished row (atomically: a crash leaves the previous file or none) and removes its
/// sampling's progress files.
pub fn keep(out: &Path, key: &RowKey, row: &Row) -> Result<()> {
    let runs = out.join("runs");
    std::fs::create_dir_all(&runs).with_context(|| format!("cannot create {}", runs.display()))?;
    let p = &row.preview;
    let preview = sparsedm_fid::U8Images { data: p.data.clone(), n: p.n, height: p.h, width: p.w, channels: 3 };
    sparsedm_fid::write_images_npz(preview_path(&runs, &key.slug), &preview)?;
    let kept = Kept { key: key.clone(), run_config: run_config(&runs, &key.slug), row: row.clone() };
    let json = serde_json::to_vec_pretty(&kept)?;
    sparsedm_tensor::write_atomic(json_path(&runs, &key.slug), &json)?;
    let (partial, raw) = partial_paths(&runs, &key.slug);
    for f in [partial, raw] {
        if f.exists() {
            std::fs::remove_file(&f).with_context(|| format!("cannot remove {}", f.display()))?;
        }
    }
    Ok(())
}

/// The row kept for `key` by an earlier invocation in `out`, if it is still valid (see the
/// module's documentation); `None` otherwise, with a line saying why when a kept row is there
/// but cannot be used.
pub fn kept(out: &Path, key: &RowKey) -> Option<Row> {
    let runs = out.join("runs");
    let text = std::fs::read_to_string(json_path(&runs, &key.slug)).ok()?;
    let why_not = |why: &str| {
        eprintln!("  {}: the result kept from the earlier run is not used ({why}); making the row again", key.slug);
        None
    };
    let Ok(kept) = serde_json::from_str::<Kept>(&text) else { return why_not("its file cannot be read") };
    if kept.key != *key {
        return why_not("it was made with other settings");
    }
    if kept.run_config != run_config(&runs, &key.slug) {
        return why_not("its training run's config.toml changed since");
    }
    let row = kept.row;
    if !out.join(&row.grid).is_file() || !out.join(&row.checkpoint).is_file() {
        return why_not(&format!("{} or {} is missing", row.grid, row.checkpoint));
    }
    let Ok(p) = sparsedm_fid::read_images_npz(preview_path(&runs, &key.slug)) else { return why_not("its preview images cannot be read") };
    Some(Row { preview: Images { data: p.data, n: p.n, h: p.height, w: p.width }, ..row })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsedm_train::experiment::draw;
    use sparsedm_train::{RunConfig, TrainError, build};

    /// The `done` of a draw stopped with [`TrainError::Stopped`].
    fn stopped_at(r: Result<Drawn>) -> usize {
        match r.map(|d| d.images.n).map_err(|e| e.downcast::<TrainError>()) {
            Err(Ok(TrainError::Stopped { done, .. })) => done,
            other => panic!("expected a stopped draw, got {:?}", other.map_err(|e| e.map(|e| e.to_string()))),
        }
    }

    /// The dense checkpoint enters a row's key by its tensors: the same weights fingerprint alike
    /// in f32 or f16 and with other metadata, one changed value (at the same path and size) does
    /// not; a missing file is an error naming it.
    #[test]
    fn the_dense_checkpoint_is_fingerprinted_by_its_tensors() {
        use sparsedm_tensor::{DType, Device, Tensor};
        let dir = sparsedm_testkit::Scratch::new("kept-fingerprint");
        let path = dir.path().join("dense.safetensors");
        let w: Vec<f32> = (0..300_000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0).collect();
        let tensors = |w: &[f32]| {
            vec![
                ("b.weight".to_string(), Tensor::from_vec(w.to_vec(), &[600, 500], &Device::Cpu).unwrap()),
                ("a.bias".to_string(), Tensor::from_vec(vec![0.5; 7], &[7], &Device::Cpu).unwrap()),
            ]
        };
        sparsedm_tensor::save_safetensors(&path, &tensors(&w), None).unwrap();
        let first = file_fingerprint(&path).unwrap();
        assert!(first.starts_with(&format!("{} (2 tensors, FNV-1a ", path.display())), "{first}");
        // In f16 (the values are exact there), reversed, with metadata: the same weights.
        let mut f16: Vec<(String, Tensor)> = tensors(&w).into_iter().rev().map(|(n, t)| (n, t.to_dtype(DType::F16).unwrap())).collect();
        f16.swap(0, 1);
        let meta = std::collections::HashMap::from([("k".to_string(), "v".to_string())]);
        sparsedm_tensor::save_safetensors(&path, &f16, Some(meta)).unwrap();
        assert_eq!(file_fingerprint(&path).unwrap(), first);
        let mut changed = w.clone();
        changed[250_000] += 1.0;
        sparsedm_tensor::save_safetensors(&path, &tensors(&changed), None).unwrap();
        assert_ne!(file_fingerprint(&path).unwrap(), first);
        let e = file_fingerprint(&dir.path().join("gone.safetensors")).unwrap_err();
        assert!(format!("{e:#}").contains("gone.safetensors"), "{e:#}");
    }

    /// A row's sampling stopped after a batch continues, on resume, at the next batch, to the
    /// images an uninterrupted draw makes; without resume, or for another key, it starts anew.
    #[test]
    fn a_stopped_sampling_continues_on_resume() {
        let dir = sparsedm_testkit::Scratch::new("kept-draw");
        let overrides: Vec<String> = ["nnet.embed_dim=32", "nnet.depth=2", "nnet.num_heads=2"].map(String::from).into();
        let cfg = RunConfig::load(crate::presets::DEMO_PRESET, &overrides).unwrap();
        let bundle = build::new_model(&cfg, 1).unwrap();
        bundle.store.set_training(false);
        let schedule = build::schedule(&cfg).unwrap();
        // Batches of 64, 64 and 2.
        let spec = DrawSpec { n: 130, sampler: cfg.sample.sampler, steps: 2, seed: 5, clip_denoised: None };
        let key = RowKey {
            slug: "dense".into(),
            method: "Dense".into(),
            pattern: None,
            steps: 0,
            base: String::new(),
            dense: "dense.safetensors".into(),
            draw: format!("{spec:?}"),
            judge: 1,
        };
        let out = dir.path();
        let batches = std::cell::Cell::new(0);
        let after_one = || {
            batches.set(batches.get() + 1);
            batches.get() >= 1
        };
        let draw_with =
            |key: &RowKey, resume: bool, stop: &dyn Fn() -> bool| draw_kept(out, key, resume, &bundle, schedule.as_ref(), &spec, stop);
        assert_eq!(stopped_at(draw_with(&key, false, &after_one)), 64);
        assert_eq!(std::fs::metadata(out.join("runs/dense.samples.u8")).unwrap().len(), 64 * 16 * 16 * 3);
        assert!(out.join("runs/dense.samples.json").is_file());

        // Continued: one more batch, then stopped again at 128.
        batches.set(0);
        assert_eq!(stopped_at(draw_with(&key, true, &after_one)), 128, "continued at 64");
        let drawn = draw_with(&key, true, &|| false).unwrap();
        assert_eq!(drawn.images.data, draw(&bundle, schedule.as_ref(), &spec).unwrap().data, "the uninterrupted images");
        assert!(drawn.seconds > 0.0);

        // Without --resume, or for a row made with other settings, the saved samples are not used.
        batches.set(0);
        assert_eq!(stopped_at(draw_with(&key, false, &after_one)), 64, "without resume: anew");
        let other = RowKey { judge: 2, ..key.clone() };
        batches.set(0);
        assert_eq!(stopped_at(draw_with(&other, true, &after_one)), 64, "another key: anew");
    }
}
