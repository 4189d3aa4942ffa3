//! Batches for training: seeded shuffling per epoch, random horizontal flip,
//! scaling to [−1, 1], produced on a worker thread a few batches ahead so
//! compute never waits on data.
//!
//! Batch `k` is a pure function of (seed, k): epoch e = ⌊k·B/N⌋ uses the
//! permutation drawn from Philox stream (seed, e), and flips come from
//! stream (seed', k). Resuming at step k therefore needs no saved state.

use super::Dataset;
use crate::error::Result;
use sparsedm_tensor::{Device, Rng, Tensor};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

/// Loader settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    pub random_flip: bool,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

/// One batch: images `[B, 3, H, W]` in [−1, 1] and labels `[B]` (i64) when
/// the dataset has classes.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Option<Tensor>,
    pub step: u64,
}

/// The indices of batch `k` (deterministic).
pub fn batch_indices(n: usize, batch: usize, seed: u64, k: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut pos = k as u128 * batch as u128;
    let mut cached: Option<(u64, Vec<usize>)> = None;
    while out.len() < batch {
        let epoch = (pos / n as u128) as u64;
        let within = (pos % n as u128) as usize;
        if cached.as_ref().map(|c| c.0) != Some(epoch) {
            cached = Some((epoch, permutation(n, seed, epoch)));
        }
        let perm = &cached.as_ref().expect("permutation cached").1;
        let take = (batch - out.len()).min(n - within);
        out.extend_from_slice(&perm[within..within + take]);
        pos += take as u128;
    }
    out
}

/// Fisher–Yates permutation of 0..n from Philox stream (seed, epoch).
fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = Rng::from_state(seed ^ 0x5348_5546_464c_4521, epoch << 32);
    let mut p: Vec<usize> = (0..n).collect();
    let r = rng.uniform_vec(n, 0.0, 1.0);
    for i in (1..n).rev() {
        let j = ((r[i] * (i + 1) as f32) as usize).min(i);
        p.swap(i, j);
    }
    p
}

/// Builds batch `k` on the calling thread.
pub fn make_batch(data: &dyn Dataset, cfg: &LoaderConfig, k: u64) -> Result<Batch> {
    let (h, w) = data.image_size();
    let per = 3 * h * w;
    let idx = batch_indices(data.len(), cfg.batch_size, cfg.seed, k);
    let mut pixels = vec![0f32; idx.len() * per];
    let flips = if cfg.random_flip {
        Rng::from_state(cfg.seed ^ 0x464c_4950, k << 8).uniform_vec(idx.len(), 0.0, 1.0)
    } else {
        vec![1.0; idx.len()]
    };
    for ((&i, out), &f) in idx.iter().zip(pixels.chunks_mut(per)).zip(&flips) {
        data.get(i, out)?;
        if f < 0.5 {
            for row in out.chunks_mut(w) {
                row.reverse();
            }
        }
        out.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0);
    }
    let images = Tensor::from_vec(pixels, &[idx.len(), 3, h, w], &Device::Cpu)?;
    let labels = if data.num_classes() > 0 {
        let l: Vec<i64> = idx.iter().map(|&i| data.label(i).unwrap_or(0)).collect();
        Some(Tensor::from_vec_i64(l, &[idx.len()], &Device::Cpu)?)
    } else {
        None
    };
    Ok(Batch { images, labels, step: k })
}

/// An endless stream of batches from step `start`, built on a worker thread.
#[derive(Debug)]
pub struct Loader {
    rx: Receiver<Result<Batch>>,
}

impl Loader {
    pub fn new(data: Arc<dyn Dataset>, cfg: LoaderConfig, start: u64) -> Self {
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        std::thread::spawn(move || {
            let mut k = start;
            loop {
                let b = make_batch(data.as_ref(), &cfg, k);
                let failed = b.is_err();
                if tx.send(b).is_err() || failed {
                    return;
                }
                k += 1;
            }
        });
        Loader { rx }
    }

    /// The next batch (blocks only if the worker is behind).
    pub fn next_batch(&self) -> Result<Batch> {
        self.rx.recv().map_err(|_| crate::error::TrainError::Config("the data loader thread stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ShapesDataset;

    #[test]
    fn batches_are_deterministic_cover_epochs_and_resume() {
        let n = 10;
        let seen: Vec<usize> = (0..5).flat_map(|k| batch_indices(n, 2, 3, k)).collect();
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "one epoch visits every image once");
        assert_ne!(batch_indices(n, 4, 3, 3), batch_indices(n, 4, 4, 3), "seed matters");
        let data: Arc<dyn Dataset> = Arc::new(ShapesDataset::new(16, 50, 1).unwrap());
        let cfg = LoaderConfig { batch_size: 8, seed: 9, random_flip: true, prefetch: 2 };
        let a = Loader::new(data.clone(), cfg, 0);
        let _ = a.next_batch().unwrap();
        let second = a.next_batch().unwrap();
        let resumed = Loader::new(data, cfg, 1).next_batch().unwrap();
        assert_eq!(second.images.to_vec_f32().unwrap(), resumed.images.to_vec_f32().unwrap());
        assert_eq!(second.images.shape(), &[8, 3, 16, 16]);
        let v = second.images.to_vec_f32().unwrap();
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
    }
}
