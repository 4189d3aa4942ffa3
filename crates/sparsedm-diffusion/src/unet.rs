//! The DDPM UNet of Ho et al. (2020), exactly as pesser/pytorch_diffusion
//! `model.py` (the PyTorch port that loads the official CIFAR-10, LSUN and
//! CelebA-HQ checkpoints): ResNet blocks with a projected time embedding,
//! single-head self-attention at chosen resolutions, skip connections from
//! every down-path activation to the up path.
//!
//! Parameter names are the reference `state_dict()` names (`temb.dense.0.weight`,
//! `down.1.block.0.nin_shortcut.weight`, `mid.attn_1.q.weight`, `up.0.upsample.conv.bias`, …).
//! Every Conv2d and Linear carries a [`sparsedm_layers::SparseSlot`].

use crate::error::{DiffusionError, Result};
use crate::model::EpsModel;
use crate::uvit::times_f32;
use sparsedm_layers::{Conv2d, Conv2dConfig, GroupNorm, Linear, ParamStore};
use sparsedm_tensor::{Rng, Tensor};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// `Normalize` in the reference: GroupNorm(32 groups, eps 1e-6, affine).
/// The group count is [`UNetConfig::num_groups`] (32 unless a config says
/// otherwise).
pub const DEFAULT_NUM_GROUPS: usize = 32;
const GN_EPS: f32 = 1e-6;

fn default_num_groups() -> usize {
    DEFAULT_NUM_GROUPS
}
fn is_default_num_groups(g: &usize) -> bool {
    *g == DEFAULT_NUM_GROUPS
}

fn default_ch_mult() -> Vec<usize> {
    vec![1, 2, 4, 8]
}
fn default_true() -> bool {
    true
}

/// `(in, out)` channels of each ResNet block, per resolution level.
pub(crate) type LevelChannels = Vec<Vec<(usize, usize)>>;

/// The keyword arguments of `Model.__init__` (all keyword-only there).
/// `ch`, `out_ch`, `num_res_blocks`, `attn_resolutions`, `in_channels` and
/// `resolution` have no default in the reference and are required; unknown
/// keys are an error.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Base channel count; the time embedding is 4·ch wide.
    pub ch: usize,
    /// Output channels.
    pub out_ch: usize,
    /// Channel multiplier of each resolution level (default (1, 2, 4, 8)).
    #[serde(default = "default_ch_mult")]
    pub ch_mult: Vec<usize>,
    /// ResNet blocks per level on the down path (one more on the up path).
    pub num_res_blocks: usize,
    /// Resolutions (in pixels) at which an attention block follows each ResNet block.
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability inside the ResNet blocks (default 0).
    #[serde(default)]
    pub dropout: f64,
    /// Strided 3×3 conv to downsample and a 3×3 conv after nearest upsampling
    /// (else average pooling and plain upsampling). Default true.
    #[serde(default = "default_true")]
    pub resamp_with_conv: bool,
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width (the forward checks it).
    pub resolution: usize,
    /// Inner channels of structurally pruned ResNet blocks (`sparsedm prune
    /// --method diff-pruning`): block name (`down.1.block.0`, `mid.block_2`,
    /// `up.0.block.2`) → the width of `conv1`'s output, `temb_proj`,
    /// `norm2` and `conv2`'s input (a multiple of 32, as `norm2` is a
    /// GroupNorm(32)). A block not listed keeps its output width. Absent in
    /// every reference configuration (and then not serialised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widths: Option<BTreeMap<String, usize>>,
    /// Groups of every GroupNorm (`Normalize`). The reference hard-codes 32,
    /// and every official configuration uses it (then it is not
    /// serialised). A small model may use fewer: with 32 channels,
    /// GroupNorm(32) normalises each channel on its own (an instance norm,
    /// which discards each channel's mean over the image), and leaves no
    /// channel that structural pruning could remove.
    #[serde(default = "default_num_groups", skip_serializing_if = "is_default_num_groups")]
    pub num_groups: usize,
}

impl UNetConfig {
    /// Ho et al.'s CIFAR-10 model (pytorch_diffusion `cifar10_cfg`,
    /// 35,746,307 parameters).
    pub fn cifar10_ddpm() -> Self {
        UNetConfig {
            ch: 128,
            out_ch: 3,
            ch_mult: vec![1, 2, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            dropout: 0.1,
            resamp_with_conv: true,
            in_channels: 3,
            resolution: 32,
            widths: None,
            num_groups: DEFAULT_NUM_GROUPS,
        }
    }

    /// Parses the constructor kwargs from JSON and validates them.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let cfg: UNetConfig = serde_json::from_value(value.clone()).map_err(|e| DiffusionError::Config(format!("DDPM UNet: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the options describe a buildable network.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(DiffusionError::Config(format!("DDPM UNet: {msg}")));
        if self.ch_mult.is_empty() || self.ch_mult.contains(&0) {
            return bad(format!("ch_mult {:?} must be non-empty and positive", self.ch_mult));
        }
        if self.ch < 4 || self.out_ch == 0 || self.in_channels == 0 || self.resolution == 0 {
            return bad("ch must be at least 4 and out_ch, in_channels, resolution positive".into());
        }
        // Far beyond any real model, and small enough that the shape and
        // MAC arithmetic cannot overflow: an absurd width is an error here,
        // not an allocation abort when the model is built.
        let widest = self.ch_mult.iter().copied().max().unwrap_or(1);
        for (what, v, max) in [
            ("ch", self.ch, 1 << 20),
            ("ch_mult entry", widest, 1 << 10),
            ("ch × ch_mult", self.ch.saturating_mul(widest), 1 << 20),
            ("number of levels (ch_mult)", self.ch_mult.len(), 32),
            ("num_res_blocks", self.num_res_blocks, 1 << 10),
            ("in_channels", self.in_channels, 1 << 12),
            ("out_ch", self.out_ch, 1 << 12),
            ("resolution", self.resolution, 1 << 16),
        ] {
            if v > max {
                return bad(format!("{what} {v} is larger than the supported maximum {max}"));
            }
        }
        let g = self.num_groups;
        if g == 0 || g > 1 << 20 {
            return bad(format!("num_groups {g} must be a positive group count of GroupNorm (the reference uses 32)"));
        }
        for c in self.channel_counts() {
            if c % g != 0 {
                return bad(format!(
                    "a GroupNorm({g}) would see {c} channels, not a multiple of {g} (ch {} × ch_mult {:?}, num_groups {g})",
                    self.ch, self.ch_mult
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} outside [0, 1)", self.dropout));
        }
        if let Some(widths) = &self.widths {
            let names = self.res_block_names();
            for (name, &inner) in widths {
                if !names.contains(name) {
                    return bad(format!(
                        "widths names ResNet block {name:?}, which the model does not have (blocks: {})",
                        names.join(", ")
                    ));
                }
                if inner == 0 || inner % g != 0 || inner > 1 << 20 {
                    return bad(format!(
                        "widths.{name} = {inner}: a block's inner width must be a positive multiple of {g} (its norm2 is a GroupNorm({g})), at most {}",
                        1 << 20
                    ));
                }
            }
        }
        Ok(())
    }

    /// The names of the ResNet blocks in forward order: `down.i.block.j`,
    /// `mid.block_1`, `mid.block_2`, `up.i.block.j` (up path from the
    /// lowest resolution).
    pub fn res_block_names(&self) -> Vec<String> {
        let n = self.levels();
        let down = (0..n).flat_map(|i| (0..self.num_res_blocks).map(move |j| format!("down.{i}.block.{j}")));
        let mid = ["mid.block_1".to_string(), "mid.block_2".to_string()];
        let up = (0..n).rev().flat_map(|i| (0..=self.num_res_blocks).map(move |j| format!("up.{i}.block.{j}")));
        down.chain(mid).chain(up).collect()
    }

    /// Inner width of ResNet block `name` whose output width is `out`: its
    /// override, else `out`.
    pub fn res_inner(&self, name: &str, out: usize) -> usize {
        self.widths.as_ref().and_then(|w| w.get(name).copied()).unwrap_or(out)
    }

    /// Number of resolution levels.
    pub fn levels(&self) -> usize {
        self.ch_mult.len()
    }
    /// Time-embedding width, 4·ch.
    pub fn temb_ch(&self) -> usize {
        4 * self.ch
    }
    /// Spatial size at level `i` (the reference halves with `//`).
    pub fn level_resolution(&self, i: usize) -> usize {
        (0..i).fold(self.resolution, |r, _| r / 2)
    }
    /// Whether level `i` has attention blocks.
    pub fn level_has_attn(&self, i: usize) -> bool {
        self.attn_resolutions.contains(&self.level_resolution(i))
    }

    /// `(in, out)` channels of every ResNet block: down path, middle, up path
    /// (in that order), as the constructor computes them.
    pub(crate) fn res_block_channels(&self) -> (LevelChannels, usize, LevelChannels) {
        let ch = self.ch;
        let in_mult: Vec<usize> = std::iter::once(1).chain(self.ch_mult.iter().copied()).collect();
        let mut down = Vec::new();
        let mut block_in = ch;
        for i in 0..self.levels() {
            let mut lv = Vec::new();
            block_in = ch * in_mult[i];
            let block_out = ch * self.ch_mult[i];
            for _ in 0..self.num_res_blocks {
                lv.push((block_in, block_out));
                block_in = block_out;
            }
            down.push(lv);
        }
        let mid = block_in;
        let mut up = vec![Vec::new(); self.levels()];
        for i in (0..self.levels()).rev() {
            let block_out = ch * self.ch_mult[i];
            for j in 0..=self.num_res_blocks {
                let skip_in = if j == self.num_res_blocks { ch * in_mult[i] } else { ch * self.ch_mult[i] };
                up[i].push((block_in + skip_in, block_out));
                block_in = block_out;
            }
        }
        (down, mid, up)
    }

    /// Every channel count a GroupNorm sees.
    fn channel_counts(&self) -> Vec<usize> {
        let (down, mid, up) = self.res_block_channels();
        let mut v: Vec<usize> = down.iter().chain(&up).flatten().flat_map(|&(a, b)| [a, b]).collect();
        v.push(mid);
        v.push(self.ch);
        v
    }
}

/// Sinusoidal embedding of Ho et al. (pytorch_diffusion `get_timestep_embedding`):
/// frequencies exp(−k·ln(10000)/(half − 1)), **sin first, then cos**, a zero
/// column when `dim` is odd. f32 in PyTorch's operation order.
pub fn ddpm_timestep_embedding(t: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let step = -((10000f64.ln() / (half as f64 - 1.0)) as f32);
    let freqs: Vec<f32> = (0..half).map(|k| (k as f32 * step).exp()).collect();
    let mut out = vec![0f32; t.len() * dim];
    for (row, &tv) in out.chunks_mut(dim).zip(t) {
        for (k, &f) in freqs.iter().enumerate() {
            let a = tv * f;
            row[k] = a.sin();
            row[half + k] = a.cos();
        }
    }
    out
}

/// Dropout state of one forward pass.
struct Dropout<'a> {
    p: f32,
    rng: Option<&'a mut Rng>,
}

impl Dropout<'_> {
    fn apply(&mut self, x: Tensor) -> Result<Tensor> {
        match self.rng.as_deref_mut() {
            Some(rng) if self.p > 0.0 => Ok(x.dropout(self.p, true, rng)?),
            _ => Ok(x),
        }
    }
}

fn conv3(store: &ParamStore, inp: usize, out: usize) -> Result<Conv2d> {
    Ok(Conv2d::new(store, inp, out, Conv2dConfig::square(3, 1, 1))?)
}
fn conv1(store: &ParamStore, inp: usize, out: usize) -> Result<Conv2d> {
    Ok(Conv2d::new(store, inp, out, Conv2dConfig::square(1, 1, 0))?)
}

/// `ResnetBlock` (with the 1×1 `nin_shortcut` when the width changes; the
/// reference never enables `conv_shortcut`).
#[derive(Debug, Clone)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    /// `inp` → `inner` (conv1, temb_proj, norm2) → `out` (conv2); `inner` is
    /// `out` except in a pruned model.
    fn new(store: &ParamStore, groups: usize, inp: usize, inner: usize, out: usize, temb_ch: usize) -> Result<Self> {
        Ok(ResnetBlock {
            norm1: GroupNorm::new(&store.pp("norm1"), groups, inp, GN_EPS)?,
            conv1: conv3(&store.pp("conv1"), inp, inner)?,
            temb_proj: Linear::new(&store.pp("temb_proj"), temb_ch, inner, true)?,
            norm2: GroupNorm::new(&store.pp("norm2"), groups, inner, GN_EPS)?,
            conv2: conv3(&store.pp("conv2"), inner, out)?,
            nin_shortcut: if inp != out { Some(conv1(&store.pp("nin_shortcut"), inp, out)?) } else { None },
        })
    }

    /// `temb_act` is swish(temb), the same for every block, so computed once.
    fn forward(&self, x: &Tensor, temb_act: &Tensor, drop: &mut Dropout<'_>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        let (b, c) = (h.shape()[0], h.shape()[1]);
        let h = h.add(&self.temb_proj.forward(temb_act)?.reshape(&[b, c, 1, 1])?)?;
        let h = drop.apply(self.norm2.forward(&h)?.silu()?)?;
        let h = self.conv2.forward(&h)?;
        let x = match &self.nin_shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        Ok(x.add(&h)?)
    }
}

/// `AttnBlock`: single-head self-attention over the H·W positions with
/// 1×1-conv q, k, v and output projection, scale C^−½, residual.
#[derive(Debug, Clone)]
struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    fn new(store: &ParamStore, groups: usize, c: usize) -> Result<Self> {
        Ok(AttnBlock {
            norm: GroupNorm::new(&store.pp("norm"), groups, c, GN_EPS)?,
            q: conv1(&store.pp("q"), c, c)?,
            k: conv1(&store.pp("k"), c, c)?,
            v: conv1(&store.pp("v"), c, c)?,
            proj_out: conv1(&store.pp("proj_out"), c, c)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let hn = self.norm.forward(x)?;
        let flat = |t: Tensor| t.reshape(&[b, c, h * w]);
        let q = flat(self.q.forward(&hn)?)?;
        let k = flat(self.k.forward(&hn)?)?;
        let v = flat(self.v.forward(&hn)?)?;
        // w[b, i, j] = Σ_c q[b, c, i] k[b, c, j] (strided views, no copies)
        let scale = (c as f64).powf(-0.5) as f32;
        let att = q.transpose(1, 2)?.matmul(&k)?.mul_scalar(scale)?.softmax(2)?;
        // h[b, c, j] = Σ_i v[b, c, i] w[b, j, i]
        let out = v.matmul(&att.transpose(1, 2)?)?.reshape(&[b, c, h, w])?;
        Ok(x.add(&self.proj_out.forward(&out)?)?)
    }
}

#[derive(Debug, Clone)]
struct Level {
    blocks: Vec<ResnetBlock>,
    attns: Vec<AttnBlock>,
    /// Downsample (down path) or upsample (up path) conv, when `resamp_with_conv`.
    resample_conv: Option<Conv2d>,
    /// Whether the level resamples at all (every level but the last/first).
    resample: bool,
}

/// The DDPM UNet.
#[derive(Debug)]
pub struct UNet {
    cfg: UNetConfig,
    store: ParamStore,
    temb_dense: (Linear, Linear),
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: (ResnetBlock, AttnBlock, ResnetBlock),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Dropout randomness for [`EpsModel::predict_eps`] and [`UNet::forward`].
    dropout_rng: Mutex<Option<Rng>>,
}

impl UNet {
    /// Builds the parameters in `store` with PyTorch's default init (the
    /// reference sets no init of its own).
    pub fn new(store: &ParamStore, cfg: &UNetConfig) -> Result<Self> {
        cfg.validate()?;
        let temb_ch = cfg.temb_ch();
        let g = cfg.num_groups;
        let td = store.pp("temb").pp("dense");
        let temb_dense = (Linear::new(&td.pp(0), cfg.ch, temb_ch, true)?, Linear::new(&td.pp(1), temb_ch, temb_ch, true)?);
        let conv_in = conv3(&store.pp("conv_in"), cfg.in_channels, cfg.ch)?;
        let (down_ch, mid_ch, up_ch) = cfg.res_block_channels();
        let n = cfg.levels();
        let mut down = Vec::with_capacity(n);
        for (i, chans) in down_ch.iter().enumerate() {
            let s = store.pp("down").pp(i);
            let blocks = chans
                .iter()
                .enumerate()
                .map(|(j, &(a, b))| {
                    ResnetBlock::new(&s.pp("block").pp(j), g, a, cfg.res_inner(&format!("down.{i}.block.{j}"), b), b, temb_ch)
                })
                .collect::<Result<Vec<_>>>()?;
            let attns = if cfg.level_has_attn(i) {
                chans.iter().enumerate().map(|(j, &(_, b))| AttnBlock::new(&s.pp("attn").pp(j), g, b)).collect::<Result<Vec<_>>>()?
            } else {
                Vec::new()
            };
            let resample = i + 1 != n;
            // Width after the level's blocks (its input width when it has none).
            let c = chans.last().map_or(cfg.ch * if i == 0 { 1 } else { cfg.ch_mult[i - 1] }, |&(_, b)| b);
            let resample_conv = if resample && cfg.resamp_with_conv {
                Some(Conv2d::new(&s.pp("downsample").pp("conv"), c, c, Conv2dConfig::square(3, 2, 0))?)
            } else {
                None
            };
            down.push(Level { blocks, attns, resample_conv, resample });
        }
        let m = store.pp("mid");
        let mid = (
            ResnetBlock::new(&m.pp("block_1"), g, mid_ch, cfg.res_inner("mid.block_1", mid_ch), mid_ch, temb_ch)?,
            AttnBlock::new(&m.pp("attn_1"), g, mid_ch)?,
            ResnetBlock::new(&m.pp("block_2"), g, mid_ch, cfg.res_inner("mid.block_2", mid_ch), mid_ch, temb_ch)?,
        );
        let mut up = Vec::with_capacity(n);
        for (i, chans) in up_ch.iter().enumerate() {
            let s = store.pp("up").pp(i);
            let blocks = chans
                .iter()
                .enumerate()
                .map(|(j, &(a, b))| {
                    ResnetBlock::new(&s.pp("block").pp(j), g, a, cfg.res_inner(&format!("up.{i}.block.{j}"), b), b, temb_ch)
                })
                .collect::<Result<Vec<_>>>()?;
            let attns = if cfg.level_has_attn(i) {
                chans.iter().enumerate().map(|(j, &(_, b))| AttnBlock::new(&s.pp("attn").pp(j), g, b)).collect::<Result<Vec<_>>>()?
            } else {
                Vec::new()
            };
            let resample = i != 0;
            let c = cfg.ch * cfg.ch_mult[i];
            let resample_conv = if resample && cfg.resamp_with_conv { Some(conv3(&s.pp("upsample").pp("conv"), c, c)?) } else { None };
            up.push(Level { blocks, attns, resample_conv, resample });
        }
        let out_in = cfg.ch * cfg.ch_mult[0];
        Ok(UNet {
            cfg: cfg.clone(),
            store: store.clone(),
            temb_dense,
            conv_in,
            down,
            mid,
            up,
            norm_out: GroupNorm::new(&store.pp("norm_out"), g, out_in, GN_EPS)?,
            conv_out: conv3(&store.pp("conv_out"), out_in, cfg.out_ch)?,
            dropout_rng: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The store the parameters live in (sparse slots, training flag).
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Per-layer MACs of one forward pass at `batch`, each layer's N:M
    /// pattern taken from its sparse slot.
    pub fn mac_report(&self, batch: usize) -> crate::macs::MacReport {
        let mut r = crate::macs::unet_macs(&self.cfg, batch);
        r.apply_store(&self.store);
        r
    }

    /// Installs the seeded generator that [`UNet::forward`] and
    /// [`EpsModel::predict_eps`] draw dropout masks from while the store is
    /// in training mode. A fresh UNet has none and so evaluates
    /// deterministically (eval semantics), which is what parity checks and
    /// sampling want.
    pub fn set_dropout_rng(&self, rng: Option<Rng>) {
        *self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner()) = rng;
    }

    /// Whether a forward pass now would apply dropout: `dropout > 0`, the
    /// store in training mode and a generator installed.
    pub fn dropout_active(&self) -> bool {
        self.cfg.dropout > 0.0 && self.store.is_training() && self.dropout_rng.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// ε̂(x, t) with the installed dropout generator (see
    /// [`UNet::set_dropout_rng`]). `x` `[B, in_channels, R, R]`, `t` `[B]`.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let mut guard = self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner());
        self.forward_impl(x, t, guard.as_mut())
    }

    /// ε̂(x, t) drawing dropout masks from `rng` when the store is in
    /// training mode (eval mode ignores `rng`).
    pub fn forward_with_rng(&self, x: &Tensor, t: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        self.forward_impl(x, t, Some(rng))
    }

    fn forward_impl(&self, x: &Tensor, t: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (c, r) = (cfg.in_channels, cfg.resolution);
        let b = match *x.shape() {
            [b, xc, h, w] if xc == c && h == r && w == r => b,
            _ => {
                return Err(DiffusionError::Input {
                    what: "UNet input x".into(),
                    msg: format!("expected [B, {c}, {r}, {r}], got {:?}", x.shape()),
                });
            }
        };
        let train = self.store.is_training() && cfg.dropout > 0.0;
        let mut drop = Dropout { p: cfg.dropout as f32, rng: if train { rng } else { None } };
        let tv = times_f32(t, b, "UNet timesteps t")?;
        let temb = Tensor::from_vec(ddpm_timestep_embedding(&tv, cfg.ch), &[b, cfg.ch], &x.device())?;
        let temb = self.temb_dense.1.forward(&self.temb_dense.0.forward(&temb)?.silu()?)?;
        let temb_act = temb.silu()?;

        let mut hs = vec![self.conv_in.forward(x)?];
        for level in &self.down {
            for (j, blk) in level.blocks.iter().enumerate() {
                let last = hs.last().ok_or_else(|| internal("empty skip stack"))?;
                let mut h = blk.forward(last, &temb_act, &mut drop)?;
                if let Some(a) = level.attns.get(j) {
                    h = a.forward(&h)?;
                }
                hs.push(h);
            }
            if level.resample {
                let last = hs.last().ok_or_else(|| internal("empty skip stack"))?;
                let h = match &level.resample_conv {
                    Some(conv) => conv.forward(&last.pad2d(0, 1, 0, 1, 0.0)?)?,
                    None => last.avg_pool2d(2, 2, 0, true)?,
                };
                hs.push(h);
            }
        }
        let mut h = hs.last().ok_or_else(|| internal("empty skip stack"))?.clone();
        h = self.mid.0.forward(&h, &temb_act, &mut drop)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h, &temb_act, &mut drop)?;
        for level in self.up.iter().rev() {
            for (j, blk) in level.blocks.iter().enumerate() {
                let skip = hs.pop().ok_or_else(|| internal("skip stack exhausted"))?;
                h = blk.forward(&Tensor::cat(&[&h, &skip], 1)?, &temb_act, &mut drop)?;
                if let Some(a) = level.attns.get(j) {
                    h = a.forward(&h)?;
                }
            }
            if level.resample {
                h = h.upsample_nearest2d(2)?;
                if let Some(conv) = &level.resample_conv {
                    h = conv.forward(&h)?;
                }
            }
        }
        let h = self.norm_out.forward(&h)?.silu()?;
        Ok(self.conv_out.forward(&h)?)
    }
}

fn internal(msg: &str) -> DiffusionError {
    DiffusionError::Input { what: "UNet".into(), msg: format!("internal: {msg}") }
}

impl EpsModel for UNet {
    fn predict_eps(&self, x: &Tensor, t: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        if y.is_some() {
            return Err(DiffusionError::Input { what: "UNet class labels y".into(), msg: "the DDPM UNet is unconditional".into() });
        }
        self.forward(x, t)
    }
}
