//! U-ViT (Bao et al., "All are Worth Words"), exactly as baofff/U-ViT
//! `libs/uvit.py`: a ViT over patch tokens plus a time token (and a label
//! token for class-conditional models), with long skip connections from
//! the first half of the blocks to the second half.
//!
//! Every parameter keeps its PyTorch state-dict name (`patch_embed.proj.weight`,
//! `in_blocks.0.attn.qkv.weight`, `out_blocks.3.skip_linear.bias`, …), so an
//! official `nnet_ema.pth` converted to safetensors loads without renaming.
//! All Linear and Conv2d layers carry a [`sparsedm_layers::SparseSlot`], so any
//! of them can be made N:M sparse by name.

use crate::error::{DiffusionError, Result};
use crate::model::EpsModel;
use sparsedm_layers::{Attention, Conv2d, Conv2dConfig, Embedding, Init, LayerNorm, Linear, ParamStore};
use sparsedm_tensor::{DType, Tensor};
use std::collections::BTreeMap;

/// LayerNorm eps: U-ViT uses `nn.LayerNorm`'s default.
const LN_EPS: f32 = 1e-5;

/// The keyword arguments of `UViT.__init__`, with the reference defaults.
///
/// Deserialises from the constructor's kwargs as JSON; unknown keys are an
/// error (a misspelt option must not silently fall back to its default).
/// `use_checkpoint` (activation checkpointing) is accepted because the
/// published ImageNet config sets it; it only trades memory for compute in
/// PyTorch and changes nothing here. `norm_layer` is not accepted: U-ViT
/// always uses `nn.LayerNorm`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UViTConfig {
    /// Input height and width (pixels, or latent size for latent models).
    pub img_size: usize,
    /// Patch side p; the image becomes (img_size/p)² tokens.
    pub patch_size: usize,
    /// Image channels C.
    pub in_chans: usize,
    /// Token width D.
    pub embed_dim: usize,
    /// `depth // 2` in-blocks, one mid-block, `depth // 2` out-blocks.
    pub depth: usize,
    /// Attention heads (D must be a multiple).
    pub num_heads: usize,
    /// MLP hidden width = `int(D · mlp_ratio)`.
    pub mlp_ratio: f64,
    /// Bias on the qkv projection.
    pub qkv_bias: bool,
    /// SparseDM's U-ViT (not an option of U-ViT itself): the paper's code
    /// builds qkv as a `SparseLinear`, which forces `bias=True`, so its qkv
    /// has a trainable bias even though `qkv_bias` is false. With this set
    /// the bias exists, starts at zero, and a checkpoint without
    /// `*.attn.qkv.bias` (an official dense U-ViT) loads with it left at
    /// zero, which computes exactly what the checkpoint computes. Off, a
    /// missing bias is a strict-loading error as usual. Not written when
    /// false, so configs without it read and print as before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sparsedm_qkv_bias: bool,
    /// Attention logit scale; `None` (or 0, as Python's `or`) means Dh^−½.
    pub qk_scale: Option<f64>,
    /// Linear(D, 4D)–SiLU–Linear(4D, D) on the time embedding instead of the identity.
    pub mlp_time_embed: bool,
    /// Number of classes of the label token; ≤ 0 means unconditional.
    pub num_classes: i64,
    /// Accepted for compatibility; has no effect (see the type's doc).
    pub use_checkpoint: bool,
    /// A final 3×3 Conv2d(C, C) after unpatchify.
    pub conv: bool,
    /// Long skip connections (a `skip_linear` in each out-block).
    pub skip: bool,
    /// Per-block widths of a structurally pruned model (`sparsedm prune
    /// --method diff-pruning`), by block name (`in_blocks.0`, `mid_block`,
    /// `out_blocks.2`); a block not listed has the widths the other options
    /// give it. Absent in every reference configuration (and then not
    /// serialised), so official configs and checkpoints are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub widths: Option<BTreeMap<String, UViTBlockWidths>>,
}

/// The widths of one pruned U-ViT block: the MLP hidden width (`fc1`'s
/// outputs, `fc2`'s inputs) and the number of attention heads, each
/// [`UViTConfig::head_dim`] wide (`qkv` gives 3·heads·head_dim outputs,
/// `proj` takes heads·head_dim inputs; the attention scale stays
/// head_dim^−½).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UViTBlockWidths {
    pub mlp_hidden: usize,
    pub num_heads: usize,
}

impl Default for UViTConfig {
    /// The defaults of `UViT.__init__`.
    fn default() -> Self {
        UViTConfig {
            img_size: 224,
            patch_size: 16,
            in_chans: 3,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            mlp_ratio: 4.0,
            qkv_bias: false,
            sparsedm_qkv_bias: false,
            qk_scale: None,
            mlp_time_embed: false,
            num_classes: -1,
            use_checkpoint: false,
            conv: true,
            skip: true,
            widths: None,
        }
    }
}

impl UViTConfig {
    /// U-ViT-S/2 of `configs/cifar10_uvit_small.py` (44,255,328 parameters).
    pub fn cifar10_uvit_small() -> Self {
        UViTConfig {
            img_size: 32,
            patch_size: 2,
            in_chans: 3,
            embed_dim: 512,
            depth: 12,
            num_heads: 8,
            mlp_ratio: 4.0,
            qkv_bias: false,
            mlp_time_embed: false,
            num_classes: -1,
            ..Default::default()
        }
    }

    /// U-ViT-S/4 of `configs/celeba64_uvit_small.py`.
    pub fn celeba64_uvit_small() -> Self {
        UViTConfig { img_size: 64, patch_size: 4, ..Self::cifar10_uvit_small() }
    }

    /// U-ViT-L/2 of `configs/imagenet256_uvit_large.py` (on 4×32×32 latents,
    /// 1001 classes: 1000 plus the null class of classifier-free guidance).
    pub fn imagenet256_uvit_large() -> Self {
        UViTConfig {
            img_size: 32,
            patch_size: 2,
            in_chans: 4,
            embed_dim: 1024,
            depth: 20,
            num_heads: 16,
            mlp_ratio: 4.0,
            qkv_bias: false,
            mlp_time_embed: false,
            num_classes: 1001,
            use_checkpoint: true,
            ..Default::default()
        }
    }

    /// Parses the constructor kwargs from JSON (unknown keys are an error)
    /// and validates them.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let cfg: UViTConfig = serde_json::from_value(value.clone()).map_err(|e| DiffusionError::Config(format!("U-ViT: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the options describe a buildable network.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(DiffusionError::Config(format!("U-ViT: {msg}")));
        if self.patch_size == 0 || self.img_size == 0 || self.in_chans == 0 || self.embed_dim == 0 {
            return bad("img_size, patch_size, in_chans and embed_dim must be positive".into());
        }
        if !self.img_size.is_multiple_of(self.patch_size) {
            return bad(format!("img_size {} is not a multiple of patch_size {}", self.img_size, self.patch_size));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!("embed_dim {} does not split into {} heads", self.embed_dim, self.num_heads));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) || self.mlp_hidden() == 0 {
            return bad(format!("mlp_ratio {} gives an empty MLP", self.mlp_ratio));
        }
        // Far beyond any real model, and small enough that the shape and
        // MAC arithmetic cannot overflow: an absurd width is an error here,
        // not an allocation abort when the model is built.
        for (what, v, max) in [
            ("img_size", self.img_size, 1 << 16),
            ("in_chans", self.in_chans, 1 << 12),
            ("embed_dim", self.embed_dim, 1 << 20),
            ("depth", self.depth, 1 << 12),
            ("MLP width (embed_dim × mlp_ratio)", self.mlp_hidden(), 1 << 22),
            ("num_classes", self.num_classes.max(0) as usize, 1 << 24),
        ] {
            if v > max {
                return bad(format!("{what} {v} is larger than the supported maximum {max}"));
            }
        }
        if let Some(s) = self.qk_scale
            && !s.is_finite()
        {
            return bad(format!("qk_scale {s} is not finite"));
        }
        if let Some(widths) = &self.widths {
            let names = self.block_names();
            for (name, w) in widths {
                if !names.contains(name) {
                    return bad(format!("widths names block {name:?}, which the model does not have (blocks: {})", names.join(", ")));
                }
                if w.mlp_hidden == 0 || w.mlp_hidden > 1 << 22 {
                    return bad(format!("widths.{name}.mlp_hidden {} outside 1..={}", w.mlp_hidden, 1 << 22));
                }
                if w.num_heads == 0 || w.num_heads > self.num_heads {
                    return bad(format!("widths.{name}.num_heads {} outside 1..={} (the model's num_heads)", w.num_heads, self.num_heads));
                }
            }
        }
        Ok(())
    }

    /// The names of the transformer blocks in forward order: `in_blocks.i`,
    /// `mid_block`, `out_blocks.i`.
    pub fn block_names(&self) -> Vec<String> {
        let half = self.depth / 2;
        (0..half)
            .map(|i| format!("in_blocks.{i}"))
            .chain(std::iter::once("mid_block".to_string()))
            .chain((0..half).map(|i| format!("out_blocks.{i}")))
            .collect()
    }

    /// Width of one attention head, embed_dim / num_heads (kept by pruning).
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads.max(1)
    }

    /// The widths of block `name`: its override, else the unpruned ones.
    pub fn block_widths(&self, name: &str) -> UViTBlockWidths {
        self.widths
            .as_ref()
            .and_then(|w| w.get(name).copied())
            .unwrap_or(UViTBlockWidths { mlp_hidden: self.mlp_hidden(), num_heads: self.num_heads })
    }

    /// MLP hidden width, `int(embed_dim * mlp_ratio)` as in Python (of an
    /// unpruned block; see [`UViTConfig::block_widths`]).
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }
    /// Patch tokens N = (img_size/patch_size)².
    pub fn num_patches(&self) -> usize {
        (self.img_size / self.patch_size).pow(2)
    }
    /// Tokens before the patches: the time token, plus the label token.
    pub fn extras(&self) -> usize {
        if self.has_classes() { 2 } else { 1 }
    }
    /// Whether the model takes class labels.
    pub fn has_classes(&self) -> bool {
        self.num_classes > 0
    }
    /// Sequence length L = extras + N.
    pub fn seq_len(&self) -> usize {
        self.extras() + self.num_patches()
    }
    /// Values per patch token out of `decoder_pred`: p²·C.
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.in_chans
    }
    /// The attention scale the reference uses (`qk_scale or head_dim ** -0.5`).
    pub fn attn_scale(&self) -> Option<f32> {
        self.qk_scale.filter(|&s| s != 0.0).map(|s| s as f32)
    }
}

/// U-ViT's init for Linear layers: trunc-normal(0.02) weights, zero bias.
const LINEAR_INIT: (Init, Init) = (Init::TruncNormal(0.02), Init::Zeros);

fn uvit_linear(store: &ParamStore, inp: usize, out: usize, bias: bool) -> Result<Linear> {
    Ok(Linear::with_init(store, inp, out, bias, LINEAR_INIT.0, LINEAR_INIT.1)?)
}

/// timm's `Mlp` (fc1 → exact GELU → fc2; dropout 0).
#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// `residual + mlp(norm(x))`, either part optional.
    fn forward_fused(&self, x: &Tensor, norm: Option<&LayerNorm>, residual: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.fc1.gelu_mlp_fused(&self.fc2, x, norm, residual)?)
    }
}

/// A pre-norm transformer block, with a `skip_linear` on the concatenation
/// of its input and a long-skip tensor in the out-blocks. Public so that
/// `repro table3` times the model's own block (dense against 2:4 deployed)
/// rather than a re-composition of it.
#[derive(Debug, Clone)]
pub struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    skip_linear: Option<Linear>,
}

impl Block {
    /// Block `name` (see [`UViTConfig::block_names`]; its widths follow
    /// `cfg.widths` when pruned) of `cfg` (width `embed_dim`, `num_heads`,
    /// `mlp_ratio`, `qkv_bias`) with its parameters under `store` (`norm1`,
    /// `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`, and
    /// `skip_linear` when `skip`).
    pub fn new(store: &ParamStore, cfg: &UViTConfig, name: &str, skip: bool) -> Result<Self> {
        let d = cfg.embed_dim;
        let w = cfg.block_widths(name);
        let attn_store = store.pp("attn");
        // U-ViT's Linear init gives the bias zeros, as SparseDM's qkv starts.
        let attn = Attention::with_heads(
            &attn_store,
            d,
            w.num_heads,
            cfg.head_dim(),
            cfg.qkv_bias || cfg.sparsedm_qkv_bias,
            cfg.attn_scale(),
            LINEAR_INIT,
        )?;
        if cfg.sparsedm_qkv_bias && !cfg.qkv_bias {
            attn_store.pp("qkv").allow_missing("bias");
        }
        Ok(Block {
            norm1: LayerNorm::new(&store.pp("norm1"), d, LN_EPS, true)?,
            attn,
            norm2: LayerNorm::new(&store.pp("norm2"), d, LN_EPS, true)?,
            mlp: Mlp {
                fc1: uvit_linear(&store.pp("mlp").pp("fc1"), d, w.mlp_hidden, true)?,
                fc2: uvit_linear(&store.pp("mlp").pp("fc2"), w.mlp_hidden, d, true)?,
            },
            skip_linear: if skip { Some(uvit_linear(&store.pp("skip_linear"), 2 * d, d, true)?) } else { None },
        })
    }

    /// `x` `[batch, tokens, embed_dim]` through the block (`skip`: the
    /// long-skip tensor an out-block concatenates first).
    pub fn forward(&self, x: &Tensor, skip: Option<&Tensor>) -> Result<Tensor> {
        let x = match (&self.skip_linear, skip) {
            // skip_linear(cat([x, skip], -1)), one product per part.
            (Some(lin), Some(s)) => lin.forward_cat(&[x, s])?,
            (Some(_), None) => {
                return Err(DiffusionError::Input { what: "U-ViT block".into(), msg: "an out-block needs its skip tensor".into() });
            }
            (None, _) => x.clone(),
        };
        // x + attn(norm1(x)), then x + mlp(norm2(x)): the norms and the
        // residual adds go into the layers' calls (fused into the N:M
        // kernels when the model is deployed N:M on the CPU).
        let x = self.attn.forward_fused(&x, Some(&self.norm1), Some(&x))?;
        self.mlp.forward_fused(&x, Some(&self.norm2), Some(&x))
    }
}

/// Sinusoidal time embedding of U-ViT (`timestep_embedding`): for
/// k < half = dim/2, frequency exp(−ln(10000)·k/half); **cos first, then
/// sin**; a zero column when `dim` is odd. Computed in f32 in the same
/// operation order as PyTorch so fractional times like 421.7 match.
pub fn uvit_timestep_embedding(t: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let ln = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half).map(|k| ((ln * k as f32) / half as f32).exp()).collect();
    let mut out = vec![0f32; t.len() * dim];
    for (row, &tv) in out.chunks_mut(dim).zip(t) {
        for (k, &f) in freqs.iter().enumerate() {
            let a = tv * f;
            row[k] = a.cos();
            row[half + k] = a.sin();
        }
    }
    out
}

/// Labels as i64 (float labels must hold integers), checked against the
/// number of classes.
pub(crate) fn labels_i64(y: &Tensor, num_classes: usize, batch: usize) -> Result<Tensor> {
    let bad = |msg: String| DiffusionError::Input { what: "class labels y".into(), msg };
    if y.shape() != [batch] {
        return Err(bad(format!("expected shape [{batch}], got {:?}", y.shape())));
    }
    let ids: Vec<i64> = match y.dtype() {
        DType::I64 => y.to_vec_i64()?,
        _ => y
            .to_vec_f32()?
            .into_iter()
            .map(|v| if v.fract() == 0.0 && v.is_finite() { Ok(v as i64) } else { Err(bad(format!("label {v} is not an integer"))) })
            .collect::<Result<_>>()?,
    };
    if let Some(&i) = ids.iter().find(|&&i| i < 0 || i as usize >= num_classes) {
        return Err(bad(format!("label {i} outside 0..{num_classes}")));
    }
    Ok(Tensor::from_vec_i64(ids, &[batch], &y.device())?)
}

/// Checks `t` is `[batch]` and returns its values as f32.
pub(crate) fn times_f32(t: &Tensor, batch: usize, what: &str) -> Result<Vec<f32>> {
    if t.shape() != [batch] {
        return Err(DiffusionError::Input { what: what.into(), msg: format!("expected shape [{batch}], got {:?}", t.shape()) });
    }
    Ok(t.to_vec_f32()?)
}

/// The U-ViT network.
#[derive(Debug, Clone)]
pub struct UViT {
    cfg: UViTConfig,
    store: ParamStore,
    patch_embed: Conv2d,
    time_embed: Option<(Linear, Linear)>,
    label_emb: Option<Embedding>,
    pos_embed: Tensor,
    in_blocks: Vec<Block>,
    mid_block: Block,
    out_blocks: Vec<Block>,
    norm: LayerNorm,
    decoder_pred: Linear,
    final_layer: Option<Conv2d>,
}

impl UViT {
    /// Builds the network's parameters in `store` (under its prefix) with
    /// U-ViT's init: trunc-normal(0.02) Linear weights and `pos_embed`, zero
    /// Linear biases, LayerNorm ones/zeros, PyTorch's default for the convs,
    /// N(0, 1) for the label embedding.
    pub fn new(store: &ParamStore, cfg: &UViTConfig) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.embed_dim;
        let p = cfg.patch_size;
        let patch_embed = Conv2d::new(&store.pp("patch_embed").pp("proj"), cfg.in_chans, d, Conv2dConfig::square(p, p, 0))?;
        let time_embed = if cfg.mlp_time_embed {
            let te = store.pp("time_embed");
            Some((uvit_linear(&te.pp(0), d, 4 * d, true)?, uvit_linear(&te.pp(2), 4 * d, d, true)?))
        } else {
            None
        };
        let label_emb = if cfg.has_classes() { Some(Embedding::new(&store.pp("label_emb"), cfg.num_classes as usize, d)?) } else { None };
        let pos_embed = store.param("pos_embed", &[1, cfg.seq_len(), d], Init::TruncNormal(0.02))?;
        let half = cfg.depth / 2;
        let in_blocks = (0..half)
            .map(|i| Block::new(&store.pp("in_blocks").pp(i), cfg, &format!("in_blocks.{i}"), false))
            .collect::<Result<Vec<_>>>()?;
        let mid_block = Block::new(&store.pp("mid_block"), cfg, "mid_block", false)?;
        let out_blocks = (0..half)
            .map(|i| Block::new(&store.pp("out_blocks").pp(i), cfg, &format!("out_blocks.{i}"), cfg.skip))
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::new(&store.pp("norm"), d, LN_EPS, true)?;
        let decoder_pred = uvit_linear(&store.pp("decoder_pred"), d, cfg.patch_dim(), true)?;
        let final_layer = if cfg.conv {
            Some(Conv2d::new(&store.pp("final_layer"), cfg.in_chans, cfg.in_chans, Conv2dConfig::square(3, 1, 1))?)
        } else {
            None
        };
        Ok(UViT {
            cfg: cfg.clone(),
            store: store.clone(),
            patch_embed,
            time_embed,
            label_emb,
            pos_embed,
            in_blocks,
            mid_block,
            out_blocks,
            norm,
            decoder_pred,
            final_layer,
        })
    }

    pub fn config(&self) -> &UViTConfig {
        &self.cfg
    }

    /// The store the parameters live in (sparse slots, training flag).
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Per-layer MACs of one forward pass at `batch`, each layer's N:M
    /// pattern taken from its sparse slot.
    pub fn mac_report(&self, batch: usize) -> crate::macs::MacReport {
        let mut r = crate::macs::uvit_macs(&self.cfg, batch);
        r.apply_store(&self.store);
        r
    }

    /// `x` `[B, C, H, W]` (H = W = img_size), `timesteps` `[B]` (model time,
    /// fractional allowed), `y` `[B]` class labels (required exactly when
    /// the model has classes). Returns `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor, timesteps: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (c, s) = (cfg.in_chans, cfg.img_size);
        let b = match *x.shape() {
            [b, xc, h, w] if xc == c && h == s && w == s => b,
            _ => {
                return Err(DiffusionError::Input {
                    what: "U-ViT input x".into(),
                    msg: format!("expected [B, {c}, {s}, {s}], got {:?}", x.shape()),
                });
            }
        };
        let d = cfg.embed_dim;
        let dev = x.device();
        // [B, D, h, w] -> [B, N, D] (a view; `cat` below copies once).
        let patches = self.patch_embed.forward(x)?;
        let patches = patches.reshape(&[b, d, cfg.num_patches()])?.transpose(1, 2)?;
        let t = times_f32(timesteps, b, "U-ViT timesteps")?;
        let mut time_token = Tensor::from_vec(uvit_timestep_embedding(&t, d), &[b, d], &dev)?;
        if let Some((l1, l2)) = &self.time_embed {
            time_token = l2.forward(&l1.forward(&time_token)?.silu()?)?;
        }
        let time_token = time_token.unsqueeze(1)?;
        let tokens = match (&self.label_emb, y) {
            (Some(emb), Some(y)) => {
                let label = emb.forward(&labels_i64(y, cfg.num_classes as usize, b)?)?.unsqueeze(1)?;
                Tensor::cat(&[&label, &time_token, &patches], 1)?
            }
            (None, None) => Tensor::cat(&[&time_token, &patches], 1)?,
            (Some(_), None) => {
                return Err(DiffusionError::Input {
                    what: "U-ViT class labels y".into(),
                    msg: format!("the model has {} classes and needs labels", cfg.num_classes),
                });
            }
            (None, Some(_)) => {
                return Err(DiffusionError::Input {
                    what: "U-ViT class labels y".into(),
                    msg: "the model is unconditional (num_classes <= 0)".into(),
                });
            }
        };
        let mut h = tokens.add(&self.pos_embed)?;
        let mut skips = Vec::with_capacity(self.in_blocks.len());
        for blk in &self.in_blocks {
            h = blk.forward(&h, None)?;
            skips.push(h.clone());
        }
        h = self.mid_block.forward(&h, None)?;
        for blk in &self.out_blocks {
            // Last in, first out: out-block i pairs with in-block depth/2-1-i.
            let skip = skips.pop();
            h = blk.forward(&h, skip.as_ref())?;
        }
        let h = self.decoder_pred.forward(&self.norm.forward(&h)?)?;
        let h = h.narrow(1, cfg.extras(), cfg.num_patches())?;
        let out = unpatchify(&h, c, cfg.patch_size, cfg.img_size / cfg.patch_size)?;
        match &self.final_layer {
            Some(conv) => Ok(conv.forward(&out)?),
            None => Ok(out),
        }
    }
}

/// `B (h w) (p1 p2 C) -> B C (h p1) (w p2)`.
fn unpatchify(x: &Tensor, c: usize, p: usize, hw: usize) -> Result<Tensor> {
    let b = x.shape()[0];
    Ok(x.reshape(&[b, hw, hw, p, p, c])?.permute(&[0, 5, 1, 3, 2, 4])?.reshape(&[b, c, hw * p, hw * p])?)
}

impl EpsModel for UViT {
    fn predict_eps(&self, x: &Tensor, t: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        self.forward(x, t, y)
    }
}

// The trait object handed to samplers must be shareable across threads.
const _: () = {
    fn check<T: Send + Sync>() {}
    #[allow(dead_code)]
    fn uvit_is_send_sync() {
        check::<UViT>();
    }
};
