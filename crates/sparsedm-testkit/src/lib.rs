//! Test support shared by the workspace's tests (a dev-dependency only; nothing ships with it).
//!
//! [`Scratch`] is a test's own scratch directory. A passing test removes it when it ends, so
//! repeated `cargo test` runs no longer pile up directories in the system temp directory and
//! `target/tmp` (before, every run left its per-process directories there: about 1 GB after a few
//! dozen runs). A failing test keeps it and prints its path, so the files a failure wrote can be
//! looked at; `SPARSEDM_KEEP_TEST_FILES=1` keeps every directory. (What a whole test binary shares,
//! such as a trained run kept in a static, uses one fixed folder that each run replaces.)
//!
//! [`process`] drives a background `sparsedm` process (Ctrl-C, waiting, its output) within bounds.

use std::path::{Path, PathBuf};

#[cfg(unix)]
pub mod process;

/// The environment variable that keeps every scratch directory, passing tests' too.
pub const KEEP_ENV: &str = "SPARSEDM_KEEP_TEST_FILES";

/// A fresh, uniquely named directory for one test, removed when dropped unless the test failed.
///
/// Hold it for the whole test (`let dir = Scratch::new("forward-cli");`) and name files with
/// `dir.join(NAME)` (it derefs to its [`Path`]); the directory exists from the start.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// A directory under the system temp directory, its name starting `sparsedm-LABEL-`.
    pub fn new(label: &str) -> Self {
        Self::in_dir(std::env::temp_dir(), label)
    }

    /// A directory under `root` (created if missing), its name starting `sparsedm-LABEL-`; for
    /// integration tests' `CARGO_TARGET_TMPDIR`, or a root a test was told to use.
    pub fn in_dir(root: impl AsRef<Path>, label: &str) -> Self {
        let root = root.as_ref();
        std::fs::create_dir_all(root).unwrap_or_else(|e| panic!("create the scratch root {}: {e}", root.display()));
        let dir = tempfile::Builder::new()
            .prefix(&format!("sparsedm-{label}-"))
            .tempdir_in(root)
            .unwrap_or_else(|e| panic!("create a scratch directory under {}: {e}", root.display()));
        Self { dir: Some(dir) }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("a scratch directory lives until dropped").path()
    }

    /// A fresh subdirectory `NAME` (created), for commands that want a directory of their own.
    pub fn subdir(&self, name: impl AsRef<Path>) -> PathBuf {
        let d = self.join(name);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        d
    }
}

/// A `Scratch` is used where its directory's path is: `dir.join("a.safetensors")`, `dir.display()`,
/// `&dir` for a `&Path` or `impl AsRef<Path>` argument.
impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let failed = std::thread::panicking();
        if failed || std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            let kept = dir.keep();
            if failed {
                eprintln!("the failed test's files are kept in {}", kept.display());
            }
        }
        // Otherwise `dir` drops here and takes its files with it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_test_leaves_nothing() {
        let dir = Scratch::new("testkit-pass");
        let path = dir.path().to_path_buf();
        std::fs::write(dir.join("a.txt"), b"x").unwrap();
        std::fs::write(dir.subdir("sub").join("b.txt"), b"y").unwrap();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists(), "{} should be gone", path.display());
    }

    #[test]
    fn a_failing_test_keeps_its_files() {
        let root = Scratch::new("testkit-root");
        let kept = std::thread::scope(|s| {
            s.spawn(|| {
                let dir = Scratch::in_dir(root.path(), "testkit-fail");
                std::fs::write(dir.join("evidence.txt"), b"z").unwrap();
                let path = dir.path().to_path_buf();
                // Unwinding drops `dir` while panicking: its files must stay (`resume_unwind`:
                // no panic message in the output of a passing run).
                let _guard = dir;
                std::panic::resume_unwind(Box::new(path));
            })
            .join()
            .unwrap_err()
            .downcast::<PathBuf>()
            .unwrap()
        });
        assert!(kept.join("evidence.txt").is_file(), "{} should be kept", kept.display());
        assert!(kept.starts_with(root.path()) && kept.file_name().unwrap().to_str().unwrap().starts_with("sparsedm-testkit-fail-"));
    }

    #[test]
    fn directories_are_unique() {
        let (a, b) = (Scratch::new("testkit-same"), Scratch::new("testkit-same"));
        assert_ne!(a.path(), b.path());
    }
}
