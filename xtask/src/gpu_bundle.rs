//! `cargo xtask gpu-bundle [DIR]`: everything a GPU check needs, in one git-ignored folder that a
//! GPU machine without a Rust toolchain can run (../shared/GPU.md §5):
//!
//! - `bin/sparsedm`: the release CLI (every computing command takes `--device cuda`);
//! - `bin/formula_inception`: writes InceptionV3 with stand-in weights (`sparsedm_fid::formula`)
//!   for the FID check, since the GPU machine cannot download the real ones;
//! - `tests/`: the GPU test executables — every test target named `gpu*` in any package, and the
//!   tests of `sparsedm-cuda-sys` (which load the real cuSPARSELt there); the other unit tests read
//!   source files by their build-machine paths and run in CI instead;
//! - `benches/`: every bench target named `gpu*`;
//! - `reference/`: what `run.sh` reads (the comparison scripts, the demo checkpoint);
//! - `run.sh` (source `xtask/gpu-bundle/run.sh`): sets the library path (the python
//!   `nvidia/*/lib` folders, `/usr/local/cuda/lib64`) and `SPARSEDM_REQUIRE_GPU=1` (a missing GPU
//!   fails instead of skipping), then runs the tests, the U-ViT-S/2 bench, the GEMM table,
//!   Table 3, a 200-step bf16 training run against the CPU's losses (the same run on the machine's
//!   CPU cores, in the background) and the FID statistics check,
//!   each with its own timeout inside an overall budget, logs under `$LOG_DIR` (default `$OUT` or
//!   `./logs`) and a summary table at the end. `./run.sh --quick` does the same at tiny sizes
//!   (with `SPARSEDM_CUDA_SIM=1`: the whole script on the simulator, before a GPU is lent).
//!
//! Built in release mode without debug info and stripped, in its own target directory
//! (`target/gpu-bundle`) so it does not invalidate the normal release build.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::project_root;

/// The runner, kept as a real script beside its helpers (`xtask/gpu-bundle/`).
const RUN_SH: &str = include_str!("../gpu-bundle/run.sh");

/// What `run.sh` reads, copied into the bundle's `reference/`: the loss and statistics
/// comparisons (see `xtask/gpu-bundle/README.md`) and the demo's dense checkpoint.
const REFERENCE: &[(&str, &str)] = &[
    ("compare_losses.py", "xtask/gpu-bundle/compare_losses.py"),
    ("compare_stats.py", "xtask/gpu-bundle/compare_stats.py"),
    ("README.md", "xtask/gpu-bundle/README.md"),
    ("demo_shapes_uvit_dense.safetensors", "crates/sparsedm-cli/assets/demo_shapes_uvit_dense.safetensors"),
];

/// Builds the bundle into `args[0]` (default `gpu-bundle/`).
pub fn run(args: &[String]) -> Result<(), String> {
    let root = project_root();
    let dir = match args.first() {
        Some(a) if a.starts_with('-') => return Err(format!("unknown flag {a}; usage: cargo xtask gpu-bundle [DIR]")),
        Some(a) => root.join(a),
        None => root.join("gpu-bundle"),
    };
    let target_dir = root.join("target").join("gpu-bundle");
    let envs = [
        ("CARGO_TARGET_DIR", target_dir.to_string_lossy().into_owned()),
        ("CARGO_PROFILE_RELEASE_DEBUG", "0".into()),
        ("CARGO_PROFILE_RELEASE_STRIP", "symbols".into()),
    ];
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    for sub in ["bin", "tests", "benches", "reference"] {
        fs::create_dir_all(dir.join(sub)).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }

    cargo(
        &root,
        &envs,
        &["build", "--release", "-p", "sparsedm-cli", "--bin", "sparsedm", "-p", "sparsedm-fid", "--example", "formula_inception"],
    )?;
    copy_exe(&target_dir.join("release").join("sparsedm"), &dir.join("bin").join("sparsedm"))?;
    copy_exe(&target_dir.join("release").join("examples").join("formula_inception"), &dir.join("bin").join("formula_inception"))?;

    // Only what the bundle carries is built: cuda-sys's tests and every `gpu*` target.
    let mut tests = artifacts(
        &root,
        &envs,
        &["test", "--release", "--no-run", "--message-format=json", "-p", "sparsedm-cuda-sys", "--lib", "--tests"],
    )?;
    tests.extend(artifacts(&root, &envs, &["test", "--release", "--no-run", "--message-format=json", "--workspace", "--test", "gpu*"])?);
    tests.sort_by(|a, b| a.executable.cmp(&b.executable));
    tests.dedup_by(|a, b| a.executable == b.executable);
    let mut n_tests = 0;
    for a in tests.iter().filter(|a| a.is_test && wanted_test(a)) {
        copy_exe(&a.executable, &dir.join("tests").join(format!("{}-{}", a.package, a.target)))?;
        n_tests += 1;
    }
    let benches = artifacts(&root, &envs, &["bench", "--no-run", "--message-format=json", "--workspace", "--bench", "gpu*"])?;
    let mut n_benches = 0;
    for a in benches.iter().filter(|a| a.target.starts_with("gpu")) {
        copy_exe(&a.executable, &dir.join("benches").join(&a.target))?;
        n_benches += 1;
    }
    for (name, from) in REFERENCE {
        let (from, to) = (root.join(from), dir.join("reference").join(name));
        fs::copy(&from, &to).map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    let run_sh = dir.join("run.sh");
    fs::write(&run_sh, RUN_SH).map_err(|e| format!("cannot write {}: {e}", run_sh.display()))?;
    set_executable(&run_sh)?;
    let size = dir_size(&dir);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    eprintln!(
        "gpu bundle: {} ({} test executables, {} benches, {:.1} MiB); on the GPU machine run {name}/run.sh",
        dir.display(),
        n_tests,
        n_benches,
        size as f64 / (1 << 20) as f64,
    );
    // The device tool carries at most 64 MiB with the working tree: the
    // stripped executables (85 MiB with every GPU test) travel compressed.
    let archive = dir.with_file_name(format!("{name}.tar.gz"));
    let tmp = dir.with_file_name(format!("{name}.tar.gz.partial"));
    let parent = dir.parent().ok_or_else(|| format!("{} has no parent folder", dir.display()))?;
    let status = Command::new("tar")
        .args(["-czf"])
        .arg(&tmp)
        .arg("-C")
        .arg(parent)
        .arg(&name)
        .status()
        .map_err(|e| format!("cannot run tar to pack {}: {e}", dir.display()))?;
    if !status.success() {
        return Err(format!("tar failed packing {} into {} ({status})", dir.display(), tmp.display()));
    }
    fs::rename(&tmp, &archive).map_err(|e| format!("cannot move {} to {}: {e}", tmp.display(), archive.display()))?;
    let packed = fs::metadata(&archive).map_err(|e| format!("cannot read {}: {e}", archive.display()))?.len();
    eprintln!(
        "packed: {} ({:.1} MiB); carry it and run `tar -xzf {name}.tar.gz && {name}/run.sh` on the GPU machine",
        archive.display(),
        packed as f64 / (1 << 20) as f64
    );
    if packed > 60 << 20 {
        eprintln!("warning: the packed bundle is over 60 MiB; the GPU machine accepts 64 MiB per call");
    }
    Ok(())
}

/// Test targets that belong in the bundle.
fn wanted_test(a: &Artifact) -> bool {
    a.target.starts_with("gpu") || a.package == "sparsedm-cuda-sys"
}

fn cargo(root: &Path, envs: &[(&str, String)], args: &[&str]) -> Result<String, String> {
    eprintln!("$ cargo {}", args.join(" "));
    let out = Command::new(env!("CARGO"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo {} failed with {}", args.join(" "), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One executable cargo reported.
#[derive(Debug)]
struct Artifact {
    package: String,
    target: String,
    executable: PathBuf,
    is_test: bool,
}

fn artifacts(root: &Path, envs: &[(&str, String)], args: &[&str]) -> Result<Vec<Artifact>, String> {
    let stdout = cargo(root, envs, args)?;
    Ok(stdout.lines().filter_map(parse_artifact).collect())
}

/// Extracts the fields we need from one `compiler-artifact` JSON line (std only: the values are
/// plain strings cargo writes without escapes for our paths and names).
fn parse_artifact(line: &str) -> Option<Artifact> {
    if !line.contains(r#""reason":"compiler-artifact""#) {
        return None;
    }
    let executable = string_after(line, r#""executable":""#)?;
    let manifest = string_after(line, r#""manifest_path":""#)?;
    let package = Path::new(&manifest).parent()?.file_name()?.to_string_lossy().into_owned();
    let package = if manifest.contains("/crates/") { package } else { root_package_name(&package) };
    let target_obj = &line[line.find(r#""target":{"#)?..];
    let target = string_after(target_obj, r#""name":""#)?;
    let is_test = line.contains(r#""test":true"#);
    Some(Artifact { package, target, executable: PathBuf::from(executable), is_test })
}

/// The root manifest's package (its directory name is the checkout's, not the package's).
fn root_package_name(dir_name: &str) -> String {
    if dir_name == "xtask" { "xtask".into() } else { "sparsedm-suite".into() }
}

fn string_after(s: &str, key: &str) -> Option<String> {
    let start = s.find(key)? + key.len();
    let end = s[start..].find('"')?;
    Some(s[start..start + end].to_string())
}

fn copy_exe(from: &Path, to: &Path) -> Result<(), String> {
    fs::copy(from, to).map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    set_executable(to)
}

#[cfg(unix)]
fn set_executable(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod {}: {e}", p.display()))
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> Result<(), String> {
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { dir_size(&path) } else { e.metadata().map(|m| m.len()).unwrap_or(0) }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_cargo_test_artifact_line() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/main/crates/sparsedm-kernels#0.1.0","manifest_path":"/w/main/crates/sparsedm-kernels/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"gpu_ops","src_path":"/w/x.rs","edition":"2024","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":true},"features":[],"filenames":["/w/target/release/deps/gpu_ops-abc"],"executable":"/w/target/release/deps/gpu_ops-abc","fresh":true}"#;
        let a = parse_artifact(line).expect("artifact");
        assert_eq!(a.package, "sparsedm-kernels");
        assert_eq!(a.target, "gpu_ops");
        assert_eq!(a.executable, PathBuf::from("/w/target/release/deps/gpu_ops-abc"));
        assert!(a.is_test && wanted_test(&a));
        let unit = line.replace("gpu_ops", "sparsedm_kernels");
        assert!(!wanted_test(&parse_artifact(&unit).expect("unit test artifact")), "kernels' unit tests stay in CI");
        let lib = line.replace(r#""executable":"/w/target/release/deps/gpu_ops-abc""#, r#""executable":null"#);
        assert!(parse_artifact(&lib).is_none(), "artifacts without an executable are skipped");
        let root = line.replace("/w/main/crates/sparsedm-kernels/Cargo.toml", "/w/main/Cargo.toml").replace("gpu_ops", "cross_crate");
        let a = parse_artifact(&root).expect("root artifact");
        assert_eq!(a.package, "sparsedm-suite");
        assert!(!wanted_test(&a), "non-GPU root tests stay out of the bundle");
    }
}
