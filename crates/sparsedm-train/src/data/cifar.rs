//! CIFAR-10 from its binary distribution (`data_batch_1..5.bin`,
//! `test_batch.bin`), held in memory as u8 (150 MB for the 50,000 training
//! images) for random access. Parsing is `sparsedm_fid::Cifar10`'s.

use super::Dataset;
use crate::error::Result;
use sparsedm_fid::{Cifar10, CifarSplit};
use std::path::Path;

/// Number of class labels (airplane … truck).
pub const CLASSES: usize = 10;

/// CIFAR-10 images (32×32) with their class labels.
#[derive(Debug)]
pub struct Cifar10Dataset {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    source: String,
}

const IMAGE: usize = 3 * 32 * 32;

impl Cifar10Dataset {
    /// Reads a split from a folder (or its `cifar-10-batches-bin/`); a
    /// missing or truncated file is an error naming it.
    pub fn open(dir: impl AsRef<Path>, split: CifarSplit) -> Result<Self> {
        let c = Cifar10::from_dir(dir.as_ref(), split)?;
        let (pixels, labels) = c.read_all_u8()?;
        Ok(Cifar10Dataset { pixels, labels, source: dir.as_ref().display().to_string() })
    }
}

impl Dataset for Cifar10Dataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn image_size(&self) -> (usize, usize) {
        (32, 32)
    }
    fn get(&self, i: usize, out: &mut [f32]) -> Result<()> {
        for (o, &p) in out.iter_mut().zip(&self.pixels[i * IMAGE..(i + 1) * IMAGE]) {
            *o = p as f32 / 255.0;
        }
        Ok(())
    }
    fn label(&self, i: usize) -> Option<i64> {
        self.labels.get(i).map(|&l| l as i64)
    }
    fn num_classes(&self) -> usize {
        CLASSES
    }
    fn describe(&self) -> String {
        format!("CIFAR-10 ({} images from {})", self.labels.len(), self.source)
    }
}
