//! The project's build system (see <https://github.com/matklad/cargo-xtask/>):
//! `cargo xtask <task>`. Each task is a file; this one only dispatches.
//! Keep this crate free of dependencies: it must build in seconds.

mod bench;
mod bindgen;
mod gpu_bundle;
mod ptx;
mod repro;
mod vs_torch;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  bench [SUITE]   run benchmarks in release mode (SUITE: tensor, train-cpu; default: all)
  bench vs-torch [--rounds R] [--iters N] [--model PRESET:BATCH]
                  our CPU forward and training step beside PyTorch's (SPARSEDM_TORCH_PYTHON),
                  interleaved in the same run, with the ratios
  repro TABLE [--scale tiny|paper] [FLAGS]
                  reproduce a table of the paper (TABLE: table1, table2, table3, ablation);
                  writes repro-output/TABLE.md and TABLE.json (flags: `sparsedm repro --help`)
  ptx [--check]   compile kernels/*.cu to committed PTX with nvcc 13.0 (SPARSEDM_NVCC or
                  PATH) and rewrite kernels/ptx/MANIFEST; --check only verifies freshness
  bindgen         regenerate crates/sparsedm-cuda-sys/src/cusparselt_bindings.rs from the
                  cuSPARSELt 0.8 header (SPARSEDM_CUSPARSELT_INCLUDE, bindgen-cli, libclang)
  gpu-bundle [DIR] build release CLI, GPU tests and benches into DIR (default gpu-bundle/)
                  with a run.sh that runs them all on a GPU machine and prints a summary
  help            this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("repro") => repro::run(&args[1..]),
        Some("ptx") => ptx::run(&args[1..]),
        Some("bindgen") => bindgen::run(&args[1..]),
        Some("gpu-bundle") => gpu_bundle::run(&args[1..]),
        Some("help") | Some("--help") | Some("-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn project_root() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// Runs a command in the project root, failing on a non-zero exit.
pub(crate) fn run_cmd(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = std::process::Command::new(program)
        .args(args)
        .current_dir(project_root())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{program} {} failed with {status}", args.join(" "))) }
}
