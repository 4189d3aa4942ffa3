//! PyTorch checkpoints (`.pth`, `.pt`, `.ckpt`: what `torch.save` writes)
//! read without Python and without executing anything.
//!
//! Both containers are read ([`archive`]: the zip format of PyTorch ≥ 1.6
//! and the legacy one), the object is unpickled by a machine that accepts
//! only what a state dict is made of ([`pickle`]), the state dict is found
//! at a key or as the one obvious dict of tensors ([`select`]), and each
//! tensor is gathered from its storage, strides and offset included
//! ([`rebuild`]). The result has the shape of
//! [`crate::load_safetensors`]'s: `(name, tensor)` in file order.

mod archive;
mod pickle;
mod rebuild;
mod select;

use crate::{Error, Result, Tensor};
use std::path::Path;

/// Which `torch.save` container a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchFormat {
    /// PyTorch ≥ 1.6: a zip archive with `<name>/data.pkl` and `<name>/data/<key>`.
    Zip,
    /// `_use_new_zipfile_serialization=False` and PyTorch < 1.6: pickles followed by raw storages.
    Legacy,
}

/// Recognises a `torch.save` file from its first bytes (at least 16 should
/// be given): a zip local-file header, or a pickle (`0x80` protocol opcode)
/// that is not a safetensors header (whose ninth byte is `{`).
pub fn torch_format(head: &[u8]) -> Option<TorchFormat> {
    if head.starts_with(b"PK\x03\x04") {
        Some(TorchFormat::Zip)
    } else if head.first() == Some(&0x80) && head.get(8) != Some(&b'{') {
        Some(TorchFormat::Legacy)
    } else {
        None
    }
}

/// Reads the state dict of a `torch.save` file: the entry at `key` (a
/// top-level key, or a path `a/b` into nested dicts) or, without a key, the
/// file itself when it is a dict of tensors, else the one dict of tensors
/// nearest to the top. Tensors keep their names, shapes and dtypes (f32,
/// f16, bf16; f64 becomes f32, integer and bool tensors become i64).
///
/// # Errors
/// [`Error::Io`] for an unreadable file; [`Error::TorchCheckpoint`] naming
/// the file for everything else: a refused pickle global or opcode (nothing
/// is executed), a missing or ambiguous state dict, a tensor outside its
/// storage, a truncated file.
pub fn load_torch_checkpoint(path: impl AsRef<Path>, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|error| Error::Io { path: path.display().to_string(), error })?;
    from_bytes(&bytes, key).map_err(|msg| Error::TorchCheckpoint { path: path.display().to_string(), msg })
}

fn from_bytes(bytes: &[u8], key: Option<&str>) -> std::result::Result<Vec<(String, Tensor)>, String> {
    if bytes.get(257..262) == Some(b"ustar") {
        return Err("a tar archive (the format of PyTorch < 0.4), which is not supported: re-save it with a recent PyTorch".into());
    }
    let loaded = match torch_format(bytes) {
        Some(TorchFormat::Zip) => archive::read_zip(bytes)?,
        Some(TorchFormat::Legacy) => archive::read_legacy(bytes)?,
        None => return Err("neither a zip archive nor a pickle: not a torch.save file".into()),
    };
    let sd = select::state_dict(&loaded.root, key)?;
    sd.into_iter()
        .map(|(name, t)| {
            let tensor = rebuild::materialize(&t, &loaded.storages).map_err(|e| format!("tensor {name:?}: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
}
