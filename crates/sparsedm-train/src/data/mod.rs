//! Training data. A [`Dataset`] gives random access to images as f32 CHW
//! in [0, 1] (and optional class labels); the [`loader::Loader`] turns it
//! into shuffled, flipped, [−1, 1]-scaled batches on a worker thread.

pub mod cifar;
pub mod folder;
pub mod loader;
pub mod shapes;

use crate::error::Result;

/// Random access to a set of same-sized RGB images.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// (height, width) of every image.
    fn image_size(&self) -> (usize, usize);
    /// Writes image `i` as CHW f32 in [0, 1] into `out` (3·h·w values).
    fn get(&self, i: usize, out: &mut [f32]) -> Result<()>;
    /// The class label of image `i`, if the dataset has classes.
    fn label(&self, i: usize) -> Option<i64>;
    /// Number of classes (0 when unlabelled).
    fn num_classes(&self) -> usize;
    /// A short description for logs.
    fn describe(&self) -> String;
}

pub use cifar::Cifar10Dataset;
pub use folder::ImageFolderDataset;
pub use loader::{Batch, Loader, LoaderConfig};
pub use shapes::ShapesDataset;
