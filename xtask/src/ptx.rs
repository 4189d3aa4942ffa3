//! `cargo xtask ptx [--check]`: compiles every `kernels/*.cu` to the committed
//! `kernels/ptx/<name>.ptx` and records `kernels/ptx/MANIFEST`.
//!
//! The PTX is committed so that building sparsedm never needs the CUDA toolkit; the manifest
//! makes a stale PTX detectable without one. Each line is
//! `<module> <fnv1a64 of the sources> <fnv1a64 of the .ptx>`, the source hash covering the
//! `.cu` file followed by every file of `kernels/include` in sorted order (whatever the module
//! includes, conservatively). `--check` recomputes the source hashes and fails naming the stale
//! modules; the same check runs as a unit test of `sparsedm-kernels` (src/ptx.rs), so CI catches
//! a forgotten `cargo xtask ptx` on a machine without nvcc.
//!
//! nvcc is `$SPARSEDM_NVCC` or `nvcc` on PATH; it must be CUDA 13.0 (see ../shared/GPU.md §2:
//! newer versions emit PTX the target driver cannot load). When `ptxas` sits next to it, every
//! module is also assembled for sm_90 as a check.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{project_root, run_cmd};

/// nvcc flags, fixed so the committed PTX is reproducible: compute_80 PTX is JIT-compiled by the
/// driver for Ampere and Hopper alike.
const NVCC_FLAGS: [&str; 6] = ["-ptx", "-arch=compute_80", "-O3", "-std=c++17", "-I", "kernels/include"];

pub fn run(args: &[String]) -> Result<(), String> {
    match args {
        [] => build(),
        [flag] if flag == "--check" => check(),
        _ => Err(format!("usage: cargo xtask ptx [--check] (got {args:?})")),
    }
}

/// 64-bit FNV-1a over the concatenation of `parts` (the same function as sparsedm-kernels'
/// src/ptx.rs test uses).
fn fnv1a64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Sorted regular files of `dir` whose name ends with `suffix` (all files for "").
fn files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?.path();
        if path.is_file() && path.file_name().is_some_and(|n| n.to_string_lossy().ends_with(suffix)) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The kernel modules: (name, path of the .cu), sorted by name.
fn modules(kernels: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mods: Vec<(String, PathBuf)> =
        files(kernels, ".cu")?.into_iter().filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p))).collect();
    if mods.is_empty() {
        return Err(format!("no kernel sources in {}", kernels.display()));
    }
    Ok(mods)
}

/// The source hash of a module: its .cu, then every file of kernels/include in sorted order.
fn source_hash(cu: &Path, kernels: &Path) -> Result<u64, String> {
    let mut blobs = vec![read(cu)?];
    for inc in files(&kernels.join("include"), "")? {
        blobs.push(read(&inc)?);
    }
    Ok(fnv1a64(blobs.iter().map(Vec::as_slice)))
}

/// The nvcc to use: `$SPARSEDM_NVCC`, else `nvcc` from PATH.
fn find_nvcc() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SPARSEDM_NVCC").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("SPARSEDM_NVCC={} is not a file", p.display())) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(if cfg!(windows) { "nvcc.exe" } else { "nvcc" })).find(|p| p.is_file()).ok_or_else(
        || {
            "nvcc not found: set SPARSEDM_NVCC to CUDA 13.0's nvcc or put nvcc on PATH \
             (see ../shared/GPU.md §2 for the PyPI install)"
                .to_string()
        },
    )
}

/// Compiles every module and rewrites the manifest.
fn build() -> Result<(), String> {
    let root = project_root();
    let kernels = root.join("kernels");
    let out_dir = kernels.join("ptx");
    let nvcc = find_nvcc()?;
    let nvcc_str = nvcc.to_string_lossy().into_owned();
    let ptxas = nvcc.with_file_name(if cfg!(windows) { "ptxas.exe" } else { "ptxas" });
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;

    let mods = modules(&kernels)?;
    let mut manifest = String::new();
    for (name, cu) in &mods {
        let (cu_rel, ptx_rel) = (format!("kernels/{name}.cu"), format!("kernels/ptx/{name}.ptx"));
        let mut args: Vec<&str> = NVCC_FLAGS.to_vec();
        args.extend([cu_rel.as_str(), "-o", ptx_rel.as_str()]);
        run_cmd(&nvcc_str, &args)?;
        if ptxas.is_file() {
            let cubin = std::env::temp_dir().join(format!("sparsedm-xtask-{}-{name}.cubin", std::process::id()));
            let cubin_str = cubin.to_string_lossy().into_owned();
            let checked = run_cmd(&ptxas.to_string_lossy(), &["-arch=sm_90", ptx_rel.as_str(), "-o", cubin_str.as_str()]);
            let _ = std::fs::remove_file(&cubin);
            checked?;
        }
        let ptx_hash = fnv1a64([read(&root.join(&ptx_rel))?.as_slice()]);
        let _ = writeln!(manifest, "{name} {:016x} {ptx_hash:016x}", source_hash(cu, &kernels)?);
    }
    // PTX of deleted modules would otherwise linger next to the manifest.
    for ptx in files(&out_dir, ".ptx")? {
        let stem = ptx.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if !mods.iter().any(|(n, _)| *n == stem) {
            std::fs::remove_file(&ptx).map_err(|e| format!("cannot remove {}: {e}", ptx.display()))?;
            eprintln!("removed {} (no kernels/{stem}.cu)", ptx.display());
        }
    }
    let path = out_dir.join("MANIFEST");
    std::fs::write(&path, manifest).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {} modules and {}", mods.len(), path.display());
    Ok(())
}

/// Verifies the committed PTX against the sources without nvcc.
fn check() -> Result<(), String> {
    let kernels = project_root().join("kernels");
    let manifest_path = kernels.join("ptx").join("MANIFEST");
    let manifest = String::from_utf8(read(&manifest_path)?).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let mut recorded = std::collections::BTreeMap::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, src, ptx] = f[..] else { return Err(format!("{}: malformed line {line:?}", manifest_path.display())) };
        recorded.insert(name.to_string(), (src.to_string(), ptx.to_string()));
    }
    let mut problems = Vec::new();
    let mods = modules(&kernels)?;
    for (name, cu) in &mods {
        let Some((src, ptx)) = recorded.get(name) else {
            problems.push(format!("{name}: no MANIFEST entry (new module)"));
            continue;
        };
        if *src != format!("{:016x}", source_hash(cu, &kernels)?) {
            problems.push(format!("{name}: kernels/{name}.cu or kernels/include changed since the PTX was built"));
        }
        match std::fs::read(kernels.join("ptx").join(format!("{name}.ptx"))) {
            Ok(bytes) if *ptx == format!("{:016x}", fnv1a64([bytes.as_slice()])) => {}
            Ok(_) => problems.push(format!("{name}: kernels/ptx/{name}.ptx differs from the PTX the MANIFEST records")),
            Err(e) => problems.push(format!("{name}: cannot read kernels/ptx/{name}.ptx: {e}")),
        }
    }
    for name in recorded.keys().filter(|n| !mods.iter().any(|(m, _)| m == *n)) {
        problems.push(format!("{name}: in the MANIFEST but kernels/{name}.cu does not exist"));
    }
    if problems.is_empty() {
        eprintln!("PTX up to date ({} modules)", mods.len());
        Ok(())
    } else {
        Err(format!("stale PTX; run `cargo xtask ptx` with nvcc 13.0:\n  {}", problems.join("\n  ")))
    }
}
