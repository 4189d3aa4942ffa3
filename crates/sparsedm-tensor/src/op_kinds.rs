//! The vocabulary shared by the device-free ops (`ops/`) and the
//! backends (`backend/`): what an element-wise op computes, the
//! geometry of a convolution or a pool, which random draw to make, the
//! scalars of a fused AdamW step. Plain data with no behaviour of its own,
//! so that ops and backends both import it and never each other.

/// What a unary element-wise op computes (`x` is the input).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum UnaryKind {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Powf(f32),
    Sqr,
    Abs,
    Tanh,
    Sigmoid,
    Relu,
    Gelu,
    Silu,
    /// `a·x + b`.
    Affine(f32, f32),
    /// `min(max(x, lo), hi)`.
    Clamp(f32, f32),
}

/// What a binary element-wise op computes from `a` and `b`. The `…Bwd`
/// kinds are backward rules fused into one pass: `a` is the output
/// gradient, `b` the saved input `x` or output `y` named in each line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
    /// NaN-propagating maximum (`f32::max` on the CPU).
    Max,
    /// `a ≥ b` as 1.0/0.0.
    Ge,
    /// `−a/b`.
    NegDiv,
    /// `a·(1 − b)`.
    MulComplement,
    /// `a·GELU′(x)`.
    GeluBwd,
    /// `a·SiLU′(x)`.
    SiluBwd,
    /// `a·(1 − y²)`.
    TanhBwd,
    /// `a·y·(1 − y)`.
    SigmoidBwd,
    /// `x > 0 ? a : 0`.
    ReluBwd,
    /// `0.5·a/y`.
    SqrtBwd,
    /// `−0.5·a·y³`.
    RsqrtBwd,
    /// `a·p·x^(p−1)`.
    PowfBwd(f32),
    /// `2·a·x`.
    SqrBwd,
    /// `a·sign(x)` (0 at 0 and at NaN).
    AbsBwd,
    /// `lo ≤ x ≤ hi ? a : 0` (0 at NaN).
    ClampBwd(f32, f32),
}

/// Shapes of one 2-D convolution (NCHW input `[n, c, h, w]`, weight
/// `[o, c, kh, kw]`, output `[n, o, ho, wo]`), validated by the op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// Rows of the im2col matrix: `c·kh·kw`.
    pub fn ck(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output positions per image: `ho·wo`.
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }
    /// A 1×1 stride-1 unpadded conv reads the image itself as its columns.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
}

/// Shapes of one square-window pool over NCHW planes: input `[n, c, h, w]`,
/// window `k`, stride `s`, padding `p`, output `[n, c, ho, wo]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Which random values a backend draws from a Philox stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Draw {
    Normal,
    /// Uniform in `[lo, hi)`.
    Uniform(f32, f32),
    /// Dropout multipliers: `u < p ? 0 : scale`.
    Dropout(f32, f32),
}

/// The per-step scalars of one AdamW update (PyTorch's `torch.optim.AdamW`,
/// amsgrad off): `p ← p·decay; m ← m + (1−β₁)(g − m); v ← β₂v + (1−β₂)g²;
/// p ← p − step_size·m / (√v / bc2_sqrt + ε)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    /// Learning rate of this step (already folded into `decay` and `step_size`).
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 − lr·weight_decay` (decoupled weight decay).
    pub decay: f32,
    /// `lr / (1 − β₁ᵗ)`, computed in f64 and rounded to f32.
    pub step_size: f32,
    /// `√(1 − β₂ᵗ)`, computed in f64 and rounded to f32.
    pub bc2_sqrt: f32,
}

impl AdamWScalars {
    /// The scalars of step `t` (1-based), with the CPU optimizer's arithmetic.
    pub fn new(lr: f32, betas: (f32, f32), eps: f32, weight_decay: f32, t: u64) -> Self {
        let t = t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (betas.0 as f64).powi(t);
        let bc2_sqrt = (1.0 - (betas.1 as f64).powi(t)).sqrt();
        AdamWScalars {
            lr,
            beta1: betas.0,
            beta2: betas.1,
            eps,
            decay: 1.0 - lr * weight_decay,
            step_size: (lr as f64 / bc1) as f32,
            bc2_sqrt: bc2_sqrt as f32,
        }
    }
}

/// For each output index: the two source indices and the weight of the
/// second, following ATen's `area_pixel_compute_source_index` with
/// `align_corners=False` (src = (dst + ½)·in/out − ½, clamped at 0).
pub(crate) fn bilinear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// Shapes of one scaled dot-product attention: `q [batch…, lq, d]`,
/// `k [batch…, lk, d]`, `v [batch…, lk, dv]`, with `batch` the product of
/// the (broadcast) batch dims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnDims {
    pub batch: usize,
    pub lq: usize,
    pub lk: usize,
    pub d: usize,
    pub dv: usize,
}
