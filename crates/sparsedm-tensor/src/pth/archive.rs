//! The two containers `torch.save` writes: the unpickled object and the
//! raw bytes of the storages it references — a zip archive's entries read
//! one at a time on demand ([`ZipCheckpoint`]), a legacy file's storages
//! borrowed from its bytes in memory ([`read_legacy`]).
//!
//! - **zip** (PyTorch ≥ 1.6, the default): `<prefix>/data.pkl` is the
//!   object; storage `key` is the file `<prefix>/data/<key>`, its raw
//!   elements; `<prefix>/byteorder` says `little` or `big` (absent: little).
//!   The prefix is `archive` in recent versions and the file's stem in
//!   older ones, so the single `*/data.pkl` entry decides it.
//! - **legacy** (`_use_new_zipfile_serialization=False`, PyTorch < 1.6):
//!   four pickles in a row (the magic number `0x1950a86a20f9469cfc6c`, the
//!   protocol version 1001, a system-info dict with `little_endian`, the
//!   object), then a pickled list of storage keys, then for each key in that
//!   order an int64 element count followed by the elements.

use super::pickle::{StorageDType, StorageRef, Value, storage_id, unpickle};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Seek};

/// One storage's bytes as stored (`big_endian` tells how to read
/// elements): read from a zip entry, or borrowed from a legacy file's bytes.
#[derive(Debug)]
pub(crate) struct RawStorage<'a> {
    pub dtype: StorageDType,
    pub bytes: Cow<'a, [u8]>,
    pub big_endian: bool,
}

/// The unpickled object and its storages by key.
#[derive(Debug)]
pub(crate) struct Loaded<'a> {
    pub root: Value,
    pub storages: HashMap<String, RawStorage<'a>>,
}

/// The legacy format's first pickle.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The legacy format's protocol version.
const LEGACY_PROTOCOL: i128 = 1001;

/// Runs the object pickle, remembering the dtype of every storage key its
/// persistent ids name.
fn unpickle_object(data: &[u8], pos: usize) -> Result<(Value, usize, HashMap<String, StorageDType>), String> {
    let mut seen: HashMap<String, StorageDType> = HashMap::new();
    let mut conflict: Option<String> = None;
    let mut load = |pid: &Value| -> Result<Value, String> {
        let (s, _numel) = storage_id(pid)?;
        if let Some(prev) = seen.insert(s.key.clone(), s.dtype)
            && prev != s.dtype
        {
            conflict = Some(format!("storage {} is referenced as both {prev:?} and {:?}", s.key, s.dtype));
        }
        Ok(Value::Storage(std::rc::Rc::new(s)))
    };
    let (root, end) = unpickle(data, pos, &mut load)?;
    if let Some(c) = conflict {
        return Err(c);
    }
    Ok((root, end, seen))
}

/// A zip-format checkpoint opened for reading: the unpickled object, and
/// the storages it references, each read from the archive when asked for
/// (so a state dict picked out of a training checkpoint does not read the
/// optimizer's storages, and no copy of the whole file is held).
pub(crate) struct ZipCheckpoint<R> {
    zip: zip::ZipArchive<R>,
    /// `<name>/`, the directory of `data.pkl`.
    prefix: String,
    big_endian: bool,
    /// Every storage key the object references, with its element type.
    dtypes: HashMap<String, StorageDType>,
    pub root: Value,
}

/// The bytes of entry `name` (`None`: the archive has no such entry).
fn zip_entry<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, name: &str) -> Result<Option<Vec<u8>>, String> {
    let mut f = match zip.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format!("zip entry {name}: {e}")),
    };
    let mut buf = Vec::with_capacity(f.size().min(1 << 30) as usize);
    f.read_to_end(&mut buf).map_err(|e| format!("zip entry {name}: {e}"))?;
    Ok(Some(buf))
}

/// The `<name>/data.pkl` entry of a zip checkpoint's directory, or why the archive is not one
/// (an `.npz`, say: arrays, no pickle).
fn data_pkl<R: Read + Seek>(zip: &zip::ZipArchive<R>) -> Result<String, String> {
    let pickles: Vec<String> =
        zip.file_names().filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1).map(str::to_string).collect();
    match pickles.as_slice() {
        [one] => Ok(one.clone()),
        [] if zip.file_names().any(|n| n.ends_with(".npy")) => {
            Err("a zip archive of .npy arrays (an .npz, e.g. images or FID statistics), not a torch.save checkpoint".into())
        }
        [] => Err("a zip archive without <name>/data.pkl: not a torch.save checkpoint".into()),
        many => Err(format!("a zip archive with several data.pkl entries ({})", many.join(", "))),
    }
}

/// Checks that a zip archive is laid out as a `torch.save` checkpoint (one `<name>/data.pkl`),
/// reading only its directory.
pub(crate) fn check_zip_layout<R: Read + Seek>(reader: R) -> Result<(), String> {
    let zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a readable zip archive ({e})"))?;
    data_pkl(&zip).map(|_| ())
}

impl<R: Read + Seek> ZipCheckpoint<R> {
    /// Reads the archive's directory, its byte order and its object.
    pub(crate) fn open(reader: R) -> Result<Self, String> {
        let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a readable zip archive ({e})"))?;
        let pkl = data_pkl(&zip)?;
        let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
        let big_endian = match zip_entry(&mut zip, &format!("{prefix}byteorder"))? {
            None => false,
            Some(b) => match String::from_utf8_lossy(&b).trim() {
                "little" => false,
                "big" => true,
                other => return Err(format!("{prefix}byteorder is {other:?}, expected \"little\" or \"big\"")),
            },
        };
        let data = zip_entry(&mut zip, &pkl)?.unwrap_or_default();
        let (root, _, dtypes) = unpickle_object(&data, 0).map_err(|e| format!("{pkl}: {e}"))?;
        Ok(ZipCheckpoint { zip, prefix, big_endian, dtypes, root })
    }

    /// Reads storage `key` (one the object references).
    pub(crate) fn storage(&mut self, key: &str) -> Result<RawStorage<'static>, String> {
        let dtype = *self.dtypes.get(key).ok_or_else(|| format!("storage {key} is not referenced by the checkpoint's object"))?;
        let name = format!("{}data/{key}", self.prefix);
        let bytes = zip_entry(&mut self.zip, &name)?.ok_or_else(|| format!("storage {key} is referenced but the archive has no {name}"))?;
        Ok(RawStorage { dtype, bytes: Cow::Owned(bytes), big_endian: self.big_endian })
    }
}

/// Reads a legacy-format checkpoint.
pub(crate) fn read_legacy(bytes: &[u8]) -> Result<Loaded<'_>, String> {
    let mut none = |_: &Value| -> Result<Value, String> { Err("a persistent id in the header".into()) };
    let (magic, pos) = unpickle(bytes, 0, &mut none).map_err(|e| format!("magic number: {e}"))?;
    if !matches!(magic, Value::Int(LEGACY_MAGIC)) {
        return Err("a pickle that does not start with torch.save's magic number: not a PyTorch checkpoint".into());
    }
    let (protocol, pos) = unpickle(bytes, pos, &mut none).map_err(|e| format!("protocol version: {e}"))?;
    if !matches!(protocol, Value::Int(LEGACY_PROTOCOL)) {
        return Err(format!("unsupported legacy protocol version {protocol:?} (expected {LEGACY_PROTOCOL})"));
    }
    let (sys_info, pos) = unpickle(bytes, pos, &mut none).map_err(|e| format!("system info: {e}"))?;
    let big_endian = match &sys_info {
        Value::Dict(d) => d.borrow().iter().any(|(k, v)| k.as_str() == Some("little_endian") && matches!(v, Value::Bool(false))),
        _ => false,
    };
    let (root, pos, seen) = unpickle_object(bytes, pos).map_err(|e| format!("state pickle: {e}"))?;
    let (keys, mut pos) = unpickle(bytes, pos, &mut none).map_err(|e| format!("storage key list: {e}"))?;
    let keys: Vec<String> = match &keys {
        Value::List(l) => {
            l.borrow().iter().map(|k| k.as_str().map(str::to_string).ok_or("a storage key is not a string")).collect::<Result<_, _>>()?
        }
        other => return Err(format!("the storage key list is {}", other.kind())),
    };
    let mut storages = HashMap::new();
    for key in keys {
        let dtype = *seen.get(&key).ok_or_else(|| format!("storage {key} is listed but no tensor references it"))?;
        let head: [u8; 8] =
            bytes.get(pos..pos + 8).and_then(|h| h.try_into().ok()).ok_or_else(|| format!("the file ends before storage {key}"))?;
        let count = if big_endian { u64::from_be_bytes(head) } else { u64::from_le_bytes(head) };
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dtype.size()))
            .filter(|&n| n <= bytes.len() - pos - 8)
            .ok_or_else(|| format!("storage {key} claims {count} elements but the file ends first"))?;
        pos += 8;
        storages.insert(key, RawStorage { dtype, bytes: Cow::Borrowed(&bytes[pos..pos + len]), big_endian });
        pos += len;
    }
    for key in seen.keys() {
        if !storages.contains_key(key) {
            return Err(format!("storage {key} is referenced but its data is not in the file"));
        }
    }
    Ok(Loaded { root, storages })
}

/// The storage (or legacy storage view) a tensor reads: its bytes and the
/// element range of the view.
pub(crate) fn storage_elements<'a>(
    storages: &'a HashMap<String, RawStorage<'a>>,
    s: &StorageRef,
) -> Result<(&'a RawStorage<'a>, usize, usize), String> {
    let raw = storages.get(&s.key).ok_or_else(|| format!("storage {} has no data", s.key))?;
    let total = raw.bytes.len() / raw.dtype.size();
    match s.view {
        None => Ok((raw, 0, total)),
        Some((off, n)) if off.checked_add(n).is_some_and(|e| e <= total) => Ok((raw, off, n)),
        Some((off, n)) => Err(format!("storage view {off}+{n} is outside storage {} of {total} elements", s.key)),
    }
}
