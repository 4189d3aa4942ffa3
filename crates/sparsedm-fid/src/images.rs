//! Image sources for feature extraction: batches of f32 RGB images in `[0, 1]`, NCHW.
//!
//! FID tooling reads images from three kinds of places, all supported here behind the
//! [`ImageSource`] trait:
//!
//! * [`ImageFolder`]: a directory tree of PNG/JPEG files (pytorch-fid's input; SparseDM/U-ViT
//!   write their samples as PNG folders). Files are found recursively and sorted by path, so the
//!   order is deterministic. Grayscale, palette and RGBA images are converted to RGB (alpha is
//!   dropped, like PIL's `convert("RGB")`).
//! * [`NpzImages`]: the `arr_0` uint8 `[N, H, W, 3]` array of an `.npz` (guided-diffusion/ADM
//!   evaluator format, also what this project's `sample` command writes), streamed batch by batch.
//! * [`Cifar10`]: the CIFAR-10 binary distribution (`data_batch_1..5.bin`, `test_batch.bin`),
//!   records of 1 label byte + 3072 pixel bytes in CHW order.
//!
//! Pixels become `f32` as `byte as f32 / 255.0`, exactly what torchvision's `ToTensor` gives
//! pytorch-fid. A batch has a single image size; resizing to 299×299 belongs to the Inception
//! preprocessing, so sources whose images differ in size are rejected with an error naming the
//! deviating file. JPEG files are decoded by the `image` crate, whose IDCT/upsampling can differ
//! from libjpeg (PIL) by a grey level here and there; use PNG when bit parity with pytorch-fid
//! matters.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{FidError, Result};
use crate::npz::open_u8_nhwc;

/// A batch of RGB images, f32 in `[0, 1]`, layout NCHW (`[n, 3, height, width]`, row-major).
#[derive(Clone, PartialEq)]
pub struct ImageBatch {
    /// Pixel values, `n · 3 · height · width` of them.
    pub data: Vec<f32>,
    /// Number of images in the batch.
    pub n: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
}

impl ImageBatch {
    /// Channels per image (always RGB).
    pub const CHANNELS: usize = 3;

    /// `[n, 3, height, width]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.n, Self::CHANNELS, self.height, self.width]
    }
}

impl std::fmt::Debug for ImageBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageBatch").field("shape", &self.shape()).finish_non_exhaustive()
    }
}

/// Iterator over the batches of an [`ImageSource`]; an `Err` item ends the useful iteration
/// (it names the file that failed).
pub type BatchIter<'a> = Box<dyn Iterator<Item = Result<ImageBatch>> + Send + 'a>;

/// Something that yields images in batches: a folder, an `.npz`, CIFAR-10 binaries.
pub trait ImageSource {
    /// Number of images.
    fn len(&self) -> usize;

    /// `true` when there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(height, width)` shared by all images.
    fn image_size(&self) -> (usize, usize);

    /// Batches of at most `batch_size` images (the last one may be smaller), in a fixed order.
    /// Errors immediately if `batch_size == 0` or the source cannot be (re)opened.
    fn batches(&self, batch_size: usize) -> Result<BatchIter<'_>>;

    /// Short human-readable description (for logs).
    fn describe(&self) -> String;
}

fn check_batch_size(batch_size: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(FidError::invalid("batch_size", "must be at least 1"));
    }
    Ok(())
}

/// Opens `path` as the matching source:
/// a `.npz` file → [`NpzImages`]; a `.bin` file → [`Cifar10`] (that file only); a directory that
/// holds CIFAR-10 batch files (directly or in `cifar-10-batches-bin/`) → [`Cifar10`] training
/// split if present, else its test split; any other directory → [`ImageFolder`].
pub fn open_image_source(path: impl AsRef<Path>) -> Result<Box<dyn ImageSource + Send + Sync>> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| FidError::io(path, e))?;
    if meta.is_dir() {
        if let Some(dir) = Cifar10::locate(path) {
            let split = if dir.join("data_batch_1.bin").is_file() { CifarSplit::Train } else { CifarSplit::Test };
            return Ok(Box::new(Cifar10::from_dir(dir, split)?));
        }
        return Ok(Box::new(ImageFolder::open(path)?));
    }
    match extension_lowercase(path).as_deref() {
        Some("npz") => Ok(Box::new(NpzImages::open(path)?)),
        Some("bin") => Ok(Box::new(Cifar10::from_files([path])?)),
        _ => Err(FidError::invalid("path", format!("{}: expected a directory, an .npz file or a CIFAR-10 .bin file", path.display()))),
    }
}

fn extension_lowercase(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase)
}

// ---------------------------------------------------------------------------------------------
// Folder of PNG/JPEG files
// ---------------------------------------------------------------------------------------------

/// File extensions read by [`ImageFolder`] (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// A directory tree of PNG/JPEG images, sorted by path.
///
/// [`ImageFolder::open`] reads every file's header to check that all images have one size, so
/// a mismatch is reported before any expensive work starts.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    files: Vec<PathBuf>,
    height: usize,
    width: usize,
}

impl ImageFolder {
    /// Lists `root` recursively (files with an [`IMAGE_EXTENSIONS`] extension; symbolic links to
    /// files are followed, to directories not), sorts by path and checks the image sizes.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_owned();
        let mut files = Vec::new();
        collect_images(&root, &mut files)?;
        files.sort();
        let Some(first) = files.first() else {
            return Err(FidError::NoImages { path: root, reason: format!("no files with extension {}", IMAGE_EXTENSIONS.join("/")) });
        };
        let (w0, h0) = image_dimensions(first)?;
        let dims: Vec<Result<(u32, u32)>> = files.par_iter().map(|p| image_dimensions(p)).collect();
        for (p, d) in files.iter().zip(dims) {
            let (w, h) = d?;
            if (w, h) != (w0, h0) {
                return Err(FidError::ImageSizeMismatch {
                    path: p.clone(),
                    width: w,
                    height: h,
                    first: first.clone(),
                    expected_width: w0,
                    expected_height: h0,
                });
            }
        }
        Ok(ImageFolder { root, files, height: h0 as usize, width: w0 as usize })
    }

    /// The image files, in iteration order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The directory this folder was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn first(&self) -> &Path {
        &self.files[0]
    }

    fn decode_batch(&self, files: &[PathBuf]) -> Result<ImageBatch> {
        let (h, w) = (self.height, self.width);
        let plane = h * w;
        let mut data = vec![0f32; files.len() * 3 * plane];
        let results: Vec<Result<()>> = data
            .par_chunks_mut(3 * plane)
            .zip(files.par_iter())
            .map(|(out, path)| {
                let img = image::ImageReader::open(path)
                    .map_err(|e| FidError::io(path, e))?
                    .with_guessed_format()
                    .map_err(|e| FidError::io(path, e))?
                    .decode()
                    .map_err(|source| FidError::ImageDecode { path: path.clone(), source })?
                    .into_rgb8();
                if (img.width() as usize, img.height() as usize) != (w, h) {
                    return Err(FidError::ImageSizeMismatch {
                        path: path.clone(),
                        width: img.width(),
                        height: img.height(),
                        first: self.first().to_owned(),
                        expected_width: w as u32,
                        expected_height: h as u32,
                    });
                }
                hwc_u8_to_chw_f32(img.as_raw(), 3, plane, out);
                Ok(())
            })
            .collect();
        // Report the first failure in path order, whatever order the threads finished in.
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(ImageBatch { data, n: files.len(), height: h, width: w })
    }
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| FidError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FidError::io(dir, e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| FidError::io(&path, e))?;
        if ft.is_dir() {
            collect_images(&path, out)?;
        } else if (ft.is_file() || (ft.is_symlink() && path.is_file()))
            && extension_lowercase(&path).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// (width, height) from the file header, without decoding the pixels.
fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .map_err(|e| FidError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| FidError::io(path, e))?
        .into_dimensions()
        .map_err(|source| FidError::ImageDecode { path: path.to_owned(), source })
}

/// Interleaved `plane × channels` bytes (HWC) → 3 planes of f32 in `[0, 1]` (CHW); one channel
/// is replicated to RGB.
fn hwc_u8_to_chw_f32(src: &[u8], channels: usize, plane: usize, out: &mut [f32]) {
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in src.chunks_exact(channels).take(plane).enumerate() {
        let (pr, pg, pb) = if channels == 1 { (px[0], px[0], px[0]) } else { (px[0], px[1], px[2]) };
        r[i] = f32::from(pr) / 255.0;
        g[i] = f32::from(pg) / 255.0;
        b[i] = f32::from(pb) / 255.0;
    }
}

impl ImageSource for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn image_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    fn batches(&self, batch_size: usize) -> Result<BatchIter<'_>> {
        check_batch_size(batch_size)?;
        let mut failed = false;
        Ok(Box::new(self.files.chunks(batch_size).map_while(move |chunk| {
            if failed {
                return None;
            }
            let batch = self.decode_batch(chunk);
            failed = batch.is_err();
            Some(batch)
        })))
    }

    fn describe(&self) -> String {
        format!("{} images {}x{} in {}", self.files.len(), self.width, self.height, self.root.display())
    }
}

// ---------------------------------------------------------------------------------------------
// NHWC uint8 `arr_0` in an .npz
// ---------------------------------------------------------------------------------------------

/// The `arr_0` uint8 `[N, H, W, 3]` array of an `.npz`, read batch by batch (a stored entry is
/// streamed from disk; a compressed one is decompressed into memory when iteration starts).
#[derive(Clone, Debug)]
pub struct NpzImages {
    path: PathBuf,
    shape: [usize; 4],
}

impl NpzImages {
    /// Opens `path` and checks that `arr_0` exists and is uint8 `[N, H, W, 3]` (or `[.., 1]`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let stream = open_u8_nhwc(&path, "arr_0")?;
        Ok(NpzImages { path, shape: stream.shape })
    }

    /// `[N, H, W, C]` as stored.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
}

impl ImageSource for NpzImages {
    fn len(&self) -> usize {
        self.shape[0]
    }

    fn image_size(&self) -> (usize, usize) {
        (self.shape[1], self.shape[2])
    }

    fn batches(&self, batch_size: usize) -> Result<BatchIter<'_>> {
        check_batch_size(batch_size)?;
        let stream = open_u8_nhwc(&self.path, "arr_0")?;
        if stream.shape != self.shape {
            return Err(FidError::bad_array(
                &self.path,
                "arr_0",
                format!("shape changed since the file was opened: {:?} -> {:?}", self.shape, stream.shape),
            ));
        }
        let [n, h, w, c] = self.shape;
        let mut reader = stream.reader;
        let mut done = 0usize;
        let mut failed = false;
        let mut buf = Vec::new();
        let path = &self.path;
        Ok(Box::new(std::iter::from_fn(move || {
            if done >= n || failed {
                return None;
            }
            let b = batch_size.min(n - done);
            buf.resize(b * h * w * c, 0);
            if let Err(e) = reader.read_exact(&mut buf) {
                failed = true;
                return Some(Err(FidError::bad_array(
                    path,
                    "arr_0",
                    format!("truncated data: cannot read images {}..{}: {e}", done, done + b),
                )));
            }
            let plane = h * w;
            let mut data = vec![0f32; b * 3 * plane];
            data.par_chunks_mut(3 * plane).zip(buf.par_chunks(plane * c)).for_each(|(out, src)| hwc_u8_to_chw_f32(src, c, plane, out));
            done += b;
            Some(Ok(ImageBatch { data, n: b, height: h, width: w }))
        })))
    }

    fn describe(&self) -> String {
        let [n, h, w, c] = self.shape;
        format!("{n} images {w}x{h}x{c} in {} (arr_0)", self.path.display())
    }
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10 binary batches
// ---------------------------------------------------------------------------------------------

/// Bytes per CIFAR-10 record: 1 label byte + 3 × 32 × 32 pixel bytes (CHW).
const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

/// Which files of the CIFAR-10 binary distribution to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarSplit {
    /// `data_batch_1.bin` … `data_batch_5.bin` (50 000 images; the usual FID reference set).
    Train,
    /// `test_batch.bin` (10 000 images).
    Test,
    /// Training files, then the test file.
    All,
}

impl CifarSplit {
    fn file_names(self) -> Vec<String> {
        let train = (1..=5).map(|i| format!("data_batch_{i}.bin"));
        match self {
            CifarSplit::Train => train.collect(),
            CifarSplit::Test => vec!["test_batch.bin".into()],
            CifarSplit::All => train.chain(std::iter::once("test_batch.bin".into())).collect(),
        }
    }
}

/// CIFAR-10 binary batch files (records of 1 label byte + 3072 CHW pixel bytes, 32×32 RGB).
#[derive(Clone, Debug)]
pub struct Cifar10 {
    /// Files with their record counts.
    files: Vec<(PathBuf, usize)>,
    total: usize,
}

impl Cifar10 {
    /// Reads the files of `split` from `dir` (or from `dir/cifar-10-batches-bin/`, the folder
    /// name inside the official tarball). A missing file is an error naming it.
    pub fn from_dir(dir: impl AsRef<Path>, split: CifarSplit) -> Result<Self> {
        let dir = dir.as_ref();
        let dir = Self::locate(dir).unwrap_or_else(|| dir.to_owned());
        Self::from_files(split.file_names().into_iter().map(|f| dir.join(f)))
    }

    /// Uses exactly these files, in this order. Each must be a non-empty multiple of 3073 bytes.
    pub fn from_files<P: Into<PathBuf>>(files: impl IntoIterator<Item = P>) -> Result<Self> {
        let mut out = Vec::new();
        let mut total = 0usize;
        for p in files {
            let p: PathBuf = p.into();
            let len = std::fs::metadata(&p).map_err(|e| FidError::io(&p, e))?.len();
            if len == 0 || len % CIFAR_RECORD as u64 != 0 {
                return Err(FidError::BadCifarFile {
                    path: p,
                    reason: format!("size {len} bytes is not a positive multiple of the {CIFAR_RECORD}-byte record"),
                });
            }
            let records = usize::try_from(len / CIFAR_RECORD as u64)
                .map_err(|_| FidError::BadCifarFile { path: p.clone(), reason: "file too large".into() })?;
            total += records;
            out.push((p, records));
        }
        if out.is_empty() {
            return Err(FidError::invalid("files", "no CIFAR-10 files given"));
        }
        Ok(Cifar10 { files: out, total })
    }

    /// The directory among `dir` and `dir/cifar-10-batches-bin` that holds CIFAR-10 batch files.
    fn locate(dir: &Path) -> Option<PathBuf> {
        [dir.to_owned(), dir.join("cifar-10-batches-bin")]
            .into_iter()
            .find(|d| d.join("data_batch_1.bin").is_file() || d.join("test_batch.bin").is_file())
    }

    /// The files read, in order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// The class label (0–9) of every image, in iteration order.
    pub fn labels(&self) -> Result<Vec<u8>> {
        let mut labels = Vec::with_capacity(self.total);
        let mut record = vec![0u8; CIFAR_RECORD];
        for (path, records) in &self.files {
            let mut r = BufReader::new(File::open(path).map_err(|e| FidError::io(path, e))?);
            for _ in 0..*records {
                r.read_exact(&mut record).map_err(|e| cifar_truncated(path, e))?;
                labels.push(record[0]);
            }
        }
        Ok(labels)
    }
}

impl Cifar10 {
    /// Every record in memory: pixels as u8 CHW (3072 bytes per image, in
    /// file order) and the labels. 150 MB for the training split; what a
    /// trainer wants for random access.
    pub fn read_all_u8(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut pixels = Vec::with_capacity(self.total * (CIFAR_RECORD - 1));
        let mut labels = Vec::with_capacity(self.total);
        let mut record = vec![0u8; CIFAR_RECORD];
        for (path, records) in &self.files {
            let mut r = BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| FidError::io(path, e))?);
            for _ in 0..*records {
                r.read_exact(&mut record).map_err(|e| cifar_truncated(path, e))?;
                labels.push(record[0]);
                pixels.extend_from_slice(&record[1..]);
            }
        }
        Ok((pixels, labels))
    }
}

fn cifar_truncated(path: &Path, e: io::Error) -> FidError {
    FidError::BadCifarFile { path: path.to_owned(), reason: format!("cannot read a whole record: {e}") }
}

/// Sequential reader of CIFAR-10 records across files.
struct CifarIter<'a> {
    source: &'a Cifar10,
    batch_size: usize,
    file_idx: usize,
    reader: Option<BufReader<File>>,
    left_in_file: usize,
    failed: bool,
    record: Vec<u8>,
}

impl CifarIter<'_> {
    fn next_batch(&mut self) -> Result<Option<ImageBatch>> {
        const PLANE: usize = 32 * 32;
        let mut data = Vec::with_capacity(self.batch_size * 3 * PLANE);
        let mut n = 0;
        while n < self.batch_size {
            if self.left_in_file == 0 {
                self.reader = None;
                let Some((path, records)) = self.source.files.get(self.file_idx) else {
                    break;
                };
                self.file_idx += 1;
                self.reader = Some(BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| FidError::io(path, e))?));
                self.left_in_file = *records;
                continue;
            }
            let path = &self.source.files[self.file_idx - 1].0;
            let Some(reader) = self.reader.as_mut() else {
                break;
            };
            reader.read_exact(&mut self.record).map_err(|e| cifar_truncated(path, e))?;
            // Skip the label byte; the 3072 pixel bytes are already R, G, B planes (CHW).
            data.extend(self.record[1..].iter().map(|&v| f32::from(v) / 255.0));
            self.left_in_file -= 1;
            n += 1;
        }
        Ok((n > 0).then_some(ImageBatch { data, n, height: 32, width: 32 }))
    }
}

impl Iterator for CifarIter<'_> {
    type Item = Result<ImageBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_batch() {
            Ok(b) => b.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl ImageSource for Cifar10 {
    fn len(&self) -> usize {
        self.total
    }

    fn image_size(&self) -> (usize, usize) {
        (32, 32)
    }

    fn batches(&self, batch_size: usize) -> Result<BatchIter<'_>> {
        check_batch_size(batch_size)?;
        Ok(Box::new(CifarIter {
            source: self,
            batch_size,
            file_idx: 0,
            reader: None,
            left_in_file: 0,
            failed: false,
            record: vec![0u8; CIFAR_RECORD],
        }))
    }

    fn describe(&self) -> String {
        format!("{} CIFAR-10 images from {} file(s)", self.total, self.files.len())
    }
}
