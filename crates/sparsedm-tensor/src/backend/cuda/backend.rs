//! [`BackendStorage`] for [`CudaStorage`]: the CUDA backend's table of
//! primitives, each a call into its family's file.

use crate::backend::api::{BackendStorage, Operand};
use crate::backend::cpu::CpuStorage;
use crate::backend::cuda::storage::{CudaStorage, gpu_of};
use crate::backend::cuda::{conv, elementwise, fused, gemm, index, nn, pool, random, reduce};
use crate::op_kinds::{AdamWScalars, BinaryKind, ConvGeom, Draw, PoolGeom, UnaryKind};
use crate::{DType, Error, Layout, Result, Rng};

impl CudaStorage {
    /// `n` random values of `what` on GPU `ordinal`, advancing `rng`.
    pub(crate) fn draw_on(ordinal: usize, n: usize, rng: &mut Rng, what: Draw) -> Result<Self> {
        random::draw(ordinal, n, rng, what)
    }
}

impl BackendStorage for CudaStorage {
    fn to_cpu(&self, l: &Layout, op: &'static str) -> Result<CpuStorage> {
        self.download_view(l, op)
    }
    fn copy_view(&self, l: &Layout, op: &'static str) -> Result<Self> {
        CudaStorage::copy_view(self, l, op)
    }
    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self> {
        index::to_dtype(self, l, dtype)
    }
    fn write_range(&mut self, range: std::ops::Range<usize>, src: &Self, op: &'static str) -> Result<()> {
        index::write_range(self, range, src, op)
    }
    fn update_f32(&mut self, range: std::ops::Range<usize>, f: &mut dyn FnMut(&mut [f32])) -> Result<()> {
        // A host closure: download the range, run it, upload it back.
        let op = "update_f32";
        let mut host = match self.download(range.start, range.len(), op)? {
            CpuStorage::F32(v) => v,
            other => return Err(Error::UnsupportedDType { op, dtype: other.dtype(), expected: "f32" }),
        };
        f(&mut host);
        let staged = CudaStorage::upload(&gpu_of(self.gpu().ordinal())?, &CpuStorage::F32(host), op)?;
        index::write_range(self, range, &staged, op)
    }

    fn unary(&self, l: &Layout, kind: UnaryKind, op: &'static str) -> Result<Self> {
        elementwise::unary(self, l, kind, op)
    }
    fn binary(&self, l: &Layout, (rhs, rl): Operand<'_, Self>, kind: BinaryKind, op: &'static str) -> Result<Self> {
        elementwise::binary(self, l, rhs, rl, kind, op)
    }
    fn where_cond(&self, l: &Layout, (a, la): Operand<'_, Self>, (b, lb): Operand<'_, Self>) -> Result<Self> {
        elementwise::where_cond(self, l, a, la, b, lb)
    }

    fn sum_dims(&self, l: &Layout, dims: &[usize]) -> Result<Self> {
        reduce::sum(self, l, dims, "sum")
    }
    fn max_dim(&self, l: &Layout, dim: usize) -> Result<(Self, Self)> {
        reduce::max_with_index(self, l, dim)
    }
    fn max_dim_backward(&self, l: &Layout, idx: &Self, in_shape: &[usize], dim: usize) -> Result<Self> {
        reduce::max_backward(self, l, idx, in_shape, dim)
    }

    fn matmul(&self, l: &Layout, (rhs, rl): Operand<'_, Self>, batch: &[usize], m: usize, k: usize, n: usize) -> Result<Self> {
        gemm::matmul(self, l, rhs, rl, batch, m, k, n)
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
        gemm::linear(self, l, w, lw, bias, m, k, n)
    }

    fn conv2d(&self, l: &Layout, (w, lw): Operand<'_, Self>, bias: Option<Operand<'_, Self>>, g: &ConvGeom) -> Result<Self> {
        conv::forward(self, l, w, lw, bias, g)
    }
    fn conv2d_backward_input(&self, l: &Layout, (w, lw): Operand<'_, Self>, g: &ConvGeom) -> Result<Self> {
        conv::backward_input(self, l, w, lw, g)
    }
    fn conv2d_backward_weight(&self, l: &Layout, (x, lx): Operand<'_, Self>, g: &ConvGeom) -> Result<Self> {
        conv::backward_weight(self, l, x, lx, g)
    }

    fn max_pool2d(&self, l: &Layout, g: &PoolGeom, with_argmax: bool) -> Result<(Self, Option<Self>)> {
        let (v, arg) = pool::max_pool(self, l, g)?;
        Ok((v, with_argmax.then_some(arg)))
    }
    fn max_pool2d_backward(&self, l: &Layout, argmax: &Self, g: &PoolGeom) -> Result<Self> {
        pool::max_pool_backward(self, l, argmax, g)
    }
    fn avg_pool2d(&self, l: &Layout, g: &PoolGeom, count_include_pad: bool) -> Result<Self> {
        pool::avg_pool(self, l, g, count_include_pad)
    }
    fn avg_pool2d_backward(&self, l: &Layout, g: &PoolGeom, count_include_pad: bool) -> Result<Self> {
        pool::avg_pool_backward(self, l, g, count_include_pad)
    }
    fn upsample_nearest2d(&self, l: &Layout, nchw: [usize; 4], factor: usize) -> Result<Self> {
        pool::upsample(self, l, nchw, factor, false)
    }
    fn upsample_nearest2d_backward(&self, l: &Layout, nchw: [usize; 4], factor: usize) -> Result<Self> {
        pool::upsample(self, l, nchw, factor, true)
    }
    fn resize_bilinear(&self, l: &Layout, nchw: [usize; 4], out: (usize, usize)) -> Result<Self> {
        pool::resize_bilinear(self, l, nchw, out)
    }
    fn resize_bilinear_backward(&self, l: &Layout, nchw: [usize; 4], out: (usize, usize)) -> Result<Self> {
        pool::resize_bilinear_backward(self, l, nchw, out)
    }

    fn softmax_last(&self, l: &Layout, log: bool) -> Result<Self> {
        nn::softmax(self, l, log)
    }
    fn softmax_last_backward(&self, l: &Layout, (g, lg): Operand<'_, Self>, log: bool) -> Result<Self> {
        nn::softmax_backward(self, l, g, lg, log)
    }
    fn standardize_last(&self, l: &Layout, eps: f32) -> Result<(Self, Self)> {
        nn::standardize(self, l, eps)
    }
    fn standardize_last_backward(
        &self,
        _l: &Layout,
        (y, ly): Operand<'_, Self>,
        rstd: &Self,
        (g, lg): Operand<'_, Self>,
        _eps: f32,
    ) -> Result<Self> {
        nn::standardize_backward(y, ly, rstd, g, lg)
    }

    fn index_select(&self, l: &Layout, dim: usize, idx: &Self) -> Result<Self> {
        index::index_select(self, l, dim, idx)
    }
    fn index_select_backward(&self, l: &Layout, idx: &Self, in_shape: &[usize], dim: usize) -> Result<Self> {
        index::index_select_backward(self, l, idx, in_shape, dim)
    }
    fn assemble(parts: &[(&Self, &Layout, Layout)], shape: &[usize], fill: Option<f32>, op: &'static str) -> Result<Self> {
        index::assemble(parts, shape, fill, op)
    }

    fn adamw_step(&mut self, grad: Operand<'_, Self>, m: &mut Self, v: &mut Self, s: &AdamWScalars, len: usize) -> Result<()> {
        fused::adamw_step(self, grad, m, v, s, len)
    }
    fn ema_update(&mut self, value: Operand<'_, Self>, d: f32, len: usize) -> Result<()> {
        fused::ema_update(self, value, d, len)
    }
    fn nm_mask(&self, l: &Layout, rows: usize, inp: usize, k: usize, n: usize, m: usize) -> Result<Self> {
        fused::nm_mask(self, l, rows, inp, k, n, m)
    }
}
