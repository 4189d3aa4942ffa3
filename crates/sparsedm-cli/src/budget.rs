//! Bounded memory and disk: sizes a command is about to need, estimated
//! from its arguments and compared with what the machine has *before*
//! anything is allocated or written, so an absurd request (`--n
//! 100000000000`, a config with a width of a billion) is one clear error
//! instead of an allocation abort hours later or a full disk.
//!
//! Estimates are lower bounds (what the request needs at the very least),
//! so a refusal is always justified; when the machine's limits cannot be
//! read, nothing is refused.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// Bytes of memory the system can still hand out (Linux `MemAvailable`).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes free for an unprivileged user on the file system that `path`
/// (or its nearest existing ancestor) is on.
#[cfg(unix)]
pub fn free_disk(path: &Path) -> Option<u64> {
    let dir = nearest_existing(path);
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable memory
    // of the right type; `statvfs` fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::unnecessary_cast)]
    let (blocks, size) = (st.f_bavail as u64, st.f_frsize as u64);
    blocks.checked_mul(size)
}

#[cfg(not(unix))]
pub fn free_disk(_path: &Path) -> Option<u64> {
    None
}

fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = if path.as_os_str().is_empty() { PathBuf::from(".") } else { path.to_path_buf() };
    while !p.exists() {
        match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => p = q.to_path_buf(),
            _ => return PathBuf::from("."),
        }
    }
    p
}

/// `a · b · …` or an error naming `what` when the product overflows.
pub fn product(what: &str, factors: &[u64]) -> Result<u64> {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f)).ok_or_else(|| anyhow::anyhow!("{what}: the size overflows 64 bits"))
}

/// Human-readable bytes.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Refuses when `bytes` of memory are needed for `what` and the machine
/// has less available.
pub fn ensure_memory(what: &str, bytes: u64) -> Result<()> {
    if let Some(avail) = available_memory()
        && bytes > avail
    {
        bail!("{what} needs at least {} of memory, but only {} is available", human(bytes), human(avail));
    }
    Ok(())
}

/// Refuses when at least `bytes` must be written under `path` for `what`
/// and its file system has less free.
pub fn ensure_disk(what: &str, path: &Path, bytes: u64) -> Result<()> {
    if let Some(free) = free_disk(path)
        && bytes > free
    {
        bail!("{what} needs at least {} of disk, but only {} is free there", human(bytes), human(free));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_and_absurd_sizes_are_refused() {
        assert!(product("x", &[u64::MAX, 2]).is_err());
        assert_eq!(product("x", &[3, 4, 5]).unwrap(), 60);
        if available_memory().is_some() {
            assert!(ensure_memory("a test", u64::MAX).unwrap_err().to_string().contains("a test needs at least"));
        }
        ensure_memory("a test", 1).unwrap();
        if free_disk(Path::new(".")).is_some() {
            assert!(ensure_disk("a test", Path::new("no/such/dir"), u64::MAX).is_err());
        }
        assert_eq!(human(1536), "1.5 KiB");
    }
}
