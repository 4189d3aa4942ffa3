//! Writes the EMA (or raw) weights of a training checkpoint as a model
//! checkpoint, optionally stored in f16 to halve its size. This is how the
//! dense model shipped with `sparsedm demo` was made (see
//! crates/sparsedm-cli/assets/README.md):
//!
//! ```text
//! cargo run --release -p sparsedm-train --example export_model -- RUN/checkpoints/step_N.safetensors OUT.safetensors f16 [raw]
//! ```

use sparsedm_tensor::{DType, save_safetensors};
use sparsedm_train::checkpoint::{META_CONFIG, META_KIND, META_STEP, load_train_state};
use std::collections::HashMap;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(output)) = (args.first(), args.get(1)) else {
        eprintln!("usage: export_model TRAIN_CHECKPOINT OUT.safetensors [f16|bf16|f32] [raw]");
        std::process::exit(2);
    };
    let dtype = match args.get(2).map(String::as_str) {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some("bf16") => DType::BF16,
        Some(other) => {
            eprintln!("unknown dtype {other:?}: expected f16, bf16 or f32");
            std::process::exit(2);
        }
    };
    let raw = args.get(3).map(String::as_str) == Some("raw");
    let run = || -> Result<usize, Box<dyn std::error::Error>> {
        let st = load_train_state(std::path::Path::new(input))?;
        let weights = if raw { st.model } else { st.ema };
        let converted =
            weights.into_iter().map(|(n, t)| Ok((n, t.to_dtype(dtype)?))).collect::<Result<Vec<_>, sparsedm_tensor::Error>>()?;
        let mut meta = HashMap::new();
        meta.insert(META_CONFIG.to_string(), st.config_toml);
        meta.insert(META_KIND.to_string(), "model".to_string());
        meta.insert(META_STEP.to_string(), st.step.to_string());
        save_safetensors(output, &converted, Some(meta))?;
        Ok(converted.len())
    };
    match run() {
        Ok(n) => println!("wrote {n} tensors ({dtype:?}, {} weights) to {output}", if raw { "raw" } else { "EMA" }),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
