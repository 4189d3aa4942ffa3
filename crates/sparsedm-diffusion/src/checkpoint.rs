//! Model checkpoints by state-dict name: safetensors files, or PyTorch
//! `.pth`/`.pt`/`.ckpt` files read directly (`sparsedm_tensor::load_weights`).
//!
//! Loading is strict, as PyTorch's `load_state_dict(strict=True)`: the file
//! must hold exactly the model's tensors with their shapes. Every missing,
//! unexpected and mis-shaped tensor is listed in one error (so a user fixes
//! a conversion in one go), and nothing is written into the model unless
//! the whole file matches. f16/bf16 (and f64) tensors are converted to f32.
//! A file that carries a sparsity spec in its metadata (`sparsedm prune`,
//! a sparse run's export) must satisfy it: a layer the spec lists as N:M
//! whose stored weight is not is refused naming the layer and the first
//! offending group — never silently re-masked or loaded as dense. Values
//! must be finite (see `sparsedm_layers::finite`).
//! Official `.pth`/`.ckpt` files load as they are; a state dict nested in
//! one must be the only dict of tensors there (`sparsedm convert --key`
//! extracts any other).

use crate::error::Result;
use sparsedm_layers::{ParamStore, SPARSITY_METADATA_KEY, load_sparse_checkpoint, read_sparse_checkpoint};
use sparsedm_tensor::{Tensor, load_weights, load_weights_metadata};
use std::collections::HashMap;
use std::path::Path;

/// Loads `path` into every entry of `store` (strict; see the module doc).
/// The error is [`sparsedm_layers::LayersError::CheckpointMismatch`] (inside
/// [`crate::DiffusionError::Layers`]) for name/shape problems, a sparsity
/// violation of the file's own spec, or a tensor I/O error for an
/// unreadable file.
pub fn load_checkpoint(store: &ParamStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors = read_verified(path)?;
    store.load_tensors(&path.display().to_string(), tensors, |_| false)?;
    Ok(())
}

/// Loads `path` into `store` for evaluation (sampling, `forward`, FID): as
/// [`load_checkpoint`] (nested under `key` for a PyTorch file), except that
/// a sparse checkpoint (one whose metadata holds a sparsity spec: `sparsedm
/// prune`, a sparse run's export, a compressed N:M file) also gives each
/// listed layer its N:M mode ([`sparsedm_layers::load_sparse_checkpoint`]),
/// so that forwards without a graph run those layers on the deployed N:M
/// kernels instead of dense products over zeros. Returns how many layers
/// the spec lists (0 for a dense file).
///
/// Not for initialising training: a run's own `[sparse]` section decides
/// its layers' modes there.
pub fn load_checkpoint_for_eval(store: &ParamStore, path: impl AsRef<Path>, key: Option<&str>) -> Result<usize> {
    let path = path.as_ref();
    if load_weights_metadata(path)?.contains_key(SPARSITY_METADATA_KEY) {
        return Ok(load_sparse_checkpoint(store, path)?.layers.len());
    }
    let tensors = read_verified_key(path, key)?;
    store.load_tensors(&path.display().to_string(), tensors, |_| false)?;
    Ok(0)
}

/// The tensors of a checkpoint file, in their stored dtypes; when its
/// metadata holds a sparsity spec, every listed layer is verified against
/// it first ([`sparsedm_layers::SparsitySpec::verify`]).
pub fn read_verified(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    read_verified_key(path, None)
}

/// [`read_verified`] for a file whose state dict may be nested under `key`
/// (PyTorch checkpoints; see `sparsedm_tensor::load_weights`). Only
/// safetensors files carry a sparsity spec.
pub fn read_verified_key(path: impl AsRef<Path>, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    if load_weights_metadata(path)?.contains_key(SPARSITY_METADATA_KEY) {
        return Ok(read_sparse_checkpoint(path)?.0);
    }
    Ok(load_weights(path, key)?)
}

/// Writes every entry of `store` to `path` (f32, atomically), with optional
/// string metadata (the model config, say).
pub fn save_checkpoint(store: &ParamStore, path: impl AsRef<Path>, metadata: Option<HashMap<String, String>>) -> Result<()> {
    store.save_safetensors(path, metadata)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DiffusionError;
    use sparsedm_layers::{LayersError, Linear};
    use sparsedm_tensor::{DType, Device, Tensor, save_safetensors};

    /// A fresh directory of this test's own, removed when the test passes.
    fn tmp() -> sparsedm_testkit::Scratch {
        sparsedm_testkit::Scratch::new("ckpt")
    }

    /// A store with `a.weight` [3, 2], `a.bias` [3], `b.weight` [1, 3], `b.bias` [1].
    fn model(seed: u64) -> ParamStore {
        let s = ParamStore::new(Device::Cpu, seed);
        Linear::new(&s.pp("a"), 2, 3, true).unwrap();
        Linear::new(&s.pp("b"), 3, 1, true).unwrap();
        s
    }

    fn problems(e: DiffusionError) -> Vec<String> {
        match e {
            DiffusionError::Layers(LayersError::CheckpointMismatch { problems, .. }) => problems,
            other => panic!("expected a checkpoint mismatch, got {other}"),
        }
    }

    fn t(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|i| i as f32 * 0.5).collect(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn round_trip() {
        let scratch = tmp();
        let (a, b) = (model(1), model(2));
        let p = scratch.join("round_trip.safetensors");
        save_checkpoint(&a, &p, None).unwrap();
        load_checkpoint(&b, &p).unwrap();
        for (name, ta) in a.state_dict() {
            assert_eq!(ta.to_vec_f32().unwrap(), b.get(&name).unwrap().to_vec_f32().unwrap(), "{name}");
        }
    }

    #[test]
    fn missing_tensor_is_listed() {
        let scratch = tmp();
        let p = scratch.join("missing.safetensors");
        save_safetensors(&p, &[("a.weight".into(), t(&[3, 2])), ("a.bias".into(), t(&[3])), ("b.weight".into(), t(&[1, 3]))], None)
            .unwrap();
        let pr = problems(load_checkpoint(&model(0), &p).unwrap_err());
        assert_eq!(pr.len(), 1, "{pr:?}");
        assert!(pr[0].contains("missing tensor b.bias [1]"), "{pr:?}");
    }

    #[test]
    fn unexpected_tensor_is_listed() {
        let scratch = tmp();
        let s = model(0);
        let p = scratch.join("unexpected.safetensors");
        let mut tensors = s.state_dict();
        tensors.push(("c.weight".into(), t(&[2, 2])));
        save_safetensors(&p, &tensors, None).unwrap();
        let pr = problems(load_checkpoint(&s, &p).unwrap_err());
        assert_eq!(pr.len(), 1, "{pr:?}");
        assert!(pr[0].contains("unexpected tensor c.weight [2, 2]"), "{pr:?}");
    }

    #[test]
    fn misshaped_tensor_is_listed() {
        let scratch = tmp();
        let s = model(0);
        let p = scratch.join("misshaped.safetensors");
        let tensors: Vec<_> = s.state_dict().into_iter().map(|(n, v)| if n == "a.weight" { (n, t(&[2, 3])) } else { (n, v) }).collect();
        save_safetensors(&p, &tensors, None).unwrap();
        let pr = problems(load_checkpoint(&s, &p).unwrap_err());
        assert_eq!(pr.len(), 1, "{pr:?}");
        assert!(pr[0].contains("a.weight has shape [2, 3], the model expects [3, 2]"), "{pr:?}");
    }

    #[test]
    fn all_problems_in_one_error_and_nothing_written() {
        let scratch = tmp();
        let s = model(0);
        let before = s.get("a.bias").unwrap().to_vec_f32().unwrap();
        let p = scratch.join("all.safetensors");
        save_safetensors(&p, &[("a.weight".into(), t(&[3, 3])), ("a.bias".into(), t(&[3])), ("zzz".into(), t(&[1]))], None).unwrap();
        let e = load_checkpoint(&s, &p).unwrap_err();
        let msg = e.to_string();
        let pr = problems(e);
        assert_eq!(pr.len(), 4, "{pr:?}"); // a.weight shape, b.weight and b.bias missing, zzz unexpected
        assert!(msg.contains("all.safetensors"), "{msg}");
        assert_eq!(s.get("a.bias").unwrap().to_vec_f32().unwrap(), before, "a failed load must not write");
    }

    #[test]
    fn half_precision_converts_to_f32() {
        let scratch = tmp();
        let s = model(0);
        let p = scratch.join("half.safetensors");
        let src = model(7).state_dict();
        let converted: Vec<_> = src
            .iter()
            .enumerate()
            .map(|(i, (n, v))| (n.clone(), v.to_dtype(if i % 2 == 0 { DType::F16 } else { DType::BF16 }).unwrap()))
            .collect();
        save_safetensors(&p, &converted, None).unwrap();
        load_checkpoint(&s, &p).unwrap();
        for (name, half) in &converted {
            let got = s.get(name).unwrap();
            assert_eq!(got.dtype(), DType::F32);
            assert_eq!(got.to_vec_f32().unwrap(), half.to_vec_f32().unwrap(), "{name}");
        }
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let scratch = tmp();
        let p = scratch.join("garbage.safetensors");
        std::fs::write(&p, b"not a safetensors file").unwrap();
        let msg = load_checkpoint(&model(0), &p).unwrap_err().to_string();
        assert!(msg.contains("garbage.safetensors"), "{msg}");
        let msg = load_checkpoint(&model(0), scratch.join("does-not-exist.safetensors")).unwrap_err().to_string();
        assert!(msg.contains("does-not-exist"), "{msg}");
    }
}
