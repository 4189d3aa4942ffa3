//! Drawing images from a model and writing them: PNG grids for people,
//! PNG folders, and NHWC uint8 `arr_0` npz files for FID tools. Pixels are
//! mapped from [−1, 1] as torchvision's `save_image` does:
//! ⌊clamp((x + 1)/2, 0, 1)·255 + 0.5⌋.

use crate::error::{Result, TrainError};
use sparsedm_diffusion::{ClassifierFreeGuidance, EpsModel, NoiseSchedule, SamplerKind, SamplerOptions, sample};
use sparsedm_tensor::{Device, Rng, Tensor, no_grad};
use std::path::Path;

/// What to draw.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub n: usize,
    pub batch: usize,
    /// [C, H, W] of one image.
    pub shape: [usize; 3],
    pub sampler: SamplerKind,
    pub steps: usize,
    pub seed: u64,
    /// The images' class labels (class-conditional models need some).
    pub labels: Labels,
    /// Classifier-free guidance scale (needs labels and `num_classes`,
    /// which counts the null label as U-ViT's configs do).
    pub cfg_scale: Option<f32>,
    /// The model's label count (None: unconditional).
    pub num_classes: Option<usize>,
    /// Clip x̂₀ to [−1, 1] in samplers that form it (None: the sampler's default).
    pub clip_denoised: Option<bool>,
    /// Where the model's parameters live: the sampler runs there. The
    /// starting noise is drawn on the host from (seed, batch) and moved
    /// there, so every device starts from the same noise.
    pub device: Device,
}

/// The class labels a class-conditional model samples with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// None (an unconditional model).
    None,
    /// This label for every image (`sample --class K`).
    Fixed(i64),
    /// Labels drawn uniformly from `0..classes`, the dataset's labels (the null label of
    /// guidance excluded), from their own seeded stream: U-ViT's `dataset.sample_label` for
    /// FID. The same labels whatever the batch size; the noise is the unconditional draw's.
    Uniform { classes: usize },
    /// Image `i` gets label `i mod classes`: every class in a preview grid.
    Cycle { classes: usize },
}

impl Labels {
    /// The labels of images `done..done + b`, drawing `Uniform` ones from `rng`.
    fn batch(self, done: usize, b: usize, rng: &mut Rng) -> Result<Option<Vec<i64>>> {
        Ok(match self {
            Labels::None => None,
            Labels::Fixed(k) => Some(vec![k; b]),
            // One draw per image (int_vec draws in pairs), so the split into batches does not
            // change the labels.
            Labels::Uniform { classes } => Some((0..b).map(|_| Ok(rng.int_vec(1, 0, classes as i64)?[0])).collect::<Result<_>>()?),
            Labels::Cycle { classes } => Some((done..done + b).map(|i| (i % classes) as i64).collect()),
        })
    }
}

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Labels::None => f.write_str("no labels"),
            Labels::Fixed(k) => write!(f, "label {k}"),
            Labels::Uniform { classes } => write!(f, "labels drawn uniformly from 0..={}", classes.saturating_sub(1)),
            Labels::Cycle { classes } => write!(f, "labels 0..={} in turn", classes.saturating_sub(1)),
        }
    }
}

/// Images as NHWC u8.
#[derive(Debug, Clone, Default)]
pub struct Images {
    pub data: Vec<u8>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

impl Images {
    /// The first `k` images (all of them if there are fewer): what a figure
    /// keeps of a large sample.
    pub fn first(&self, k: usize) -> Images {
        let n = k.min(self.n);
        Images { data: self.data[..n * self.h * self.w * 3].to_vec(), n, h: self.h, w: self.w }
    }
}

/// Samples `req.n` images in batches; batch `i` starts from the noise of
/// Philox stream (seed, i), so results do not depend on the batch split
/// only through the seed. Holds every image in memory: for large `n` use
/// [`generate_batches`], which hands each batch over as it is drawn.
pub fn generate(model: &dyn EpsModel, schedule: &dyn NoiseSchedule, req: &SampleRequest, on_batch: impl FnMut(usize)) -> Result<Images> {
    generate_until(model, schedule, req, on_batch, &|| false)
}

/// [`generate`] that ends early, after the batch in progress, once `stop` says so (Ctrl-C),
/// with [`TrainError::Stopped`].
pub fn generate_until(
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    req: &SampleRequest,
    mut on_batch: impl FnMut(usize),
    stop: &dyn Fn() -> bool,
) -> Result<Images> {
    generate_from(
        model,
        schedule,
        req,
        None,
        |_, p| {
            on_batch(p.done);
            Ok(())
        },
        stop,
    )
}

/// Where a request's sampling stands after a batch: `done` images drawn and the random stream
/// after them (the next batch's noise, the stochastic samplers' draws). Saved, it lets a
/// stopped sampling continue where it stood ([`generate_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleProgress {
    pub done: usize,
    pub rng: Rng,
}

/// [`generate_until`] that continues an earlier, stopped call of the same request from `from`
/// (its images so far and the [`SampleProgress`] its last batch reported) and hands each batch with its
/// progress to `on_batch` (what to save to continue later). The images are an uninterrupted
/// call's, bit for bit.
pub fn generate_from(
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    req: &SampleRequest,
    from: Option<(Images, SampleProgress)>,
    mut on_batch: impl FnMut(&Images, SampleProgress) -> Result<()>,
    stop: &dyn Fn() -> bool,
) -> Result<Images> {
    let [_, h, w] = req.shape;
    let bytes = req.n.checked_mul(h * w * 3).ok_or_else(|| TrainError::Config(format!("sampling: {} images overflow memory", req.n)))?;
    let mut data = Vec::new();
    data.try_reserve_exact(bytes).map_err(|_| TrainError::Config(format!("sampling: {} images of {w}x{h} do not fit in memory", req.n)))?;
    let start = match from {
        Some((imgs, p)) => {
            if imgs.n != p.done || imgs.h != h || imgs.w != w || imgs.data.len() != p.done * h * w * 3 {
                return Err(TrainError::Config(format!(
                    "sampling: continuing at image {} needs the {} images drawn so far at {w}x{h}, got {} at {}x{}",
                    p.done, p.done, imgs.n, imgs.w, imgs.h
                )));
            }
            data.extend_from_slice(&imgs.data);
            Some(p)
        }
        None => None,
    };
    generate_batches_from(model, schedule, req, start, |batch, p| {
        data.extend_from_slice(&batch.data);
        on_batch(batch, p)?;
        if p.done < req.n && stop() { Err(TrainError::Stopped { done: p.done, total: req.n }) } else { Ok(()) }
    })?;
    Ok(Images { data, n: req.n, h, w })
}

/// Most images in one grid PNG (`sample --out FILE.png`, a run's `sample.grid`): 32×32 cells;
/// more make a picture no one looks at, of up to gigabytes for large images.
pub const MAX_GRID: usize = 1024;

/// Seed offset of the `Labels::Uniform` stream (apart from the noise's).
const LABEL_STREAM: u64 = 0x1ABE_15EE_D000;

/// Most sampler steps accepted: 100× the 1000 of the longest published
/// samplers; beyond it a time grid only costs memory and time.
pub const MAX_STEPS: usize = 100_000;

/// Checks a request before any work: positive `n`, `batch` and `steps`, a
/// class label only for a class-conditional model and within its classes,
/// a finite guidance scale only together with a class.
pub fn check_request(req: &SampleRequest) -> Result<()> {
    let bad = |m: String| Err(TrainError::Config(m));
    if req.n == 0 || req.batch == 0 {
        return bad(format!("sampling: n ({}) and batch ({}) must be positive", req.n, req.batch));
    }
    if req.steps == 0 || req.steps > MAX_STEPS {
        return bad(format!("sampling: {} steps is outside the accepted range 1..={MAX_STEPS}", req.steps));
    }
    match (req.labels, req.num_classes) {
        (Labels::None, None) => {}
        (Labels::None, Some(nc)) => {
            return bad(format!(
                "the model is class-conditional ({nc} labels): it samples with a class label for each image, and none was given"
            ));
        }
        (l, None) => return bad(format!("{l} given, but the model is unconditional (it has no classes)")),
        (Labels::Fixed(k), Some(nc)) if k < 0 || k >= nc as i64 => {
            return bad(format!("class {k} is out of range: the model's labels are 0..={}", nc as i64 - 1));
        }
        (Labels::Uniform { classes } | Labels::Cycle { classes }, Some(nc)) if classes == 0 || classes > nc => {
            return bad(format!("sampling: {classes} classes to draw labels from, the model has {nc} labels"));
        }
        _ => {}
    }
    if let Some(s) = req.cfg_scale {
        if req.labels == Labels::None {
            return bad("a guidance scale needs class labels (classifier-free guidance steers towards a label)".into());
        }
        if !s.is_finite() {
            return bad(format!("guidance scale {s} is not a finite number"));
        }
    }
    Ok(())
}

/// The class labels [`generate_batches`] gives `req`'s images, in order (`None` for an
/// unconditional request): what a sample file stores beside its images. Drawn from the
/// same seeded stream, one draw per image, so they are the labels whatever the batch size.
pub fn drawn_labels(req: &SampleRequest) -> Result<Option<Vec<i64>>> {
    req.labels.batch(0, req.n, &mut Rng::new(req.seed ^ LABEL_STREAM))
}

/// Samples `req.n` images batch by batch (see [`generate`] for the noise),
/// calling `sink(batch, done)` with each batch's images as soon as they are
/// drawn, so memory stays one batch whatever `n` is. A non-finite model
/// output is an error naming the batch, never a black image.
pub fn generate_batches(
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    req: &SampleRequest,
    mut sink: impl FnMut(&Images, usize) -> Result<()>,
) -> Result<()> {
    generate_batches_from(model, schedule, req, None, |imgs, p| sink(imgs, p.done))
}

/// [`generate_batches`] from `from` (the [`SampleProgress`] an earlier call of the same request
/// reported after one of its batches; `None`: the start), handing each batch over with the
/// progress after it.
pub fn generate_batches_from(
    model: &dyn EpsModel,
    schedule: &dyn NoiseSchedule,
    req: &SampleRequest,
    from: Option<SampleProgress>,
    mut sink: impl FnMut(&Images, SampleProgress) -> Result<()>,
) -> Result<()> {
    let _g = no_grad();
    check_request(req)?;
    let [c, h, w] = req.shape;
    let SampleProgress { mut done, mut rng } = from.unwrap_or(SampleProgress { done: 0, rng: Rng::new(req.seed) });
    if done > req.n || (done < req.n && !done.is_multiple_of(req.batch)) {
        return Err(TrainError::Config(format!(
            "sampling: cannot continue at image {done} of {} in batches of {} (not where a batch ends)",
            req.n, req.batch
        )));
    }
    let labels = drawn_labels(req)?;
    let guided;
    let model: &dyn EpsModel = match (req.cfg_scale, req.num_classes) {
        (Some(scale), Some(nc)) => {
            // U-ViT counts the null (unconditional) label in num_classes: it is the last index.
            guided = ClassifierFreeGuidance::new(model, scale, nc as i64 - 1)?;
            &guided
        }
        _ => model,
    };
    while done < req.n {
        let b = req.batch.min(req.n - done);
        let x = Tensor::randn(&[b, c, h, w], &mut rng, &Device::Cpu)?.to_device(&req.device)?;
        let y = match &labels {
            Some(l) => Some(Tensor::from_vec_i64(l[done..done + b].to_vec(), &[b], &req.device)?),
            None => None,
        };
        let opts = SamplerOptions { clip_denoised: req.clip_denoised, ..SamplerOptions::new(req.steps) };
        let out = sample(req.sampler, model, schedule, &x, y.as_ref(), &opts, &mut rng)?;
        let values = out.to_vec_f32()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(TrainError::Config(format!(
                "sampling: images {done}..{} came out with a non-finite value ({} at element {i}): the model's weights or the sampler settings are broken",
                done + b,
                values[i]
            )));
        }
        drop(values);
        let batch = Images { data: to_u8_nhwc(&out)?, n: b, h, w };
        done += b;
        sink(&batch, SampleProgress { done, rng })?;
    }
    Ok(())
}

/// [B, 3, H, W] in [−1, 1] → NHWC u8.
pub fn to_u8_nhwc(x: &Tensor) -> Result<Vec<u8>> {
    let [b, c, h, w] = match *x.shape() {
        [b, c, h, w] => [b, c, h, w],
        _ => return Err(TrainError::Config(format!("images must be [B, C, H, W], got {:?}", x.shape()))),
    };
    let v = x.permute(&[0, 2, 3, 1])?.to_vec_f32()?;
    let _ = (b, c, h, w);
    Ok(v.into_iter().map(|x| (((x + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0 + 0.5).floor() as u8).collect())
}

/// Writes the images as one PNG grid of `cols` columns, each sample shown
/// at least 64 px wide and the grid labelled with the image count and size
/// (see [`crate::figures::grid`]).
pub fn write_grid_png(path: &Path, imgs: &Images, cols: usize) -> Result<()> {
    write_labelled_grid_png(path, imgs, cols, "")
}

/// [`write_grid_png`] with `title` (e.g. the model's name) before the label.
pub fn write_labelled_grid_png(path: &Path, imgs: &Images, cols: usize, title: &str) -> Result<()> {
    crate::figures::png::save(path, &crate::figures::grid::render(imgs, cols, title)?)
}

/// [`write_labelled_grid_png`] with each sample's class label in its cell's corner
/// (`classes[i]` for image `i`; see [`crate::figures::grid::render_classes`]).
pub fn write_class_grid_png(path: &Path, imgs: &Images, cols: usize, title: &str, classes: &[i64]) -> Result<()> {
    crate::figures::png::save(path, &crate::figures::grid::render_classes(imgs, cols, title, Some(classes))?)
}

/// Writes every image as `DIR/000000.png`, ….
pub fn write_png_folder(dir: &Path, imgs: &Images) -> Result<()> {
    write_png_images(dir, imgs, 0)
}

/// Writes the images of one batch as `DIR/<first>.png`, `DIR/<first+1>.png`,
/// … (six digits at least), each atomically: what streaming callers of
/// [`generate_batches`] use.
pub fn write_png_images(dir: &Path, imgs: &Images, first: usize) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Data { path: dir.into(), msg: e.to_string() })?;
    let per = imgs.h * imgs.w * 3;
    for i in 0..imgs.n {
        let img = image::RgbImage::from_raw(imgs.w as u32, imgs.h as u32, imgs.data[i * per..(i + 1) * per].to_vec())
            .ok_or_else(|| TrainError::Config("image buffer size".into()))?;
        crate::figures::png::save(&dir.join(format!("{:06}.png", first + i)), &img)?;
    }
    Ok(())
}

/// Writes the images as an NHWC uint8 `arr_0` npz (what FID tools read).
pub fn write_npz(path: &Path, imgs: &Images) -> Result<()> {
    let u = sparsedm_fid::U8Images { data: imgs.data.clone(), n: imgs.n, height: imgs.h, width: imgs.w, channels: 3 };
    sparsedm_fid::write_images_npz(path, &u)?;
    Ok(())
}

/// Generated images as an FID image source (no file round trip).
impl sparsedm_fid::ImageSource for Images {
    fn len(&self) -> usize {
        self.n
    }
    fn image_size(&self) -> (usize, usize) {
        (self.h, self.w)
    }
    fn batches(&self, batch_size: usize) -> sparsedm_fid::Result<sparsedm_fid::BatchIter<'_>> {
        let (h, w, per) = (self.h, self.w, self.h * self.w * 3);
        let bs = batch_size.max(1);
        Ok(Box::new((0..self.n.div_ceil(bs)).map(move |b| {
            let (start, end) = (b * bs, ((b + 1) * bs).min(self.n));
            let mut data = vec![0f32; (end - start) * per];
            for (i, img) in self.data[start * per..end * per].chunks(per).enumerate() {
                for (p, px) in img.chunks(3).enumerate() {
                    for c in 0..3 {
                        data[i * per + c * h * w + p] = px[c] as f32 / 255.0;
                    }
                }
            }
            Ok(sparsedm_fid::ImageBatch { data, n: end - start, height: h, width: w })
        })))
    }
    fn describe(&self) -> String {
        format!("{} generated images of {}x{}", self.n, self.w, self.h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels of `n` images drawn in batches of `b`.
    fn labels(l: Labels, n: usize, b: usize) -> Vec<i64> {
        let mut rng = Rng::new(7 ^ LABEL_STREAM);
        let mut out = Vec::new();
        while out.len() < n {
            let k = b.min(n - out.len());
            out.extend(l.batch(out.len(), k, &mut rng).unwrap().unwrap());
        }
        out
    }

    #[test]
    fn drawn_labels_cover_the_classes_whatever_the_batch_split() {
        let uniform = Labels::Uniform { classes: 3 };
        let whole = labels(uniform, 301, 301);
        assert_eq!(whole, labels(uniform, 301, 7), "the split into batches does not change the labels");
        assert_eq!(whole, labels(uniform, 301, 64));
        let req = SampleRequest {
            n: 301,
            batch: 7,
            shape: [3, 8, 8],
            sampler: SamplerKind::Ddim,
            steps: 1,
            seed: 7,
            labels: uniform,
            cfg_scale: None,
            num_classes: Some(4),
            clip_denoised: None,
            device: Device::Cpu,
        };
        assert_eq!(drawn_labels(&req).unwrap(), Some(whole.clone()), "the labels of a whole request are those drawn batch by batch");
        for k in 0..3 {
            let count = whole.iter().filter(|&&l| l == k).count();
            assert!((70..=131).contains(&count), "label {k} drawn {count} times of 301");
        }
        assert!(whole.iter().all(|l| (0..3).contains(l)));
        assert_eq!(labels(Labels::Cycle { classes: 3 }, 7, 2), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(labels(Labels::Fixed(5), 3, 2), [5, 5, 5]);
        assert_eq!(Labels::None.batch(0, 4, &mut Rng::new(0)).unwrap(), None);
    }

    #[test]
    fn labels_must_fit_the_model() {
        let req = |labels, num_classes, cfg_scale| SampleRequest {
            n: 1,
            batch: 1,
            shape: [3, 8, 8],
            sampler: SamplerKind::DpmSolver2,
            steps: 1,
            seed: 0,
            labels,
            cfg_scale,
            num_classes,
            clip_denoised: None,
            device: Device::Cpu,
        };
        let err = |r: SampleRequest| check_request(&r).unwrap_err().to_string();
        assert!(err(req(Labels::None, Some(4), None)).contains("class-conditional (4 labels)"));
        assert!(err(req(Labels::Uniform { classes: 3 }, None, None)).contains("unconditional"));
        assert!(err(req(Labels::Uniform { classes: 5 }, Some(4), None)).contains("5 classes"));
        assert!(err(req(Labels::Fixed(4), Some(4), None)).contains("class 4 is out of range"));
        assert!(err(req(Labels::None, None, Some(1.0))).contains("needs class labels"));
        check_request(&req(Labels::Cycle { classes: 3 }, Some(4), Some(1.0))).unwrap();
        check_request(&req(Labels::None, None, None)).unwrap();
    }
}
