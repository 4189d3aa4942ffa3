//! `sparsedm fid`: FID statistics and scores compatible with pytorch-fid.
//!
//! - `sparsedm fid stats --inception W.safetensors --images SOURCE --out STATS.npz [--batch B]`
//!   runs every image of SOURCE through the FID InceptionV3 and writes μ and Σ of the pool3
//!   features as a pytorch-fid `.npz` (`mu`, `sigma`, float64).
//! - `sparsedm fid score A B [--inception W.safetensors] [--batch B]` prints `FID <value>` on
//!   its own line, where A and B are each a statistics `.npz` or an image source; when both are
//!   image sources it also prints `KID <mean> ± <std>` (torch-fidelity's subset-averaged
//!   unbiased estimate; subsets of min(1000, |A|, |B|) images).
//!
//! Image sources: a folder of PNG/JPEG files (recursive), an `.npz` with NHWC uint8 `arr_0`, a
//! CIFAR-10 binary folder (or one `.bin` file). An `.npz` is told apart by its keys: `mu` and
//! `sigma` make it statistics, `arr_0` images. The weights are pytorch-fid's
//! `pt_inception-2015-12-05-6726825d.pth` converted to safetensors with its names unchanged.
//! Progress goes to stderr (a bar only when stderr is a terminal); results to stdout.
//!
//! `--device cuda[:N]` runs InceptionV3 (preprocessing included) there, in f32 unless
//! `--precision` says otherwise (pytorch-fid computes in f32); the statistics are accumulated
//! in f64 on the host either way.

use anyhow::{Context, Result, bail};
use sparsedm_fid::{
    DEFAULT_BATCH_SIZE, ExtractOptions, Extraction, FeatureStats, FidError, ImageSource, InceptionV3, KidOptions, POOL3_DIM, Progress,
    extract_features, frechet_distance, kernel_inception_distance, npz_keys, open_image_source, read_stats_npz, write_stats_npz,
};
use sparsedm_tensor::Device;
use sparsedm_train::precision::MatmulScope;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: FidCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FidCommand {
    /// Compute the FID statistics (mu, sigma) of an image source and write them as .npz.
    Stats(StatsArgs),
    /// FID (and KID when both are images) between two statistics files or image sources.
    Score(ScoreArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  sparsedm fid stats --inception pt_inception.safetensors --images samples/ --out samples_stats.npz")]
pub struct StatsArgs {
    /// pytorch-fid Inception weights (pt_inception-2015-12-05-6726825d.pth itself, or as safetensors).
    #[arg(long)]
    pub inception: PathBuf,
    /// Image source: a PNG/JPEG folder, an NHWC uint8 `arr_0` .npz, or a CIFAR-10 binary folder.
    #[arg(long)]
    pub images: PathBuf,
    /// Output statistics file (.npz with `mu` and `sigma`, float64).
    #[arg(long)]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch: usize,
    /// Replace an existing --out file (never the --images input).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub device: super::DeviceArg,
    #[command(flatten)]
    pub precision: super::PrecisionArg,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sparsedm fid score samples_stats.npz fid_stats_cifar10_train_pytorch.npz\n  \
                        sparsedm fid score samples/ cifar-10-batches-bin/ --inception pt_inception.safetensors")]
pub struct ScoreArgs {
    /// First set: a statistics .npz (`mu`, `sigma`) or an image source.
    pub a: PathBuf,
    /// Second set: a statistics .npz (`mu`, `sigma`) or an image source.
    pub b: PathBuf,
    /// pytorch-fid Inception weights; required when A or B is an image source.
    #[arg(long)]
    pub inception: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch: usize,
    #[command(flatten)]
    pub device: super::DeviceArg,
    #[command(flatten)]
    pub precision: super::PrecisionArg,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        FidCommand::Stats(a) => stats(a),
        FidCommand::Score(a) => score(a),
    }
}

/// What a command-line operand names.
enum Operand {
    Stats(FeatureStats),
    Images(Box<dyn ImageSource + Send + Sync>),
}

/// A library error as one message: `FidError`s already include their cause in their text, so
/// anyhow's cause chain would repeat it.
fn flat(e: FidError) -> anyhow::Error {
    anyhow::Error::msg(e.to_string())
}

/// Opens `path` as statistics or as an image source (an `.npz` by its keys).
fn open_operand(path: &Path) -> Result<Operand> {
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    let is_npz = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    if is_npz && path.is_file() {
        let keys = npz_keys(path).map_err(flat).with_context(|| format!("reading {}", path.display()))?;
        let has = |k: &str| keys.iter().any(|x| x == k);
        if has("mu") || has("sigma") {
            let stats = read_stats_npz(path).map_err(flat).with_context(|| format!("reading FID statistics from {}", path.display()))?;
            return Ok(Operand::Stats(stats));
        }
        if !has("arr_0") {
            bail!("{}: neither FID statistics (keys `mu` and `sigma`) nor images (key `arr_0`); keys present: {keys:?}", path.display());
        }
    }
    let source = open_image_source(path).map_err(flat).with_context(|| format!("opening image source {}", path.display()))?;
    Ok(Operand::Images(source))
}

fn check_batch(batch: usize) -> Result<()> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    Ok(())
}

fn load_inception(path: &Path, device: Device) -> Result<InceptionV3> {
    InceptionV3::load(path, &device).map_err(flat).with_context(|| format!("loading the Inception weights {}", path.display()))
}

/// Extracts the pool3 features of `source`, reporting progress and speed on stderr.
fn extract(net: &InceptionV3, source: &dyn ImageSource, batch: usize, keep_features: bool, label: &str) -> Result<Extraction> {
    eprintln!("{label}: {}", source.describe());
    let opts = ExtractOptions { batch_size: batch, keep_features, progress: Progress::Auto, label: label.to_string() };
    let ex = extract_features(net, source, &opts)
        .map_err(flat)
        .with_context(|| format!("extracting Inception features of {}", source.describe()))?;
    eprintln!("{label}: {} images in {:.1} s ({:.2} images/s)", ex.images, ex.elapsed.as_secs_f64(), ex.images_per_second());
    Ok(ex)
}

fn stats(args: StatsArgs) -> Result<()> {
    let device = args.device.resolve()?;
    let precision = args.precision.resolve(device)?;
    check_batch(args.batch)?;
    crate::output::check_file("--out", &args.out, args.force, &[&args.images, &args.inception])?;
    let source =
        open_image_source(&args.images).map_err(flat).with_context(|| format!("opening image source {}", args.images.display()))?;
    let net = load_inception(&args.inception, device)?;
    args.device.announce();
    let _p = MatmulScope::enter(precision);
    let ex = extract(&net, source.as_ref(), args.batch, false, "images")?;
    let stats = ex.stats().map_err(flat).with_context(|| format!("statistics of {}", args.images.display()))?;
    write_stats_npz(&args.out, &stats).map_err(flat).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} ({} images, {}-d features)", args.out.display(), ex.images, stats.dim());
    Ok(())
}

fn score(args: ScoreArgs) -> Result<()> {
    let device = args.device.resolve()?;
    let precision = args.precision.resolve(device)?;
    check_batch(args.batch)?;
    let a = open_operand(&args.a)?;
    let b = open_operand(&args.b)?;
    let needs_net = matches!(a, Operand::Images(_)) || matches!(b, Operand::Images(_));
    let net = match (&args.inception, needs_net) {
        (Some(path), true) => Some(load_inception(path, device)?),
        (None, true) => {
            let which = if matches!(a, Operand::Images(_)) { &args.a } else { &args.b };
            bail!("{} is an image source: computing its statistics needs --inception W.safetensors", which.display());
        }
        (_, false) => None,
    };
    // Fail before the expensive extraction when a statistics file cannot match pool3 features.
    for (op, path) in [(&a, &args.a), (&b, &args.b)] {
        if let (Operand::Stats(s), true) = (op, needs_net)
            && s.dim() != POOL3_DIM
        {
            bail!("{} holds {}-d statistics, but Inception pool3 features are {POOL3_DIM}-d", path.display(), s.dim());
        }
    }
    let both_images = matches!(a, Operand::Images(_)) && matches!(b, Operand::Images(_));
    if needs_net {
        args.device.announce();
    }
    let _p = MatmulScope::enter(precision);
    let resolve = |op: Operand, path: &Path, label: &str| -> Result<(FeatureStats, Option<Vec<f32>>)> {
        match op {
            Operand::Stats(s) => Ok((s, None)),
            Operand::Images(src) => {
                let net = net.as_ref().context("no Inception network loaded")?;
                let ex = extract(net, src.as_ref(), args.batch, both_images, label)?;
                let stats = ex.stats().map_err(flat).with_context(|| format!("statistics of {}", path.display()))?;
                Ok((stats, ex.features))
            }
        }
    };
    let (sa, fa) = resolve(a, &args.a, "A")?;
    let (sb, fb) = resolve(b, &args.b, "B")?;
    let fid = frechet_distance(&sa, &sb)
        .map_err(flat)
        .with_context(|| format!("Fréchet distance between {} and {}", args.a.display(), args.b.display()))?;
    println!("FID {fid}");
    if let (Some(fa), Some(fb)) = (fa, fb) {
        let (na, nb) = (fa.len() / POOL3_DIM, fb.len() / POOL3_DIM);
        let subset_size = 1000.min(na).min(nb);
        if subset_size < 2 {
            eprintln!("KID skipped: it needs at least 2 images on each side");
        } else {
            let opts = KidOptions { subset_size, ..KidOptions::default() };
            let kid = kernel_inception_distance(&fa, &fb, POOL3_DIM, &opts).map_err(flat).context("kernel inception distance")?;
            if subset_size < 1000 {
                eprintln!("KID over {} subsets of {subset_size} images (fewer than torch-fidelity's 1000 available)", opts.subsets);
            }
            println!("KID {:.6e} ± {:.6e}", kid.mean, kid.std);
        }
    }
    Ok(())
}
