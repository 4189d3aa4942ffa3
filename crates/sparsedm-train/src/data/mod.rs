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

/// A run of images of a [`Dataset`] seen as an FID [`ImageSource`]
/// (reference statistics of the training data, real-data floors).
///
/// [`ImageSource`]: sparsedm_fid::ImageSource
pub struct DatasetImages<'a> {
    data: &'a dyn Dataset,
    from: usize,
    n: usize,
}

impl std::fmt::Debug for DatasetImages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatasetImages({} from {})", self.n, self.from)
    }
}

impl<'a> DatasetImages<'a> {
    /// The first `n` images (all of them when `n` exceeds the length).
    pub fn new(data: &'a dyn Dataset, n: usize) -> Self {
        Self::range(data, 0, n)
    }
    /// Images `from .. from + n`, clipped to the dataset.
    pub fn range(data: &'a dyn Dataset, from: usize, n: usize) -> Self {
        let from = from.min(data.len());
        DatasetImages { data, from, n: n.min(data.len() - from) }
    }
}

impl sparsedm_fid::ImageSource for DatasetImages<'_> {
    fn len(&self) -> usize {
        self.n
    }
    fn image_size(&self) -> (usize, usize) {
        self.data.image_size()
    }
    fn batches(&self, batch_size: usize) -> sparsedm_fid::Result<sparsedm_fid::BatchIter<'_>> {
        let bs = batch_size.max(1);
        let (h, w) = self.data.image_size();
        let per = 3 * h * w;
        Ok(Box::new((0..self.n.div_ceil(bs)).map(move |b| {
            let (start, end) = (b * bs, ((b + 1) * bs).min(self.n));
            let mut data = vec![0f32; (end - start) * per];
            for (i, out) in data.chunks_exact_mut(per).enumerate() {
                let k = self.from + start + i;
                self.data
                    .get(k, out)
                    .map_err(|e| sparsedm_fid::FidError::InvalidArgument { name: "dataset image", reason: format!("image {k}: {e}") })?;
            }
            Ok(sparsedm_fid::ImageBatch { data, n: end - start, height: h, width: w })
        })))
    }
    fn describe(&self) -> String {
        format!("images {}..{} of {}", self.from, self.from + self.n, self.data.describe())
    }
}
