//! One TOML file per training run. Section and field names follow U-ViT's
//! `configs/*.py` (`train.n_steps`, `optimizer.lr`, `lr_scheduler.warmup_steps`,
//! `nnet.*` = the model constructor's keyword arguments, …) so a U-ViT user
//! recognises every knob. `--set key=value` overrides any field by its dotted
//! path before the file is checked.

use crate::error::{Result, TrainError};
use crate::lr::LrSchedule;
use crate::vocab::{DatasetKind, LrScheduleKind, OptimizerKind, Precision, SparseMethod, Teacher};
use serde::{Deserialize, Serialize};
use sparsedm_diffusion::{SamplerKind, ScheduleKind};
use sparsedm_layers::{NmPattern, Policy, ProgressiveSchedule};
use std::path::Path;

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seed of everything random (data order, noise, init, dropout).
    pub seed: u64,
    /// `"uvit"` or `"ddpm-unet"`.
    pub arch: String,
    /// The model constructor's keyword arguments (as in U-ViT's `config.nnet`).
    pub nnet: toml::Table,
    pub dataset: DatasetConfig,
    pub train: TrainSection,
    pub optimizer: OptimizerConfig,
    pub lr_scheduler: LrSchedulerConfig,
    /// Sparse fine-tuning; absent for dense training.
    #[serde(default)]
    pub sparse: Option<SparseConfig>,
    #[serde(default)]
    pub sample: SampleConfig,
    #[serde(default)]
    pub fid: Option<FidConfig>,
}

/// Where images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// `"shapes"` (embedded, no download), `"cifar10"`, `"celeba64"` or `"folder"`.
    pub name: DatasetKind,
    /// Folder of the data (CIFAR-10 binaries, or images) for the non-embedded sets.
    #[serde(default)]
    pub path: Option<String>,
    /// Image size of the embedded set (16 or 32) or of `folder` after resizing.
    #[serde(default)]
    pub resolution: Option<usize>,
    /// Number of images of the embedded set.
    #[serde(default = "default_shapes_len")]
    pub len: usize,
    /// Random horizontal flip (U-ViT: on).
    #[serde(default = "yes")]
    pub random_flip: bool,
    /// Classifier-free guidance training (U-ViT's `dataset.cfg = True, p_uncond`): each label is
    /// replaced by the null label (the model's last one, `nnet.num_classes − 1`, which must then be
    /// the dataset's class count) with this probability. 0 (the default): labels are kept as they
    /// are. Only for a class-conditional model on a labelled dataset.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub p_uncond: f32,
    /// `folder` only: each immediate sub-folder of `dataset.path` is a class (sorted by name,
    /// numbered from 0: torchvision's `ImageFolder`, U-ViT's ImageNet-64 data), its images
    /// labelled with it — the labels a class-conditional model trains on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub class_folders: bool,
}

impl DatasetConfig {
    /// The number of class labels the dataset's images carry (0: unlabelled), without decoding
    /// them: fixed for the embedded and CIFAR-10 sets; with `class_folders`, the number of
    /// sub-folders of `dataset.path` (an error when it cannot be listed).
    pub fn label_classes(&self) -> Result<usize> {
        match (self.name, &self.path) {
            (DatasetKind::Folder, Some(path)) if self.class_folders => Ok(crate::data::folder::class_folders(Path::new(path))?.len()),
            (kind, _) => Ok(kind.label_classes()),
        }
    }
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// The training loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub n_steps: u64,
    /// Global batch size (split into `grad_accum` micro-batches).
    pub batch_size: usize,
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Clip the global gradient norm to this (U-ViT: none).
    #[serde(default)]
    pub grad_clip: Option<f32>,
    /// EMA decay (U-ViT's default 0.9999).
    #[serde(default = "default_ema")]
    pub ema_rate: f32,
    #[serde(default = "default_log")]
    pub log_interval: u64,
    /// Steps between sample grids (0: never).
    #[serde(default)]
    pub sample_interval: u64,
    /// Steps between checkpoints (a final one is always written).
    #[serde(default = "default_save")]
    pub save_interval: u64,
    /// Checkpoints kept (oldest removed first; the best-by-FID is kept apart).
    #[serde(default = "default_keep")]
    pub keep_last: usize,
    /// `"vp-linear"` (U-ViT, continuous) or `"ddpm-linear"` (discrete, Ho et al.).
    #[serde(default = "default_schedule", with = "crate::vocab::as_string")]
    pub schedule: ScheduleKind,
    /// Start from these weights (a safetensors model checkpoint).
    #[serde(default)]
    pub init: Option<String>,
    /// Precision of the matrix products: `"f32"`, `"tf32"` or `"bf16"` (f32
    /// master weights, bf16 matmul operands with f32 accumulation). Unset:
    /// bf16 on a GPU, f32 on the CPU (which computes in f32 only, so tf32 and
    /// bf16 there are an error). The one setting that may change on
    /// `--resume`, with the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
}

/// AdamW (U-ViT: lr 2e-4, wd 0.03, betas (0.99, 0.999)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    #[serde(default)]
    pub name: OptimizerKind,
    pub lr: f32,
    pub weight_decay: f32,
    pub betas: (f32, f32),
    #[serde(default = "default_eps")]
    pub eps: f32,
}

/// U-ViT's "customized" schedule (linear warm-up, then constant) or cosine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedulerConfig {
    #[serde(default = "default_customized")]
    pub name: LrScheduleKind,
    pub warmup_steps: u64,
    /// Final factor of the cosine schedule.
    #[serde(default)]
    pub min_factor: f32,
}

/// SparseDM fine-tuning and its baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseConfig {
    /// N:M pattern, e.g. `"2:4"` (the progressive method takes its
    /// patterns from `progressive` instead).
    #[serde(with = "crate::vocab::as_string")]
    pub pattern: NmPattern,
    /// `"srste"` (the paper), `"ste"`, `"fixed"` (apex ASP; alias `"asp"`), `"progressive"`.
    #[serde(default = "default_method")]
    pub method: SparseMethod,
    /// SR-STE decay λ.
    #[serde(default = "default_lambda")]
    pub lambda: f32,
    /// Which layers: `"sparsedm-uvit"`, `"asp"`, `"all"`, or name globs;
    /// when left out, the paper's layers for the run's model ([`paper_policy`]:
    /// SparseDM's U-ViT layers, every layer of a UNet).
    #[serde(default = "default_policy", with = "crate::vocab::as_string")]
    pub policy: Policy,
    /// Transposable 2:4 masks for the fixed (ASP) method.
    #[serde(default)]
    pub transposable: bool,
    /// apex ASP's channel permutations before the fixed masks are computed
    /// (on by default, as `ASP.prune_trained_model` leaves
    /// `allow_permutation` on): input channels are reordered together with
    /// the layers producing them, so the masks keep more magnitude while
    /// the network's function before pruning is unchanged. Used by the
    /// fixed (ASP) method on a fresh run, not with transposable masks
    /// (apex's search targets 1-D N:M masks). Written only when off.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub permute: bool,
    /// Progressive schedule, e.g. `"15:16@0,7:8@100000,3:4@200000,2:4@300000"`.
    #[serde(default, with = "crate::vocab::opt_as_string", skip_serializing_if = "Option::is_none")]
    pub progressive: Option<ProgressiveSchedule>,
    /// Knowledge transfer: `"init"` (the dense starting checkpoint, the
    /// paper's default), a checkpoint path, or `"none"`.
    #[serde(default = "default_teacher")]
    pub teacher: Teacher,
    /// Weight of the ε-MSE term.
    #[serde(default = "one_f")]
    pub w_diff: f32,
    /// Weight of the teacher-MSE term.
    #[serde(default = "default_w_kt")]
    pub w_kt: f32,
}

impl SparseConfig {
    /// `method` at `pattern` with the defaults a TOML `[sparse]` section
    /// gets for every field it leaves out (the paper's λ, policy, teacher
    /// and loss weights), for code that builds runs as values.
    pub fn new(pattern: NmPattern, method: SparseMethod) -> Self {
        SparseConfig {
            pattern,
            method,
            lambda: default_lambda(),
            policy: default_policy(),
            transposable: false,
            permute: true,
            progressive: None,
            teacher: default_teacher(),
            w_diff: one_f(),
            w_kt: default_w_kt(),
        }
    }
}

/// Sampling for preview grids and `sparsedm sample` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    #[serde(default = "default_sampler", with = "crate::vocab::as_string")]
    pub sampler: SamplerKind,
    #[serde(default = "default_sample_steps")]
    pub steps: usize,
    /// Images in a preview grid.
    #[serde(default = "default_grid")]
    pub grid: usize,
    /// Classifier-free guidance scale (class-conditional models).
    #[serde(default)]
    pub cfg_scale: Option<f32>,
    /// Clip x̂₀ to [−1, 1] inside samplers that form it (DDPM, DDIM, DPM-Solver++);
    /// unset: each sampler's reference default.
    #[serde(default)]
    pub clip_denoised: Option<bool>,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            sampler: default_sampler(),
            steps: default_sample_steps(),
            grid: default_grid(),
            cfg_scale: None,
            clip_denoised: None,
        }
    }
}

/// FID during training (U-ViT: 10k samples, 50-step DPM-Solver).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FidConfig {
    /// Converted `pt_inception-2015-12-05-6726825d.pth` (safetensors).
    pub inception: String,
    /// Reference statistics (`.npz`, pytorch-fid format).
    pub reference: String,
    /// Steps between FID evaluations; the run's last step is always evaluated too.
    #[serde(default = "default_fid_every")]
    pub every: u64,
    #[serde(default = "default_fid_n")]
    pub n_samples: usize,
    #[serde(default = "default_fid_sampler", with = "crate::vocab::as_string")]
    pub sampler: SamplerKind,
    #[serde(default = "default_fid_steps")]
    pub steps: usize,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn one_f() -> f32 {
    1.0
}
fn default_shapes_len() -> usize {
    4096
}
fn default_ema() -> f32 {
    0.9999
}
fn default_log() -> u64 {
    10
}
fn default_save() -> u64 {
    1000
}
fn default_keep() -> usize {
    3
}
fn default_schedule() -> ScheduleKind {
    ScheduleKind::VpLinear
}
fn default_eps() -> f32 {
    1e-8
}
fn default_customized() -> LrScheduleKind {
    LrScheduleKind::Customized
}
fn default_method() -> SparseMethod {
    SparseMethod::SrSte
}
fn default_lambda() -> f32 {
    2e-4
}
fn is_yes(b: &bool) -> bool {
    *b
}
fn default_policy() -> Policy {
    Policy::named(sparsedm_layers::NamedPolicy::SparseDmUvit)
}

/// The layers the paper's code sparsifies in a model of `arch`: SparseDM's
/// U-ViT layers (each block's `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`)
/// for a U-ViT, every Linear/Conv2d for a UNet (its DDPM code masks them
/// all). What `[sparse] policy`, `prune --policy` and `bench --pattern` fall
/// back to.
pub fn paper_policy(arch: &str) -> Policy {
    use sparsedm_layers::NamedPolicy;
    Policy::named(if arch == "uvit" { NamedPolicy::SparseDmUvit } else { NamedPolicy::All })
}
fn default_teacher() -> Teacher {
    Teacher::Init
}
fn default_w_kt() -> f32 {
    0.1
}
fn default_sampler() -> SamplerKind {
    SamplerKind::DpmSolver2
}
fn default_sample_steps() -> usize {
    50
}
fn default_grid() -> usize {
    64
}
fn default_fid_every() -> u64 {
    50_000
}
fn default_fid_n() -> usize {
    10_000
}
/// U-ViT's in-training FID sampler (DPM-Solver-fast, 50 steps).
fn default_fid_sampler() -> SamplerKind {
    SamplerKind::DpmSolverFast
}
fn default_fid_steps() -> usize {
    50
}

/// The built-in presets, by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("cifar10_uvit_small", include_str!("../presets/cifar10_uvit_small.toml")),
    ("celeba64_uvit_small", include_str!("../presets/celeba64_uvit_small.toml")),
    ("cifar10_ddpm", include_str!("../presets/cifar10_ddpm.toml")),
    ("cifar10_uvit_small_sparsedm_2of4", include_str!("../presets/cifar10_uvit_small_sparsedm_2of4.toml")),
    ("demo_shapes_uvit", include_str!("../presets/demo_shapes_uvit.toml")),
    ("demo_shapes_unet", include_str!("../presets/demo_shapes_unet.toml")),
];

impl RunConfig {
    /// Parses TOML text, applies `key=value` overrides (values in TOML
    /// syntax; bare words are taken as strings), then checks the result.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut doc: toml::Table = text.parse().map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        for o in overrides {
            apply_override(&mut doc, o)?;
        }
        // A [sparse] section without a policy takes the paper's layers for
        // the model (written out, so the stored config says which).
        if let (Some(toml::Value::String(arch)), Some(toml::Value::Table(sparse))) = (doc.get("arch").cloned(), doc.get_mut("sparse"))
            && !sparse.contains_key("policy")
        {
            sparse.insert("policy".into(), toml::Value::String(paper_policy(&arch).to_string()));
        }
        let cfg: RunConfig = toml::Value::Table(doc).try_into().map_err(|e| TrainError::Config(field_error(origin, &e.to_string())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a file, or a preset when `path` names one.
    pub fn load(path: &str, overrides: &[String]) -> Result<Self> {
        if let Some((_, text)) = PRESETS.iter().find(|p| p.0 == path) {
            return Self::parse(text, &format!("preset {path}"), overrides);
        }
        let text = std::fs::read_to_string(Path::new(path)).map_err(|e| TrainError::Data {
            path: path.into(),
            msg: format!("cannot read the run config ({e}); presets: {}", preset_names()),
        })?;
        Self::parse(&text, path, overrides)
    }

    /// The model keyword arguments as JSON (what the model registry takes).
    pub fn nnet_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(&self.nnet).map_err(|e| TrainError::Config(format!("nnet: {e}")))
    }

    /// The learning-rate schedule of this run (the cosine decay ends at
    /// `train.n_steps`).
    pub fn lr_schedule(&self) -> LrSchedule {
        let l = &self.lr_scheduler;
        match l.name {
            LrScheduleKind::Customized => LrSchedule::WarmupConstant { warmup: l.warmup_steps },
            LrScheduleKind::Cosine => {
                LrSchedule::WarmupCosine { warmup: l.warmup_steps, total: self.train.n_steps, min_factor: l.min_factor }
            }
            LrScheduleKind::Constant => LrSchedule::Constant,
        }
    }

    /// The whole config as TOML (stored in checkpoints).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| TrainError::Config(e.to_string()))
    }

    /// Checks what the field types cannot: positive sizes, a data path
    /// where one is read, a sparse section whose fields fit its method.
    /// [`Self::parse`] runs it; code that builds or edits a config as a
    /// value runs it before use.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.train.batch_size == 0 || self.train.grad_accum == 0 || !self.train.batch_size.is_multiple_of(self.train.grad_accum) {
            return bad(format!(
                "train.batch_size {} must be a positive multiple of train.grad_accum {}",
                self.train.batch_size, self.train.grad_accum
            ));
        }
        if !(0.0..=1.0).contains(&self.train.ema_rate) {
            return bad(format!("train.ema_rate {} must be in [0, 1]", self.train.ema_rate));
        }
        if self.dataset.name.needs_path() && self.dataset.path.is_none() {
            return bad(format!("dataset.path is required for dataset {:?}", self.dataset.name));
        }
        if self.dataset.class_folders && self.dataset.name != DatasetKind::Folder {
            return bad(format!(
                "dataset.class_folders applies to dataset.name = \"folder\" (class sub-folders), not {:?}, whose labels are fixed",
                self.dataset.name.name()
            ));
        }
        if let Some(s) = &self.sparse {
            match (s.method, &s.progressive) {
                (SparseMethod::Progressive, None) => {
                    return bad("sparse.method = \"progressive\" needs sparse.progressive (e.g. \"15:16@0,7:8@1000,2:4@2000\")".into());
                }
                (SparseMethod::SrSte | SparseMethod::Ste | SparseMethod::Fixed, Some(p)) => {
                    return bad(format!(
                        "sparse.progressive = {:?} is only used by sparse.method = \"progressive\", not {:?}: remove one of them",
                        p.to_string(),
                        s.method.name()
                    ));
                }
                (SparseMethod::Progressive, Some(p)) => {
                    // The run must end at the pattern it is named for, trained for at least a step.
                    let last = p.stages().last().copied().ok_or_else(|| TrainError::Config("sparse.progressive has no stage".into()))?;
                    if last.pattern != s.pattern {
                        return bad(format!(
                            "sparse.pattern = {} but sparse.progressive = {:?} ends at {}: the run ends at its last stage's pattern; make them agree",
                            s.pattern,
                            p.to_string(),
                            last.pattern
                        ));
                    }
                    if last.start >= self.train.n_steps {
                        return bad(format!(
                            "sparse.progressive = {:?}: its last stage ({}@{}) starts at or after train.n_steps = {}, so the run would end at {}, not {}",
                            p.to_string(),
                            last.pattern,
                            last.start,
                            self.train.n_steps,
                            p.pattern_at(self.train.n_steps.saturating_sub(1)),
                            last.pattern
                        ));
                    }
                }
                _ => {}
            }
            if s.transposable && s.method != SparseMethod::Fixed {
                return bad(format!(
                    "sparse.transposable = true needs sparse.method = \"fixed\" (ASP's transposable masks), not {:?}",
                    s.method.name()
                ));
            }
            if s.teacher == Teacher::Init && self.train.init.is_none() {
                return bad(
                    "sparse.teacher = \"init\" needs train.init (the dense starting checkpoint); or set sparse.teacher = \"none\"".into()
                );
            }
        }
        crate::validate::check_ranges(self)
    }
}

/// One line naming the origin and the field: `origin: sparse.method:
/// unknown variant …` (the TOML error puts the field on a second line).
fn field_error(origin: &str, e: &str) -> String {
    let e = e.trim_end();
    match e.rsplit_once("\nin `") {
        Some((msg, key)) => format!("{origin}: {}: {}", key.trim_end_matches('`'), msg.replace('\n', " ")),
        None => format!("{origin}: {}", e.replace('\n', " ")),
    }
}

/// The preset names, comma-separated.
pub fn preset_names() -> String {
    PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
}

/// Sets `a.b.c = value` in a TOML table.
fn apply_override(doc: &mut toml::Table, o: &str) -> Result<()> {
    let (key, raw) = o.split_once('=').ok_or_else(|| TrainError::Config(format!("--set {o:?}: expected key=value")))?;
    let value: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut table = doc;
    for p in &parts[..parts.len() - 1] {
        table = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| TrainError::Config(format!("--set {key}: {p} is not a table")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_overrides_apply() {
        for (name, _) in PRESETS {
            RunConfig::load(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let c = RunConfig::load("cifar10_uvit_small_sparsedm_2of4", &["train.n_steps=10".into(), "sparse.method=ste".into()]).unwrap();
        assert_eq!(c.train.n_steps, 10);
        assert_eq!(c.sparse.as_ref().unwrap().method.name(), "ste");
        assert_eq!(c.train.batch_size, 128);
        assert_eq!(c.optimizer.betas, (0.99, 0.999));
        assert!(RunConfig::load("cifar10_uvit_small", &["train.nope=1".into()]).is_err(), "unknown keys are refused");
        assert!(RunConfig::load("cifar10_uvit_small", &["train.batch_size=0".into()]).is_err());
        assert!(RunConfig::load("no_such_preset_or_file", &[]).unwrap_err().to_string().contains("presets:"));
    }

    /// A `[sparse]` section without a policy gets the paper's layers for the run's model
    /// (SparseDM's U-ViT layers, every layer of a UNet), written out in the stored config; a
    /// policy given (in the file or by --set) is kept.
    #[test]
    fn a_sparse_section_without_a_policy_takes_the_papers_layers_for_the_model() {
        let sparse = ["sparse.pattern=\"2:4\"".to_string(), "sparse.teacher=\"none\"".to_string()];
        let policy = |preset: &str, extra: &[&str]| {
            let sets: Vec<String> = sparse.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect();
            let c = RunConfig::load(preset, &sets).unwrap();
            let again = RunConfig::parse(&c.to_toml().unwrap(), "stored", &[]).unwrap();
            let p = c.sparse.as_ref().unwrap().policy.to_string();
            assert_eq!(again.sparse.unwrap().policy.to_string(), p, "stored as it was resolved");
            assert!(c.to_toml().unwrap().contains(&format!("policy = \"{p}\"")));
            p
        };
        assert_eq!(policy("demo_shapes_uvit", &[]), "sparsedm-uvit");
        assert_eq!(policy("demo_shapes_unet", &[]), "all");
        assert_eq!(policy("cifar10_ddpm", &[]), "all");
        assert_eq!(policy("demo_shapes_unet", &["sparse.policy=\"asp\""]), "asp");
        assert_eq!(policy("demo_shapes_uvit", &["sparse.policy=\"*.attn.*\""]), "*.attn.*");
        assert_eq!(paper_policy("uvit").to_string(), "sparsedm-uvit");
        assert_eq!(paper_policy("ddpm-unet").to_string(), "all");
    }
}
