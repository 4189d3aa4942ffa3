//! `sparsedm`: the command-line front end. Each subcommand lives in its own
//! file under `cmd/` with its clap arguments and a `run` function; this file
//! only dispatches and turns errors into one clear line and exit code 1
//! (set `SPARSEDM_BACKTRACE=1` for the full chain with causes).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod budget;
mod cmd;
mod compare;
mod diffprune;
mod interrupt;
mod kept_rows;
mod lab;
mod model_size;
mod model_source;
mod output;
mod presets;
mod run_folder;

// Tensor ops allocate large short-lived buffers; mimalloc, told by
// `keep_freed_pages` (first thing in `main`) never to return freed pages to
// the OS, reuses them instead of faulting in fresh zeroed memory each time
// (page faults were 10-17 % of a CPU training step otherwise).
#[global_allocator]
static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;

#[derive(Debug, Parser)]
#[command(name = "sparsedm", version, about = "Make diffusion models N:M sparse and fast (SparseDM)", propagate_version = true)]
struct Cli {
    /// CPU threads for the tensor ops (default: RAYON_NUM_THREADS, else one per CPU); with a GPU, the host-side work.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=4096))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole method in minutes on the embedded shapes data: dense, SparseDM, STE, ASP.
    Demo(cmd::demo::Args),
    /// What a checkpoint holds: each tensor's name, dtype and shape, each weight's sparsity, and its N:M pattern checked.
    Inspect(cmd::inspect::Args),
    /// A PyTorch checkpoint (.pth/.pt/.ckpt) to safetensors, names unchanged, without Python.
    Convert(cmd::convert::Args),
    /// A model as a deployment file: ONNX (for TensorRT: trtexec --sparsity=enable) or safetensors (a sparse model compressed with --compressed).
    Export(cmd::export::Args),
    /// One forward pass of a model on inputs from a safetensors file.
    Forward(cmd::forward::Args),
    /// Per-layer multiply–accumulate counts of a model (dense or N:M).
    Macs(cmd::macs::Args),
    /// Prune a checkpoint: N:M magnitude masks, or Diff-Pruning's channels to a MAC target.
    Prune(cmd::prune::Args),
    /// Train a model: dense pre-training or SparseDM fine-tuning.
    Train(cmd::train::Args),
    /// Draw images from a checkpoint (PNG folder or npz).
    Sample(cmd::sample::Args),
    /// FID statistics and scores (pytorch-fid compatible; KID for two image sets).
    Fid(cmd::fid::Args),
    /// Time a model's sampling forward and training step (dense and 2:4 SR-STE).
    Bench(cmd::bench::Args),
    /// Reproduce a table of the paper (tiny scale on embedded data, or paper scale).
    Repro(cmd::repro::Args),
    /// Plot the loss (and FID) curves of training runs as a PNG.
    Plot(cmd::plot::Args),
}

fn main() -> ExitCode {
    // Freed buffers stay committed and are reused without page faults.
    sparsedm_tensor::host_alloc::keep_freed_pages();
    // Behave like other Unix tools when the output pipe closes
    // (`sparsedm inspect x | head`): exit quietly instead of panicking.
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread is spawned;
    // restoring the default SIGPIPE disposition has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Parsing touches no thread pool (clap exits here on --help or a bad argument).
    let cli = Cli::parse();
    // This thread joins the CPU thread pool, so parallel tensor ops start in place.
    sparsedm_tensor::host_threads::join_pool(cli.threads.map(usize::from));
    let result = nm_path_from_env().and_then(|()| match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Forward(a) => cmd::forward::run(a),
        Command::Macs(a) => cmd::macs::run(a),
        Command::Prune(a) => cmd::prune::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Sample(a) => cmd::sample::run(a),
        Command::Fid(a) => cmd::fid::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Repro(a) => cmd::repro::run(a),
        Command::Plot(a) => cmd::plot::run(a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(stopped) = e.downcast_ref::<interrupt::Interrupted>() {
                eprintln!("{stopped}");
                return ExitCode::from(interrupt::EXIT_STATUS);
            }
            if std::env::var_os("SPARSEDM_BACKTRACE").is_some() {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {}", one_line(&e));
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes as one line, `outer: cause: …` as anyhow's `{:#}` writes it, except
/// that a cause whose message the line already holds is not repeated (an error type whose message
/// embeds its source, `InceptionV3: {0}` with `#[from]`, printed "InceptionV3: x: x").
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if line.is_empty() {
            line = msg;
        } else if !line.contains(&msg) {
            line = format!("{line}: {msg}");
        }
    }
    line
}

/// `SPARSEDM_NM_PATH=sparse|dense|auto`: the CPU path of every deployed N:M
/// layer. By default (`auto`) each layer shape times the N:M kernel
/// against the dense product once and keeps the faster; both compute the
/// same values up to summation order (1e-5 relative), so a pinned path
/// makes runs reproducible to the bit across processes and machines, and
/// `dense` shows what the N:M kernels save. A value that is none of these
/// is an error before any work.
fn nm_path_from_env() -> anyhow::Result<()> {
    use sparsedm_tensor::nm_cpu::{NmPath, force_path};
    let Some(v) = std::env::var_os("SPARSEDM_NM_PATH") else { return Ok(()) };
    let path = match v.to_str() {
        Some("sparse") => Some(NmPath::Sparse),
        Some("dense") => Some(NmPath::Dense),
        Some("auto" | "") => None,
        _ => anyhow::bail!("SPARSEDM_NM_PATH={}: expected sparse, dense or auto", v.to_string_lossy()),
    };
    force_path(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// clap's own consistency checks (conflicting names, bad defaults).
    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `sparsedm --help` lists every command with a line saying what it does.
    #[test]
    fn every_command_says_what_it_does() {
        let cli = Cli::command();
        let mut names = Vec::new();
        for sub in cli.get_subcommands() {
            names.push(sub.get_name().to_string());
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(!about.trim().is_empty(), "`sparsedm {}` has no description in `sparsedm --help`", sub.get_name());
        }
        assert!(names.iter().any(|n| n == "inspect"), "commands: {names:?}");
    }

    /// The commands that take `--config PRESET` list every built-in preset in their `--help`
    /// (a hand-written list had missed `demo_shapes_unet`).
    #[test]
    fn config_commands_list_every_preset() {
        for name in ["train", "bench"] {
            let mut cmd = Cli::command();
            let sub = cmd.find_subcommand_mut(name).unwrap();
            let help = sub.render_long_help().to_string();
            let listed = help
                .lines()
                .find_map(|l| l.strip_prefix("Presets: "))
                .unwrap_or_else(|| panic!("`{name} --help` lists no presets:\n{help}"));
            let listed: Vec<&str> = listed.split(", ").collect();
            let all: Vec<&str> = sparsedm_train::config::PRESETS.iter().map(|p| p.0).collect();
            assert_eq!(listed, all, "`sparsedm {name} --help`");
        }
    }

    /// Every command that reads a model file by a flag takes it as both `--checkpoint` and
    /// `--weights` (`prune` and `forward` knew only `--weights`, `sample` only `--checkpoint`,
    /// so a command line moved from one to the other failed on the flag's name).
    #[test]
    fn model_file_flags_take_both_names() {
        let cli = Cli::command();
        let mut seen = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long != "checkpoint" && long != "weights" {
                    continue;
                }
                let mut names: Vec<&str> = vec![long];
                names.extend(arg.get_visible_aliases().unwrap_or_default());
                names.sort_unstable();
                assert_eq!(names, ["checkpoint", "weights"], "`sparsedm {} --{long}`", sub.get_name());
                seen.push(sub.get_name().to_string());
            }
        }
        for name in ["export", "forward", "macs", "prune", "repro", "sample"] {
            assert!(seen.iter().any(|s| s == name), "`sparsedm {name}` has no model-file flag: {seen:?}");
        }
    }

    /// Causes join the line once: a cause whose message the line holds already is not repeated,
    /// one it does not hold is added, as `{:#}` would.
    #[test]
    fn error_lines_do_not_repeat_causes() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let missing = sparsedm_tensor::Error::Io { path: "nope.safetensors".into(), error: io() };
        let e = anyhow::Error::from(sparsedm_fid::FidError::Network(sparsedm_layers::LayersError::Tensor(missing)));
        assert!(format!("{e:#}").matches("No such file").count() > 1, "the case this guards against: {e:#}");
        assert_eq!(super::one_line(&e), "InceptionV3: nope.safetensors: No such file");
        let e = anyhow::Error::from(io()).context("cannot read the run config");
        assert_eq!(super::one_line(&e), "cannot read the run config: No such file");
    }
}
