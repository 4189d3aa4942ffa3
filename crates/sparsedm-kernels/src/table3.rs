//! The paper's Table 3 measurement: the forward time of one U-ViT transformer block (pre-norm:
//! `x += proj(attn(LN(x)))`, `x += fc2(GELU(fc1(LN(x))))`) in f16, dense against 2:4 on qkv, proj,
//! fc1 and fc2, for width 8192 = 8 heads × 1024, batch 64, a 32×32 input with patch 1/2/4
//! (1025/257/65 tokens with the time token) and mlp_ratio 1/2/4/8 (../shared/GPU.md §6).
//!
//! The block is composed directly from this crate's kernels (no autograd, no host round trips),
//! so it measures what the deployment path runs: LayerNorm (standardize + affine), the four Linear
//! layers ([`Linear24`]), attention as two strided-batched GEMMs around a row softmax, GELU and the
//! residual adds. Three timings per cell: all four Linear layers dense (cuBLAS), all forced
//! through cuSPARSELt, and dispatched (each layer takes its faster path, [`crate::dispatch`]).

use std::sync::Arc;

use crate::abi::{SdmLayout, binary, unary};
use crate::dispatch::Dispatch;
use crate::gemm::{F32Math, GemmShape, Operand, gemm};
use crate::linear24::Linear24;
use crate::timing::time_ms;
use crate::{DeviceBuffer, Gpu, GpuDType, KernelsError, Result, ops};

/// One cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockConfig {
    pub batch: usize,
    pub tokens: usize,
    pub width: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
}

impl BlockConfig {
    /// The paper's configuration for a 32×32 input at `patch` and `mlp_ratio`.
    pub fn paper(patch: usize, mlp_ratio: usize) -> BlockConfig {
        BlockConfig { batch: 64, tokens: (32 / patch) * (32 / patch) + 1, width: 8192, heads: 8, mlp_ratio }
    }
}

/// Milliseconds per block forward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockTiming {
    pub dense_ms: f64,
    pub sparse_ms: f64,
    pub dispatched_ms: f64,
}

impl BlockTiming {
    /// Dense time over forced-2:4 time.
    pub fn sparse_speedup(&self) -> f64 {
        self.dense_ms / self.sparse_ms
    }
    /// Dense time over dispatched time (never below ~1 by construction, up to timing noise).
    pub fn dispatched_speedup(&self) -> f64 {
        self.dense_ms / self.dispatched_ms
    }
}

/// How the four Linear layers run in one timed forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Dense,
    Sparse,
    Dispatched,
}

struct Block {
    gpu: Arc<Gpu>,
    cfg: BlockConfig,
    ln_w: DeviceBuffer,
    ln_b: DeviceBuffer,
    qkv: Linear24,
    proj: Linear24,
    fc1: Linear24,
    fc2: Linear24,
}

const DT: GpuDType = GpuDType::F16;

fn layout(shape: &[usize], strides: &[usize], offset: usize) -> Result<SdmLayout> {
    SdmLayout::new(shape, strides, offset).ok_or_else(|| KernelsError::invalid("table3", "layout rank"))
}

fn f16_normal(gpu: &Gpu, len: usize, seed: u64, scale: f32) -> Result<DeviceBuffer> {
    let mut f = gpu.alloc(len * 4)?;
    ops::rng::normal(gpu, len, seed, 0, &mut f)?;
    let mut g = gpu.alloc(len * 4)?;
    ops::elementwise::unary(gpu, GpuDType::F32, unary::AFFINE, scale, 0.0, &f, &layout(&[len], &[1], 0)?, &mut g)?;
    let mut h = gpu.alloc(len * 2)?;
    ops::copy::cast(gpu, len, GpuDType::F32, &g, DT, &mut h)?;
    Ok(h)
}

/// A random 2:4 f16 weight `[n, k]` (N(0, 1/k) before masking) and a small bias.
fn linear(gpu: &Arc<Gpu>, name: &str, n: usize, k: usize, seed: u64, dispatch: &Arc<Dispatch>) -> Result<Linear24> {
    let mut w = gpu.alloc(n * k * 4)?;
    ops::rng::normal(gpu, n * k, seed, 0, &mut w)?;
    let mut mask = gpu.alloc(n * k * 4)?;
    ops::sparse::nm_mask(gpu, n, k, 1, 2, 4, &w, &mut mask)?;
    let mut scaled = gpu.alloc(n * k * 4)?;
    ops::elementwise::unary(gpu, GpuDType::F32, unary::AFFINE, 1.0 / (k as f32).sqrt(), 0.0, &w, &layout(&[n * k], &[1], 0)?, &mut scaled)?;
    let mut wh = gpu.alloc(n * k * 2)?;
    ops::sparse::masked_weight(gpu, DT, n * k, &scaled, &mask, &mut wh)?;
    drop((w, mask, scaled));
    let bias = f16_normal(gpu, n, seed + 1, 0.01)?;
    Linear24::new(gpu, name, wh, Some(bias), n, k, DT, dispatch.clone())
}

impl Block {
    fn new(gpu: &Arc<Gpu>, cfg: BlockConfig, dispatch: &Arc<Dispatch>) -> Result<Block> {
        let d = cfg.width;
        Ok(Block {
            gpu: gpu.clone(),
            cfg,
            ln_w: f16_normal(gpu, d, 11, 0.1)?,
            ln_b: f16_normal(gpu, d, 12, 0.1)?,
            qkv: linear(gpu, "qkv", 3 * d, d, 21, dispatch)?,
            proj: linear(gpu, "proj", d, d, 31, dispatch)?,
            fc1: linear(gpu, "fc1", cfg.mlp_ratio * d, d, 41, dispatch)?,
            fc2: linear(gpu, "fc2", d, cfg.mlp_ratio * d, 51, dispatch)?,
        })
    }

    fn linear(&self, l: &Linear24, mode: Mode, x: &DeviceBuffer, m: usize, y: &mut DeviceBuffer) -> Result<()> {
        match mode {
            Mode::Dense => l.dense(x, m, y),
            Mode::Sparse if l.has_sparse() => l.forward_sparse(x, m, y),
            Mode::Sparse => Err(KernelsError::Sparse { call: "table3", reason: format!("layer {} has no 2:4 form", l.name()) }),
            Mode::Dispatched => l.forward(x, m, y),
        }
    }

    /// `y = LN(x)·γ + β` over rows of `width`.
    fn layer_norm(&self, x: &DeviceBuffer, rows: usize, s: &mut Scratch) -> Result<()> {
        let (g, d) = (&self.gpu, self.cfg.width);
        ops::norm::standardize_fwd(g, DT, rows, d, 1e-5, x, &mut s.norm, &mut s.mean, &mut s.rstd)?;
        let full = layout(&[rows, d], &[d, 1], 0)?;
        let row = layout(&[rows, d], &[0, 1], 0)?;
        ops::elementwise::binary(g, DT, binary::MUL, &s.norm, &full, &self.ln_w, &row, &mut s.tmp)?;
        ops::elementwise::binary(g, DT, binary::ADD, &s.tmp, &full, &self.ln_b, &row, &mut s.norm)
    }

    /// One block forward: `x` in, `s.out` out.
    fn forward(&self, mode: Mode, x: &DeviceBuffer, s: &mut Scratch) -> Result<()> {
        let g = &self.gpu;
        let BlockConfig { batch: b, tokens: l, width: d, heads: h, mlp_ratio: r } = self.cfg;
        let (m, dh) = (b * l, d / h);
        self.layer_norm(x, m, s)?;
        self.linear(&self.qkv, mode, &s.norm, m, &mut s.qkv)?;
        // qkv [b, l, 3, h, dh] → q, k, v each [b·h, l, dh] contiguous.
        for (i, dst) in [&mut s.q, &mut s.k, &mut s.v].into_iter().enumerate() {
            let src = layout(&[b, h, l, dh], &[l * 3 * d, dh, 3 * d, 1], i * d)?;
            ops::copy::copy_strided(g, DT, &s.qkv, &src, dst, &layout(&[b, h, l, dh], &[h * l * dh, l * dh, dh, 1], 0)?)?;
        }
        // scores[bh] = q·kᵀ / sqrt(dh); softmax; o[bh] = p·v.
        let scale = 1.0 / (dh as f32).sqrt();
        let sh = GemmShape { m: l, n: l, k: dh, batch: b * h, input: DT, output: DT, f32_math: F32Math::Exact };
        let q = Operand { buf: &s.q, offset: 0, ld: dh, batch_stride: l * dh, trans: false };
        let k = Operand { buf: &s.k, offset: 0, ld: dh, batch_stride: l * dh, trans: true };
        gemm(g, &sh, scale, q, k, 0.0, &mut s.scores, 0, l, l * l)?;
        ops::softmax::softmax(g, DT, false, b * h * l, l, &s.scores, &mut s.probs)?;
        let sh = GemmShape { m: l, n: dh, k: l, batch: b * h, input: DT, output: DT, f32_math: F32Math::Exact };
        let p = Operand { buf: &s.probs, offset: 0, ld: l, batch_stride: l * l, trans: false };
        let v = Operand { buf: &s.v, offset: 0, ld: dh, batch_stride: l * dh, trans: false };
        gemm(g, &sh, 1.0, p, v, 0.0, &mut s.q, 0, dh, l * dh)?;
        // o [b, h, l, dh] → [b, l, h·dh].
        let src = layout(&[b, l, h, dh], &[h * l * dh, dh, l * dh, 1], 0)?;
        ops::copy::copy_strided(g, DT, &s.q, &src, &mut s.attn, &layout(&[b, l, h, dh], &[l * d, d, dh, 1], 0)?)?;
        self.linear(&self.proj, mode, &s.attn, m, &mut s.tmp)?;
        let flat = layout(&[m * d], &[1], 0)?;
        ops::elementwise::binary(g, DT, binary::ADD, x, &flat, &s.tmp, &flat, &mut s.x1)?;
        // MLP.
        let x1 = std::mem::replace(&mut s.x1, g.alloc(0)?);
        self.layer_norm(&x1, m, s)?;
        self.linear(&self.fc1, mode, &s.norm, m, &mut s.hidden)?;
        ops::elementwise::unary(g, DT, unary::GELU, 0.0, 0.0, &s.hidden, &layout(&[m * r * d], &[1], 0)?, &mut s.hidden2)?;
        self.linear(&self.fc2, mode, &s.hidden2, m, &mut s.tmp)?;
        ops::elementwise::binary(g, DT, binary::ADD, &x1, &flat, &s.tmp, &flat, &mut s.out)?;
        s.x1 = x1;
        Ok(())
    }
}

/// Activations and temporaries of one block, allocated once per cell.
struct Scratch {
    norm: DeviceBuffer,
    tmp: DeviceBuffer,
    mean: DeviceBuffer,
    rstd: DeviceBuffer,
    qkv: DeviceBuffer,
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    scores: DeviceBuffer,
    probs: DeviceBuffer,
    attn: DeviceBuffer,
    x1: DeviceBuffer,
    hidden: DeviceBuffer,
    hidden2: DeviceBuffer,
    out: DeviceBuffer,
}

impl Scratch {
    fn new(g: &Gpu, c: &BlockConfig) -> Result<Scratch> {
        let (m, d, e) = (c.batch * c.tokens, c.width, DT.size());
        let a = |n: usize| g.alloc(n * e);
        let bh_l_l = c.batch * c.heads * c.tokens * c.tokens;
        // Linear outputs get 8 rows of slack so cuSPARSELt's padded row count fits in place.
        let pad = m.div_ceil(8) * 8;
        Ok(Scratch {
            norm: a(pad * d)?,
            tmp: a(pad * d)?,
            mean: g.alloc(m * 4)?,
            rstd: g.alloc(m * 4)?,
            qkv: a(pad * 3 * d)?,
            q: a(m * d)?,
            k: a(m * d)?,
            v: a(m * d)?,
            scores: a(bh_l_l)?,
            probs: a(bh_l_l)?,
            attn: a(pad * d)?,
            x1: a(m * d)?,
            hidden: a(pad * c.mlp_ratio * d)?,
            hidden2: a(pad * c.mlp_ratio * d)?,
            out: a(m * d)?,
        })
    }
}

/// Times one block configuration three ways (see the module docs).
pub fn time_block(gpu: &Arc<Gpu>, cfg: BlockConfig, dispatch: &Arc<Dispatch>) -> Result<BlockTiming> {
    if cfg.heads == 0 || !cfg.width.is_multiple_of(cfg.heads) {
        return Err(KernelsError::invalid("table3", format!("width {} not divisible by {} heads", cfg.width, cfg.heads)));
    }
    let block = Block::new(gpu, cfg, dispatch)?;
    let x = f16_normal(gpu, cfg.batch * cfg.tokens * cfg.width, 7, 1.0)?;
    let mut s = Scratch::new(gpu, &cfg)?;
    let mut t = |mode| time_ms(gpu, 2, 3, 3, || block.forward(mode, &x, &mut s));
    let dense_ms = t(Mode::Dense)?;
    let sparse_ms = t(Mode::Sparse)?;
    let dispatched_ms = t(Mode::Dispatched)?;
    Ok(BlockTiming { dense_ms, sparse_ms, dispatched_ms })
}
