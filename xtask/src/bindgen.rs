//! `cargo xtask bindgen [--check]`: regenerates the committed cuSPARSELt bindings
//! `crates/sparsedm-cuda-sys/src/cusparselt_bindings.rs` from NVIDIA's `cusparseLt.h`
//! (see shared/GPU.md §3).
//!
//! Inputs, none of them in the repository (NVIDIA's licence forbids committing its headers):
//! - `SPARSEDM_CUSPARSELT_INCLUDE`: the folder holding `cusparseLt.h` (0.8.0 wheel:
//!   `nvidia/cusparselt/include`);
//! - `SPARSEDM_CUDA_INCLUDE`: the folder holding `library_types.h` (CUDA runtime 13.0 wheel:
//!   `nvidia/cu13/include`);
//! - `bindgen` (bindgen-cli 0.73.2) on `PATH`, which needs libclang.
//!
//! Everything else `cusparseLt.h` includes comes from our own stub headers in
//! `crates/sparsedm-cuda-sys/bindgen/`. The output is a header comment (regeneration command,
//! header version, FNV-1a 64 hash of the header), a `CUSPARSELT_HEADER_FNV1A64` constant, then
//! bindgen's output formatted with the workspace `rustfmt.toml`. `--check` regenerates into a
//! temporary file and fails if it differs from the committed one.

use std::path::PathBuf;
use std::process::Command;

use crate::project_root;

/// The generated file, relative to the workspace root.
const OUTPUT: &str = "crates/sparsedm-cuda-sys/src/cusparselt_bindings.rs";
/// Our stub `driver_types.h` and `cusparse.h`, relative to the workspace root.
const STUB_DIR: &str = "crates/sparsedm-cuda-sys/bindgen";
/// The bindgen-cli release the committed file was generated with (output differs between releases).
const BINDGEN_VERSION: &str = "0.73.2";
const ENV_CUSPARSELT: &str = "SPARSEDM_CUSPARSELT_INCLUDE";
const ENV_CUDA: &str = "SPARSEDM_CUDA_INCLUDE";

/// How to get the two headers (one pip call: a second `--target` install replaces `nvidia/`).
const GET_HEADERS: &str = "\
get the headers from PyPI (no CUDA toolkit needed), in ONE pip call:
    pip download --no-deps -d WHEELS nvidia-cusparselt-cu13==0.8.0 nvidia-cuda-runtime==13.0.96
    pip install --no-deps --no-index --target TOOLDIR WHEELS/*.whl
then
    export SPARSEDM_CUSPARSELT_INCLUDE=TOOLDIR/nvidia/cusparselt/include
    export SPARSEDM_CUDA_INCLUDE=TOOLDIR/nvidia/cu13/include
(see shared/GPU.md §2-§3)";

const USAGE: &str = "\
usage: cargo xtask bindgen [--check]

Regenerates crates/sparsedm-cuda-sys/src/cusparselt_bindings.rs from cusparseLt.h 0.8.
  --check   regenerate into a temporary file and fail if the committed file differs
Needs: SPARSEDM_CUSPARSELT_INCLUDE (folder of cusparseLt.h), SPARSEDM_CUDA_INCLUDE (folder of
library_types.h), bindgen-cli 0.73.2 on PATH (cargo install bindgen-cli --version 0.73.2 --locked)
and libclang (apt-get install libclang-dev).";

/// Entry point of `cargo xtask bindgen`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut check = false;
    for arg in args {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("bindgen: unknown argument {other:?}\n\n{USAGE}")),
        }
    }

    let root = project_root();
    let header = include_dir(ENV_CUSPARSELT, "cusparseLt.h")?.join("cusparseLt.h");
    let cuda_include = include_dir(ENV_CUDA, "library_types.h")?;
    check_bindgen_version()?;

    let header_text = std::fs::read(&header).map_err(|e| format!("cannot read {}: {e}", header.display()))?;
    let version = header_version(&String::from_utf8_lossy(&header_text))
        .ok_or_else(|| format!("{}: no CUSPARSELT_VER_MAJOR/MINOR/PATCH/BUILD defines", header.display()))?;
    if (version[0], version[1]) != (0, 8) {
        eprintln!(
            "warning: {} is cuSPARSELt {}.{}.{}; the committed bindings target 0.8 (nvidia-cusparselt-cu13==0.8.0)",
            header.display(),
            version[0],
            version[1],
            version[2]
        );
    }
    let hash = fnv1a64(&header_text);

    // bindgen writes into a scratch file; the final file is prelude + that output.
    let scratch = std::env::temp_dir().join(format!("sparsedm-bindgen-{}.rs", std::process::id()));
    let rustfmt_config = root.join("rustfmt.toml");
    let real_args = bindgen_args(
        &header.to_string_lossy(),
        &cuda_include.to_string_lossy(),
        &rustfmt_config.to_string_lossy(),
        Some(&scratch.to_string_lossy()),
    );
    let arg_refs: Vec<&str> = real_args.iter().map(String::as_str).collect();
    let result = crate::run_cmd("bindgen", &arg_refs)
        .and_then(|()| std::fs::read_to_string(&scratch).map_err(|e| format!("cannot read bindgen output {}: {e}", scratch.display())));
    let _ = std::fs::remove_file(&scratch);
    let generated = result?;

    let text = format!("{}{generated}", prelude(version, hash));
    let output = root.join(OUTPUT);
    if check {
        let committed = std::fs::read_to_string(&output).map_err(|e| format!("cannot read {}: {e}", output.display()))?;
        if committed == text {
            eprintln!("{OUTPUT} is up to date (cusparseLt.h {}.{}.{}, FNV-1a 64 {hash:#018x})", version[0], version[1], version[2]);
            Ok(())
        } else {
            Err(format!(
                "{OUTPUT} is stale: {}; run `cargo xtask bindgen` (same headers and bindgen {BINDGEN_VERSION}) and commit it",
                first_difference(&committed, &text)
            ))
        }
    } else {
        std::fs::write(&output, text).map_err(|e| format!("cannot write {}: {e}", output.display()))?;
        eprintln!("wrote {OUTPUT} (cusparseLt.h {}.{}.{}, FNV-1a 64 {hash:#018x})", version[0], version[1], version[2]);
        Ok(())
    }
}

/// The folder named by env `var`, which must contain `file`; errors name the variable and how to
/// get the wheels.
fn include_dir(var: &str, file: &str) -> Result<PathBuf, String> {
    let dir = match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => return Err(format!("{var} is not set: it must name the folder holding {file}\n{GET_HEADERS}")),
    };
    if dir.join(file).is_file() { Ok(dir) } else { Err(format!("{var}={} has no {file}\n{GET_HEADERS}", dir.display())) }
}

/// Fails unless `bindgen --version` is the release the committed file was made with.
fn check_bindgen_version() -> Result<(), String> {
    let install = format!("cargo install bindgen-cli --version {BINDGEN_VERSION} --locked");
    let out = Command::new("bindgen")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run `bindgen` from PATH ({e}); install it with `{install}`"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let found = stdout.split_whitespace().nth(1).unwrap_or("");
    if out.status.success() && found == BINDGEN_VERSION {
        Ok(())
    } else {
        Err(format!(
            "`bindgen --version` says {:?}, need bindgen-cli {BINDGEN_VERSION} (its output differs between releases); `{install}`",
            stdout.trim()
        ))
    }
}

/// The bindgen arguments. With `out: None` and placeholder paths this is also the documented
/// regeneration command, so the two cannot drift apart.
fn bindgen_args(header: &str, cuda_include: &str, rustfmt_config: &str, out: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = vec![header.into()];
    for a in [
        "--dynamic-loading",
        "CuSparseLt",
        // Every symbol is resolved when the library is opened: a missing one is a load error,
        // never a panic at call time.
        "--dynamic-link-require-all",
        "--rust-target",
        "1.85",
        "--rust-edition",
        "2024",
        "--wrap-unsafe-ops",
        "--allowlist-function",
        "cusparseLt.*",
        "--allowlist-type",
        "cusparseLt.*",
        "--allowlist-var",
        "CUSPARSELT.*",
        // Enums as `#[repr(transparent)]` newtypes, never Rust enums: a newer library may return
        // (or a getter may write) a value the header lacks.
        "--default-enum-style",
        "newtype",
        "--newtype-enum",
        "cusparseStatus_t",
        "--ctypes-prefix",
        "::core::ffi",
        "--rustfmt-configuration-file",
    ] {
        args.push(a.into());
    }
    args.push(rustfmt_config.into());
    if let Some(out) = out {
        args.push("-o".into());
        args.push(out.into());
    }
    for a in ["--", "-x", "c++", "-std=c++17", "-I", STUB_DIR, "-I"] {
        args.push(a.into());
    }
    args.push(cuda_include.into());
    args
}

/// The file's header: what it is, how to regenerate it, what it was generated from.
fn prelude(version: [u32; 4], hash: u64) -> String {
    let args = bindgen_args("\"$SPARSEDM_CUSPARSELT_INCLUDE/cusparseLt.h\"", "\"$SPARSEDM_CUDA_INCLUDE\"", "\"$PWD/rustfmt.toml\"", None);
    // One flag (with its value) per line; regexes quoted for the shell.
    let args: Vec<String> = args.into_iter().map(|a| if a.contains('*') { format!("'{a}'") } else { a }).collect();
    let mut lines: Vec<String> = vec![format!("bindgen {}", args[0])];
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--" {
            lines.push(args[i..].join(" "));
            break;
        }
        let takes_value = i + 1 < args.len() && !args[i + 1].starts_with('-');
        if takes_value {
            lines.push(format!("    {} {}", args[i], args[i + 1]));
            i += 2;
        } else {
            lines.push(format!("    {}", args[i]));
            i += 1;
        }
    }
    let last = lines.len() - 1;
    lines[last] = format!("    {}", lines[last]);
    let command: String = lines.iter().map(|l| format!("//!     {l} \\\n")).collect::<String>();
    let command = command.trim_end_matches(" \\\n").to_string() + "\n";
    let [major, minor, patch, build] = version;
    format!(
        "\
//! Raw cuSPARSELt bindings, generated by bindgen from NVIDIA's `cusparseLt.h`. DO NOT EDIT.
//!
//! Regenerate from the workspace root with `cargo xtask bindgen` (`cargo xtask bindgen --check`
//! verifies this file), which needs
//!     SPARSEDM_CUSPARSELT_INCLUDE=<wheel nvidia-cusparselt-cu13==0.8.0>/nvidia/cusparselt/include
//!     SPARSEDM_CUDA_INCLUDE=<wheel nvidia-cuda-runtime==13.0.96>/nvidia/cu13/include
//! and bindgen-cli {BINDGEN_VERSION} with libclang. It runs the following (stdout: the rest of this
//! file after the `CUSPARSELT_HEADER_FNV1A64` constant), then prepends this header:
//!
//! ```text
{command}//! ```
//!
//! `{STUB_DIR}/` holds our stubs of `driver_types.h` and `cusparse.h`.
//!
//! - header: `cusparseLt.h` version {major}.{minor}.{patch} (build {build})
//! - header FNV-1a 64: `{hash:#018x}`

/// FNV-1a 64 hash of the `cusparseLt.h` these bindings were generated from.
pub const CUSPARSELT_HEADER_FNV1A64: u64 = {hash:#018x};

"
    )
}

/// `[major, minor, patch, build]` from the header's `#define CUSPARSELT_VER_*` lines.
fn header_version(text: &str) -> Option<[u32; 4]> {
    let mut version = [None; 4];
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let slot = match words.next() {
            Some("CUSPARSELT_VER_MAJOR") => 0,
            Some("CUSPARSELT_VER_MINOR") => 1,
            Some("CUSPARSELT_VER_PATCH") => 2,
            Some("CUSPARSELT_VER_BUILD") => 3,
            _ => continue,
        };
        version[slot] = words.next().and_then(|v| v.parse().ok());
    }
    Some([version[0]?, version[1]?, version[2]?, version[3]?])
}

/// 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// "line N: `old` vs `new`" for the first line where two texts differ.
fn first_difference(old: &str, new: &str) -> String {
    let (mut a, mut b) = (old.lines(), new.lines());
    for n in 1.. {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) if x == y => continue,
            (x, y) => return format!("first difference at line {n}: committed {x:?}, regenerated {y:?}"),
        }
    }
    "the files differ only in line endings".into()
}
