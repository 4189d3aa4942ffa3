//! What the demo and the reproduction suites measure about a model:
//! its footprint (zeros, MACs) and the quality of its samples (FD-px, a
//! Fréchet distance on pooled pixels that needs no download, and real FID
//! when InceptionV3 weights are given), all against one fixed reference
//! set of real images so that every row of a table is judged alike.

use crate::build::Bundle;
use crate::data::{Dataset, DatasetImages};
use crate::error::{Result, TrainError};
use crate::samples::{Images, SampleProgress, SampleRequest};
use sparsedm_diffusion::{NoiseSchedule, SamplerKind};
use sparsedm_fid::pixel::{DEFAULT_CELLS, pixel_stats};
use sparsedm_fid::{ExtractOptions, FeatureStats, ImageSource, InceptionV3, Progress, extract_features, frechet_distance};
use sparsedm_tensor::Device;
use std::collections::HashSet;
use std::path::Path;

/// How many zeros a model holds and how much one forward pass costs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Footprint {
    /// Exact zeros over the weights of all Linear/Conv layers.
    pub sparsity_layers: f64,
    /// Exact zeros over all parameters.
    pub sparsity_model: f64,
    /// Multiply–accumulates of one forward of one image, the paper's
    /// convention (Linear + Conv + LayerNorm, N:M layers at N/M).
    pub macs: f64,
    /// The same count with every layer dense.
    pub macs_dense: f64,
}

/// Zeros and MACs of a built model as it is now (masks applied).
pub fn footprint(b: &Bundle) -> Result<Footprint> {
    let report = sparsedm_layers::SparsityReport::from_store(&b.store)?;
    let slot_weights: HashSet<String> = b.store.sparse_slots().into_iter().map(|(n, _)| format!("{n}.weight")).collect();
    let (mut zeros, mut total) = (report.totals.zeros, report.totals.params);
    for (name, p) in b.store.params() {
        if slot_weights.contains(&name) {
            continue;
        }
        let v = p.to_vec_f32()?;
        total += v.len() as u64;
        zeros += v.iter().filter(|&&x| x == 0.0).count() as u64;
    }
    let mut macs = b.config.mac_report(1);
    macs.apply_store(&b.store);
    Ok(Footprint {
        sparsity_layers: report.totals.sparsity,
        sparsity_model: zeros as f64 / total.max(1) as f64,
        macs: macs.paper_total(),
        macs_dense: macs.linear_conv_dense() as f64 + macs.norms(),
    })
}

/// Sample quality of one image set against the judge's reference.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quality {
    /// Fréchet distance on 4×4-pooled RGB pixels (48-d): no download, not FID.
    pub fd_px: f64,
    /// Real FID (pytorch-fid's InceptionV3), when the judge has the weights.
    pub fid: Option<f64>,
}

/// Scores image sets against the statistics of a fixed set of real images.
pub struct Judge {
    reference_px: FeatureStats,
    inception: Option<(InceptionV3, FeatureStats)>,
}

impl std::fmt::Debug for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Judge(n_ref {}, inception {})", self.reference_px.n, self.inception.is_some())
    }
}

impl Judge {
    /// Reference statistics from the first `n_reference` images of `data`
    /// (FD-px always; FID too when `inception` names pytorch-fid's weights
    /// converted to safetensors — extracting them costs about 0.1–0.2 s
    /// per image on a 2-core CPU).
    pub fn new(data: &dyn Dataset, n_reference: usize, inception: Option<&Path>) -> Result<Self> {
        Self::new_on(data, n_reference, inception, Device::Cpu)
    }

    /// [`Self::new`] with InceptionV3 on `device` (reference and scored
    /// images alike go through it there).
    pub fn new_on(data: &dyn Dataset, n_reference: usize, inception: Option<&Path>, device: Device) -> Result<Self> {
        let real = DatasetImages::new(data, n_reference);
        let reference_px = pixel_stats(&real, DEFAULT_CELLS)?;
        let inception = match inception {
            None => None,
            Some(path) => {
                let net = InceptionV3::load(path, &device)?;
                let stats = inception_stats(&net, &real)?;
                Some((net, stats))
            }
        };
        Ok(Judge { reference_px, inception })
    }

    /// FD-px reference from the first `n_reference` images of `data`, FID
    /// against precomputed statistics (e.g. pytorch-fid's CIFAR-10 npz).
    pub fn with_fid_reference(data: &dyn Dataset, n_reference: usize, inception: &Path, reference: FeatureStats) -> Result<Self> {
        Self::with_fid_reference_on(data, n_reference, inception, reference, Device::Cpu)
    }

    /// [`Self::with_fid_reference`] with InceptionV3 on `device` (where the
    /// scored images' features are extracted).
    pub fn with_fid_reference_on(
        data: &dyn Dataset,
        n_reference: usize,
        inception: &Path,
        reference: FeatureStats,
        device: Device,
    ) -> Result<Self> {
        let reference_px = pixel_stats(&DatasetImages::new(data, n_reference), DEFAULT_CELLS)?;
        let net = InceptionV3::load(inception, &device)?;
        Ok(Judge { reference_px, inception: Some((net, reference)) })
    }

    /// A fingerprint of what the judge scores against: its reference statistics (FD-px, and
    /// FID's when it has Inception), FNV-1a over their values' bits. Two judges of other real
    /// images, another reference count or other FID statistics differ in it; the Inception
    /// weights themselves enter only through reference statistics computed with them.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |v: u64| {
            for b in v.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        let stats = std::iter::once(&self.reference_px).chain(self.inception.as_ref().map(|(_, s)| s));
        for (i, s) in stats.enumerate() {
            eat(i as u64);
            eat(s.n as u64);
            s.mu.iter().chain(&s.sigma).for_each(|x| eat(x.to_bits()));
        }
        h
    }

    /// Whether scores include real FID.
    pub fn has_fid(&self) -> bool {
        self.inception.is_some()
    }

    /// FD-px (and FID) of `images` against the reference.
    pub fn score(&self, images: &dyn ImageSource) -> Result<Quality> {
        let fd_px = frechet_distance(&pixel_stats(images, DEFAULT_CELLS)?, &self.reference_px)?;
        let fid = match &self.inception {
            None => None,
            Some((net, reference)) => Some(frechet_distance(&inception_stats(net, images)?, reference)?),
        };
        Ok(Quality { fd_px, fid })
    }

    /// The score of real images the judge did not use as reference
    /// (`data[from .. from + n]`; or its first `n` images when the dataset
    /// is too small): what a perfect model would get with `n` samples,
    /// since the distance is biased upwards at small sample counts.
    pub fn real_floor(&self, data: &dyn Dataset, from: usize, n: usize) -> Result<Quality> {
        let from = if from + n <= data.len() { from } else { 0 };
        self.score(&DatasetImages::range(data, from, n))
    }
}

fn inception_stats(net: &InceptionV3, images: &dyn ImageSource) -> Result<FeatureStats> {
    let opts = ExtractOptions { progress: Progress::Hidden, ..Default::default() };
    Ok(extract_features(net, images, &opts)?.stats()?)
}

/// How samples are drawn for a table: the same for every row.
#[derive(Debug, Clone, Copy)]
pub struct DrawSpec {
    pub n: usize,
    pub sampler: SamplerKind,
    pub steps: usize,
    pub seed: u64,
    /// Clip x̂₀ to [−1, 1] in samplers that form it (None: the sampler's default).
    pub clip_denoised: Option<bool>,
}

/// Draws `spec.n` unconditional images from a model in evaluation mode.
pub fn draw(b: &Bundle, schedule: &dyn NoiseSchedule, spec: &DrawSpec) -> Result<Images> {
    draw_until(b, schedule, spec, &|| false)
}

/// [`draw`] that ends early, after the batch in progress, once `stop` says so (Ctrl-C in
/// `repro`), with [`TrainError::Stopped`].
pub fn draw_until(b: &Bundle, schedule: &dyn NoiseSchedule, spec: &DrawSpec, stop: &dyn Fn() -> bool) -> Result<Images> {
    draw_from(b, schedule, spec, None, |_, _| Ok(()), stop)
}

/// [`draw_until`] that continues a stopped draw of the same spec from `from` (its images so far
/// and the progress its last batch reported) and hands each batch with its progress to
/// `on_batch`: see [`crate::samples::generate_from`]. The images are an uninterrupted draw's.
pub fn draw_from(
    b: &Bundle,
    schedule: &dyn NoiseSchedule,
    spec: &DrawSpec,
    from: Option<(Images, SampleProgress)>,
    on_batch: impl FnMut(&Images, SampleProgress) -> Result<()>,
    stop: &dyn Fn() -> bool,
) -> Result<Images> {
    if spec.n == 0 {
        return Err(TrainError::Config("drawing samples: the number of images must be at least 1".into()));
    }
    b.store.set_training(false);
    let req = SampleRequest {
        n: spec.n,
        batch: draw_batch(spec),
        shape: b.config.input_shape(),
        sampler: spec.sampler,
        steps: spec.steps,
        seed: spec.seed,
        labels: crate::samples::Labels::None,
        cfg_scale: None,
        num_classes: None,
        clip_denoised: spec.clip_denoised,
        device: b.store.device(),
    };
    crate::samples::generate_from(b.model.as_ref(), schedule, &req, from, on_batch, stop)
}

/// Images in one batch of [`draw`]: the batch size a [`SampleProgress`] of it is a multiple of.
pub fn draw_batch(spec: &DrawSpec) -> usize {
    spec.n.min(64)
}
