//! `cargo xtask repro TABLE [--scale tiny|paper] [FLAGS]`: reproduces a
//! table of the paper by building the release `sparsedm` binary and running
//! `sparsedm repro TABLE ...` (all flags are passed through; see
//! `sparsedm repro --help`). Tables: table1, table2, table3, ablation.

const TABLES: &[&str] = &["table1", "table2", "table3", "ablation"];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some(t) if TABLES.contains(&t) => {}
        Some("--help") | Some("-h") | None => {
            return Err(format!(
                "usage: cargo xtask repro {{{}}} [--scale tiny|paper] [--out DIR] [...]\n(see `sparsedm repro --help`)",
                TABLES.join("|")
            ));
        }
        Some(other) => return Err(format!("unknown table {other:?}; tables: {}", TABLES.join(", "))),
    }
    let mut a = vec!["run", "--release", "--quiet", "-p", "sparsedm-cli", "--bin", "sparsedm", "--", "repro"];
    a.extend(args.iter().map(String::as_str));
    crate::run_cmd("cargo", &a)
}
