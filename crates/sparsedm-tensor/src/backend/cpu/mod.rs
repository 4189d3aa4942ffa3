//! The CPU backend: host buffers ([`CpuStorage`]) and kernels over slices
//! and layouts (rayon for parallelism, the `gemm` crate for products). This
//! file is the backend's table of contents: [`BackendStorage`] for
//! `CpuStorage`, each primitive a call into its family's file.

mod attention;
mod attention_short;
pub(crate) mod buffer;
mod conv;
mod convert;
pub(crate) mod elementwise;
mod fused;
#[cfg(target_arch = "x86_64")]
mod gelu_avx2;
mod group_norm;
mod index;
pub(crate) mod math;
mod matmul;
pub mod nm;
mod norm_backward;
mod pool;
pub(crate) mod random;
mod reduce;
pub(crate) mod rows;
pub mod simd;
pub(crate) mod strided;

pub use attention_short::set_short_attention;
pub use buffer::CpuStorage;
pub(crate) use matmul::gemm_f32_uninit;

use crate::backend::api::{BackendStorage, Operand};
use crate::op_kinds::{AdamWScalars, AttnDims, BinaryKind, ConvGeom, PoolGeom, UnaryKind};
use crate::{DType, Error, Layout, Result};
use buffer::with_contiguous;

fn f32v(v: Vec<f32>) -> CpuStorage {
    CpuStorage::F32(v)
}

/// A contiguous f32 view of `(s, l)` for kernels that read whole rows.
fn dense<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<std::borrow::Cow<'a, [f32]>> {
    let v = s.f32s(op)?;
    Ok(match l.contiguous_range() {
        Some(r) => std::borrow::Cow::Borrowed(&v[r]),
        None => std::borrow::Cow::Owned(strided::gather(v, l.shape(), l.strides(), l.offset())),
    })
}

/// The group norm shape of `[N, C, ...]` (validated by the op).
fn group_shape(shape: &[usize], groups: usize) -> group_norm::GroupShape {
    let (n, c) = (shape[0], shape[1]);
    group_norm::GroupShape { n, c, plane: shape[2..].iter().product(), groups }
}

impl BackendStorage for CpuStorage {
    fn to_cpu(&self, l: &Layout, _op: &'static str) -> Result<CpuStorage> {
        Ok(self.gather_view(l))
    }
    fn copy_view(&self, l: &Layout, _op: &'static str) -> Result<Self> {
        Ok(self.gather_view(l))
    }
    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self> {
        Ok(convert::to_dtype(self.gather_view(l), dtype))
    }
    fn write_range(&mut self, range: std::ops::Range<usize>, src: &Self, op: &'static str) -> Result<()> {
        match (self, src) {
            (CpuStorage::F32(d), CpuStorage::F32(v)) => d[range].copy_from_slice(v),
            (CpuStorage::F16(d), CpuStorage::F16(v)) => d[range].copy_from_slice(v),
            (CpuStorage::BF16(d), CpuStorage::BF16(v)) => d[range].copy_from_slice(v),
            (CpuStorage::I64(d), CpuStorage::I64(v)) => d[range].copy_from_slice(v),
            (d, v) => return Err(Error::UnsupportedDType { op, dtype: v.dtype(), expected: d.dtype().name() }),
        }
        Ok(())
    }
    fn update_f32(&mut self, range: std::ops::Range<usize>, f: &mut dyn FnMut(&mut [f32])) -> Result<()> {
        f(&mut self.f32s_mut("update_f32")?[range]);
        Ok(())
    }

    fn unary(&self, l: &Layout, kind: UnaryKind, op: &'static str) -> Result<Self> {
        Ok(f32v(elementwise::unary(self.f32s(op)?, l, kind)))
    }
    fn binary(&self, l: &Layout, (rhs, rl): Operand<'_, Self>, kind: BinaryKind, op: &'static str) -> Result<Self> {
        Ok(f32v(elementwise::binary(self.f32s(op)?, l, rhs.f32s(op)?, rl, kind)))
    }
    fn where_cond(&self, l: &Layout, (a, la): Operand<'_, Self>, (b, lb): Operand<'_, Self>) -> Result<Self> {
        let op = "where_cond";
        Ok(f32v(elementwise::where_cond(self.f32s(op)?, l, a.f32s(op)?, la, b.f32s(op)?, lb)?))
    }

    fn sum_dims(&self, l: &Layout, dims: &[usize]) -> Result<Self> {
        Ok(f32v(reduce::sum_dims(self.f32s("sum")?, l, dims)?))
    }
    fn sum_sq_all(&self, l: &Layout) -> Result<Self> {
        let op = "sum_sq_all";
        Ok(f32v(vec![reduce::sum_sq(&dense(self, l, op)?)]))
    }
    fn max_dim(&self, l: &Layout, dim: usize) -> Result<(Self, Self)> {
        let (v, i) = reduce::max_dim(self.f32s("max")?, l, dim)?;
        Ok((f32v(v), CpuStorage::I64(i)))
    }
    fn max_dim_backward(&self, l: &Layout, idx: &Self, in_shape: &[usize], dim: usize) -> Result<Self> {
        let op = "max_backward";
        Ok(f32v(reduce::max_dim_backward(self.f32s(op)?, l, idx.i64s(op)?, in_shape, dim)?))
    }

    fn matmul(&self, l: &Layout, (rhs, rl): Operand<'_, Self>, _batch: &[usize], m: usize, k: usize, n: usize) -> Result<Self> {
        let op = "matmul";
        Ok(f32v(matmul::bmm(self.f32s(op)?, l, rhs.f32s(op)?, rl, m, k, n)))
    }
    fn linear(
        &self,
        l: &Layout,
        (w, lw): Operand<'_, Self>,
        bias: Option<Operand<'_, Self>>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Self> {
        let op = "linear";
        let bias = match bias {
            Some((b, lb)) => Some((b.f32s(op)?, lb)),
            None => None,
        };
        Ok(f32v(matmul::linear(self.f32s(op)?, l, w.f32s(op)?, lw, bias, m, k, n)))
    }

    fn linear_cat(
        parts: &[Operand<'_, Self>],
        (w, lw): Operand<'_, Self>,
        bias: Option<Operand<'_, Self>>,
        m: usize,
        ks: &[usize],
        n: usize,
    ) -> Result<Self> {
        let op = "linear_cat";
        let bias = match bias {
            Some((b, lb)) => Some((b.f32s(op)?, lb)),
            None => None,
        };
        let xs = parts.iter().map(|&(s, l)| Ok((s.f32s(op)?, l))).collect::<Result<Vec<_>>>()?;
        Ok(f32v(matmul::linear_cat(&xs, w.f32s(op)?, lw, bias, m, ks, n)))
    }

    fn conv2d(&self, l: &Layout, (w, lw): Operand<'_, Self>, bias: Option<Operand<'_, Self>>, g: &ConvGeom) -> Result<Self> {
        let op = "conv2d";
        let b = bias.map(|(b, lb)| b.f32s(op).map(|v| strided::gather(v, lb.shape(), lb.strides(), lb.offset()))).transpose()?;
        let (x, w) = (dense(self, l, op)?, dense(w, lw, op)?);
        Ok(f32v(conv::conv_forward(g, &x, &w, b.as_deref())))
    }
    fn conv2d_backward_input(&self, l: &Layout, (w, lw): Operand<'_, Self>, g: &ConvGeom) -> Result<Self> {
        let op = "conv2d_backward";
        let (gy, w) = (dense(self, l, op)?, dense(w, lw, op)?);
        Ok(f32v(conv::conv_backward_input(g, &gy, &w)))
    }
    fn conv2d_backward_weight(&self, l: &Layout, (x, lx): Operand<'_, Self>, g: &ConvGeom) -> Result<Self> {
        let op = "conv2d_backward";
        let (gy, x) = (dense(self, l, op)?, dense(x, lx, op)?);
        Ok(f32v(conv::conv_backward_weight(g, &gy, &x)))
    }

    fn max_pool2d(&self, l: &Layout, g: &PoolGeom, with_argmax: bool) -> Result<(Self, Option<Self>)> {
        let (v, arg) = pool::max_pool2d(&dense(self, l, "max_pool2d")?, g, with_argmax);
        Ok((f32v(v), arg.map(CpuStorage::I64)))
    }
    fn max_pool2d_backward(&self, l: &Layout, argmax: &Self, g: &PoolGeom) -> Result<Self> {
        let op = "max_pool2d_backward";
        Ok(f32v(pool::max_pool2d_backward(&dense(self, l, op)?, argmax.i64s(op)?, g)))
    }
    fn avg_pool2d(&self, l: &Layout, g: &PoolGeom, count_include_pad: bool) -> Result<Self> {
        Ok(f32v(pool::avg_pool2d(&dense(self, l, "avg_pool2d")?, g, count_include_pad)))
    }
    fn avg_pool2d_backward(&self, l: &Layout, g: &PoolGeom, count_include_pad: bool) -> Result<Self> {
        Ok(f32v(pool::avg_pool2d_backward(&dense(self, l, "avg_pool2d_backward")?, g, count_include_pad)))
    }
    fn upsample_nearest2d(&self, l: &Layout, nchw: [usize; 4], factor: usize) -> Result<Self> {
        Ok(f32v(pool::upsample_nearest2d(&dense(self, l, "upsample_nearest2d")?, nchw, factor)))
    }
    fn upsample_nearest2d_backward(&self, l: &Layout, nchw: [usize; 4], factor: usize) -> Result<Self> {
        Ok(f32v(pool::upsample_nearest2d_backward(&dense(self, l, "upsample_nearest2d_backward")?, nchw, factor)))
    }
    fn resize_bilinear(&self, l: &Layout, nchw: [usize; 4], out: (usize, usize)) -> Result<Self> {
        Ok(f32v(pool::resize_bilinear(&dense(self, l, "resize_bilinear")?, nchw, out)))
    }
    fn resize_bilinear_backward(&self, l: &Layout, nchw: [usize; 4], out: (usize, usize)) -> Result<Self> {
        Ok(f32v(pool::resize_bilinear_backward(&dense(self, l, "resize_bilinear_backward")?, nchw, out)))
    }

    fn softmax_last(&self, l: &Layout, log: bool) -> Result<Self> {
        let op = if log { "log_softmax" } else { "softmax" };
        let len = *l.shape().last().unwrap_or(&1);
        Ok(f32v(with_contiguous(self.f32s(op)?, l, |x| rows::softmax_last(x, len, log))))
    }
    fn softmax_last_backward(&self, l: &Layout, (g, lg): Operand<'_, Self>, log: bool) -> Result<Self> {
        let op = if log { "log_softmax_backward" } else { "softmax_backward" };
        let len = *l.shape().last().unwrap_or(&1);
        Ok(f32v(rows::softmax_last_backward(&dense(self, l, op)?, &dense(g, lg, op)?, len, log)))
    }
    fn attention(
        &self,
        l: &Layout,
        (k, lk): Operand<'_, Self>,
        (v, lv): Operand<'_, Self>,
        _batch: &[usize],
        dims: AttnDims,
        scale: f32,
        keep_probs: bool,
        lo: &Layout,
    ) -> Result<(Self, Option<Self>)> {
        let op = "attention";
        let (o, p) = attention::attention(self.f32s(op)?, l, k.f32s(op)?, lk, v.f32s(op)?, lv, dims, scale, keep_probs, lo);
        Ok((f32v(o), p.map(f32v)))
    }
    fn attention_backward(
        &self,
        l: &Layout,
        (k, lk): Operand<'_, Self>,
        (v, lv): Operand<'_, Self>,
        probs: &Self,
        (g, lg): Operand<'_, Self>,
        _batch: &[usize],
        dims: AttnDims,
        scale: f32,
        shape: &[usize],
        outs: [&Layout; 3],
    ) -> Result<Self> {
        let op = "attention_backward";
        let len = shape.iter().product();
        let parts = ((self.f32s(op)?, l), (k.f32s(op)?, lk), (v.f32s(op)?, lv), probs.f32s(op)?, (g.f32s(op)?, lg));
        Ok(f32v(attention::attention_backward(parts.0, parts.1, parts.2, parts.3, parts.4, dims, scale, len, outs)))
    }
    fn standardize_last(&self, l: &Layout, eps: f32) -> Result<(Self, Self)> {
        let len = *l.shape().last().unwrap_or(&1);
        let (y, rstd) = with_contiguous(self.f32s("standardize")?, l, |x| rows::standardize_last(x, len, eps));
        Ok((f32v(y), f32v(rstd)))
    }
    fn layer_norm_last(&self, l: &Layout, w: Option<Operand<'_, Self>>, b: Option<Operand<'_, Self>>, eps: f32) -> Result<(Self, Self)> {
        let op = "layer_norm";
        let len = *l.shape().last().unwrap_or(&1);
        let w = w.map(|(s, lw)| dense(s, lw, op)).transpose()?;
        let b = b.map(|(s, lb)| dense(s, lb, op)).transpose()?;
        let (y, rstd) = with_contiguous(self.f32s(op)?, l, |x| rows::layer_norm_last(x, len, eps, w.as_deref(), b.as_deref()));
        Ok((f32v(y), f32v(rstd)))
    }
    fn group_norm(
        &self,
        l: &Layout,
        groups: usize,
        w: Option<Operand<'_, Self>>,
        b: Option<Operand<'_, Self>>,
        eps: f32,
    ) -> Result<(Self, Self)> {
        let op = "group_norm";
        let s = group_shape(l.shape(), groups);
        let w = w.map(|(s, lw)| dense(s, lw, op)).transpose()?;
        let b = b.map(|(s, lb)| dense(s, lb, op)).transpose()?;
        let (y, rstd) = group_norm::group_norm(&dense(self, l, op)?, s, eps, w.as_deref(), b.as_deref());
        Ok((f32v(y), f32v(rstd)))
    }
    fn group_norm_backward(
        &self,
        l: &Layout,
        groups: usize,
        w: Option<Operand<'_, Self>>,
        _rstd: &Self,
        (g, lg): Operand<'_, Self>,
        eps: f32,
        need: [bool; 3],
    ) -> Result<[Option<Self>; 3]> {
        let op = "group_norm_backward";
        let s = group_shape(l.shape(), groups);
        let w = w.map(|(s, lw)| dense(s, lw, op)).transpose()?;
        let grads = group_norm::group_norm_backward(&dense(self, l, op)?, &dense(g, lg, op)?, s, eps, w.as_deref(), need);
        Ok(grads.map(|g| g.map(f32v)))
    }
    fn layer_norm_last_backward(
        &self,
        l: &Layout,
        w: Option<Operand<'_, Self>>,
        _rstd: &Self,
        (g, lg): Operand<'_, Self>,
        eps: f32,
        need: [bool; 3],
    ) -> Result<[Option<Self>; 3]> {
        let op = "layer_norm_backward";
        let len = *l.shape().last().unwrap_or(&1);
        let w = w.map(|(s, lw)| dense(s, lw, op)).transpose()?;
        let grads = norm_backward::layer_norm_last_backward(&dense(self, l, op)?, &dense(g, lg, op)?, len, eps, w.as_deref(), need);
        Ok(grads.map(|g| g.map(f32v)))
    }
    fn standardize_last_backward(
        &self,
        l: &Layout,
        _y: Operand<'_, Self>,
        _rstd: &Self,
        (g, lg): Operand<'_, Self>,
        eps: f32,
    ) -> Result<Self> {
        let op = "standardize_backward";
        let len = *l.shape().last().unwrap_or(&1);
        Ok(f32v(rows::standardize_last_backward(&dense(self, l, op)?, &dense(g, lg, op)?, len, eps)))
    }

    fn index_select(&self, l: &Layout, dim: usize, idx: &Self) -> Result<Self> {
        let op = "index_select";
        Ok(f32v(index::index_select(&dense(self, l, op)?, l.shape(), dim, idx.i64s(op)?)))
    }
    fn index_select_backward(&self, l: &Layout, idx: &Self, in_shape: &[usize], dim: usize) -> Result<Self> {
        let op = "index_select_backward";
        Ok(f32v(index::index_select_backward(&dense(self, l, op)?, idx.i64s(op)?, in_shape, dim)?))
    }
    fn assemble(parts: &[(&Self, &Layout, Layout)], shape: &[usize], fill: Option<f32>, op: &'static str) -> Result<Self> {
        let slices: Vec<(&[f32], &Layout, &Layout)> = parts.iter().map(|(s, l, b)| Ok((s.f32s(op)?, *l, b))).collect::<Result<_>>()?;
        Ok(f32v(index::assemble(&slices, shape, fill)))
    }

    fn adamw_step(&mut self, (g, lg): Operand<'_, Self>, m: &mut Self, v: &mut Self, s: &AdamWScalars, len: usize) -> Result<()> {
        let op = "adamw_step_";
        let g = dense(g, lg, op)?;
        let (p, m, v) = (&mut self.f32s_mut(op)?[..len], &mut m.f32s_mut(op)?[..len], &mut v.f32s_mut(op)?[..len]);
        fused::adamw_step(p, &g, m, v, s);
        Ok(())
    }
    fn ema_update(&mut self, (x, lx): Operand<'_, Self>, d: f32, len: usize) -> Result<()> {
        let op = "ema_update_";
        let x = dense(x, lx, op)?;
        fused::ema_update(&mut self.f32s_mut(op)?[..len], &x, d);
        Ok(())
    }
    fn nm_mask(&self, l: &Layout, rows: usize, inp: usize, k: usize, n: usize, m: usize) -> Result<Self> {
        let w = dense(self, l, "nm_mask")?;
        let mut out = vec![0f32; w.len()];
        nm::nm_mask_into(&w, &mut out, (rows, inp, k), n, m, nm::NmGroups::Grouped)?;
        Ok(f32v(out))
    }
}
