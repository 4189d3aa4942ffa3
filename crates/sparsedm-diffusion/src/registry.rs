//! Building a model by architecture name from the reference constructor's
//! keyword arguments, as JSON: the one entry point the CLI commands
//! (`forward`, `macs`, `prune`, …) and the trainer share, so they all accept
//! the same config files.
//!
//! A config file holds the kwargs either at its top level
//! (`{"img_size": 32, "patch_size": 2, …}`) or under a `"config"` key, as
//! the reference fixtures do (`{"config": {…}, "model": "…", …}`; the other
//! keys are then ignored).
//!
//! ```
//! use sparsedm_diffusion::registry::{build_model, Arch};
//! use sparsedm_layers::ParamStore;
//! use sparsedm_tensor::Device;
//! let cfg = serde_json::json!({"config": {"img_size": 8, "patch_size": 2, "embed_dim": 16,
//!     "depth": 2, "num_heads": 2}});
//! let store = ParamStore::new(Device::Cpu, 0);
//! let model = build_model("uvit".parse::<Arch>()?, &cfg, &store)?;
//! # let _ = model;
//! # Ok::<(), sparsedm_diffusion::DiffusionError>(())
//! ```

use crate::error::{DiffusionError, Result};
use crate::macs::MacReport;
use crate::model::EpsModel;
use crate::unet::{UNet, UNetConfig};
use crate::uvit::{UViT, UViTConfig};
use sparsedm_layers::ParamStore;
use std::path::Path;
use std::str::FromStr;

/// The model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// baofff/U-ViT `libs/uvit.py` (`"uvit"`).
    UViT,
    /// pesser/pytorch_diffusion `model.py`, Ho et al.'s UNet (`"ddpm-unet"`).
    DdpmUNet,
}

impl Arch {
    /// Every architecture, for help texts.
    pub const ALL: [Arch; 2] = [Arch::UViT, Arch::DdpmUNet];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::UViT => "uvit",
            Arch::DdpmUNet => "ddpm-unet",
        }
    }

    /// The key of the time input in an inputs file (`sparsedm forward`):
    /// the reference forward's argument name.
    pub fn time_input_key(self) -> &'static str {
        match self {
            Arch::UViT => "input.timesteps",
            Arch::DdpmUNet => "input.t",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "uvit" => Ok(Arch::UViT),
            "ddpm-unet" => Ok(Arch::DdpmUNet),
            other => Err(DiffusionError::Config(format!("unknown architecture {other:?}: expected \"uvit\" or \"ddpm-unet\""))),
        }
    }
}

/// The kwargs object of a config document: its `"config"` member when it
/// has one, else the document itself.
pub fn config_kwargs(doc: &serde_json::Value) -> &serde_json::Value {
    match doc.get("config") {
        Some(inner) if inner.is_object() => inner,
        _ => doc,
    }
}

/// The safetensors metadata key under which a model file written without
/// a run config (a pruned or exported official checkpoint) records its
/// model: [`ModelConfig::to_metadata`].
pub const MODEL_METADATA_KEY: &str = "sparsedm.model";

/// A parsed, validated configuration of either family.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    UViT(UViTConfig),
    DdpmUNet(UNetConfig),
}

impl ModelConfig {
    /// Parses the kwargs of `arch` from a config document (top level or
    /// under `"config"`). Unknown keys, missing required keys and invalid
    /// values are errors.
    pub fn from_json(arch: Arch, doc: &serde_json::Value) -> Result<Self> {
        let kwargs = config_kwargs(doc);
        if !kwargs.is_object() {
            return Err(DiffusionError::Config(format!("expected a JSON object of {arch} keyword arguments, got {kwargs}")));
        }
        Ok(match arch {
            Arch::UViT => ModelConfig::UViT(UViTConfig::from_json(kwargs)?),
            Arch::DdpmUNet => ModelConfig::DdpmUNet(UNetConfig::from_json(kwargs)?),
        })
    }

    /// Names of the published configurations, for [`ModelConfig::preset`].
    pub const PRESETS: [&'static str; 4] = ["cifar10_uvit_small", "celeba64_uvit_small", "imagenet256_uvit_large", "cifar10_ddpm"];

    /// A published configuration by name (see [`ModelConfig::PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "cifar10_uvit_small" => ModelConfig::UViT(UViTConfig::cifar10_uvit_small()),
            "celeba64_uvit_small" => ModelConfig::UViT(UViTConfig::celeba64_uvit_small()),
            "imagenet256_uvit_large" => ModelConfig::UViT(UViTConfig::imagenet256_uvit_large()),
            "cifar10_ddpm" => ModelConfig::DdpmUNet(UNetConfig::cifar10_ddpm()),
            other => return Err(DiffusionError::Config(format!("unknown preset {other:?}: expected one of {}", Self::PRESETS.join(", ")))),
        })
    }

    /// The constructor kwargs as JSON (what [`ModelConfig::from_json`] reads).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ModelConfig::UViT(c) => serde_json::to_value(c),
            ModelConfig::DdpmUNet(c) => serde_json::to_value(c),
        }
        .unwrap_or(serde_json::Value::Null)
    }

    /// The model description a model file records in its safetensors
    /// metadata under [`MODEL_METADATA_KEY`]: `{"arch": …, "config": {…}}`,
    /// so that the commands reading the file need no `--arch`/`--config`.
    pub fn to_metadata(&self) -> String {
        serde_json::json!({"arch": self.arch().name(), "config": self.to_json()}).to_string()
    }

    /// Parses a description written by [`ModelConfig::to_metadata`];
    /// `origin` names the file in errors.
    pub fn from_metadata(text: &str, origin: &str) -> Result<Self> {
        let bad = |msg: String| DiffusionError::Config(format!("{origin}: the recorded model ({MODEL_METADATA_KEY}) {msg}"));
        let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("is not valid JSON ({e})")))?;
        let arch = doc.get("arch").and_then(|a| a.as_str()).ok_or_else(|| bad("has no \"arch\"".into()))?;
        let config = doc.get("config").filter(|c| c.is_object()).ok_or_else(|| bad("has no \"config\" object".into()))?;
        let inner = |e: DiffusionError| match e {
            DiffusionError::Config(msg) => bad(msg),
            other => bad(other.to_string()),
        };
        let arch: Arch = arch.parse().map_err(inner)?;
        Self::from_json(arch, config).map_err(inner)
    }

    /// The constructor arguments in which `self` and `other` differ, as
    /// (key, self's value, other's value) in key order (`unset` for a key
    /// one side lacks); the architecture alone when the families differ.
    pub fn differences(&self, other: &ModelConfig) -> Vec<(String, String, String)> {
        if self.arch() != other.arch() {
            return vec![("arch".into(), self.arch().to_string(), other.arch().to_string())];
        }
        let (a, b) = (self.to_json(), other.to_json());
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return Vec::new() };
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let show = |v: Option<&serde_json::Value>| v.map_or_else(|| "unset".to_string(), ToString::to_string);
        keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(|k| (k.clone(), show(a.get(k)), show(b.get(k)))).collect()
    }

    /// Reads and parses a JSON config file.
    pub fn from_file(arch: Arch, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file_err = |msg: String| DiffusionError::File { path: path.display().to_string(), msg };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| file_err(format!("not valid JSON ({e})")))?;
        Self::from_json(arch, &doc).map_err(|e| file_err(e.to_string()))
    }

    pub fn arch(&self) -> Arch {
        match self {
            ModelConfig::UViT(_) => Arch::UViT,
            ModelConfig::DdpmUNet(_) => Arch::DdpmUNet,
        }
    }

    /// `[C, H, W]` of one input image.
    pub fn input_shape(&self) -> [usize; 3] {
        match self {
            ModelConfig::UViT(c) => [c.in_chans, c.img_size, c.img_size],
            ModelConfig::DdpmUNet(c) => [c.in_channels, c.resolution, c.resolution],
        }
    }

    /// `[C, H, W]` of the output.
    pub fn output_shape(&self) -> [usize; 3] {
        match self {
            ModelConfig::UViT(c) => [c.in_chans, c.img_size, c.img_size],
            ModelConfig::DdpmUNet(c) => [c.out_ch, c.resolution, c.resolution],
        }
    }

    /// Number of classes of a class-conditional model (labels are required
    /// exactly then).
    pub fn num_classes(&self) -> Option<usize> {
        match self {
            ModelConfig::UViT(c) if c.has_classes() => Some(c.num_classes as usize),
            _ => None,
        }
    }

    /// Builds the network's parameters in `store`.
    pub fn build(&self, store: &ParamStore) -> Result<Box<dyn EpsModel>> {
        Ok(match self {
            ModelConfig::UViT(c) => Box::new(UViT::new(store, c)?),
            ModelConfig::DdpmUNet(c) => Box::new(UNet::new(store, c)?),
        })
    }

    /// Dense per-layer MACs of one forward pass at `batch` (see [`crate::macs`]).
    pub fn mac_report(&self, batch: usize) -> MacReport {
        match self {
            ModelConfig::UViT(c) => crate::macs::uvit_macs(c, batch),
            ModelConfig::DdpmUNet(c) => crate::macs::unet_macs(c, batch),
        }
    }
}

/// Builds `arch` from a config document (kwargs at top level or under
/// `"config"`) with its parameters in `store`, freshly initialised; load a
/// checkpoint afterwards with [`crate::checkpoint::load_checkpoint`].
pub fn build_model(arch: Arch, config: &serde_json::Value, store: &ParamStore) -> Result<Box<dyn EpsModel>> {
    ModelConfig::from_json(arch, config)?.build(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sparsedm_tensor::Device;

    #[test]
    fn arch_names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        }
        let e = "unet".parse::<Arch>().unwrap_err().to_string();
        assert!(e.contains("\"unet\"") && e.contains("ddpm-unet"), "{e}");
    }

    #[test]
    fn kwargs_at_top_level_or_under_config() {
        let kw = json!({"img_size": 8, "patch_size": 2, "embed_dim": 16, "depth": 2, "num_heads": 2});
        let a = ModelConfig::from_json(Arch::UViT, &kw).unwrap();
        let b = ModelConfig::from_json(Arch::UViT, &json!({"config": kw, "model": "U-ViT", "tolerance": {}})).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.input_shape(), [3, 8, 8]);
        let store = ParamStore::new(Device::Cpu, 0);
        build_model(Arch::UViT, &kw, &store).unwrap();
        assert!(store.get("in_blocks.0.attn.qkv.weight").is_some());
    }

    #[test]
    fn presets_round_trip_through_json() {
        for name in ModelConfig::PRESETS {
            let c = ModelConfig::preset(name).unwrap();
            assert_eq!(ModelConfig::from_json(c.arch(), &c.to_json()).unwrap(), c, "{name}");
        }
        assert!(ModelConfig::preset("cifar").unwrap_err().to_string().contains("cifar10_uvit_small"));
    }

    #[test]
    fn metadata_round_trips_and_names_what_is_wrong() {
        for name in ModelConfig::PRESETS {
            let c = ModelConfig::preset(name).unwrap();
            assert_eq!(ModelConfig::from_metadata(&c.to_metadata(), "f").unwrap(), c, "{name}");
        }
        let uvit = ModelConfig::preset("cifar10_uvit_small").unwrap();
        let text = uvit.to_metadata().replace("uvit", "unet");
        let e = ModelConfig::from_metadata(&text, "m.safetensors").unwrap_err().to_string();
        assert!(e.contains("m.safetensors") && e.contains("sparsedm.model") && e.contains("\"unet\""), "{e}");
        let e = ModelConfig::from_metadata(r#"{"arch": "uvit"}"#, "m").unwrap_err().to_string();
        assert!(e.contains("no \"config\""), "{e}");
        let e = ModelConfig::from_metadata(r#"{"arch": "ddpm-unet", "config": {"ch": 32}}"#, "m").unwrap_err().to_string();
        assert!(e.contains("missing field"), "{e}");
        assert!(ModelConfig::from_metadata("{", "m").unwrap_err().to_string().contains("not valid JSON"));
    }

    #[test]
    fn differences_name_each_differing_argument() {
        let a = ModelConfig::preset("cifar10_uvit_small").unwrap();
        assert!(a.differences(&a).is_empty());
        let mut kw = a.to_json();
        kw["num_heads"] = json!(4);
        kw["depth"] = json!(6);
        let b = ModelConfig::from_json(Arch::UViT, &kw).unwrap();
        let d = |k: &str, x: &str, y: &str| (k.to_string(), x.to_string(), y.to_string());
        assert_eq!(a.differences(&b), [d("depth", "12", "6"), d("num_heads", "8", "4")]);
        let u = ModelConfig::preset("cifar10_ddpm").unwrap();
        assert_eq!(a.differences(&u), [d("arch", "uvit", "ddpm-unet")]);
    }

    #[test]
    fn unknown_and_missing_keys_are_errors() {
        let e = ModelConfig::from_json(Arch::UViT, &json!({"img_size": 8, "pach_size": 2})).unwrap_err().to_string();
        assert!(e.contains("pach_size"), "{e}");
        let e = ModelConfig::from_json(Arch::DdpmUNet, &json!({"ch": 32})).unwrap_err().to_string();
        assert!(e.contains("missing field"), "{e}");
        let e = ModelConfig::from_json(Arch::UViT, &json!([1, 2])).unwrap_err().to_string();
        assert!(e.contains("JSON object"), "{e}");
    }
}
