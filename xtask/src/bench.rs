//! `cargo xtask bench [SUITE]`: criterion benchmarks in release mode.
//! Suites are the bench targets of the root package (`benches/*.rs`);
//! `vs-torch` is the side-by-side comparison with PyTorch (`vs_torch.rs`).

const SUITES: &[(&str, &str)] = &[("tensor", "tensor_ops"), ("train-cpu", "train_cpu")];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("vs-torch") {
        return crate::vs_torch::run(&args[1..]);
    }
    let chosen: Vec<&str> = match args.first() {
        None => SUITES.iter().map(|s| s.1).collect(),
        Some(name) => match SUITES.iter().find(|s| s.0 == name) {
            Some(s) => vec![s.1],
            None => {
                let names: Vec<&str> = SUITES.iter().map(|s| s.0).collect();
                return Err(format!("unknown bench suite {name:?}; suites: {}, vs-torch", names.join(", ")));
            }
        },
    };
    let extra: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    for bench in chosen {
        let mut a = vec!["bench", "-p", "sparsedm-suite", "--bench", bench, "--"];
        a.extend(&extra);
        crate::run_cmd("cargo", &a)?;
    }
    Ok(())
}
