//! The contract every backend's buffer type fulfils: [`BackendStorage`].
//! A backend sees flat buffers, [`Layout`]s and op kinds, never a `Tensor`;
//! it returns new buffers (or rewrites one in place for the fused updates).
//! Shapes are validated and layouts broadcast by the ops before they call
//! in, so a backend checks only what is its own business (dtypes, device
//! limits such as a kernel's rank).

use crate::op_kinds::{AdamWScalars, AttnDims, BinaryKind, ConvGeom, PoolGeom, UnaryKind};
use crate::{DType, Layout, Result};

/// One operand: a buffer and the view of it the op reads.
pub(crate) type Operand<'a, S> = (&'a S, &'a Layout);

/// The primitives a device provides. `op` arguments name the user-facing op
/// in errors. Every method returns contiguous storage of the result's shape
/// unless it says otherwise.
pub(crate) trait BackendStorage: Sized {
    /// The view `l` as a contiguous host buffer in its own dtype.
    fn to_cpu(&self, l: &Layout, op: &'static str) -> Result<crate::backend::cpu::buffer::CpuStorage>;
    /// A contiguous copy of the view `l` on the same device.
    fn copy_view(&self, l: &Layout, op: &'static str) -> Result<Self>;
    /// The view `l` converted to `dtype`.
    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self>;
    /// Overwrites elements `range` with the contiguous `src` (same dtype).
    fn write_range(&mut self, range: std::ops::Range<usize>, src: &Self, op: &'static str) -> Result<()>;
    /// Runs a host closure on the f32 elements `range`, in place (a GPU
    /// buffer goes through host memory).
    fn update_f32(&mut self, range: std::ops::Range<usize>, f: &mut dyn FnMut(&mut [f32])) -> Result<()>;

    /// `kind(x)` element-wise.
    fn unary(&self, l: &Layout, kind: UnaryKind, op: &'static str) -> Result<Self>;
    /// `kind(a, b)` element-wise; both layouts already have the output shape.
    fn binary(&self, l: &Layout, rhs: Operand<'_, Self>, kind: BinaryKind, op: &'static str) -> Result<Self>;
    /// `cond != 0 ? a : b`; all layouts already have the output shape.
    fn where_cond(&self, l: &Layout, a: Operand<'_, Self>, b: Operand<'_, Self>) -> Result<Self>;

    /// Sum over the sorted, distinct `dims` (kept dims in order).
    fn sum_dims(&self, l: &Layout, dims: &[usize]) -> Result<Self>;
    /// Σx² over every element of the view, as a one-element f32 buffer: a
    /// gradient's squared norm. The default squares into a temporary and
    /// sums it; a backend may read the view once instead (the CPU does,
    /// accumulating in f64).
    fn sum_sq_all(&self, l: &Layout) -> Result<Self> {
        let sq = self.unary(l, UnaryKind::Sqr, "sum_sq_all")?;
        let lc = Layout::contiguous(l.shape());
        let dims: Vec<usize> = (0..l.rank()).collect();
        sq.sum_dims(&lc, &dims)
    }
    /// Maximum over `dim` and the index (i64) of its first maximal element
    /// (NaN counts as the maximum).
    fn max_dim(&self, l: &Layout, dim: usize) -> Result<(Self, Self)>;
    /// Gradient of [`Self::max_dim`]: the output gradient `self` (laid out
    /// like the reduced shape with `dim` kept as 1) scattered to the saved
    /// indices `idx` along `dim` of an `in_shape` tensor.
    fn max_dim_backward(&self, l: &Layout, idx: &Self, in_shape: &[usize], dim: usize) -> Result<Self>;

    /// `[batch…, m, k] @ [batch…, k, n]`; both layouts are broadcast to the batch.
    #[allow(clippy::too_many_arguments)]
    fn matmul(&self, l: &Layout, rhs: Operand<'_, Self>, batch: &[usize], m: usize, k: usize, n: usize) -> Result<Self>;
    /// `x [m, k] · wᵀ + bias` with `w [n, k]` and `bias [n]`.
    #[allow(clippy::too_many_arguments)]
    fn linear(&self, l: &Layout, w: Operand<'_, Self>, bias: Option<Operand<'_, Self>>, m: usize, k: usize, n: usize) -> Result<Self>;

    /// `cat(parts, last) · wᵀ + bias` with `parts[i]` `[m, ks[i]]`, `w`
    /// `[n, Σks]` and `bias [n]`: a Linear on a concatenation (U-ViT's long
    /// skips). The default assembles the concatenation and runs
    /// [`Self::linear`]; a backend may instead add one product per part
    /// into the output (the CPU does: no concatenated copy).
    #[allow(clippy::too_many_arguments)]
    fn linear_cat(
        parts: &[Operand<'_, Self>],
        w: Operand<'_, Self>,
        bias: Option<Operand<'_, Self>>,
        m: usize,
        ks: &[usize],
        n: usize,
    ) -> Result<Self> {
        let k: usize = ks.iter().sum();
        let mut off = 0;
        let boxes: Vec<(&Self, &Layout, Layout)> = parts
            .iter()
            .zip(ks)
            .map(|(&(s, l), &ki)| {
                let b = Layout::contiguous(&[m, k]).narrow(1, off, ki)?;
                off += ki;
                Ok((s, l, b))
            })
            .collect::<Result<_>>()?;
        let x = Self::assemble(&boxes, &[m, k], None, "linear_cat")?;
        x.linear(&Layout::contiguous(&[m, k]), w, bias, m, k, n)
    }

    /// 2-D convolution `[n, c, h, w] ⋆ [o, c, kh, kw] (+ bias [o])`.
    fn conv2d(&self, l: &Layout, w: Operand<'_, Self>, bias: Option<Operand<'_, Self>>, g: &ConvGeom) -> Result<Self>;
    /// Input gradient of [`Self::conv2d`] from the output gradient `self`.
    fn conv2d_backward_input(&self, l: &Layout, w: Operand<'_, Self>, g: &ConvGeom) -> Result<Self>;
    /// Weight gradient of [`Self::conv2d`] from the output gradient `self`.
    fn conv2d_backward_weight(&self, l: &Layout, x: Operand<'_, Self>, g: &ConvGeom) -> Result<Self>;

    /// Max pool values and, when `with_argmax`, the in-plane index (i64) of
    /// each output's maximum (ties: the first element; NaN wins).
    fn max_pool2d(&self, l: &Layout, g: &PoolGeom, with_argmax: bool) -> Result<(Self, Option<Self>)>;
    /// Gradient of [`Self::max_pool2d`] from the output gradient `self`.
    fn max_pool2d_backward(&self, l: &Layout, argmax: &Self, g: &PoolGeom) -> Result<Self>;
    /// Average pool (PyTorch semantics, floor mode).
    fn avg_pool2d(&self, l: &Layout, g: &PoolGeom, count_include_pad: bool) -> Result<Self>;
    /// Gradient of [`Self::avg_pool2d`] from the output gradient `self`.
    fn avg_pool2d_backward(&self, l: &Layout, g: &PoolGeom, count_include_pad: bool) -> Result<Self>;
    /// Nearest upsampling of `[n, c, h, w]` (`nchw`) by `factor`.
    fn upsample_nearest2d(&self, l: &Layout, nchw: [usize; 4], factor: usize) -> Result<Self>;
    /// Gradient of [`Self::upsample_nearest2d`] (`nchw` is the input's shape).
    fn upsample_nearest2d_backward(&self, l: &Layout, nchw: [usize; 4], factor: usize) -> Result<Self>;
    /// Bilinear resize (`align_corners = False`) of `[n, c, h, w]` to `out`.
    fn resize_bilinear(&self, l: &Layout, nchw: [usize; 4], out: (usize, usize)) -> Result<Self>;
    /// Gradient of [`Self::resize_bilinear`] (`nchw` is the input's shape).
    fn resize_bilinear_backward(&self, l: &Layout, nchw: [usize; 4], out: (usize, usize)) -> Result<Self>;

    /// Softmax (or log-softmax) over the last dim.
    fn softmax_last(&self, l: &Layout, log: bool) -> Result<Self>;
    /// Gradient of [`Self::softmax_last`] from its output `self` and the
    /// output gradient `grad`.
    fn softmax_last_backward(&self, l: &Layout, grad: Operand<'_, Self>, log: bool) -> Result<Self>;
    /// Scaled dot-product attention `softmax(q·kᵀ·scale)·v`: `self` is q,
    /// all three layouts broadcast to the batch dims `batch`. Returns the
    /// output `[batch…, lq, dv]` as a buffer laid out as `lo` (a dense
    /// layout of that shape: a permutation of the contiguous one, offset 0,
    /// channels innermost) and, when `keep_probs` (for a backward pass), the
    /// contiguous probabilities `[batch…, lq, lk]`. This default composes
    /// the backend's own primitives (product, scale, softmax, product),
    /// exactly as the unfused op would, and copies the output into `lo`'s
    /// order when that is not the contiguous one; a backend may fuse them.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: &Layout,
        (k, lk): Operand<'_, Self>,
        (v, lv): Operand<'_, Self>,
        batch: &[usize],
        dims: AttnDims,
        scale: f32,
        keep_probs: bool,
        lo: &Layout,
    ) -> Result<(Self, Option<Self>)> {
        let r = lk.rank();
        let kt = lk.transpose(r - 2, r - 1)?;
        let scores = self.matmul(l, (k, &kt), batch, dims.lq, dims.d, dims.lk)?;
        let mut sshape = batch.to_vec();
        sshape.extend([dims.lq, dims.lk]);
        let ls = Layout::contiguous(&sshape);
        let probs = scores.unary(&ls, UnaryKind::Affine(scale, 0.0), "attention")?.softmax_last(&ls, false)?;
        let mut out = probs.matmul(&ls, (v, lv), batch, dims.lq, dims.lk, dims.dv)?;
        if !lo.is_contiguous() {
            // lo's dims from the largest stride to the smallest: the
            // contiguous output viewed in that order, copied.
            out = out.copy_view(&Layout::contiguous(lo.shape()).permute(&lo.memory_order())?, "attention")?;
        }
        Ok((out, keep_probs.then_some(probs)))
    }
    /// The gradients of [`Self::attention`]'s q (`self`), k and v, with no
    /// batch dim broadcast, from the kept probabilities `probs` (contiguous
    /// `[batch…, lq, lk]`) and the output gradient `g`: one new buffer of
    /// the contiguous `shape`, holding gq, gk and gv at the views `outs` of
    /// it, which together cover it (a packed `qkv` gradient in its memory
    /// order). This default composes the math path's products (`gv = pᵀ·g`,
    /// `gs = softmax_backward(p, g·vᵀ)·scale`, `gq = gs·k`, `gk = gsᵀ·q`) and
    /// assembles them; a backend may fuse them.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        l: &Layout,
        (k, lk): Operand<'_, Self>,
        (v, lv): Operand<'_, Self>,
        probs: &Self,
        (g, lg): Operand<'_, Self>,
        batch: &[usize],
        dims: AttnDims,
        scale: f32,
        shape: &[usize],
        outs: [&Layout; 3],
    ) -> Result<Self> {
        let op = "attention_backward";
        let r = l.rank();
        let with = |a: usize, b: usize| batch.iter().copied().chain([a, b]).collect::<Vec<_>>();
        let lp = Layout::contiguous(&with(dims.lq, dims.lk));
        let gv = probs.matmul(&lp.transpose(r - 2, r - 1)?, (g, lg), batch, dims.lk, dims.lq, dims.dv)?;
        let gp = g.matmul(lg, (v, &lv.transpose(r - 2, r - 1)?), batch, dims.lq, dims.dv, dims.lk)?;
        let gs = probs.softmax_last_backward(&lp, (&gp, &lp), false)?.unary(&lp, UnaryKind::Affine(scale, 0.0), op)?;
        let gq = gs.matmul(&lp, (k, lk), batch, dims.lq, dims.lk, dims.d)?;
        let gk = gs.matmul(&lp.transpose(r - 2, r - 1)?, (self, l), batch, dims.lk, dims.lq, dims.d)?;
        let (lq_out, lkv_out) = (Layout::contiguous(&with(dims.lq, dims.d)), Layout::contiguous(&with(dims.lk, dims.d)));
        let lv_out = Layout::contiguous(&with(dims.lk, dims.dv));
        let parts = [(&gq, &lq_out, outs[0].clone()), (&gk, &lkv_out, outs[1].clone()), (&gv, &lv_out, outs[2].clone())];
        Self::assemble(&parts, shape, None, op)
    }
    /// `(x − mean)/√(var + eps)` over the last dim; also returns `rstd` per row (f32).
    fn standardize_last(&self, l: &Layout, eps: f32) -> Result<(Self, Self)>;
    /// Layer norm over the last dim: [`Self::standardize_last`], then times
    /// `w` and plus `b` (each optional, `[D]`), and `rstd` per row. The
    /// default composes the primitives (three passes); a backend may fuse
    /// them, with the same operations in the same order (the CPU does, one
    /// pass per row).
    fn layer_norm_last(&self, l: &Layout, w: Option<Operand<'_, Self>>, b: Option<Operand<'_, Self>>, eps: f32) -> Result<(Self, Self)> {
        let (mut y, rstd) = self.standardize_last(l, eps)?;
        let ly = Layout::contiguous(l.shape());
        for (p, kind) in [(w, BinaryKind::Mul), (b, BinaryKind::Add)] {
            if let Some((p, lp)) = p {
                y = y.binary(&ly, (p, &lp.broadcast_as(l.shape())?), kind, "layer_norm")?;
            }
        }
        Ok((y, rstd))
    }
    /// Group norm of `[N, C, ...]` (`groups` divides `C`, validated by the
    /// op): each image's groups of `C/groups` channels standardized over
    /// their channels and positions, then times `w` and plus `b` per channel
    /// (each optional, `[C]`); also `rstd` per (image, group). The default
    /// composes the primitives (three passes); the CPU fuses them.
    fn group_norm(
        &self,
        l: &Layout,
        groups: usize,
        w: Option<Operand<'_, Self>>,
        b: Option<Operand<'_, Self>>,
        eps: f32,
    ) -> Result<(Self, Self)> {
        let op = "group_norm";
        let (shape, copy) = (l.shape(), if l.is_contiguous() { None } else { Some(self.copy_view(l, op)?) });
        let (x, lx) = match &copy {
            Some(c) => (c, Layout::contiguous(shape)),
            None => (self, l.clone()),
        };
        let (mut y, rstd) = x.standardize_last(&grouped(&lx, groups), eps)?;
        let ly = Layout::contiguous(shape);
        for (p, kind) in [(w, BinaryKind::Mul), (b, BinaryKind::Add)] {
            if let Some((p, lp)) = p {
                y = y.binary(&ly, (p, &per_channel(lp, shape)?), kind, op)?;
            }
        }
        Ok((y, rstd))
    }
    /// Gradients of [`Self::group_norm`] from its input `self`, its weight
    /// `w` (when it has one), the saved `rstd` and the output gradient:
    /// `[gx, gw, gb]` (`gw`, `gb` of `C`), each computed only where `need`
    /// says so. The default composes the primitives; the CPU fuses them.
    #[allow(clippy::too_many_arguments)]
    fn group_norm_backward(
        &self,
        l: &Layout,
        groups: usize,
        w: Option<Operand<'_, Self>>,
        rstd: &Self,
        (g, lg): Operand<'_, Self>,
        eps: f32,
        need: [bool; 3],
    ) -> Result<[Option<Self>; 3]> {
        let op = "group_norm_backward";
        let shape = l.shape();
        let lc = Layout::contiguous(shape);
        // Every axis but the channels': the affine parts' gradients sum over them.
        let dims: Vec<usize> = (0..shape.len()).filter(|&d| d != 1).collect();
        let copy = if l.is_contiguous() { None } else { Some(self.copy_view(l, op)?) };
        let (x, lx) = match &copy {
            Some(c) => (c, lc.clone()),
            None => (self, l.clone()),
        };
        let lgx = grouped(&lx, groups);
        let xhat = if need[0] || need[1] { Some(x.standardize_last(&lgx, eps)?.0) } else { None };
        let gx = match (&xhat, need[0]) {
            (Some(xh), true) => {
                let gxh = match w {
                    Some((ws, lw)) => g.binary(lg, (ws, &per_channel(lw, shape)?), BinaryKind::Mul, op)?,
                    None => g.copy_view(lg, op)?,
                };
                let lgc = grouped(&lc, groups);
                Some(x.standardize_last_backward(&lgx, (xh, &lgc), rstd, (&gxh, &lgc), eps)?)
            }
            _ => None,
        };
        let gw = match (&xhat, need[1]) {
            (Some(xh), true) => Some(g.binary(lg, (xh, &lc), BinaryKind::Mul, op)?.sum_dims(&lc, &dims)?),
            _ => None,
        };
        let gb = if need[2] { Some(g.sum_dims(lg, &dims)?) } else { None };
        Ok([gx, gw, gb])
    }
    /// Gradients of [`Self::layer_norm_last`] from its input `self`, its
    /// weight `w` (when it has one), the saved `rstd` and the output
    /// gradient: `[gx, gw, gb]` (`gw`, `gb` of the last dim's length), each
    /// computed only where `need` says so. The default composes the
    /// primitives (x̂ recomputed, `g·w` through the standardization's
    /// backward, column sums of `g·x̂` and `g`); the CPU fuses them into one
    /// sweep per row.
    #[allow(clippy::type_complexity)]
    fn layer_norm_last_backward(
        &self,
        l: &Layout,
        w: Option<Operand<'_, Self>>,
        rstd: &Self,
        (g, lg): Operand<'_, Self>,
        eps: f32,
        need: [bool; 3],
    ) -> Result<[Option<Self>; 3]> {
        let op = "layer_norm_backward";
        let shape = l.shape();
        let lc = Layout::contiguous(shape);
        // Every axis but the last: the affine parts' gradients sum over them.
        let rows: Vec<usize> = (0..shape.len().saturating_sub(1)).collect();
        let xhat = if need[0] || need[1] { Some(self.standardize_last(l, eps)?.0) } else { None };
        let gx = match (&xhat, need[0]) {
            (Some(xh), true) => {
                let gxh = match w {
                    Some((ws, lw)) => g.binary(lg, (ws, &lw.broadcast_as(shape)?), BinaryKind::Mul, op)?,
                    None => g.copy_view(lg, op)?,
                };
                Some(self.standardize_last_backward(l, (xh, &lc), rstd, (&gxh, &lc), eps)?)
            }
            _ => None,
        };
        let gw = match (&xhat, need[1]) {
            (Some(xh), true) => Some(g.binary(lg, (xh, &lc), BinaryKind::Mul, op)?.sum_dims(&lc, &rows)?),
            _ => None,
        };
        let gb = if need[2] { Some(g.sum_dims(lg, &rows)?) } else { None };
        Ok([gx, gw, gb])
    }
    /// Gradient of [`Self::standardize_last`] from the input `self`, the
    /// output `y`, the saved `rstd` and the output gradient (each backend
    /// reads what it needs: the CPU recomputes the statistics from `x` in
    /// f64, CUDA uses `y` and `rstd`).
    fn standardize_last_backward(&self, l: &Layout, y: Operand<'_, Self>, rstd: &Self, grad: Operand<'_, Self>, eps: f32) -> Result<Self>;

    /// Entries `idx` (validated, i64, contiguous) along `dim`.
    fn index_select(&self, l: &Layout, dim: usize, idx: &Self) -> Result<Self>;
    /// Gradient of [`Self::index_select`]: rows of `self` added into zeros of `in_shape`.
    fn index_select_backward(&self, l: &Layout, idx: &Self, in_shape: &[usize], dim: usize) -> Result<Self>;
    /// A new f32 buffer of `shape`, filled with `fill` (all of it is written
    /// when `None`), with each part's view written into its box (a view of
    /// the contiguous `shape`): `cat` and `pad`.
    fn assemble(parts: &[(&Self, &Layout, Layout)], shape: &[usize], fill: Option<f32>, op: &'static str) -> Result<Self>;

    /// One fused AdamW step: `self` (the parameter), `m` and `v` rewritten
    /// in place from the gradient; all contiguous from element 0 except `grad`.
    fn adamw_step(&mut self, grad: Operand<'_, Self>, m: &mut Self, v: &mut Self, s: &AdamWScalars, len: usize) -> Result<()>;
    /// `self ← d·self + (1 − d)·value`, in place over the first `len` elements.
    fn ema_update(&mut self, value: Operand<'_, Self>, d: f32, len: usize) -> Result<()>;
    /// The grouped `n:m` magnitude mask of a weight `[rows, inp, k…]`
    /// (groups of `m` consecutive input channels at each row and trailing
    /// position `k`; `inp` is a multiple of `m`).
    #[allow(clippy::too_many_arguments)]
    fn nm_mask(&self, l: &Layout, rows: usize, inp: usize, k: usize, n: usize, m: usize) -> Result<Self>;
}

/// The contiguous `[N, C, ...]` layout `l` viewed as `[N, groups, C/groups · ...]`
/// rows (group norm's standardization rows).
fn grouped(l: &Layout, groups: usize) -> Layout {
    let shape = l.shape();
    let n = shape[0];
    let row = l.elem_count() / (n * groups).max(1);
    l.reshape(&[n, groups, row]).expect("group norm reads a contiguous layout")
}

/// A `[C]` parameter's layout `lp` as `[1, C, 1, …]` broadcast over `shape` (`[N, C, ...]`).
fn per_channel(lp: &Layout, shape: &[usize]) -> Result<Layout> {
    let mut l = lp.clone();
    for _ in 2..shape.len() {
        l = l.unsqueeze(l.rank())?;
    }
    l.broadcast_as(shape)
}
