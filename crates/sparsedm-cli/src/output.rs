//! Protected outputs: the checks every command that writes runs on its
//! output paths *before* any work starts, so a refused command leaves
//! everything on disk as it was and an unwritable path fails at once rather
//! than after an hour of sampling.
//!
//! The rules (those of `cp -n`/`--force` and of run folders in PyTorch
//! Lightning): an existing output is never replaced without `--force`; an
//! output that is one of the command's inputs is refused even with
//! `--force`; a folder output must be new or empty (or `--force`); and the
//! folder an output goes into must exist or be creatable, and be writable
//! (checked by creating and removing a probe file). The writes themselves
//! are atomic (`sparsedm_tensor::write_atomic` and the npz writers).

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// Checks a single-file output `path` given as `flag` (`--out`, `--output`):
/// not one of `inputs`, not an existing file unless `force`, never an
/// existing folder, and in a writable folder.
pub fn check_file(flag: &str, path: &Path, force: bool, inputs: &[&Path]) -> Result<()> {
    refuse_inputs(flag, path, inputs)?;
    if path.is_dir() {
        bail!("{flag} {} is a folder, expected a file path", path.display());
    }
    if path.exists() && !force {
        bail!("{flag} {} already exists: pass --force to replace it (nothing was written)", path.display());
    }
    check_writable(flag, path.parent().unwrap_or(Path::new(".")))
}

/// Checks a folder output (`--out DIR`): not one of `inputs`, new or empty
/// unless `force`, not a file, and creatable/writable. `what` says what
/// the folder receives, for the message.
pub fn check_dir(flag: &str, dir: &Path, force: bool, inputs: &[&Path], what: &str) -> Result<()> {
    refuse_inputs(flag, dir, inputs)?;
    if dir.exists() && !dir.is_dir() {
        bail!("{flag} {} is a file, expected a folder for {what}", dir.display());
    }
    if !force && dir.is_dir() {
        let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{flag} {}: cannot list the folder ({e})", dir.display()))?;
        if let Some(first) = entries.flatten().next() {
            bail!(
                "{flag} {} is not empty (it holds {}): {what} would mix with what is there; choose a new or empty folder, or pass --force",
                dir.display(),
                first.file_name().to_string_lossy()
            );
        }
    }
    check_writable(flag, dir)
}

/// Refuses `out` when it names the same file or folder as one of `inputs`
/// (same device and inode, so links and `./x` spellings are caught too).
fn refuse_inputs(flag: &str, out: &Path, inputs: &[&Path]) -> Result<()> {
    for input in inputs {
        if same_entry(out, input) {
            bail!("{flag} {} is also an input ({}): refusing to overwrite an input", out.display(), input.display());
        }
    }
    Ok(())
}

#[cfg(unix)]
fn same_entry(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_entry(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Checks that files can be created in `dir`: its nearest existing
/// ancestor must be a folder in which a probe file can be created (the
/// missing folders below it are created later, by the writer).
pub fn check_writable(flag: &str, dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let mut existing: PathBuf = dir.to_path_buf();
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p.to_path_buf(),
            _ => {
                existing = PathBuf::from(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        bail!("{flag}: {} is a file, so {} cannot be created", existing.display(), dir.display());
    }
    let probe = existing.join(format!(".sparsedm-write-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!("{flag}: cannot write into {} ({e})", existing.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sparsedm_testkit::Scratch;

    fn scratch(name: &str) -> Scratch {
        Scratch::new(&format!("output-guard-{name}"))
    }

    #[test]
    fn existing_file_needs_force_and_inputs_are_never_outputs() {
        let d = scratch("file");
        let f = d.join("a.npz");
        check_file("--out", &f, false, &[]).unwrap();
        std::fs::write(&f, b"x").unwrap();
        assert!(check_file("--out", &f, false, &[]).unwrap_err().to_string().contains("--force"));
        check_file("--out", &f, true, &[]).unwrap();
        let e = check_file("--out", &d.join("./a.npz"), true, &[&f]).unwrap_err().to_string();
        assert!(e.contains("also an input"), "{e}");
        assert!(check_file("--out", &d, true, &[]).is_err(), "a folder is not a file output");
    }

    #[test]
    fn folder_must_be_new_or_empty() {
        let d = scratch("dir");
        check_dir("--out", &d.join("new"), false, &[], "images").unwrap();
        check_dir("--out", &d, false, &[], "images").unwrap();
        std::fs::write(d.join("000000.png"), b"x").unwrap();
        let e = check_dir("--out", &d, false, &[], "images").unwrap_err().to_string();
        assert!(e.contains("000000.png") && e.contains("--force"), "{e}");
        check_dir("--out", &d, true, &[], "images").unwrap();
        assert!(check_dir("--out", &d.join("000000.png"), true, &[], "images").is_err());
    }

    #[test]
    fn a_file_in_the_way_of_a_folder_is_refused() {
        let d = scratch("blocked");
        std::fs::write(d.join("f"), b"x").unwrap();
        let e = check_file("--out", &d.join("f").join("sub").join("x.npz"), false, &[]).unwrap_err().to_string();
        assert!(e.contains("cannot be created"), "{e}");
    }
}
