//! Which input channels of U-ViT and the DDPM UNet can be permuted without
//! changing the network's function: the [`ChannelPlan`] that apex ASP's
//! channel permutations ([`sparsedm_layers::permute_channels`]) need.
//!
//! apex finds these pairs by tracing the model with `torch.fx`; here the
//! architectures are known, so the plan is written out. A consumer's input
//! channels can be permuted when every tensor producing them can be
//! permuted the same way along its output channels, with only channel-wise
//! operations in between. apex's rules decide the rest:
//!
//! * **U-ViT.** `mlp.fc1` → GELU → `mlp.fc2` in every block (and, with
//!   `mlp_time_embed`, `time_embed.0` → SiLU → `time_embed.2`). Not
//!   permutable: `attn.qkv`, `mlp.fc1` and `decoder_pred` read a LayerNorm
//!   of the residual stream, which every block adds into; `skip_linear`
//!   reads the concatenation of two residual streams; `attn.proj` reads the
//!   attention output, whose channels are tied to heads by reshapes (apex
//!   sees them as unknown functions and disallows them); `patch_embed` and
//!   `final_layer` read image channels.
//! * **DDPM UNet.** `temb.dense.0` → swish → `temb.dense.1`; every
//!   ResNet block's `temb_proj` reads swish(`temb.dense.1`), so they form
//!   one sibling group produced by `temb.dense.1`; in each attention block
//!   `v` → (attention, which mixes positions but not channels) →
//!   `proj_out` (one head, so any order of the channels works). Not
//!   permutable: the 3×3 convs, `q`, `k`, `v` and `conv_out` read a
//!   GroupNorm output (apex disallows GroupNorm); `nin_shortcut` and the
//!   resampling convs read the residual stream or the skip concatenation;
//!   `conv_in` reads the image.

use crate::registry::ModelConfig;
use sparsedm_layers::{ChannelPlan, ParamStore, PermutationGroup};

/// The permutable groups of the model `config` built in `store`, and the
/// reason for every other Linear/Conv2d layer of the store.
pub fn channel_plan(config: &ModelConfig, store: &ParamStore) -> ChannelPlan {
    let layers: Vec<String> = store.sparse_slots().into_iter().map(|(name, _)| name).collect();
    let (groups, reason): (Vec<PermutationGroup>, fn(&str) -> &'static str) = match config {
        ModelConfig::UViT(_) => (uvit_groups(&layers), uvit_reason),
        ModelConfig::DdpmUNet(_) => (unet_groups(&layers), unet_reason),
    };
    let consumers: std::collections::HashSet<&String> = groups.iter().flat_map(|g| &g.consumers).collect();
    let unpermutable = layers.iter().filter(|l| !consumers.contains(l)).map(|l| (l.clone(), reason(l).to_string())).collect();
    ChannelPlan { groups, unpermutable }
}

/// One consumer whose input channels are the output channels of the
/// Linear/Conv2d `producer` (its weight rows and bias).
fn pair(consumer: String, producer: &str) -> PermutationGroup {
    PermutationGroup { consumers: vec![consumer], producers: vec![format!("{producer}.weight"), format!("{producer}.bias")] }
}

fn uvit_groups(layers: &[String]) -> Vec<PermutationGroup> {
    let mut groups = Vec::new();
    for l in layers {
        if let Some(block) = l.strip_suffix(".mlp.fc2") {
            groups.push(pair(l.clone(), &format!("{block}.mlp.fc1")));
        } else if l == "time_embed.2" {
            groups.push(pair(l.clone(), "time_embed.0"));
        }
    }
    groups
}

fn uvit_reason(layer: &str) -> &'static str {
    if layer.ends_with(".attn.qkv") || layer.ends_with(".mlp.fc1") || layer == "decoder_pred" {
        "reads a LayerNorm of the residual stream, which every block adds into"
    } else if layer.ends_with(".skip_linear") {
        "reads the concatenation of two residual streams"
    } else if layer.ends_with(".attn.proj") {
        "reads the attention output, whose channels are tied to heads by reshapes (apex disallows unknown functions)"
    } else if layer.starts_with("patch_embed") || layer.starts_with("final_layer") {
        "reads image channels"
    } else if layer == "time_embed.0" {
        "reads the sinusoidal time embedding"
    } else {
        "no producer of its input channels can be permuted"
    }
}

fn unet_groups(layers: &[String]) -> Vec<PermutationGroup> {
    let mut groups = Vec::new();
    if layers.iter().any(|l| l == "temb.dense.1") {
        groups.push(pair("temb.dense.1".into(), "temb.dense.0"));
        let temb_projs: Vec<String> = layers.iter().filter(|l| l.ends_with(".temb_proj")).cloned().collect();
        if !temb_projs.is_empty() {
            groups.push(PermutationGroup {
                consumers: temb_projs,
                producers: vec!["temb.dense.1.weight".into(), "temb.dense.1.bias".into()],
            });
        }
    }
    for l in layers {
        if let Some(attn) = l.strip_suffix(".proj_out") {
            groups.push(pair(l.clone(), &format!("{attn}.v")));
        }
    }
    groups
}

fn unet_reason(layer: &str) -> &'static str {
    let leaf = layer.rsplit('.').next().unwrap_or(layer);
    match leaf {
        "conv1" | "conv2" | "q" | "k" | "v" | "conv_out" => "reads a GroupNorm output (apex disallows GroupNorm)",
        "nin_shortcut" => "reads the residual stream or the skip concatenation",
        "conv" => "reads the residual stream (resampling conv)",
        "conv_in" => "reads image channels",
        "0" if layer == "temb.dense.0" => "reads the sinusoidal time embedding",
        _ => "no producer of its input channels can be permuted",
    }
}
