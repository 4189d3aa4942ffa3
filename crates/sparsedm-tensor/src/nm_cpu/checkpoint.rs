//! Compressed N:M checkpoints: a safetensors file in which every N:M layer
//! is stored as its kept values and packed in-group positions instead of
//! the dense weight, so that a 2:4 model takes a little over half the bytes.
//!
//! Layout, for an N:M weight named `W`:
//! - `W.nm_values`: the kept values `[out, E]` (`E = (in / m)·n + in % m`,
//!   groups in order, the dense tail `in % m` last), in the file's value
//!   dtype (f16 or f32);
//! - `W.nm_positions`: `u8 [out, B]`, the in-group position (`0..m`) of
//!   every kept group value, `bits = ⌈log₂ m⌉` bits each, packed LSB first,
//!   each row starting on a byte boundary (`B = ⌈(in / m)·n·bits / 8⌉`);
//! - metadata `nm:W` = `n=2,m=4,shape=512x512,layout=linear|conv-ohwc`.
//!   A conv weight `[out, C, kh, kw]` is grouped along `C` at each kernel
//!   position, as the masks are: it is stored as `[out, kh·kw·C]` in
//!   `(out, kh, kw, C)` order, and needs `C % m == 0`.
//!
//! Every other tensor is stored dense in the value dtype. The metadata key
//! `sparsedm.nm_checkpoint` = `1` marks the format.

use super::format::NmWeight;
use crate::{Device, Error, Result, Tensor};
use half::f16;
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Metadata key marking a compressed N:M checkpoint.
pub const NM_CHECKPOINT_KEY: &str = "sparsedm.nm_checkpoint";

/// The dtype values are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NmValueDtype {
    /// 4 bytes per value, exact.
    F32,
    /// 2 bytes per value (round to nearest even), as a half-precision
    /// deployment checkpoint.
    F16,
}

fn st_err(msg: impl std::fmt::Display) -> Error {
    Error::SafeTensors { path: "<memory>".into(), msg: msg.to_string() }
}

fn bits_for(m: usize) -> usize {
    (usize::BITS - (m.max(1) - 1).leading_zeros()) as usize
}

fn encode_values(v: &[f32], dtype: NmValueDtype) -> (StDtype, Vec<u8>) {
    match dtype {
        NmValueDtype::F32 => (StDtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        NmValueDtype::F16 => (StDtype::F16, v.iter().flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes()).collect()),
    }
}

fn decode_values(view: &TensorView<'_>, name: &str) -> Result<Vec<f32>> {
    let b = view.data();
    match view.dtype() {
        StDtype::F32 => Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        StDtype::F16 => Ok(b.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()),
        d => Err(st_err(format!("{name}: values of dtype {d:?}, expected F32 or F16"))),
    }
}

/// A decoded tensor in the dtype its values are stored in (f16 values come back as f16
/// tensors, exactly, as a plain f16 checkpoint's do: `inspect` shows what the file holds, and a
/// re-export at the exact precision stays f16 rather than doubling to f32).
fn as_stored(t: Tensor, stored: StDtype) -> Result<Tensor> {
    match stored {
        StDtype::F16 => t.to_dtype(crate::DType::F16),
        _ => Ok(t),
    }
}

/// `[out, C, kh, kw]` → `[out, kh·kw·C]` in `(out, kh, kw, C)` order.
fn conv_to_ohwc(w: &[f32], s: &[usize]) -> Vec<f32> {
    let (o, c, kh, kw) = (s[0], s[1], s[2], s[3]);
    let mut r = vec![0f32; w.len()];
    for oi in 0..o {
        for ci in 0..c {
            for y in 0..kh {
                for x in 0..kw {
                    r[((oi * kh + y) * kw + x) * c + ci] = w[((oi * c + ci) * kh + y) * kw + x];
                }
            }
        }
    }
    r
}

fn ohwc_to_conv(r: &[f32], s: &[usize]) -> Vec<f32> {
    let (o, c, kh, kw) = (s[0], s[1], s[2], s[3]);
    let mut w = vec![0f32; r.len()];
    for oi in 0..o {
        for ci in 0..c {
            for y in 0..kh {
                for x in 0..kw {
                    w[((oi * c + ci) * kh + y) * kw + x] = r[((oi * kh + y) * kw + x) * c + ci];
                }
            }
        }
    }
    w
}

/// Serialises a state dict with the weights named in `patterns` stored
/// compressed (`name → (n, m)`; 2-D Linear `[out, in]` or 4-D conv
/// `[out, C, kh, kw]` weights that are N:M along `in` / `C`).
///
/// # Errors
/// A pattern for a tensor of another rank, a conv with `C % m != 0`, a
/// weight that is not N:M (named by row and group), a pattern naming no
/// tensor, or a serialisation failure.
pub fn nm_checkpoint_bytes(
    tensors: &[(String, Tensor)],
    patterns: &HashMap<String, (usize, usize)>,
    dtype: NmValueDtype,
) -> Result<Vec<u8>> {
    nm_checkpoint_bytes_with_metadata(tensors, patterns, dtype, HashMap::new())
}

/// [`nm_checkpoint_bytes`] with more string metadata in the file (a
/// sparsity spec, the model config); the format's own keys win.
///
/// # Errors
/// As [`nm_checkpoint_bytes`].
pub fn nm_checkpoint_bytes_with_metadata(
    tensors: &[(String, Tensor)],
    patterns: &HashMap<String, (usize, usize)>,
    dtype: NmValueDtype,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let op = "nm_checkpoint";
    for name in patterns.keys() {
        if !tensors.iter().any(|(n, _)| n == name) {
            return Err(Error::invalid(op, format!("an N:M pattern names {name}, which is not in the state dict")));
        }
    }
    let mut meta = metadata;
    meta.retain(|k, _| k != NM_CHECKPOINT_KEY && !k.starts_with("nm:"));
    meta.insert(NM_CHECKPOINT_KEY.to_string(), "1".to_string());
    let mut raw: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let shape = t.shape().to_vec();
        let v = t.to_vec_f32()?;
        let Some(&(n, m)) = patterns.get(name) else {
            let (d, b) = encode_values(&v, dtype);
            raw.push((name.clone(), d, shape, b));
            continue;
        };
        let (rows, cols, flat, layout) = match shape[..] {
            [o, i] => (o, i, v, "linear"),
            [o, c, kh, kw] => {
                if c % m != 0 {
                    return Err(Error::bad_shape(op, &shape, format!("{name}: conv channels {c} are not a multiple of m = {m}")));
                }
                (o, c * kh * kw, conv_to_ohwc(&v, &shape), "conv-ohwc")
            }
            _ => return Err(Error::bad_shape(op, &shape, format!("{name}: N:M weights are 2-D or 4-D"))),
        };
        let w = NmWeight::compress(&flat, rows, cols, n, m).map_err(|e| Error::invalid(op, format!("{name}: {e}")))?;
        let e = w.entries_per_row();
        let (d, b) = encode_values(&w.kept_values(), dtype);
        raw.push((format!("{name}.nm_values"), d, vec![rows, e], b));
        let (pos, per_row) = (w.positions(), (cols / m) * n);
        let bits = bits_for(m);
        let row_bytes = (per_row * bits).div_ceil(8);
        let mut packed = vec![0u8; rows * row_bytes];
        for r in 0..rows {
            for (k, &p) in pos[r * per_row..(r + 1) * per_row].iter().enumerate() {
                for bit in 0..bits {
                    if p >> bit & 1 == 1 {
                        let at = k * bits + bit;
                        packed[r * row_bytes + at / 8] |= 1 << (at % 8);
                    }
                }
            }
        }
        raw.push((format!("{name}.nm_positions"), StDtype::U8, vec![rows, row_bytes], packed));
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        meta.insert(format!("nm:{name}"), format!("n={n},m={m},shape={},layout={layout}", dims.join("x")));
    }
    let views: Vec<(String, TensorView<'_>)> = raw
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(st_err)?;
    safetensors::tensor::serialize(views, Some(meta)).map_err(st_err)
}

/// [`nm_checkpoint_bytes`] written atomically to `path`.
///
/// # Errors
/// As [`nm_checkpoint_bytes`], and I/O errors.
pub fn save_nm_checkpoint(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    patterns: &HashMap<String, (usize, usize)>,
    dtype: NmValueDtype,
) -> Result<()> {
    crate::write_atomic(path, &nm_checkpoint_bytes(tensors, patterns, dtype)?)
}

/// One tensor read back from a compressed checkpoint.
#[derive(Debug, Clone)]
pub struct NmLoaded {
    /// The state-dict name.
    pub name: String,
    /// The dense f32 tensor (an N:M weight expanded to its masked dense form).
    pub tensor: Tensor,
    /// `(n, m)` for an N:M weight.
    pub pattern: Option<(usize, usize)>,
}

/// Whether the file at `path` is a compressed N:M checkpoint (reads its
/// header only; `false` for any file that is not one, unreadable included).
pub fn is_nm_checkpoint_file(path: impl AsRef<Path>) -> bool {
    crate::io::header_has_metadata_key(path.as_ref(), NM_CHECKPOINT_KEY)
}

/// Whether safetensors bytes are a compressed N:M checkpoint (readers that
/// take any checkpoint check this first).
pub fn is_nm_checkpoint(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().as_ref().map(|m| m.contains_key(NM_CHECKPOINT_KEY)))
        .unwrap_or(false)
}

fn parse_meta(op: &'static str, name: &str, s: &str) -> Result<(usize, usize, Vec<usize>, String)> {
    let bad = || Error::invalid(op, format!("{name}: unreadable N:M metadata {s:?}"));
    let kv: HashMap<&str, &str> = s.split(',').filter_map(|p| p.split_once('=')).collect();
    let num = |k: &str| kv.get(k).and_then(|v| v.parse::<usize>().ok()).ok_or_else(bad);
    let shape: Vec<usize> = kv.get("shape").ok_or_else(bad)?.split('x').map(|d| d.parse().map_err(|_| bad())).collect::<Result<_>>()?;
    Ok((num("n")?, num("m")?, shape, kv.get("layout").ok_or_else(bad)?.to_string()))
}

/// Reads a compressed checkpoint back to dense f32 tensors, in name order:
/// each N:M weight expanded (zeros where pruned) under its own name, with
/// its pattern; every other tensor as stored.
///
/// # Errors
/// Not a safetensors file or not this format, missing or inconsistent
/// N:M parts, positions out of range.
pub fn load_nm_checkpoint_bytes(bytes: &[u8]) -> Result<Vec<NmLoaded>> {
    let op = "nm_checkpoint";
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if !meta.contains_key(NM_CHECKPOINT_KEY) {
        return Err(Error::invalid(op, format!("not a compressed N:M checkpoint (no {NM_CHECKPOINT_KEY} metadata)")));
    }
    let st = SafeTensors::deserialize(bytes).map_err(st_err)?;
    let mut out = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    for name in &names {
        if name.ends_with(".nm_values") || name.ends_with(".nm_positions") {
            continue;
        }
        let view = st.tensor(name).map_err(st_err)?;
        let tensor = as_stored(Tensor::from_vec(decode_values(&view, name)?, view.shape(), &Device::Cpu)?, view.dtype())?;
        out.push(NmLoaded { name: name.clone(), tensor, pattern: None });
    }
    let mut nm_names: Vec<&String> = meta.keys().filter(|k| k.starts_with("nm:")).collect();
    nm_names.sort();
    for key in nm_names {
        let name = &key[3..];
        let (n, m, shape, layout) = parse_meta(op, name, &meta[key])?;
        let (rows, cols) = match (&shape[..], layout.as_str()) {
            ([o, i], "linear") => (*o, *i),
            ([o, c, kh, kw], "conv-ohwc") => (*o, c * kh * kw),
            _ => return Err(Error::invalid(op, format!("{name}: shape {shape:?} does not fit layout {layout}"))),
        };
        let values = st.tensor(&format!("{name}.nm_values")).map_err(st_err)?;
        let vals = decode_values(&values, name)?;
        let pv = st.tensor(&format!("{name}.nm_positions")).map_err(st_err)?;
        let per_row = (cols / m.max(1)) * n;
        let bits = bits_for(m);
        let row_bytes = (per_row * bits).div_ceil(8);
        let packed = pv.data();
        if packed.len() != rows * row_bytes {
            return Err(Error::invalid(op, format!("{name}: {} position bytes, expected {}", packed.len(), rows * row_bytes)));
        }
        let mut pos = vec![0u8; rows * per_row];
        for r in 0..rows {
            for k in 0..per_row {
                let mut p = 0u8;
                for bit in 0..bits {
                    let at = k * bits + bit;
                    p |= (packed[r * row_bytes + at / 8] >> (at % 8) & 1) << bit;
                }
                pos[r * per_row + k] = p;
            }
        }
        let w = NmWeight::from_kept(rows, cols, n, m, &vals, &pos).map_err(|e| Error::invalid(op, format!("{name}: {e}")))?;
        let dense = if layout == "linear" { w.expand() } else { ohwc_to_conv(&w.expand(), &shape) };
        let tensor = as_stored(Tensor::from_vec(dense, &shape, &Device::Cpu)?, values.dtype())?;
        out.push(NmLoaded { name: name.to_string(), tensor, pattern: Some((n, m)) });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// [`load_nm_checkpoint_bytes`] from a file.
///
/// # Errors
/// As [`load_nm_checkpoint_bytes`], and I/O errors.
pub fn load_nm_checkpoint(path: impl AsRef<Path>) -> Result<Vec<NmLoaded>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|error| Error::Io { path: path.display().to_string(), error })?;
    load_nm_checkpoint_bytes(&bytes)
}
