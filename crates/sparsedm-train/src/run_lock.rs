//! One process at a time in a run folder. Two processes training in the same
//! folder (a job queued twice, a `--resume` started while the run still
//! goes on, a `--force` aimed at a running run) would mix their checkpoints
//! and metrics, delete each other's files (`--force` removes the run's
//! files, a resume removes the temporaries of interrupted writes) and
//! leave a run that resumes from someone else's state. So whoever writes a
//! run folder holds an exclusive lock on the folder itself
//! (`File::try_lock`, `flock` on the open folder), and a second process is
//! refused before it reads or removes anything, with the holder's process
//! id and command line where Linux says them (`/proc/locks`).
//!
//! Nothing is written for it: a refused command leaves the folder exactly
//! as it was, and the operating system releases the lock when the holder
//! exits, however it ends (Ctrl-C, a crash, `kill -9`), so a lock is never
//! stale. Within one process the lock is shared: [`hold`] on a folder the
//! process already holds returns the same guard (the CLI takes it before
//! `--force` removes anything, the [`Trainer`](crate::trainer::Trainer)
//! again when it writes the folder). Where folders cannot be locked (not
//! Unix, or a file system without `flock`), runs go unprotected rather
//! than not at all.

use crate::error::{Result, TrainError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// A held run-folder lock; released when the last clone is dropped (or the
/// process ends).
#[derive(Debug)]
pub struct RunLock {
    /// The locked folder, open (`None` where it cannot be locked).
    _handle: Option<std::fs::File>,
}

/// The folders this process holds, by canonical path.
static HELD: Mutex<Vec<(PathBuf, Weak<RunLock>)>> = Mutex::new(Vec::new());

/// Locks the existing folder `dir` for this process, or returns the lock
/// this process already holds on it.
///
/// # Errors
/// Another process holds it (named where the system says who), or `dir`
/// is not an existing folder.
pub fn hold(dir: &Path) -> Result<Arc<RunLock>> {
    let data_err = |msg: String| TrainError::Data { path: dir.to_path_buf(), msg };
    let canonical = dir.canonicalize().map_err(|e| data_err(format!("cannot lock the run folder: {e}")))?;
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    held.retain(|(_, w)| w.strong_count() > 0);
    if let Some(lock) = held.iter().find(|(p, _)| *p == canonical).and_then(|(_, w)| w.upgrade()) {
        return Ok(lock);
    }
    let handle = match open_folder(&canonical) {
        Some(folder) => match folder.try_lock() {
            Ok(()) => Some(folder),
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = holder_of(&canonical).map(|h| format!(" ({h})")).unwrap_or_default();
                return Err(data_err(format!(
                    "in use by another sparsedm process{holder}; two processes writing one run folder would mix and delete \
                     each other's checkpoints: wait for it to finish or stop it (its checkpoints stay), then try again"
                )));
            }
            // No locking on this file system: unprotected.
            Err(std::fs::TryLockError::Error(_)) => None,
        },
        None => None,
    };
    let lock = Arc::new(RunLock { _handle: handle });
    held.push((canonical, Arc::downgrade(&lock)));
    Ok(lock)
}

/// [`hold`] on `dir` when it is an existing folder (`None` otherwise: a
/// folder yet to be made is held once it is made).
///
/// # Errors
/// As [`hold`].
pub fn hold_existing(dir: &Path) -> Result<Option<Arc<RunLock>>> {
    if dir.is_dir() { hold(dir).map(Some) } else { Ok(None) }
}

/// The folder opened for locking (Unix opens folders read-only).
#[cfg(unix)]
fn open_folder(dir: &Path) -> Option<std::fs::File> {
    std::fs::File::open(dir).ok()
}

#[cfg(not(unix))]
fn open_folder(_dir: &Path) -> Option<std::fs::File> {
    None
}

/// "pid N: its command line" of the process holding `dir`'s lock, from
/// Linux's `/proc/locks` (a `FLOCK` line whose `major:minor:inode` ends in
/// the folder's inode) and `/proc/N/cmdline`; `None` elsewhere.
#[cfg(unix)]
fn holder_of(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(dir).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flock = fields.get(1) == Some(&"FLOCK");
        let ours = fields.get(5).is_some_and(|id| id.rsplit(':').next() == Some(inode.to_string().as_str()));
        (flock && ours).then(|| fields.get(4)?.parse::<u32>().ok()).flatten()
    })?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> =
        cmdline.split(|&b| b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
    Some(if words.is_empty() { format!("pid {pid}") } else { format!("pid {pid}: {}", words.join(" ")) })
}

#[cfg(not(unix))]
fn holder_of(_dir: &Path) -> Option<String> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Held twice in one process: the same guard, and nothing written into
    /// the folder. Held by another open handle (as another process would
    /// hold it): refused, naming the folder (and, on Linux, the holding
    /// process); free again once that holder lets go.
    #[test]
    fn a_folder_is_held_by_one_holder_at_a_time() {
        let dir = sparsedm_testkit::Scratch::new("run-lock");
        let run = dir.join("run");
        std::fs::create_dir(&run).unwrap();
        let a = hold(&run).unwrap();
        let b = hold(&run.join("..").join("run")).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one process, one lock");
        assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0, "nothing written");
        let other = std::fs::File::open(&run).unwrap();
        assert!(matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)), "held while a guard lives");
        drop((a, b));
        other.lock().unwrap();
        let e = hold(&run).unwrap_err().to_string();
        assert!(e.contains("run") && e.contains("in use by another sparsedm process"), "{e}");
        if cfg!(target_os = "linux") {
            assert!(e.contains(&format!("(pid {}: ", std::process::id())), "the holder named: {e}");
        }
        drop(other);
        hold(&run).unwrap();
        assert!(hold(&dir.join("missing")).unwrap_err().to_string().contains("cannot lock the run folder"));
    }
}
