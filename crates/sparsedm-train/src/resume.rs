//! Resume hygiene: what `--resume` does to a run folder before training
//! continues. A run killed mid-save leaves an orphan temporary checkpoint
//! (`.step_XXXXXXXX.safetensors.tmpPID`): it is removed. The newest
//! checkpoint may be corrupt (a torn disk, a bad copy): the newest one that
//! loads — and holds only finite values — is used, and the ones skipped are
//! reported. `metrics.jsonl` may hold rows past that checkpoint (logged
//! before the kill): they are cut so the log has each step once.

use crate::checkpoint::{TrainState, checkpoint_dir, list_checkpoints, load_train_state};
use crate::error::{Result, TrainError};
use std::path::{Path, PathBuf};

/// A checkpoint chosen for resuming, and what was skipped on the way.
#[derive(Debug)]
pub struct Resumable {
    pub state: TrainState,
    pub path: PathBuf,
    /// One line per newer checkpoint that could not be used, with why.
    pub skipped: Vec<String>,
}

/// Whether `name` is a temporary file of an atomic write (`.NAME.tmpPID`,
/// `NAME.tmp-PID`).
fn is_temporary(name: &str) -> bool {
    (name.starts_with('.') && name.contains(".tmp")) || name.contains(".tmp-")
}

/// Removes the temporary files interrupted atomic writes left in the run
/// folder and its `checkpoints/` and `samples/` folders; returns them.
pub fn clean_orphans(run_dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for dir in [run_dir.to_path_buf(), checkpoint_dir(run_dir), run_dir.join("samples")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let temporary = p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(is_temporary);
            if temporary && std::fs::remove_file(&p).is_ok() {
                removed.push(p);
            }
        }
    }
    removed
}

/// The first non-finite value of a training state, as "tensor (value)".
fn non_finite(st: &TrainState) -> Result<Option<String>> {
    let tensors = st.model.iter().map(|(n, t)| (format!("model.{n}"), t)).chain(st.ema.iter().map(|(n, t)| (format!("ema.{n}"), t)));
    for (name, t) in tensors.chain(st.optim.iter().map(|(n, t)| (n.clone(), t))) {
        if t.dtype().is_float()
            && let Some(v) = t.to_vec_f32()?.into_iter().find(|v| !v.is_finite())
        {
            return Ok(Some(format!("{name} holds {v}")));
        }
    }
    Ok(None)
}

/// The newest checkpoint of `run_dir` that loads and holds only finite
/// values; newer ones that do not are listed in [`Resumable::skipped`].
///
/// # Errors
/// No checkpoint at all, or none usable (each one's reason is given).
pub fn newest_loadable(run_dir: &Path) -> Result<Resumable> {
    let all = list_checkpoints(run_dir)?;
    if all.is_empty() {
        return Err(TrainError::Data { path: run_dir.into(), msg: "--resume: no checkpoint found in checkpoints/".into() });
    }
    let mut skipped = Vec::new();
    for (_, path) in all.iter().rev() {
        let problem = match load_train_state(path) {
            Ok(state) => match non_finite(&state)? {
                None => return Ok(Resumable { state, path: path.clone(), skipped }),
                Some(what) => what,
            },
            Err(e) => e.to_string(),
        };
        skipped.push(format!("skipped {}: {problem}", path.display()));
    }
    Err(TrainError::Data { path: run_dir.into(), msg: format!("--resume: no checkpoint can be used ({})", skipped.join("; ")) })
}

/// Cuts `metrics.jsonl` back to the rows of steps up to `step` (rows past
/// it were logged after the checkpoint resumed from, and a torn last line
/// is dropped); rewrites the file atomically. Returns the rows removed.
pub fn truncate_metrics(run_dir: &Path, step: u64) -> Result<usize> {
    let path = run_dir.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(0) };
    let mut kept = String::with_capacity(text.len());
    let mut removed = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row_step = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v.get("step").and_then(|s| s.as_u64()));
        match row_step {
            Some(s) if s <= step => {
                kept.push_str(line);
                kept.push('\n');
            }
            _ => removed += 1,
        }
    }
    if removed > 0 {
        sparsedm_tensor::write_atomic(&path, kept.as_bytes())?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    use sparsedm_testkit::Scratch;

    /// A fresh run directory with its `checkpoints/` folder.
    fn scratch(name: &str) -> Scratch {
        let d = Scratch::new(&format!("resume-{name}"));
        std::fs::create_dir_all(checkpoint_dir(&d)).unwrap();
        d
    }

    #[test]
    fn orphans_are_removed_and_metrics_cut_back() {
        let d = scratch("hygiene");
        let orphan = checkpoint_dir(&d).join(".step_00000008.safetensors.tmp4242");
        std::fs::write(&orphan, b"partial").unwrap();
        std::fs::write(checkpoint_dir(&d).join("keep.txt"), b"x").unwrap();
        assert_eq!(clean_orphans(&d), vec![orphan.clone()]);
        assert!(!orphan.exists() && checkpoint_dir(&d).join("keep.txt").exists());

        let rows = "{\"step\":2,\"loss\":1}\n{\"step\":4,\"loss\":1}\n{\"step\":4,\"fid\":3}\n{\"step\":6,\"loss\":1}\n{\"step\":8,\"lo";
        std::fs::write(d.join("metrics.jsonl"), rows).unwrap();
        assert_eq!(truncate_metrics(&d, 4).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(d.join("metrics.jsonl")).unwrap(),
            "{\"step\":2,\"loss\":1}\n{\"step\":4,\"loss\":1}\n{\"step\":4,\"fid\":3}\n"
        );
    }

    #[test]
    fn no_usable_checkpoint_names_each_one() {
        let d = scratch("corrupt");
        std::fs::write(checkpoint_dir(&d).join("step_00000004.safetensors"), b"garbage").unwrap();
        let msg = newest_loadable(&d).unwrap_err().to_string();
        assert!(msg.contains("step_00000004.safetensors"), "{msg}");
        let empty = scratch("empty");
        assert!(newest_loadable(&empty).unwrap_err().to_string().contains("no checkpoint"));
    }
}
