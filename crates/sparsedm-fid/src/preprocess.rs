//! pytorch-fid's input preprocessing: images in `[0, 1]` (NCHW, RGB) are resized to 299×299 with
//! `F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)` (half-pixel
//! centres, no antialiasing) and mapped to `[-1, 1]` by `2x − 1`, in that order.
//!
//! Other FID implementations resize differently (TensorFlow 1 bilinear without half-pixel
//! offset, PIL bicubic in clean-fid), which moves CIFAR-10 FIDs by ~1–2; only this pipeline is
//! comparable with statistics made by pytorch-fid (and U-ViT/SparseDM's
//! `fid_stats_cifar10_train_pytorch.npz`).

use sparsedm_tensor::{Device, Tensor, no_grad};

use crate::error::{FidError, Result};
use crate::images::ImageBatch;
use crate::inception::INPUT_SIZE;

/// Resizes `[N, 3, H, W]` images in `[0, 1]` to `[N, 3, 299, 299]` (bilinear,
/// `align_corners=False`) and maps them to `[-1, 1]` with `2x − 1`: the network input.
///
/// Images that are already 299×299 are not resampled (the bilinear resize is then the
/// identity, exactly). Runs without recording a graph.
pub fn preprocess(images: &Tensor) -> Result<Tensor> {
    let s = images.shape();
    if s.len() != 4 || s[1] != 3 || s[2] == 0 || s[3] == 0 {
        return Err(FidError::ShapeMismatch {
            what: "images to preprocess".into(),
            expected: "[N, 3, H, W] with H, W > 0, values in [0, 1]".into(),
            actual: format!("{s:?}"),
        });
    }
    let _g = no_grad();
    let resized = if s[2] == INPUT_SIZE && s[3] == INPUT_SIZE { images.clone() } else { images.resize_bilinear(INPUT_SIZE, INPUT_SIZE)? };
    Ok(resized.affine(2.0, -1.0)?)
}

/// [`preprocess`] of an [`ImageBatch`] (its pixel buffer becomes the tensor without a copy).
pub fn preprocess_batch(batch: ImageBatch, device: &Device) -> Result<Tensor> {
    let shape = batch.shape();
    let images = Tensor::from_vec(batch.data, &shape, device)?;
    preprocess(&images)
}
