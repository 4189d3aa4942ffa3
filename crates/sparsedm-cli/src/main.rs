//! `sparsedm`: the command-line front end. Each subcommand lives in its own
//! file under `cmd/` with its clap arguments and a `run` function; this file
//! only dispatches and turns errors into one clear line and exit code 1
//! (set `SPARSEDM_BACKTRACE=1` for the full chain with causes).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cmd;

#[derive(Debug, Parser)]
#[command(name = "sparsedm", version, about = "Make diffusion models N:M sparse and fast (SparseDM)", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Inspect(cmd::inspect::Args),
}

fn main() -> ExitCode {
    // Behave like other Unix tools when the output pipe closes
    // (`sparsedm inspect x | head`): exit quietly instead of panicking.
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread is spawned;
    // restoring the default SIGPIPE disposition has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if std::env::var_os("SPARSEDM_BACKTRACE").is_some() {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
