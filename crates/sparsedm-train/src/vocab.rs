//! The typed vocabulary of run configs: every field that names a choice
//! (sparse method, teacher, learning-rate schedule, dataset, optimizer, matmul precision)
//! deserializes into an enum here, and the fields spelled as structured
//! strings (`"2:4"`, a policy, a progressive schedule, a noise schedule)
//! deserialize into the types that own their syntax through [`as_string`].
//!
//! Why: a misspelt value must stop the run at config time with the list of
//! what is accepted, and code that acts on a choice matches an enum
//! exhaustively, so a new method cannot be forgotten in one place and fall
//! through to another method's behaviour. The TOML spellings are the ones
//! the presets and `--set` have always used.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sparsedm_diffusion::{SamplerKind, ScheduleKind};
use sparsedm_layers::{ModeKind, NmPattern, Policy, ProgressiveSchedule};
use std::fmt;
use std::str::FromStr;

/// How sparse fine-tuning trains its masks (`sparse.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparseMethod {
    /// `srste` (alias `sr-ste`, the paper's spelling): SR-STE, the paper's method — masks
    /// recomputed from |w| every forward, straight-through gradient plus the decay λ(1 − m)⊙w.
    #[serde(rename = "srste", alias = "sr-ste")]
    SrSte,
    /// `ste`: the plain straight-through estimator (no decay).
    Ste,
    /// `fixed` (alias `asp`): apex ASP's one-shot magnitude masks, kept fixed.
    #[serde(alias = "asp")]
    Fixed,
    /// `progressive`: the ratio follows `sparse.progressive` stage by
    /// stage, each stage with SR-STE masks.
    Progressive,
}

impl SparseMethod {
    /// Every method, in documentation order.
    pub const ALL: [SparseMethod; 4] = [SparseMethod::SrSte, SparseMethod::Ste, SparseMethod::Fixed, SparseMethod::Progressive];

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            SparseMethod::SrSte => "srste",
            SparseMethod::Ste => "ste",
            SparseMethod::Fixed => "fixed",
            SparseMethod::Progressive => "progressive",
        }
    }

    /// The layer mode this method gives the selected layers (without the
    /// pattern): SR-STE with `lambda` for `srste` and the progressive
    /// stages, STE, or fixed masks (`transposable` 2:4 if asked).
    pub fn mode_kind(self, lambda: f32, transposable: bool) -> ModeKind {
        match self {
            SparseMethod::SrSte | SparseMethod::Progressive => ModeKind::SrSte { lambda },
            SparseMethod::Ste => ModeKind::Ste,
            SparseMethod::Fixed => ModeKind::Fixed { transposable },
        }
    }
}

impl fmt::Display for SparseMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The frozen teacher of knowledge transfer (`sparse.teacher`).
///
/// Spelled `"init"` (the dense starting checkpoint `train.init`, the
/// paper's default), `"none"`, or a checkpoint path. A path must look like
/// one — contain `/` or `\`, or have an extension such as `.safetensors` —
/// so that a misspelt keyword (`"inti"`) is refused instead of being taken
/// for a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Teacher {
    /// The dense checkpoint the run starts from (`train.init`).
    Init,
    /// No teacher: the plain ε-MSE loss.
    None,
    /// This checkpoint (e.g. an earlier sparse model, chaining toward
    /// higher sparsity).
    Checkpoint(String),
}

impl Teacher {
    /// What the field accepts, for error messages.
    pub const ACCEPTED: &'static str =
        "init (the dense starting checkpoint train.init), none, or a checkpoint path (containing / or an extension such as .safetensors)";
}

impl fmt::Display for Teacher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Teacher::Init => f.write_str("init"),
            Teacher::None => f.write_str("none"),
            Teacher::Checkpoint(p) => f.write_str(p),
        }
    }
}

impl FromStr for Teacher {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "init" => Ok(Teacher::Init),
            "none" => Ok(Teacher::None),
            p if looks_like_path(p) => Ok(Teacher::Checkpoint(p.to_string())),
            _ => Err(format!("unknown teacher {s:?}")),
        }
    }
}

/// Whether `s` reads as a file path rather than a keyword.
fn looks_like_path(s: &str) -> bool {
    s.contains('/') || s.contains('\\') || std::path::Path::new(s).extension().is_some_and(|e| !e.is_empty())
}

impl Spelled for Teacher {
    fn accepted() -> String {
        Teacher::ACCEPTED.into()
    }
}

impl Serialize for Teacher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        as_string::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Teacher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        as_string::deserialize(d)
    }
}

/// The learning-rate schedule (`lr_scheduler.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduleKind {
    /// U-ViT's "customized": linear warm-up, then constant.
    Customized,
    /// Linear warm-up, then cosine decay to `min_factor` at `train.n_steps`.
    Cosine,
    /// The base rate throughout.
    Constant,
}

/// Where images come from (`dataset.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// The embedded shapes set (no download).
    Shapes,
    /// CIFAR-10's binary distribution in `dataset.path`.
    Cifar10,
    /// CelebA images in `dataset.path`, U-ViT's 64×64 crop.
    Celeba64,
    /// Any folder of PNG/JPEG images (resized to `dataset.resolution` if given).
    Folder,
}

impl DatasetKind {
    /// Whether the images are read from `dataset.path`.
    pub fn needs_path(self) -> bool {
        self != DatasetKind::Shapes
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Shapes => "shapes",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Celeba64 => "celeba64",
            DatasetKind::Folder => "folder",
        }
    }

    /// The number of class labels its images carry (0: unlabelled), known without opening
    /// the data: what `sample` draws labels from for a class-conditional run's model.
    /// Each dataset's `Dataset::num_classes` returns the same number; a `folder` with
    /// `dataset.class_folders` counts its sub-folders (`DatasetConfig::label_classes`).
    pub fn label_classes(self) -> usize {
        match self {
            DatasetKind::Shapes => crate::data::shapes::CLASSES,
            DatasetKind::Cifar10 => crate::data::cifar::CLASSES,
            DatasetKind::Celeba64 | DatasetKind::Folder => 0,
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The optimizer (`optimizer.name`); AdamW with PyTorch's semantics is the
/// one the reference recipes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum OptimizerKind {
    #[default]
    #[serde(rename = "adamw")]
    AdamW,
}

/// The precision of a run's matrix products (`train.precision`), and of
/// the sampling commands' `--precision`.
///
/// f32 master weights, activations, reductions and optimizer state in every
/// mode; only the GEMMs (linear, matmul, attention, conv2d) change: `tf32`
/// runs f32 operands on TF32 tensor cores, `bf16` casts the operands to bf16
/// with f32 accumulation and output (PyTorch's autocast for matmuls; the
/// mechanism is the CUDA backend's [`sparsedm_tensor::MatmulPrecision`]).
/// CPU products are f32 only, so `tf32` and `bf16` need a CUDA device.
/// Unset in a run config: `bf16` on a GPU, `f32` on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Exact f32 products: the CPU's arithmetic, the parity reference.
    F32,
    /// f32 operands on TF32 tensor cores (10-bit mantissa products).
    Tf32,
    /// bf16 operands, f32 accumulation and output.
    Bf16,
}

impl Precision {
    /// Every precision, in documentation order.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Tf32, Precision::Bf16];

    /// The config and command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The CUDA backend's setting for this precision.
    pub fn matmul(self) -> sparsedm_tensor::MatmulPrecision {
        match self {
            Precision::F32 => sparsedm_tensor::MatmulPrecision::F32,
            Precision::Tf32 => sparsedm_tensor::MatmulPrecision::Tf32,
            Precision::Bf16 => sparsedm_tensor::MatmulPrecision::Bf16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown precision {s:?}; expected {}", <Precision as Spelled>::accepted()))
    }
}

impl Spelled for Precision {
    fn accepted() -> String {
        "f32, tf32 or bf16 (bf16: bf16 matmul operands with f32 accumulation; tf32 and bf16 need a CUDA device)".into()
    }
}

/// A type spelled as a string in configs, with the accepted forms named
/// for error messages.
pub trait Spelled: FromStr + fmt::Display {
    /// What the string may be, e.g. "N:M with 1 <= N <= M <= 32, such as 2:4".
    fn accepted() -> String;
}

impl Spelled for NmPattern {
    fn accepted() -> String {
        format!("N:M with 1 <= N <= M <= {}, such as 2:4", sparsedm_layers::MAX_M)
    }
}

impl Spelled for Policy {
    fn accepted() -> String {
        "sparsedm-uvit, asp, all, or layer-name globs such as *.attn.* (comma-separated; ! excludes)".into()
    }
}

impl Spelled for ProgressiveSchedule {
    fn accepted() -> String {
        "N:M@STEP stages separated by commas, such as 15:16@0,7:8@1000,2:4@2000".into()
    }
}

impl Spelled for SamplerKind {
    fn accepted() -> String {
        SamplerKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    }
}

impl Spelled for ScheduleKind {
    fn accepted() -> String {
        ScheduleKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    }
}

/// Serde for [`Spelled`] values: written with `Display`, read with
/// `FromStr`; a value that does not parse is an error quoting it, the
/// parser's reason and the accepted forms. Use as
/// `#[serde(with = "crate::vocab::as_string")]`.
pub mod as_string {
    use super::Spelled;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: Spelled,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse::<T>().map_err(|e| {
            let (why, accepted) = (e.to_string(), T::accepted());
            if why.contains(&accepted) {
                D::Error::custom(format!("{s:?} is not accepted ({why})"))
            } else {
                D::Error::custom(format!("{s:?} is not accepted ({why}); expected {accepted}"))
            }
        })
    }
}

/// [`as_string`] for optional fields (absent or a string).
pub mod opt_as_string {
    use super::Spelled;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;

    pub fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: Spelled,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        #[derive(Deserialize)]
        struct Wrap<T: Spelled>(#[serde(deserialize_with = "super::as_string::deserialize")] T)
        where
            T::Err: Display;
        Ok(Option::<Wrap<T>>::deserialize(d)?.map(|w| w.0))
    }
}
