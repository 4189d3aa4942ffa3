//! Reading and writing numpy `.npz` files: pytorch-fid statistics and uint8 image arrays.
//!
//! Two kinds of `.npz` are exchanged by FID tooling:
//!
//! * **Statistics** (pytorch-fid `--save-stats`, TTUR, U-ViT's `fid_stats_*.npz`): arrays `mu`
//!   `[d]` and `sigma` `[d, d]`, float64 (float32 is accepted on read and widened).
//!   See [`read_stats_npz`] / [`write_stats_npz`].
//! * **Images** (guided-diffusion / ADM evaluator, DPM-Solver and U-ViT sample dumps): `arr_0`
//!   `[N, H, W, C]` uint8, NHWC, C = 3 (C = 1 accepted on read). See [`read_images_npz`],
//!   [`write_images_npz`] and the streaming [`NpzImageWriter`]; [`crate::images::NpzImages`]
//!   streams such a file in batches for feature extraction. Class-conditional samples may carry
//!   their labels as `arr_1` (int64 `[N]`, guided-diffusion's layout; [`read_labels_npz`]).
//!
//! An `.npz` is a zip archive of `.npy` files (`mu.npy`, ...). The zip container is handled with
//! the `zip` crate built with deflate only (no C compression libraries), the `.npy` payloads with
//! `npyz`. Files are written like `np.savez` (entries stored uncompressed, zip64 when an entry
//! exceeds 4 GiB) and read whether stored or deflated (`np.savez_compressed`). Writes go to a
//! temporary file in the same directory that is renamed into place, so a crash never leaves a
//! truncated `.npz` under the final name.
//!
//! Every error names the file and, where relevant, the key and the offending dtype/shape.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar, WriterBuilder};
use zip::write::FileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::error::{FidError, Result};
use crate::stats::FeatureStats;

/// Size of the zip32 limit; entries at or above it need zip64 records.
const ZIP32_LIMIT: u64 = u32::MAX as u64;

/// An open `.npz` archive with the path kept for error messages.
struct Npz {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
}

impl Npz {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| FidError::io(path, e))?;
        let archive = ZipArchive::new(BufReader::new(file)).map_err(|source| FidError::Zip { path: path.to_owned(), source })?;
        Ok(Npz { path: path.to_owned(), archive })
    }

    /// Array names (zip entries ending in `.npy`, without the suffix), like `np.load(..).files`.
    fn keys(&self) -> Vec<String> {
        self.archive.file_names().filter_map(npyz::npz::array_name_from_file_name).map(str::to_owned).collect()
    }

    /// Zip entry name of array `key`, or a [`FidError::MissingKey`].
    fn entry_name(&self, key: &str) -> Result<String> {
        let wanted = npyz::npz::file_name_from_array_name(key);
        if self.archive.file_names().any(|n| n == wanted) {
            Ok(wanted)
        } else {
            Err(FidError::MissingKey { path: self.path.clone(), key: key.to_owned(), present: self.keys() })
        }
    }

    /// Reads array `key` as f64 (from `f8` or `f4`, either endianness), with its shape and order.
    fn read_f64(&mut self, key: &str) -> Result<(Vec<u64>, Vec<f64>, Order)> {
        let name = self.entry_name(key)?;
        let path = self.path.clone();
        let entry = self.archive.by_name(&name).map_err(|source| FidError::Zip { path: path.clone(), source })?;
        let entry_size = entry.size();
        let npy = NpyFile::new(BufReader::new(entry)).map_err(|e| FidError::bad_array(&path, key, format!("invalid .npy header: {e}")))?;
        let shape = npy.shape().to_vec();
        // Refuse a header that declares more data than the entry holds before anything is
        // allocated for it (a corrupt header must not trigger a huge allocation).
        let declared = npy.dtype().num_bytes().and_then(|b| npy.len().checked_mul(b as u64));
        if declared.is_none_or(|b| b > entry_size) {
            return Err(FidError::bad_array(
                &path,
                key,
                format!(
                    "shape {} of dtype {} needs more bytes than the entry holds ({entry_size})",
                    shape_str(&shape),
                    npy.dtype().descr()
                ),
            ));
        }
        let order = npy.order();
        let descr = npy.dtype().descr();
        let truncated = |e: io::Error| FidError::bad_array(&path, key, format!("cannot read the data: {e}"));
        let data: Vec<f64> = match npy.try_data::<f64>() {
            Ok(reader) => reader.collect::<io::Result<_>>().map_err(truncated)?,
            Err(npy) => match npy.try_data::<f32>() {
                Ok(reader) => reader.map(|v| v.map(f64::from)).collect::<io::Result<_>>().map_err(truncated)?,
                Err(_) => {
                    return Err(FidError::bad_array(&path, key, format!("dtype {descr} is not supported (expected float64 or float32)")));
                }
            },
        };
        Ok((shape, data, order))
    }
}

fn shape_str(shape: &[u64]) -> String {
    format!("{shape:?}")
}

/// The array names of an `.npz` (like `np.load(path).files`), in archive order; used to tell
/// a statistics file (`mu`, `sigma`) from an image file (`arr_0`).
pub fn npz_keys(path: impl AsRef<Path>) -> Result<Vec<String>> {
    Ok(Npz::open(path.as_ref())?.keys())
}

/// Reads pytorch-fid statistics (`mu` `[d]`, `sigma` `[d, d]`) from an `.npz`.
///
/// float64 and float32 arrays are accepted; a Fortran-ordered `sigma` is transposed into the
/// row-major layout. The returned `n` is 0 (the format does not record the sample count). Values
/// are not checked for finiteness here; [`crate::frechet_distance`] does that.
pub fn read_stats_npz(path: impl AsRef<Path>) -> Result<FeatureStats> {
    let path = path.as_ref();
    let mut npz = Npz::open(path)?;
    // Check both keys before reading either, so that a missing key is reported first.
    npz.entry_name("mu")?;
    npz.entry_name("sigma")?;

    let (mu_shape, mu, _) = npz.read_f64("mu")?;
    if mu_shape.len() != 1 || mu_shape[0] == 0 {
        return Err(FidError::bad_array(path, "mu", format!("expected shape [d] with d > 0, got {}", shape_str(&mu_shape))));
    }
    let d = mu.len();
    let (sigma_shape, mut sigma, order) = npz.read_f64("sigma")?;
    if sigma_shape != [d as u64, d as u64] {
        return Err(FidError::bad_array(path, "sigma", format!("expected shape [{d}, {d}] (d from mu), got {}", shape_str(&sigma_shape))));
    }
    if order == Order::Fortran {
        let col_major = sigma;
        sigma = (0..d * d).map(|k| col_major[(k % d) * d + k / d]).collect();
    }
    Ok(FeatureStats { mu, sigma, n: 0 })
}

/// Writes statistics as a pytorch-fid compatible `.npz` (`mu` `[d]`, `sigma` `[d, d]`, float64).
///
/// `np.load(path)["mu"]` / `["sigma"]` read it back. The sample count `n` is not stored (the
/// pytorch-fid format has no field for it).
pub fn write_stats_npz(path: impl AsRef<Path>, stats: &FeatureStats) -> Result<()> {
    let path = path.as_ref();
    stats.check_shape("the statistics to write")?;
    let d = stats.dim() as u64;
    write_atomically(path, |zip| {
        write_f64_entry(zip, "mu", &[d], &stats.mu)?;
        write_f64_entry(zip, "sigma", &[d, d], &stats.sigma)
    })
}

fn write_f64_entry<W: Write + Seek>(zip: &mut ZipWriter<W>, key: &str, shape: &[u64], data: &[f64]) -> io::Result<()> {
    let bytes = data.len() as u64 * 8 + 128;
    zip.start_file(npyz::npz::file_name_from_array_name(key), entry_options(bytes))?;
    let mut w = npyz::WriteOptions::<f64>::new().default_dtype().shape(shape).writer(&mut *zip).begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()
}

fn entry_options(payload_bytes: u64) -> FileOptions {
    FileOptions::default().compression_method(CompressionMethod::Stored).large_file(payload_bytes >= ZIP32_LIMIT)
}

/// Writes a zip through `body` into `path.tmp-<pid>` and renames it to `path`.
fn write_atomically(path: &Path, body: impl FnOnce(&mut ZipWriter<BufWriter<File>>) -> io::Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> io::Result<()> {
        let file = File::create(&tmp)?;
        let mut zip = ZipWriter::new(BufWriter::new(file));
        body(&mut zip)?;
        let mut inner = zip.finish().map_err(zip_to_io)?;
        inner.flush()?;
        inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            FidError::io(path, e)
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(FidError::io(path, e))
        }
    }
}

/// Removes the temporary files that writers of `path` in processes no longer running left
/// beside it (`NAME.tmp-<pid>`: a `sample` ended by a second Ctrl-C or killed leaves its
/// unfinished npz there, up to the whole image set's size) and returns them. A temporary of a
/// live process is left alone. Only where the process table can be read (`/proc`); elsewhere
/// nothing is removed.
pub fn remove_stale_temporaries(path: &Path) -> Vec<PathBuf> {
    let proc_root = Path::new("/proc");
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if !proc_root.join("self").exists() {
        return Vec::new();
    }
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !proc_root.join(pid.to_string()).exists() && std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn zip_to_io(e: zip::result::ZipError) -> io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// uint8 images in NHWC layout, as stored in `arr_0` of an evaluator `.npz`.
#[derive(Clone, PartialEq, Eq)]
pub struct U8Images {
    /// Pixel bytes, `[n, height, width, channels]` row-major.
    pub data: Vec<u8>,
    /// Number of images.
    pub n: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Channels per pixel (3 for RGB; 1 for grayscale files).
    pub channels: usize,
}

impl std::fmt::Debug for U8Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("U8Images")
            .field("n", &self.n)
            .field("height", &self.height)
            .field("width", &self.width)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// Shape and payload stream of a uint8 NHWC array inside an `.npz` (used by
/// [`crate::images::NpzImages`] to read batches without loading the whole array).
pub(crate) struct U8ArrayStream {
    /// `[n, h, w, c]`.
    pub shape: [usize; 4],
    /// Positioned at the first pixel byte; yields exactly `n·h·w·c` bytes.
    pub reader: Box<dyn Read + Send>,
}

/// Opens array `key` of `path` as a uint8 `[N, H, W, C]` (C ∈ {1, 3}, C order) stream.
///
/// A stored entry (what `np.savez` writes) is streamed straight from the file; a deflated one
/// (`np.savez_compressed`) is decompressed into memory first.
pub(crate) fn open_u8_nhwc(path: &Path, key: &str) -> Result<U8ArrayStream> {
    let mut npz = Npz::open(path)?;
    let name = npz.entry_name(key)?;
    let zip_err = |source| FidError::Zip { path: path.to_owned(), source };
    let header_err = |e: io::Error| FidError::bad_array(path, key, format!("invalid .npy header: {e}"));

    // `payload`: bytes left in the entry after the .npy header.
    let (header, reader, payload): (NpyHeader, Box<dyn Read + Send>, u64) = {
        let mut entry = npz.archive.by_name(&name).map_err(zip_err)?;
        if entry.compression() == CompressionMethod::Stored {
            let (start, size) = (entry.data_start(), entry.size());
            drop(entry);
            let mut file = File::open(path).map_err(|e| FidError::io(path, e))?;
            file.seek(SeekFrom::Start(start)).map_err(|e| FidError::io(path, e))?;
            let mut reader = BufReader::with_capacity(1 << 20, file).take(size);
            let header = NpyHeader::from_reader(&mut reader).map_err(header_err)?;
            let payload = reader.limit();
            (header, Box::new(reader), payload)
        } else {
            // The declared size only sizes the initial buffer (capped: it is untrusted).
            let hint = usize::try_from(entry.size()).unwrap_or(0).min(1 << 28);
            let mut bytes = Vec::with_capacity(hint);
            entry.read_to_end(&mut bytes).map_err(|e| FidError::bad_array(path, key, format!("cannot decompress: {e}")))?;
            let mut reader = Cursor::new(bytes);
            let header = NpyHeader::from_reader(&mut reader).map_err(header_err)?;
            let payload = reader.get_ref().len() as u64 - reader.position();
            (header, Box::new(reader), payload)
        }
    };

    let dtype_ok = matches!(header.dtype(), DType::Plain(ref t) if t.type_char() == TypeChar::Uint && t.size_field() == 1);
    if !dtype_ok {
        return Err(FidError::bad_array(path, key, format!("dtype {} is not supported (expected uint8 images)", header.dtype().descr())));
    }
    let s = header.shape();
    let shape_ok = s.len() == 4 && (s[3] == 3 || s[3] == 1);
    if !shape_ok {
        return Err(FidError::bad_array(path, key, format!("expected shape [N, H, W, 3] (NHWC uint8 images), got {}", shape_str(s))));
    }
    if header.order() == Order::Fortran && s.iter().filter(|&&x| x > 1).count() > 1 {
        return Err(FidError::bad_array(path, key, "Fortran-ordered image arrays are not supported"));
    }
    let to_usize = |x: u64| usize::try_from(x).map_err(|_| FidError::bad_array(path, key, format!("shape {} too large", shape_str(s))));
    let shape = [to_usize(s[0])?, to_usize(s[1])?, to_usize(s[2])?, to_usize(s[3])?];
    let needed = shape.iter().try_fold(1u64, |acc, &x| acc.checked_mul(x as u64));
    if needed.is_none_or(|b| b > payload) {
        return Err(FidError::bad_array(
            path,
            key,
            format!(
                "truncated: shape {} needs {} bytes but the entry holds {payload}",
                shape_str(s),
                needed.map_or_else(|| "too many".to_string(), |b| b.to_string())
            ),
        ));
    }
    Ok(U8ArrayStream { shape, reader })
}

/// Reads `arr_0` (NHWC uint8 images) of an `.npz` entirely into memory.
///
/// For large files prefer [`crate::images::NpzImages`], which reads batch by batch.
pub fn read_images_npz(path: impl AsRef<Path>) -> Result<U8Images> {
    let path = path.as_ref();
    let mut stream = open_u8_nhwc(path, "arr_0")?;
    let [n, height, width, channels] = stream.shape;
    let len = n
        .checked_mul(height)
        .and_then(|x| x.checked_mul(width))
        .and_then(|x| x.checked_mul(channels))
        .ok_or_else(|| FidError::bad_array(path, "arr_0", "shape overflows the address space"))?;
    let mut data = vec![0u8; len];
    stream
        .reader
        .read_exact(&mut data)
        .map_err(|e| FidError::bad_array(path, "arr_0", format!("truncated data ({len} bytes expected): {e}")))?;
    Ok(U8Images { data, n, height, width, channels })
}

/// The class labels an image `.npz` stores beside its images (`arr_1`, int64 `[N]`, see
/// [`NpzImageWriter::finish_with_labels`]), or `None` when it stores none. Labels that are not
/// integers, or not one per image of `arr_0`, are an error naming the file.
pub fn read_labels_npz(path: impl AsRef<Path>) -> Result<Option<Vec<i64>>> {
    let path = path.as_ref();
    let mut npz = Npz::open(path)?;
    if !npz.keys().iter().any(|k| k == "arr_1") {
        return Ok(None);
    }
    let images = open_u8_nhwc(path, "arr_0")?.shape[0] as u64;
    let name = npz.entry_name("arr_1")?;
    let entry = npz.archive.by_name(&name).map_err(|source| FidError::Zip { path: path.to_owned(), source })?;
    let entry_size = entry.size();
    let npy = NpyFile::new(BufReader::new(entry)).map_err(|e| FidError::bad_array(path, "arr_1", format!("invalid .npy header: {e}")))?;
    let shape = npy.shape().to_vec();
    if shape != [images] || npy.len().checked_mul(8).is_none_or(|b| b > entry_size) {
        return Err(FidError::bad_array(
            path,
            "arr_1",
            format!("expected one int64 label per image, [{images}], got {}", shape_str(&shape)),
        ));
    }
    let descr = npy.dtype().descr();
    let reader = npy.try_data::<i64>().map_err(|_| FidError::bad_array(path, "arr_1", format!("dtype {descr} is not int64")))?;
    let labels =
        reader.collect::<io::Result<Vec<i64>>>().map_err(|e| FidError::bad_array(path, "arr_1", format!("cannot read the data: {e}")))?;
    Ok(Some(labels))
}

/// Writes NHWC uint8 images as `arr_0` of an `.npz` (like `np.savez(path, images)`).
///
/// `data.len()` must equal `n·height·width·channels`.
pub fn write_images_npz(path: impl AsRef<Path>, images: &U8Images) -> Result<()> {
    let mut w = NpzImageWriter::create(path, images.n, images.height, images.width, images.channels)?;
    w.push(&images.data)?;
    w.finish()
}

/// Streaming writer of an `arr_0` NHWC uint8 `.npz`, for sample dumps too large to hold in
/// memory: the image count is declared up front (the `.npy` header needs it), batches are
/// appended with [`push`](Self::push), and [`finish`](Self::finish) checks the count and moves
/// the file into place. Dropping the writer without `finish` removes the temporary file.
pub struct NpzImageWriter {
    path: PathBuf,
    tmp: PathBuf,
    zip: Option<ZipWriter<BufWriter<File>>>,
    image_bytes: usize,
    expected: usize,
    written: usize,
    shape: [usize; 4],
}

impl std::fmt::Debug for NpzImageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpzImageWriter")
            .field("path", &self.path)
            .field("shape", &self.shape)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl NpzImageWriter {
    /// Starts writing `n` images of `height × width × channels` (channels 1 or 3) to `path`.
    pub fn create(path: impl AsRef<Path>, n: usize, height: usize, width: usize, channels: usize) -> Result<Self> {
        let path = path.as_ref().to_owned();
        if channels != 3 && channels != 1 {
            return Err(FidError::invalid("channels", format!("must be 3 (RGB) or 1 (grayscale), got {channels}")));
        }
        if height == 0 || width == 0 {
            return Err(FidError::invalid("height/width", format!("image size {height}x{width} is empty")));
        }
        let image_bytes = height
            .checked_mul(width)
            .and_then(|x| x.checked_mul(channels))
            .filter(|&b| b.checked_mul(n).is_some())
            .ok_or_else(|| FidError::invalid("n/height/width", "the array size overflows"))?;
        let tmp = temp_path(&path);
        let shape = [n, height, width, channels];
        let start = || -> io::Result<ZipWriter<BufWriter<File>>> {
            let file = File::create(&tmp)?;
            let mut zip = ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
            let payload = (n * image_bytes) as u64 + 128;
            zip.start_file(npyz::npz::file_name_from_index(0), entry_options(payload))?;
            // Header only: the pixel bytes are appended raw by `push` (uint8 C order).
            let dims: Vec<u64> = shape.iter().map(|&x| x as u64).collect();
            npyz::WriteOptions::new_header_only()
                .dtype(<u8 as npyz::AutoSerialize>::default_dtype())
                .shape(&dims)
                .writer(&mut zip)
                .write_header_only()?;
            Ok(zip)
        };
        let zip = start().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            FidError::io(&path, e)
        })?;
        Ok(NpzImageWriter { path, tmp, zip: Some(zip), image_bytes, expected: n, written: 0, shape })
    }

    /// Appends whole images (NHWC bytes; the length must be a multiple of one image's size).
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        if !data.len().is_multiple_of(self.image_bytes) {
            return Err(FidError::ShapeMismatch {
                what: format!("image batch for {}", self.path.display()),
                expected: format!(
                    "[B, {}, {}, {}] (a multiple of {} bytes)",
                    self.shape[1], self.shape[2], self.shape[3], self.image_bytes
                ),
                actual: format!("{} bytes", data.len()),
            });
        }
        let count = data.len() / self.image_bytes;
        if self.written + count > self.expected {
            return Err(FidError::invalid(
                "data",
                format!(
                    "{}: {} images declared, {} already written, {} more pushed",
                    self.path.display(),
                    self.expected,
                    self.written,
                    count
                ),
            ));
        }
        let zip = self.zip.as_mut().ok_or_else(|| FidError::invalid("self", "writer already finished"))?;
        zip.write_all(data).map_err(|e| FidError::io(&self.path, e))?;
        self.written += count;
        Ok(())
    }

    /// Number of images written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Completes the archive and renames it to the final path; errors if fewer images than
    /// declared were pushed (the partial file is removed).
    pub fn finish(self) -> Result<()> {
        self.finish_inner(None)
    }

    /// [`finish`](Self::finish) that also stores the images' class labels as `arr_1` (int64
    /// `[N]`), as guided-diffusion's `image_sample.py` saves class-conditional samples
    /// (`np.savez(path, images, labels)`); evaluators read `arr_0` and ignore it.
    pub fn finish_with_labels(self, labels: &[i64]) -> Result<()> {
        if labels.len() != self.expected {
            return Err(FidError::ShapeMismatch {
                what: format!("class labels for {}", self.path.display()),
                expected: format!("[{}] (one per image)", self.expected),
                actual: format!("[{}]", labels.len()),
            });
        }
        self.finish_inner(Some(labels))
    }

    fn finish_inner(mut self, labels: Option<&[i64]>) -> Result<()> {
        if self.written != self.expected {
            return Err(FidError::invalid(
                "n",
                format!("{}: {} images declared but {} written", self.path.display(), self.expected, self.written),
            ));
        }
        let Some(mut zip) = self.zip.take() else {
            return Err(FidError::invalid("self", "writer already finished"));
        };
        let done = (|| -> io::Result<()> {
            if let Some(labels) = labels {
                zip.start_file(npyz::npz::file_name_from_index(1), entry_options(labels.len() as u64 * 8 + 128))?;
                let mut w = npyz::WriteOptions::<i64>::new().default_dtype().shape(&[labels.len() as u64]).writer(&mut zip).begin_nd()?;
                w.extend(labels.iter().copied())?;
                w.finish()?;
            }
            let mut inner = zip.finish().map_err(zip_to_io)?;
            inner.flush()?;
            inner.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        done.and_then(|()| std::fs::rename(&self.tmp, &self.path)).map_err(|e| {
            let _ = std::fs::remove_file(&self.tmp);
            FidError::io(&self.path, e)
        })
    }
}

impl Drop for NpzImageWriter {
    fn drop(&mut self) {
        // Unfinished (error path or early drop): close the zip, then discard the temporary file.
        if let Some(zip) = self.zip.take() {
            drop(zip);
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
