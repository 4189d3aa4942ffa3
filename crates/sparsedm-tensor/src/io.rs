//! Safetensors checkpoints: read every tensor of a file by name, write a set
//! of named tensors atomically (temporary file, fsync, rename), so that an
//! interrupted write never destroys the previous file.

use crate::storage::CpuStorage;
use crate::{Error, Result, Tensor};
use half::{bf16, f16};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

fn st_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::SafeTensors { path: path.display().to_string(), msg: msg.to_string() }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| Error::Io { path: path.display().to_string(), error })
}

/// Decodes little-endian bytes into values (safetensors is little-endian).
fn decode<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut out = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
    out
}

/// Converts one stored tensor. f64 becomes f32; i32/u8/bool become i64.
fn to_tensor(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let b = view.data();
    let data = match view.dtype() {
        StDtype::F32 => CpuStorage::F32(decode(b)),
        StDtype::F16 => CpuStorage::F16(decode::<u16>(b).into_iter().map(f16::from_bits).collect()),
        StDtype::BF16 => CpuStorage::BF16(decode::<u16>(b).into_iter().map(bf16::from_bits).collect()),
        StDtype::F64 => CpuStorage::F32(decode::<f64>(b).into_iter().map(|x| x as f32).collect()),
        StDtype::I64 => CpuStorage::I64(decode(b)),
        StDtype::I32 => CpuStorage::I64(decode::<i32>(b).into_iter().map(i64::from).collect()),
        StDtype::U8 | StDtype::BOOL => CpuStorage::I64(b.iter().map(|&x| x as i64).collect()),
        other => return Err(st_err(path, format!("tensor {name:?} has unsupported dtype {other:?}"))),
    };
    Tensor::from_cpu_storage(data, view.shape()).map_err(|e| st_err(path, format!("tensor {name:?}: {e}")))
}

/// Reads every tensor of a safetensors file, in file order, one tensor's
/// bytes at a time (the header first, validated as the `safetensors` crate
/// validates a whole file; then each tensor's byte range), so a load holds
/// the tensors and at most one tensor's raw bytes, not the whole file as
/// well. A compressed N:M checkpoint (`nm_cpu/checkpoint.rs`: kept values
/// and packed positions) comes back as the dense tensors it stands for, by
/// name, so every reader of checkpoints takes one.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    use std::io::Read;
    let path = path.as_ref();
    let mut header = read_header(path)?;
    if header.meta.metadata().as_ref().is_some_and(|m| m.contains_key(crate::nm_cpu::NM_CHECKPOINT_KEY)) {
        let bytes = read_file(path)?;
        let loaded =
            crate::nm_cpu::load_nm_checkpoint_bytes(&bytes).map_err(|e| st_err(path, format!("compressed N:M checkpoint: {e}")))?;
        return Ok(loaded.into_iter().map(|l| (l.name, l.tensor)).collect());
    }
    // The file position is at the data; in offset order (contiguous from
    // 0, as validated) each tensor's bytes follow the previous one's.
    let mut out = Vec::new();
    for name in header.meta.offset_keys() {
        let info = header.meta.info(&name).ok_or_else(|| st_err(path, format!("tensor {name:?} vanished from the header")))?;
        let (s, e) = info.data_offsets;
        let mut bytes = vec![0u8; e - s];
        header.file.read_exact(&mut bytes).map_err(|error| Error::Io { path: path.display().to_string(), error })?;
        let view = TensorView::new(info.dtype, info.shape.clone(), &bytes).map_err(|e| st_err(path, format!("tensor {name:?}: {e}")))?;
        out.push((name.clone(), to_tensor(path, &name, &view)?));
    }
    Ok(out)
}

/// A safetensors file opened at its validated header.
struct Header {
    /// Positioned at the first byte of the tensor data.
    file: std::fs::File,
    meta: safetensors::tensor::Metadata,
}

/// The largest header this reader takes (the `safetensors` crate's limit).
const MAX_HEADER: u64 = 100_000_000;

/// Reads and validates the header of the safetensors file at `path` alone:
/// the 8-byte length and the JSON that follows, never the tensor data (a
/// multi-gigabyte checkpoint's metadata is read on every command that
/// loads it, several times). The JSON goes through the `safetensors`
/// crate's own `Metadata` (known dtypes, each tensor's byte length equal to
/// its shape's, offsets contiguous from 0), and the tensors must end
/// exactly at the end of the file: what the crate refuses in a whole file
/// is refused here (a truncated or padded file included).
fn read_header(path: &Path) -> Result<Header> {
    use std::io::Read;
    let bad = |msg: String| match other_format(path) {
        Some(what) => st_err(path, format!("this is no safetensors file but {what}")),
        None => st_err(path, format!("not a valid safetensors file ({msg})")),
    };
    let io = |error| Error::Io { path: path.display().to_string(), error };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| bad("shorter than the 8-byte header length".into()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n > file_len - 8 {
        return Err(bad(format!("header length {n} is larger than the file ({file_len} bytes) or the format allows")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    let meta: safetensors::tensor::Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("its header: {e}")))?;
    let end = (meta.data_len() as u64).checked_add(8 + n);
    if end != Some(file_len) {
        let end = end.map_or("past any file size".to_string(), |e| format!("at byte {e}"));
        return Err(bad(format!("its tensors end {end} but the file has {file_len} bytes")));
    }
    Ok(Header { file, meta })
}

/// What a file that is no safetensors file is instead, told by its first bytes, for the files a
/// user is likely to give where a checkpoint belongs: an exported ONNX model, an image, a NumPy
/// array, a run config or model arguments (text). `None` when nothing fits (a damaged
/// checkpoint, a file of another kind): the caller then says what is wrong with it as safetensors.
fn other_format(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path).ok()?.take(512).read_to_end(&mut head).ok()?;
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some("a PNG image".into());
    }
    if head.starts_with(b"\x93NUMPY") {
        return Some("a NumPy .npy array".into());
    }
    // An ONNX ModelProto starts with field 1 (ir_version, a varint): the byte 0x08.
    if ext.as_deref() == Some("onnx") && head.first() == Some(&0x08) {
        return Some(
            "an ONNX model (what `sparsedm export --format onnx` writes, for TensorRT): give the safetensors checkpoint it was exported from"
                .into(),
        );
    }
    let text = !head.is_empty() && std::str::from_utf8(&head).is_ok_and(|t| !t.contains('\0'));
    match (text, ext.as_deref()) {
        (true, Some("toml")) => Some("a TOML file (a run config goes to --config)".into()),
        (true, Some("json")) => Some("a JSON file (a model's constructor arguments go to --config with --arch)".into()),
        (true, _) if head.trim_ascii_start().starts_with(b"<") => Some("an HTML or XML page, not a checkpoint (a failed download?)".into()),
        (true, _) => Some("a text file, not a checkpoint".into()),
        _ => None,
    }
}

/// The `__metadata__` string map of a safetensors file, from its header
/// alone ([`read_header`]).
fn header_metadata(path: &Path) -> Result<HashMap<String, String>> {
    Ok(read_header(path)?.meta.metadata().clone().unwrap_or_default())
}

/// Reads the `__metadata__` string map of a safetensors file, from its
/// header only (see [`header_metadata`]). The keys
/// that describe a compressed N:M checkpoint's storage (the format marker
/// and each layer's `nm:` entry) are left out: they belong to the file,
/// not to the model, and a writer that carries a model's metadata over must
/// not claim compression for a file it writes dense
/// ([`crate::nm_cpu::is_nm_checkpoint_file`] tells a compressed file).
pub fn load_safetensors_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, String>> {
    let path = path.as_ref();
    let mut meta = header_metadata(path)?;
    if meta.contains_key(crate::nm_cpu::NM_CHECKPOINT_KEY) {
        meta.retain(|k, _| k != crate::nm_cpu::NM_CHECKPOINT_KEY && !k.starts_with("nm:"));
    }
    Ok(meta)
}

/// Whether the header of the safetensors file at `path` has metadata key
/// `key` (false for unreadable or invalid files); reads the header only.
pub(crate) fn header_has_metadata_key(path: &Path, key: &str) -> bool {
    header_metadata(path).is_ok_and(|m| m.contains_key(key))
}

/// One tensor as the safetensors writer sees it: dtype, shape and length
/// up front, the little-endian bytes made only when the writer asks for
/// them, one tensor at a time. So neither a save nor an in-memory
/// serialisation holds a second copy of the whole state dict (they held
/// two: every tensor's bytes, then the file image). A tensor whose bytes
/// cannot be read (a device copy failing) leaves its error in `failed`
/// and zeros in the output, which the caller then discards.
struct LazyBytes<'a> {
    t: &'a Tensor,
    failed: &'a std::cell::RefCell<Option<Error>>,
}

impl LazyBytes<'_> {
    fn bytes(&self) -> Result<Vec<u8>> {
        Ok(match self.t.to_cpu_storage()? {
            CpuStorage::F32(v) => bytemuck::cast_slice(&v).to_vec(),
            CpuStorage::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            CpuStorage::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            CpuStorage::I64(v) => bytemuck::cast_slice(&v).to_vec(),
        })
    }
}

impl safetensors::tensor::View for LazyBytes<'_> {
    fn dtype(&self) -> StDtype {
        match self.t.dtype() {
            crate::DType::F32 => StDtype::F32,
            crate::DType::F16 => StDtype::F16,
            crate::DType::BF16 => StDtype::BF16,
            crate::DType::I64 => StDtype::I64,
        }
    }
    fn shape(&self) -> &[usize] {
        self.t.shape()
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.bytes() {
            Ok(b) if b.len() == self.data_len() => b.into(),
            other => {
                let e = other.err().unwrap_or_else(|| Error::SafeTensors {
                    path: "<memory>".into(),
                    msg: format!("a tensor of shape {:?} gave a wrong number of bytes", self.t.shape()),
                });
                self.failed.borrow_mut().get_or_insert(e);
                vec![0u8; self.data_len()].into()
            }
        }
    }
    fn data_len(&self) -> usize {
        self.t.elem_count() * self.t.dtype().size_in_bytes()
    }
}

/// The views of `tensors` for the writer, and the cell a failed read leaves its error in.
fn lazy_views<'a>(tensors: &'a [(String, Tensor)], failed: &'a std::cell::RefCell<Option<Error>>) -> Vec<(&'a str, LazyBytes<'a>)> {
    tensors.iter().map(|(n, t)| (n.as_str(), LazyBytes { t, failed })).collect()
}

/// Serialises named tensors to safetensors bytes.
pub fn safetensors_bytes(tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let failed = std::cell::RefCell::new(None);
    let bytes = safetensors::tensor::serialize(lazy_views(tensors, &failed), metadata)
        .map_err(|e| Error::SafeTensors { path: "<memory>".into(), msg: e.to_string() })?;
    match failed.into_inner() {
        Some(e) => Err(e),
        None => Ok(bytes),
    }
}

/// The size in bytes of the safetensors serialisation of `tensors` and
/// `metadata` ([`safetensors_bytes`], [`save_safetensors`]), from their
/// dtypes and shapes alone: the header the writer would build (its tensor
/// order — descending dtype alignment, then name —, its offsets, padded to
/// 8 bytes) plus the data, without converting or copying any tensor.
///
/// # Errors
/// A header the writer would refuse (`Error::SafeTensors`).
pub fn safetensors_len(tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<usize> {
    use safetensors::tensor::{Metadata, TensorInfo, View};
    let err = |msg: String| Error::SafeTensors { path: "<memory>".into(), msg };
    let failed = std::cell::RefCell::new(None);
    let mut views = lazy_views(tensors, &failed);
    views.sort_by(|(ln, l), (rn, r)| r.dtype().cmp(&l.dtype()).then(ln.cmp(rn)));
    let mut offset = 0;
    let infos = views
        .iter()
        .map(|(name, v)| {
            let end = offset + v.data_len();
            let info = TensorInfo { dtype: v.dtype(), shape: v.shape().to_vec(), data_offsets: (offset, end) };
            offset = end;
            (name.to_string(), info)
        })
        .collect();
    let meta = Metadata::new(metadata, infos).map_err(|e| err(e.to_string()))?;
    let header = serde_json::to_string(&meta).map_err(|e| err(e.to_string()))?;
    Ok(8 + header.len().next_multiple_of(8) + offset)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// folder, flushed to disk, then renamed over the target.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = path.as_ref();
    let io = |error| Error::Io { path: path.display().to_string(), error };
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Writes named tensors to a safetensors file atomically, as
/// [`write_atomic`] does (a temporary file in the same folder, flushed to
/// disk, renamed over the target), streaming one tensor at a time: the
/// save holds at most one tensor's bytes beyond the tensors themselves.
///
/// The file gets the permissions any new file of the process gets (those
/// `File::create` gives under the umask, e.g. `rw-r--r--`): the
/// `safetensors` crate writes through a private temporary file
/// (`rw-------`), which left checkpoints unreadable to the user's group
/// and to a serving process running as another user.
pub fn save_safetensors(path: impl AsRef<Path>, tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let path = path.as_ref();
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let io = |error| Error::Io { path: path.display().to_string(), error };
    // A new file's permissions, read off an empty file created at `tmp`
    // (which the serialisation then replaces).
    let permissions = std::fs::File::create(&tmp).and_then(|f| f.metadata()).map(|m| m.permissions()).map_err(io);
    let failed = std::cell::RefCell::new(None);
    let written = permissions.and_then(|permissions| {
        safetensors::tensor::serialize_to_file(lazy_views(tensors, &failed), metadata, &tmp)
            .map_err(|e| st_err(path, format!("writing: {e}")))
            .and_then(|()| failed.take().map_or(Ok(()), Err))
            .and_then(|()| {
                std::fs::set_permissions(&tmp, permissions).map_err(io)?;
                std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
                std::fs::rename(&tmp, path).map_err(io)
            })
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
