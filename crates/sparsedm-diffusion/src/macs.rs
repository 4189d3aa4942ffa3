//! Multiply–accumulate counts of one forward pass, layer by layer, computed
//! analytically by a walk over the configuration that mirrors each model's
//! forward (no timing, no tensors).
//!
//! Conventions (those that reproduce the SparseDM paper's 11.34 G for
//! U-ViT-S/2; MODELS_AND_METHOD §2.4):
//! - Linear: output elements × input features; Conv2d: output elements ×
//!   C_in·kh·kw. Biases are not counted.
//! - Attention matmuls (QKᵀ and AV): 2·L²·D per sample and block, reported
//!   on their own lines ([`MacKind::AttentionMatmul`]); they are not part of
//!   the paper's total.
//! - Normalisation layers count [`NORM_OPS_PER_ELEMENT`] (5, fvcore's
//!   convention for affine norms) per element.
//! - A Linear/Conv2d whose sparse slot has an N:M pattern counts N/M of its
//!   dense MACs; one whose input dim is not a multiple of M and is left
//!   dense counts in full.

use crate::unet::UNetConfig;
use crate::uvit::UViTConfig;
use sparsedm_layers::{MaskOutcome, NmPattern, ParamStore, Policy, Selection, WeightLayout, plan_mask};
use std::collections::HashMap;

/// Operations per element charged to a LayerNorm/GroupNorm.
pub const NORM_OPS_PER_ELEMENT: u64 = 5;

/// What a line of the report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacKind {
    Linear,
    Conv2d,
    /// The two matmuls of an attention (QKᵀ and AV).
    AttentionMatmul,
    LayerNorm,
    GroupNorm,
}

impl MacKind {
    pub fn name(self) -> &'static str {
        match self {
            MacKind::Linear => "linear",
            MacKind::Conv2d => "conv2d",
            MacKind::AttentionMatmul => "attn-matmul",
            MacKind::LayerNorm => "layernorm",
            MacKind::GroupNorm => "groupnorm",
        }
    }
    /// A layer with a weight that can be N:M sparse.
    pub fn is_weight_layer(self) -> bool {
        matches!(self, MacKind::Linear | MacKind::Conv2d)
    }
    pub fn is_norm(self) -> bool {
        matches!(self, MacKind::LayerNorm | MacKind::GroupNorm)
    }
}

/// One line: a layer (or a layer's attention matmuls) and its count.
#[derive(Debug, Clone, PartialEq)]
pub struct MacEntry {
    /// The layer's state-dict prefix (`in_blocks.0.attn.qkv`); attention
    /// matmuls are named after their module with `.matmul` appended.
    pub name: String,
    pub kind: MacKind,
    /// Dense count: MACs, or for norms [`NORM_OPS_PER_ELEMENT`] × elements.
    pub dense: u64,
    /// The weight's layout (Linear `[out, in]`, Conv2d `[out, in, kh, kw]`);
    /// `None` for lines without a weight.
    pub layout: Option<WeightLayout>,
    /// The N:M pattern that applies to the weight, if any.
    pub pattern: Option<NmPattern>,
}

impl MacEntry {
    /// The count with sparsity applied: `dense · N/M` for sparse layers.
    pub fn macs(&self) -> f64 {
        match self.pattern {
            Some(p) if self.kind.is_weight_layer() => self.dense as f64 * p.density(),
            _ => self.dense as f64,
        }
    }
}

/// Every line of one forward pass, in forward order.
#[derive(Debug, Clone, PartialEq)]
pub struct MacReport {
    pub batch: usize,
    pub entries: Vec<MacEntry>,
    /// The first line whose count (or the running total) does not fit in
    /// 64 bits: its count is saturated, so the report must not be used as
    /// numbers (see [`MacReport::check`]).
    pub overflow: Option<String>,
}

impl MacReport {
    /// Errors when a count overflowed 64 bits (a huge batch or model):
    /// checked arithmetic, never a wrapped, silently wrong number.
    pub fn check(&self) -> crate::Result<()> {
        match &self.overflow {
            None => Ok(()),
            Some(line) => Err(crate::DiffusionError::Config(format!(
                "the MAC count of {line} at batch {} overflows 64 bits: use a smaller batch or model",
                self.batch
            ))),
        }
    }

    fn sum(&self, pick: impl Fn(MacKind) -> bool) -> f64 {
        self.entries.iter().filter(|e| pick(e.kind)).map(MacEntry::macs).sum()
    }
    /// Linear + Conv2d MACs (sparsity applied).
    pub fn linear_conv(&self) -> f64 {
        self.sum(MacKind::is_weight_layer)
    }
    /// Linear + Conv2d MACs as if every layer were dense.
    pub fn linear_conv_dense(&self) -> u64 {
        self.entries.iter().filter(|e| e.kind.is_weight_layer()).fold(0u64, |a, e| a.saturating_add(e.dense))
    }
    /// Normalisation ops (5 per element).
    pub fn norms(&self) -> f64 {
        self.sum(MacKind::is_norm)
    }
    /// Attention matmuls.
    pub fn attention(&self) -> f64 {
        self.sum(|k| k == MacKind::AttentionMatmul)
    }
    /// Linear + Conv2d + norms: the convention of the paper's totals.
    pub fn paper_total(&self) -> f64 {
        self.linear_conv() + self.norms()
    }
    /// Everything, attention matmuls included.
    pub fn total(&self) -> f64 {
        self.paper_total() + self.attention()
    }

    /// Sets each weight layer's pattern to `pattern(name)`; a layer whose
    /// group dimension is not a multiple of M stays dense (the layers'
    /// default, [`sparsedm_layers::NonDivisible::LeaveDense`]).
    pub fn apply_patterns(&mut self, pattern: impl Fn(&str) -> Option<NmPattern>) {
        for e in self.entries.iter_mut() {
            e.pattern = match e.layout {
                Some(l) => pattern(&e.name).filter(|p| l.inp() % p.m() == 0),
                None => None,
            };
        }
    }

    /// Sets the patterns as [`sparsedm_layers::apply_policy`] would set the
    /// slots of a built model: the layers `policy` selects get `pattern`
    /// unless their input dim cannot be grouped and the policy leaves such
    /// layers dense (`all` uses SparseDM's flat-index groups instead).
    pub fn apply_policy(&mut self, policy: &Policy, pattern: NmPattern) {
        for e in self.entries.iter_mut() {
            e.pattern = e.layout.and_then(|l| match policy.select(&e.name, l, pattern) {
                Selection::Sparse(nd) => match plan_mask(l, pattern, nd) {
                    Ok(MaskOutcome::Grouped | MaskOutcome::FlatIndex) => Some(pattern),
                    Ok(MaskOutcome::LeftDense) | Err(_) => None,
                },
                Selection::Dense(_) => None,
            });
        }
    }

    /// Takes each weight layer's pattern from its sparse slot in `store`
    /// (entry names are relative to the store's prefix, i.e. the model's
    /// root). A layer whose input dim does not split into groups of M and
    /// that its slot leaves dense counts as dense.
    pub fn apply_store(&mut self, store: &ParamStore) {
        let slots: HashMap<String, _> = store.sparse_slots().into_iter().collect();
        for e in self.entries.iter_mut().filter(|e| e.kind.is_weight_layer()) {
            e.pattern = slots.get(&store.path(&e.name)).and_then(|slot| {
                let p = slot.mode().pattern()?;
                match plan_mask(slot.layout(), p, slot.non_divisible()) {
                    Ok(MaskOutcome::LeftDense) | Err(_) => None,
                    Ok(_) => Some(p),
                }
            });
        }
    }

    /// A printable table (one line per entry, then the totals), counts in
    /// millions.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "{:<40} {:<12} {:>14} {:>8} {:>14}", "layer", "kind", "dense MMACs", "n:m", "MMACs");
        for e in &self.entries {
            let pat = e.pattern.map_or_else(|| "-".to_string(), |p| p.to_string());
            let _ = writeln!(s, "{:<40} {:<12} {:>14.3} {:>8} {:>14.3}", e.name, e.kind.name(), e.dense as f64 / 1e6, pat, e.macs() / 1e6);
        }
        let g = |v: f64| v / 1e9;
        let _ = writeln!(s, "batch {}", self.batch);
        let _ = writeln!(
            s,
            "Linear + Conv2d:                        {:>10.4} G (dense {:.4} G)",
            g(self.linear_conv()),
            g(self.linear_conv_dense() as f64)
        );
        let _ = writeln!(s, "+ norms at {NORM_OPS_PER_ELEMENT} ops/element (paper total):  {:>10.4} G", g(self.paper_total()));
        let _ = writeln!(s, "attention matmuls:                      {:>10.4} G", g(self.attention()));
        let _ = writeln!(s, "everything:                             {:>10.4} G", g(self.total()));
        s
    }
}

/// Accumulates entries during a walk.
struct Walk {
    batch: u64,
    entries: Vec<MacEntry>,
    total: u64,
    overflow: Option<String>,
}

impl Walk {
    fn push(&mut self, name: String, kind: MacKind, dense: Option<u64>, layout: Option<WeightLayout>) {
        let dense = dense.and_then(|d| d.checked_mul(self.batch));
        let total = dense.and_then(|d| self.total.checked_add(d));
        if (dense.is_none() || total.is_none()) && self.overflow.is_none() {
            self.overflow = Some(name.clone());
        }
        self.total = total.unwrap_or(u64::MAX);
        self.entries.push(MacEntry { name, kind, dense: dense.unwrap_or(u64::MAX), layout, pattern: None });
    }
    /// Linear applied to `rows` rows per sample.
    fn linear(&mut self, name: String, rows: usize, inp: usize, out: usize) {
        let layout = WeightLayout::Linear { out, inp };
        self.push(name, MacKind::Linear, product(&[rows, inp, out]), Some(layout));
    }
    /// Conv with `out` channels on an `out_pixels`-pixel output per sample.
    fn conv(&mut self, name: String, inp: usize, out: usize, k: usize, out_pixels: usize) {
        let layout = WeightLayout::Conv2d { out, inp, kh: k, kw: k };
        self.push(name, MacKind::Conv2d, product(&[out_pixels, out, inp, k, k]), Some(layout));
    }
    fn norm(&mut self, name: String, kind: MacKind, elems: usize) {
        self.push(name, kind, product(&[NORM_OPS_PER_ELEMENT as usize, elems]), None);
    }
    /// QKᵀ and AV over `l` positions of total width `d`.
    fn attn(&mut self, name: String, l: usize, d: usize) {
        self.push(name, MacKind::AttentionMatmul, product(&[2, l, l, d]), None);
    }
}

/// The product of `factors` in u64, `None` on overflow.
fn product(factors: &[usize]) -> Option<u64> {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f as u64))
}

/// The report of U-ViT at its configured image size.
pub fn uvit_macs(cfg: &UViTConfig, batch: usize) -> MacReport {
    let mut w = Walk { batch: batch as u64, entries: Vec::new(), total: 0, overflow: None };
    let (d, l, n, c, p) = (cfg.embed_dim, cfg.seq_len(), cfg.num_patches(), cfg.in_chans, cfg.patch_size);
    w.conv("patch_embed.proj".into(), c, d, p, n);
    if cfg.mlp_time_embed {
        w.linear("time_embed.0".into(), 1, d, 4 * d);
        w.linear("time_embed.2".into(), 1, 4 * d, d);
    }
    for b in cfg.block_names() {
        if cfg.skip && b.starts_with("out_blocks.") {
            w.linear(format!("{b}.skip_linear"), l, 2 * d, d);
        }
        // A pruned block's widths (attention heads·head_dim, MLP hidden).
        let widths = cfg.block_widths(&b);
        let inner = widths.num_heads * cfg.head_dim();
        w.norm(format!("{b}.norm1"), MacKind::LayerNorm, l * d);
        w.linear(format!("{b}.attn.qkv"), l, d, 3 * inner);
        w.attn(format!("{b}.attn.matmul"), l, inner);
        w.linear(format!("{b}.attn.proj"), l, inner, d);
        w.norm(format!("{b}.norm2"), MacKind::LayerNorm, l * d);
        w.linear(format!("{b}.mlp.fc1"), l, d, widths.mlp_hidden);
        w.linear(format!("{b}.mlp.fc2"), l, widths.mlp_hidden, d);
    }
    w.norm("norm".into(), MacKind::LayerNorm, l * d);
    w.linear("decoder_pred".into(), l, d, cfg.patch_dim());
    if cfg.conv {
        w.conv("final_layer".into(), c, c, 3, cfg.img_size * cfg.img_size);
    }
    MacReport { batch, entries: w.entries, overflow: w.overflow }
}

/// The report of the DDPM UNet at its configured resolution.
pub fn unet_macs(cfg: &UNetConfig, batch: usize) -> MacReport {
    let mut w = Walk { batch: batch as u64, entries: Vec::new(), total: 0, overflow: None };
    let temb = cfg.temb_ch();
    w.linear("temb.dense.0".into(), 1, cfg.ch, temb);
    w.linear("temb.dense.1".into(), 1, temb, temb);
    let r0 = cfg.resolution;
    w.conv("conv_in".into(), cfg.in_channels, cfg.ch, 3, r0 * r0);
    let res_block = |w: &mut Walk, name: String, inp: usize, out: usize, r: usize| {
        let px = r * r;
        // conv1 → temb_proj → norm2 → conv2 run at the (pruned) inner width.
        let inner = cfg.res_inner(&name, out);
        w.norm(format!("{name}.norm1"), MacKind::GroupNorm, inp * px);
        w.conv(format!("{name}.conv1"), inp, inner, 3, px);
        w.linear(format!("{name}.temb_proj"), 1, temb, inner);
        w.norm(format!("{name}.norm2"), MacKind::GroupNorm, inner * px);
        w.conv(format!("{name}.conv2"), inner, out, 3, px);
        if inp != out {
            w.conv(format!("{name}.nin_shortcut"), inp, out, 1, px);
        }
    };
    let attn_block = |w: &mut Walk, name: String, c: usize, r: usize| {
        let px = r * r;
        w.norm(format!("{name}.norm"), MacKind::GroupNorm, c * px);
        for q in ["q", "k", "v"] {
            w.conv(format!("{name}.{q}"), c, c, 1, px);
        }
        w.attn(format!("{name}.matmul"), px, c);
        w.conv(format!("{name}.proj_out"), c, c, 1, px);
    };
    let (down, mid, up) = cfg.res_block_channels();
    let n = cfg.levels();
    for (i, chans) in down.iter().enumerate() {
        let r = cfg.level_resolution(i);
        for (j, &(a, b)) in chans.iter().enumerate() {
            res_block(&mut w, format!("down.{i}.block.{j}"), a, b, r);
            if cfg.level_has_attn(i) {
                attn_block(&mut w, format!("down.{i}.attn.{j}"), b, r);
            }
        }
        if i + 1 != n && cfg.resamp_with_conv {
            let c = chans.last().map_or(cfg.ch * if i == 0 { 1 } else { cfg.ch_mult[i - 1] }, |&(_, b)| b);
            // Pad (0,1,0,1), 3×3 stride 2: (r + 1 − 3)/2 + 1 outputs per side.
            let ro = (r + 1).saturating_sub(3) / 2 + 1;
            w.conv(format!("down.{i}.downsample.conv"), c, c, 3, ro * ro);
        }
    }
    let rm = cfg.level_resolution(n - 1);
    res_block(&mut w, "mid.block_1".into(), mid, mid, rm);
    attn_block(&mut w, "mid.attn_1".into(), mid, rm);
    res_block(&mut w, "mid.block_2".into(), mid, mid, rm);
    for i in (0..n).rev() {
        let r = cfg.level_resolution(i);
        for (j, &(a, b)) in up[i].iter().enumerate() {
            res_block(&mut w, format!("up.{i}.block.{j}"), a, b, r);
            if cfg.level_has_attn(i) {
                attn_block(&mut w, format!("up.{i}.attn.{j}"), b, r);
            }
        }
        if i != 0 && cfg.resamp_with_conv {
            let c = cfg.ch * cfg.ch_mult[i];
            w.conv(format!("up.{i}.upsample.conv"), c, c, 3, 4 * r * r);
        }
    }
    let c0 = cfg.ch * cfg.ch_mult[0];
    w.norm("norm_out".into(), MacKind::GroupNorm, c0 * r0 * r0);
    w.conv("conv_out".into(), c0, cfg.out_ch, 3, r0 * r0);
    MacReport { batch, entries: w.entries, overflow: w.overflow }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvit_s2_cifar10_matches_the_paper() {
        let r = uvit_macs(&UViTConfig::cifar10_uvit_small(), 1);
        // MODELS_AND_METHOD §2.4: 11,321.6 M Linear+Conv; 11.3393 G with LN; 879.2 M attention.
        assert!((r.linear_conv() / 1e9 - 11.3216).abs() < 5e-5, "{}", r.linear_conv());
        assert_eq!(format!("{:.2}", r.linear_conv() / 1e9), "11.32");
        assert_eq!(format!("{:.2}", r.paper_total() / 1e9), "11.34");
        assert!((r.paper_total() / 1e9 - 11.3393).abs() < 5e-5, "{}", r.paper_total());
        assert_eq!(format!("{:.3}", r.attention() / 1e9), "0.879");
        assert_eq!(r.attention() as u64, 13 * 2 * 257 * 257 * 512);
        // 27 LayerNorms of 257 × 512 elements.
        assert_eq!(r.norms() as u64, 5 * 27 * 257 * 512);
        assert_eq!(format!("{:.2}", r.total() / 1e9), "12.22");
        // Batch scales linearly.
        assert_eq!(uvit_macs(&UViTConfig::cifar10_uvit_small(), 8).linear_conv(), 8.0 * r.linear_conv());
    }

    #[test]
    fn other_uvit_presets() {
        let r = uvit_macs(&UViTConfig::celeba64_uvit_small(), 1);
        assert!((r.linear_conv() / 1e9 - 11.3312).abs() < 5e-4, "{}", r.linear_conv());
        assert_eq!(format!("{:.2}", r.paper_total() / 1e9), "11.35");
        let r = uvit_macs(&UViTConfig::imagenet256_uvit_large(), 1);
        assert!((r.linear_conv() / 1e9 - 73.593).abs() < 5e-3, "{}", r.linear_conv());
        assert!((r.paper_total() / 1e9 - 73.650).abs() < 5e-3, "{}", r.paper_total());
        assert!((r.attention() / 1e9 - 2.863).abs() < 5e-3, "{}", r.attention());
    }

    #[test]
    fn ddpm_cifar10_unet() {
        let r = unet_macs(&UNetConfig::cifar10_ddpm(), 1);
        // §3.1: conv 6.0511 G + linear 2.88 M = 6.054 G; attention 0.168 G; GN 0.017 G.
        assert_eq!(format!("{:.2}", r.linear_conv() / 1e9), "6.05");
        assert!((r.linear_conv() / 1e9 - 6.054).abs() < 5e-4, "{}", r.linear_conv());
        let conv: u64 = r.entries.iter().filter(|e| e.kind == MacKind::Conv2d).map(|e| e.dense).sum();
        assert!((conv as f64 / 1e9 - 6.0511).abs() < 5e-5, "{conv}");
        assert!((r.attention() / 1e9 - 0.168).abs() < 5e-4, "{}", r.attention());
        assert!((r.norms() / 1e9 - 0.017).abs() < 5e-4, "{}", r.norms());
    }

    #[test]
    fn sparse_layers_count_n_over_m() {
        let cfg = UViTConfig::cifar10_uvit_small();
        let mut r = uvit_macs(&cfg, 1);
        let dense = r.linear_conv();
        let two_four = NmPattern::TWO_FOUR;
        let targets = [".attn.qkv", ".attn.proj", ".mlp.fc1", ".mlp.fc2"];
        r.apply_patterns(|n| targets.iter().any(|t| n.ends_with(t)).then_some(two_four));
        // §2.4: the SparseDM layers hold 10.510 G; halving them leaves 6.08 G (with LN).
        let touched: f64 = r.entries.iter().filter(|e| e.pattern.is_some()).map(|e| e.dense as f64).sum();
        assert!((touched / 1e9 - 10.510).abs() < 5e-4, "{touched}");
        assert!((r.linear_conv() - (dense - touched / 2.0)).abs() < 1.0);
        assert_eq!(format!("{:.2}", r.paper_total() / 1e9), "6.08");
        // Every Linear and Conv at 2:4: 5.68 G (§2.4). The two convs on the
        // 3-channel image cannot be grouped by 4 and stay dense.
        r.apply_patterns(|_| Some(two_four));
        assert_eq!(format!("{:.2}", r.paper_total() / 1e9), "5.68");
        let dense_left: Vec<_> =
            r.entries.iter().filter(|e| e.kind.is_weight_layer() && e.pattern.is_none()).map(|e| e.name.as_str()).collect();
        assert_eq!(dense_left, ["patch_embed.proj", "final_layer"]);
    }

    #[test]
    fn policies_of_the_layers_crate() {
        let two_four = NmPattern::TWO_FOUR;
        let mut r = uvit_macs(&UViTConfig::cifar10_uvit_small(), 1);
        r.apply_policy(&"sparsedm-uvit".parse().unwrap(), two_four);
        assert_eq!(r.entries.iter().filter(|e| e.pattern.is_some()).count(), 52);
        assert_eq!(format!("{:.2}", r.paper_total() / 1e9), "6.08");
        // ASP's rule also takes the skip Linears (decoder_pred is too narrow): 5.68 G (§2.4).
        r.apply_policy(&"asp".parse().unwrap(), two_four);
        assert_eq!(format!("{:.2}", r.paper_total() / 1e9), "5.68");
        let mut u = unet_macs(&UNetConfig::cifar10_ddpm(), 1);
        u.apply_policy(&"all".parse().unwrap(), two_four);
        // `all` groups the 3-channel conv_in by flat index (SparseDM's UNet).
        assert!(u.entries.iter().filter(|e| e.kind.is_weight_layer()).all(|e| e.pattern == Some(two_four)));
        assert!((u.linear_conv() - u.linear_conv_dense() as f64 / 2.0).abs() < 1.0);
        u.apply_policy(&"!*.attn*".parse().unwrap(), two_four);
        assert!(u.entries.iter().filter(|e| e.name.contains(".attn")).all(|e| e.pattern.is_none()));
    }

    #[test]
    fn patterns_from_the_store_slots() {
        use crate::unet::UNet;
        use sparsedm_layers::{NonDivisible, SparseMode};
        use sparsedm_tensor::Device;
        let cfg = UNetConfig {
            ch: 32,
            out_ch: 3,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![4],
            dropout: 0.0,
            resamp_with_conv: true,
            in_channels: 3,
            resolution: 8,
            widths: None,
            num_groups: 32,
        };
        let root = ParamStore::new(Device::Cpu, 0);
        let store = root.pp("model");
        let model = UNet::new(&store, &cfg).unwrap();
        let pattern = NmPattern::TWO_FOUR;
        for (_, slot) in store.sparse_slots() {
            slot.set_mode(SparseMode::Ste { pattern }).unwrap();
        }
        let mut r = unet_macs(&cfg, 2);
        let dense = r.linear_conv();
        r.apply_store(&store);
        let conv_in = r.entries.iter().find(|e| e.name == "conv_in").unwrap();
        assert_eq!(conv_in.pattern, None, "3 input channels: left dense");
        let sparse: f64 = r.entries.iter().filter(|e| e.pattern.is_some()).map(|e| e.dense as f64).sum();
        assert!(sparse > 0.9 * dense);
        assert!((r.linear_conv() - (dense - sparse / 2.0)).abs() < 1.0);
        // SparseDM's flat-index grouping makes the first conv sparse too.
        for (name, slot) in store.sparse_slots() {
            if name.ends_with("conv_in") {
                slot.set_non_divisible(NonDivisible::FlatIndex).unwrap();
            }
        }
        r.apply_store(&store);
        assert_eq!(r.entries.iter().find(|e| e.name == "conv_in").unwrap().pattern, Some(pattern));
        drop(model);
    }

    #[test]
    fn a_huge_batch_overflows_into_an_error_not_a_wrapped_count() {
        let cfg = UViTConfig::cifar10_uvit_small();
        assert!(uvit_macs(&cfg, 1).check().is_ok());
        let r = uvit_macs(&cfg, usize::MAX / 2);
        let msg = r.check().unwrap_err().to_string();
        assert!(msg.contains("overflows 64 bits") && msg.contains("patch_embed.proj"), "{msg}");
        assert!(unet_macs(&UNetConfig::cifar10_ddpm(), usize::MAX).check().is_err());
    }
}
