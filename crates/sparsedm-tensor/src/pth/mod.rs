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
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
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
    let io = |error| Error::Io { path: path.display().to_string(), error };
    let bad = |msg| Error::TorchCheckpoint { path: path.display().to_string(), msg };
    let (mut file, format) = open_container(path)?;
    match format {
        // Read entry by entry: the object, then each selected tensor's storage.
        TorchFormat::Zip => zip_state_dict(BufReader::new(file), key).map_err(bad),
        // Pickles and storages back to back: read whole.
        TorchFormat::Legacy => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io)?;
            legacy_state_dict(&bytes, key).map_err(bad)
        }
    }
}

/// Checks that `path` is a PyTorch checkpoint's container without reading its tensors: a zip
/// archive must hold one `<name>/data.pkl` (an `.npz` of images, also a zip, is refused here by
/// name, not taken for a checkpoint with no metadata); a legacy pickle needs no more than its header.
///
/// # Errors
/// [`Error::Io`] for an unreadable file; [`Error::TorchCheckpoint`] saying what the file is instead.
pub fn check_torch_container(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    match open_container(path)? {
        (file, TorchFormat::Zip) => {
            archive::check_zip_layout(BufReader::new(file)).map_err(|msg| Error::TorchCheckpoint { path: path.display().to_string(), msg })
        }
        (_, TorchFormat::Legacy) => Ok(()),
    }
}

/// `path` opened at its start, and its container told from its first bytes.
fn open_container(path: &Path) -> Result<(File, TorchFormat)> {
    let io = |error| Error::Io { path: path.display().to_string(), error };
    let mut file = File::open(path).map_err(io)?;
    let mut head = Vec::with_capacity(HEAD);
    Read::by_ref(&mut file).take(HEAD as u64).read_to_end(&mut head).map_err(io)?;
    file.rewind().map_err(io)?;
    let format = container(&head).map_err(|msg| Error::TorchCheckpoint { path: path.display().to_string(), msg })?;
    Ok((file, format))
}

/// Bytes read to recognise the container (a tar header's magic is at 257).
const HEAD: usize = 512;

/// The container of a file that starts with `head`, or why it is none.
fn container(head: &[u8]) -> std::result::Result<TorchFormat, String> {
    if head.get(257..262) == Some(b"ustar") {
        return Err("a tar archive (the format of PyTorch < 0.4), which is not supported: re-save it with a recent PyTorch".into());
    }
    torch_format(head).ok_or_else(|| "neither a zip archive nor a pickle: not a torch.save file".into())
}

/// The state dict of a zip-format checkpoint. Each storage is read when
/// the first tensor on it is built and dropped after the last one, so the
/// peak is about the tensors plus one storage (was: the whole file, every
/// storage it references — optimizer state included — and the tensors).
fn zip_state_dict<R: std::io::Read + std::io::Seek>(reader: R, key: Option<&str>) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let mut ckpt = archive::ZipCheckpoint::open(reader)?;
    let sd = select::state_dict(&ckpt.root, key)?;
    let mut uses: HashMap<String, usize> = HashMap::new();
    for (_, t) in &sd {
        *uses.entry(t.storage.key.clone()).or_default() += 1;
    }
    let mut storages = HashMap::new();
    let mut out = Vec::with_capacity(sd.len());
    for (name, t) in sd {
        let k = &t.storage.key;
        if !storages.contains_key(k) {
            storages.insert(k.clone(), ckpt.storage(k).map_err(|e| format!("tensor {name:?}: {e}"))?);
        }
        let tensor = rebuild::materialize(&t, &storages).map_err(|e| format!("tensor {name:?}: {e}"))?;
        let left = uses.get_mut(k).expect("counted above");
        *left -= 1;
        if *left == 0 {
            storages.remove(k);
        }
        out.push((name, tensor));
    }
    Ok(out)
}

/// The state dict of a legacy-format checkpoint held in memory.
fn legacy_state_dict(bytes: &[u8], key: Option<&str>) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let loaded = archive::read_legacy(bytes)?;
    let sd = select::state_dict(&loaded.root, key)?;
    sd.into_iter()
        .map(|(name, t)| {
            let tensor = rebuild::materialize(&t, &loaded.storages).map_err(|e| format!("tensor {name:?}: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
}
