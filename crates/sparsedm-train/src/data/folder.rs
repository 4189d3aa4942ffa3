//! A folder of PNG/JPEG images (recursive, sorted by path), decoded and
//! preprocessed once into memory as u8. With [`Preprocess::CelebA64`] it
//! applies U-ViT's CelebA-64 pipeline: crop the 128×128 box at top 57,
//! left 25, then resize to 64×64 (the `image` crate's triangle filter, an
//! antialiased bilinear like PIL's `Resize`).
//!
//! [`ImageFolderDataset::open_classes`] labels the images by class folder, as torchvision's
//! `ImageFolder` (and U-ViT's ImageNet-64 data) does: each immediate sub-folder of the root is a
//! class, the classes sorted by folder name and numbered from 0.

use super::Dataset;
use crate::error::{Result, TrainError};
use image::imageops::FilterType;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// How each image is brought to the training size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preprocess {
    /// Used as is; every image must have the size of the first.
    None,
    /// U-ViT's CelebA 64×64 crop and resize.
    CelebA64,
    /// Resize (antialiased) to size×size.
    Resize(u32),
}

/// Images of a folder, in memory.
#[derive(Debug)]
pub struct ImageFolderDataset {
    pixels: Vec<u8>,
    count: usize,
    size: (usize, usize),
    root: PathBuf,
    /// Each image's class (index into `classes`), when opened by class folder.
    labels: Vec<u32>,
    /// The class folders' names, sorted (empty: unlabelled).
    classes: Vec<String>,
}

/// The class folders of `root` (its immediate sub-folders), sorted by name: torchvision's
/// `ImageFolder` classes. An image directly in `root` has no class and is an error.
pub fn class_folders(root: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(root).map_err(|e| TrainError::Data { path: root.into(), msg: e.to_string() })?;
    let mut classes = Vec::new();
    for e in entries {
        let p = e.map_err(|e| TrainError::Data { path: root.into(), msg: e.to_string() })?.path();
        if p.is_dir() {
            classes.push(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        } else if is_image(&p) {
            return Err(TrainError::Data {
                path: p,
                msg: "an image directly in the dataset folder has no class: with dataset.class_folders each class is a sub-folder".into(),
            });
        }
    }
    if classes.is_empty() {
        return Err(TrainError::Data { path: root.into(), msg: "dataset.class_folders: the folder has no class sub-folders".into() });
    }
    classes.sort();
    Ok(classes)
}

fn is_image(p: &Path) -> bool {
    matches!(p.extension().and_then(|x| x.to_str()).map(str::to_ascii_lowercase).as_deref(), Some("png" | "jpg" | "jpeg"))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::Data { path: dir.into(), msg: e.to_string() })?;
    for e in entries {
        let p = e.map_err(|e| TrainError::Data { path: dir.into(), msg: e.to_string() })?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl ImageFolderDataset {
    /// Every image under `root` (recursive), unlabelled.
    pub fn open(root: impl AsRef<Path>, pre: Preprocess) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut files = Vec::new();
        collect(&root, &mut files)?;
        files.sort();
        Self::decode(root, files, pre, Vec::new(), Vec::new())
    }

    /// The images of each class folder of `root` (see [`class_folders`]), labelled with the
    /// folder's index; a class folder without images is an error (its label would never be seen).
    pub fn open_classes(root: impl AsRef<Path>, pre: Preprocess) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let classes = class_folders(&root)?;
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        for (k, class) in classes.iter().enumerate() {
            let mut these = Vec::new();
            collect(&root.join(class), &mut these)?;
            if these.is_empty() {
                return Err(TrainError::Data {
                    path: root.join(class),
                    msg: format!("class folder {k} ({class}) holds no PNG or JPEG images"),
                });
            }
            these.sort();
            labels.extend(std::iter::repeat_n(k as u32, these.len()));
            files.extend(these);
        }
        Self::decode(root, files, pre, labels, classes)
    }

    fn decode(root: PathBuf, files: Vec<PathBuf>, pre: Preprocess, labels: Vec<u32>, classes: Vec<String>) -> Result<Self> {
        if files.is_empty() {
            return Err(TrainError::Data { path: root, msg: "no PNG or JPEG images found".into() });
        }
        let decoded: Vec<(usize, usize, Vec<u8>)> = files
            .par_iter()
            .map(|f| {
                let img = image::open(f).map_err(|e| TrainError::Data { path: f.clone(), msg: format!("cannot decode image: {e}") })?;
                let img = match pre {
                    Preprocess::None => img,
                    Preprocess::CelebA64 => {
                        if img.width() < 153 || img.height() < 185 {
                            return Err(TrainError::Data {
                                path: f.clone(),
                                msg: format!(
                                    "{}x{} is too small for the CelebA crop (128x128 at top 57, left 25)",
                                    img.width(),
                                    img.height()
                                ),
                            });
                        }
                        img.crop_imm(25, 57, 128, 128).resize_exact(64, 64, FilterType::Triangle)
                    }
                    Preprocess::Resize(s) => img.resize_exact(s, s, FilterType::Triangle),
                };
                let rgb = img.to_rgb8();
                let (w, h) = (rgb.width() as usize, rgb.height() as usize);
                // HWC → CHW
                let raw = rgb.into_raw();
                let mut chw = vec![0u8; raw.len()];
                for (i, px) in raw.chunks(3).enumerate() {
                    for c in 0..3 {
                        chw[c * w * h + i] = px[c];
                    }
                }
                Ok((h, w, chw))
            })
            .collect::<Result<_>>()?;
        let size = (decoded[0].0, decoded[0].1);
        let mut pixels = Vec::with_capacity(decoded.len() * 3 * size.0 * size.1);
        for ((h, w, chw), f) in decoded.into_iter().zip(&files) {
            if (h, w) != size {
                return Err(TrainError::Data {
                    path: f.clone(),
                    msg: format!("image is {w}x{h}, the first image is {}x{}", size.1, size.0),
                });
            }
            pixels.extend_from_slice(&chw);
        }
        Ok(ImageFolderDataset { count: files.len(), pixels, size, root, labels, classes })
    }
}

impl Dataset for ImageFolderDataset {
    fn len(&self) -> usize {
        self.count
    }
    fn image_size(&self) -> (usize, usize) {
        self.size
    }
    fn get(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let n = 3 * self.size.0 * self.size.1;
        for (o, &p) in out.iter_mut().zip(&self.pixels[i * n..(i + 1) * n]) {
            *o = p as f32 / 255.0;
        }
        Ok(())
    }
    fn label(&self, i: usize) -> Option<i64> {
        self.labels.get(i).map(|&l| i64::from(l))
    }
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn describe(&self) -> String {
        let classes = match self.classes.len() {
            0 => String::new(),
            n => format!(" in {n} class folders"),
        };
        format!("image folder {} ({} images of {}x{}{classes})", self.root.display(), self.count, self.size.1, self.size.0)
    }
}
