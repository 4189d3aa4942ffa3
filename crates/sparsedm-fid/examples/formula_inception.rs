//! Writes pytorch-fid's InceptionV3 with the stand-in weights of [`sparsedm_fid::formula`] (the
//! shared fixture's formula) as a safetensors checkpoint that `sparsedm fid --inception` takes:
//! the GPU bundle's FID check uses it on a machine that cannot download the real weights.
//!
//! Usage: `formula_inception OUT.safetensors`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: formula_inception OUT.safetensors");
        return ExitCode::FAILURE;
    };
    match sparsedm_fid::formula::write_formula_inception(&out) {
        Ok(()) => {
            println!(
                "wrote {} (InceptionV3, formula weights: not the real ones, FIDs not comparable with published numbers)",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
