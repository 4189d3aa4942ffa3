//! One entry point for reading model weights, whatever the file format:
//! safetensors (our own format, and what `scripts/convert_checkpoint.py`
//! writes) or a PyTorch `torch.save` checkpoint (`.pth`, `.pt`, `.ckpt`).
//! The format is told by the file's first bytes, not its extension, so a
//! renamed file still loads; safetensors files go through
//! [`crate::load_safetensors`] unchanged.

use crate::pth::{TorchFormat, check_torch_container, load_torch_checkpoint, torch_format};
use crate::{Error, Result, Tensor, load_safetensors, load_safetensors_metadata};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The container of a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    SafeTensors,
    Torch(TorchFormat),
}

/// Tells the format of `path` from its first 16 bytes.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read.
pub fn weights_format(path: impl AsRef<Path>) -> Result<WeightsFormat> {
    let path = path.as_ref();
    let io = |error| Error::Io { path: path.display().to_string(), error };
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path).map_err(io)?.take(16).read_to_end(&mut head).map_err(io)?;
    Ok(torch_format(&head).map_or(WeightsFormat::SafeTensors, WeightsFormat::Torch))
}

/// Reads every tensor of a weights file, in file order: a safetensors file
/// as [`load_safetensors`] does, a PyTorch checkpoint as
/// [`load_torch_checkpoint`] does (`key` picks the state dict inside it;
/// `None` finds the obvious one).
///
/// # Errors
/// Those of the two readers; giving a `key` for a safetensors file is an
/// error (its tensors are not nested).
pub fn load_weights(path: impl AsRef<Path>, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    match (weights_format(path)?, key) {
        (WeightsFormat::Torch(_), key) => load_torch_checkpoint(path, key),
        (WeightsFormat::SafeTensors, None) => load_safetensors(path),
        (WeightsFormat::SafeTensors, Some(k)) => Err(Error::SafeTensors {
            path: path.display().to_string(),
            msg: format!("--key {k:?} selects a state dict inside a PyTorch checkpoint; a safetensors file has none"),
        }),
    }
}

/// The string metadata of a weights file: a safetensors file's
/// `__metadata__`; empty for a PyTorch checkpoint (it has no such map), whose container is
/// checked (a zip that is no checkpoint, such as an `.npz`, is an error here, before a caller
/// asks for `--arch/--config` it has no use for).
///
/// # Errors
/// Those of [`load_safetensors_metadata`]; [`Error::Io`] for an unreadable file.
pub fn load_weights_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, String>> {
    let path = path.as_ref();
    match weights_format(path)? {
        WeightsFormat::Torch(_) => {
            check_torch_container(path)?;
            Ok(HashMap::new())
        }
        WeightsFormat::SafeTensors => load_safetensors_metadata(path),
    }
}
