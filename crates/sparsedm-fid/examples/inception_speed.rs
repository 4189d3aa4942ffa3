//! Throughput of InceptionV3 feature extraction on the CPU (images/s), the number to compare
//! with PyTorch's 12.8 images/s (2 threads, batch 25, 32×32 inputs resized to 299):
//! `cargo run --release -p sparsedm-fid --example inception_speed [images] [batch] [weights.safetensors]`.
//!
//! Without a weights file the network keeps its initial parameters (the speed does not depend
//! on the values). Images are synthetic 32×32 RGB.

use sparsedm_fid::{ExtractOptions, ImageBatch, ImageSource, InceptionV3, Progress, extract_features};
use sparsedm_layers::ParamStore;
use sparsedm_tensor::Device;

/// `n` synthetic 32×32 images.
struct Synthetic {
    n: usize,
}

impl ImageSource for Synthetic {
    fn len(&self) -> usize {
        self.n
    }
    fn image_size(&self) -> (usize, usize) {
        (32, 32)
    }
    fn batches(&self, batch_size: usize) -> sparsedm_fid::Result<sparsedm_fid::BatchIter<'_>> {
        let n = self.n;
        Ok(Box::new((0..n).step_by(batch_size).map(move |start| {
            let b = batch_size.min(n - start);
            let data = (0..b * 3 * 32 * 32).map(|i| ((i * 7919 + start) % 256) as f32 / 255.0).collect();
            Ok(ImageBatch { data, n: b, height: 32, width: 32 })
        })))
    }
    fn describe(&self) -> String {
        format!("{} synthetic images", self.n)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let images: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(25);
    let net = match args.get(3) {
        Some(path) => InceptionV3::load(path, &Device::Cpu)?,
        None => {
            let store = ParamStore::new(Device::Cpu, 0);
            store.set_training(false);
            let mut net = InceptionV3::new(&store)?;
            net.fold_batch_norm()?;
            net
        }
    };
    let opts = ExtractOptions { batch_size: batch, keep_features: false, progress: Progress::Auto, label: "speed".into() };
    // Warm-up batch (allocator, gemm dispatch).
    extract_features(&net, &Synthetic { n: batch.min(images) }, &opts)?;
    let ex = extract_features(&net, &Synthetic { n: images }, &opts)?;
    println!(
        "{} images, batch {batch}, {} rayon threads: {:.2} s, {:.2} images/s",
        ex.images,
        rayon::current_num_threads(),
        ex.elapsed.as_secs_f64(),
        ex.images_per_second()
    );
    Ok(())
}
