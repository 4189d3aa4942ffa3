//! Writing figures as PNG files: atomically (a reader never sees half a
//! file), creating the parent folder, and, for outputs a user names,
//! refusing to replace an existing file unless asked to.

use crate::error::{Result, TrainError};
use image::RgbImage;
use std::path::Path;

/// The PNG encoding of `img`.
pub fn encode(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| TrainError::Figure { what: "a PNG".into(), msg: e.to_string() })?;
    Ok(bytes)
}

/// Writes `img` to `path` (replacing it), creating the parent folder.
pub fn save(path: &Path, img: &RgbImage) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Data { path: dir.into(), msg: e.to_string() })?;
    }
    sparsedm_tensor::write_atomic(path, &encode(img)?)?;
    Ok(())
}

/// Like [`save`], but an existing `path` is an error unless `force`
/// (the project's rule for outputs a user names).
pub fn save_new(path: &Path, img: &RgbImage, force: bool) -> Result<()> {
    if !force && path.exists() {
        return Err(TrainError::Data { path: path.into(), msg: "already exists; pass --force to replace it".into() });
    }
    save(path, img)
}
