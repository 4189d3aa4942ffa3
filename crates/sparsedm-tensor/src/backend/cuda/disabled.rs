//! The CUDA slot of a build without the `cuda` feature: the buffer type is
//! uninhabited, so every `Storage::Cuda` arm is statically unreachable and
//! its primitives are empty matches, while asking for a CUDA device (an
//! upload, a fill, a draw) is a clear [`crate::Error::CudaUnavailable`].

use crate::backend::api::{BackendStorage, Operand};
use crate::backend::cpu::CpuStorage;
use crate::op_kinds::{AdamWScalars, BinaryKind, ConvGeom, Draw, PoolGeom, UnaryKind};
use crate::{DType, Device, Error, Layout, Result, Rng};

/// Storage of a tensor on a GPU. Uninhabited in CPU-only builds.
#[derive(Debug)]
pub enum CudaStorage {}

impl CudaStorage {
    /// Element type (never called: the type has no values).
    pub fn dtype(&self) -> DType {
        match *self {}
    }
    /// Device (never called: the type has no values).
    pub fn device(&self) -> Device {
        match *self {}
    }
    /// An upload: unavailable in this build.
    pub(crate) fn upload_to(ordinal: usize, _data: &CpuStorage, _op: &'static str) -> Result<Self> {
        Err(unavailable(ordinal))
    }
    /// A fill: unavailable in this build.
    pub(crate) fn full_on(ordinal: usize, _n: usize, _v: f32, _op: &'static str) -> Result<Self> {
        Err(unavailable(ordinal))
    }
    /// A random draw: unavailable in this build.
    pub(crate) fn draw_on(ordinal: usize, _n: usize, _rng: &mut Rng, _what: Draw) -> Result<Self> {
        Err(unavailable(ordinal))
    }
}

fn unavailable(ordinal: usize) -> Error {
    Error::CudaUnavailable { ordinal, reason: "this build of sparsedm has no CUDA backend compiled in".into() }
}

/// Whether a usable CUDA device exists (always false in this build).
pub fn is_available() -> bool {
    false
}

/// Returns the reason the device cannot be used.
pub fn ensure_available(ordinal: usize) -> Result<()> {
    Err(unavailable(ordinal))
}

/// Device synchronisation: the same error as [`ensure_available`].
pub(crate) fn synchronize(ordinal: usize) -> Result<()> {
    ensure_available(ordinal)
}

/// The allocator's peak: the same error as [`ensure_available`].
pub(crate) fn peak_memory_bytes(ordinal: usize) -> Result<usize> {
    ensure_available(ordinal).map(|()| 0)
}

impl BackendStorage for CudaStorage {
    fn to_cpu(&self, _: &Layout, _: &'static str) -> Result<CpuStorage> {
        match *self {}
    }
    fn copy_view(&self, _: &Layout, _: &'static str) -> Result<Self> {
        match *self {}
    }
    fn to_dtype(&self, _: &Layout, _: DType) -> Result<Self> {
        match *self {}
    }
    fn write_range(&mut self, _: std::ops::Range<usize>, _: &Self, _: &'static str) -> Result<()> {
        match *self {}
    }
    fn update_f32(&mut self, _: std::ops::Range<usize>, _: &mut dyn FnMut(&mut [f32])) -> Result<()> {
        match *self {}
    }
    fn unary(&self, _: &Layout, _: UnaryKind, _: &'static str) -> Result<Self> {
        match *self {}
    }
    fn binary(&self, _: &Layout, _: Operand<'_, Self>, _: BinaryKind, _: &'static str) -> Result<Self> {
        match *self {}
    }
    fn where_cond(&self, _: &Layout, _: Operand<'_, Self>, _: Operand<'_, Self>) -> Result<Self> {
        match *self {}
    }
    fn sum_dims(&self, _: &Layout, _: &[usize]) -> Result<Self> {
        match *self {}
    }
    fn max_dim(&self, _: &Layout, _: usize) -> Result<(Self, Self)> {
        match *self {}
    }
    fn max_dim_backward(&self, _: &Layout, _: &Self, _: &[usize], _: usize) -> Result<Self> {
        match *self {}
    }
    fn matmul(&self, _: &Layout, _: Operand<'_, Self>, _: &[usize], _: usize, _: usize, _: usize) -> Result<Self> {
        match *self {}
    }
    fn linear(&self, _: &Layout, _: Operand<'_, Self>, _: Option<Operand<'_, Self>>, _: usize, _: usize, _: usize) -> Result<Self> {
        match *self {}
    }
    fn conv2d(&self, _: &Layout, _: Operand<'_, Self>, _: Option<Operand<'_, Self>>, _: &ConvGeom) -> Result<Self> {
        match *self {}
    }
    fn conv2d_backward_input(&self, _: &Layout, _: Operand<'_, Self>, _: &ConvGeom) -> Result<Self> {
        match *self {}
    }
    fn conv2d_backward_weight(&self, _: &Layout, _: Operand<'_, Self>, _: &ConvGeom) -> Result<Self> {
        match *self {}
    }
    fn max_pool2d(&self, _: &Layout, _: &PoolGeom, _: bool) -> Result<(Self, Option<Self>)> {
        match *self {}
    }
    fn max_pool2d_backward(&self, _: &Layout, _: &Self, _: &PoolGeom) -> Result<Self> {
        match *self {}
    }
    fn avg_pool2d(&self, _: &Layout, _: &PoolGeom, _: bool) -> Result<Self> {
        match *self {}
    }
    fn avg_pool2d_backward(&self, _: &Layout, _: &PoolGeom, _: bool) -> Result<Self> {
        match *self {}
    }
    fn upsample_nearest2d(&self, _: &Layout, _: [usize; 4], _: usize) -> Result<Self> {
        match *self {}
    }
    fn upsample_nearest2d_backward(&self, _: &Layout, _: [usize; 4], _: usize) -> Result<Self> {
        match *self {}
    }
    fn resize_bilinear(&self, _: &Layout, _: [usize; 4], _: (usize, usize)) -> Result<Self> {
        match *self {}
    }
    fn resize_bilinear_backward(&self, _: &Layout, _: [usize; 4], _: (usize, usize)) -> Result<Self> {
        match *self {}
    }
    fn softmax_last(&self, _: &Layout, _: bool) -> Result<Self> {
        match *self {}
    }
    fn softmax_last_backward(&self, _: &Layout, _: Operand<'_, Self>, _: bool) -> Result<Self> {
        match *self {}
    }
    fn standardize_last(&self, _: &Layout, _: f32) -> Result<(Self, Self)> {
        match *self {}
    }
    fn standardize_last_backward(&self, _: &Layout, _: Operand<'_, Self>, _: &Self, _: Operand<'_, Self>, _: f32) -> Result<Self> {
        match *self {}
    }
    fn index_select(&self, _: &Layout, _: usize, _: &Self) -> Result<Self> {
        match *self {}
    }
    fn index_select_backward(&self, _: &Layout, _: &Self, _: &[usize], _: usize) -> Result<Self> {
        match *self {}
    }
    fn assemble(parts: &[(&Self, &Layout, Layout)], _: &[usize], _: Option<f32>, op: &'static str) -> Result<Self> {
        match parts.first() {
            Some((s, _, _)) => match **s {},
            None => Err(Error::invalid(op, "no operands")),
        }
    }
    fn adamw_step(&mut self, _: Operand<'_, Self>, _: &mut Self, _: &mut Self, _: &AdamWScalars, _: usize) -> Result<()> {
        match *self {}
    }
    fn ema_update(&mut self, _: Operand<'_, Self>, _: f32, _: usize) -> Result<()> {
        match *self {}
    }
    fn nm_mask(&self, _: &Layout, _: usize, _: usize, _: usize, _: usize, _: usize) -> Result<Self> {
        match *self {}
    }
}

/// Weights compressed by cuSPARSELt: none without the CUDA backend.
pub fn sparse24_compressions() -> usize {
    0
}

/// A compressed 2:4 weight on a GPU. Uninhabited in CPU-only builds.
#[derive(Debug)]
pub enum Sparse24 {}

impl Sparse24 {
    /// Output features (never called: the type has no values).
    pub fn out_features(&self) -> usize {
        match *self {}
    }
    /// Input features (never called).
    pub fn in_features(&self) -> usize {
        match *self {}
    }
    /// The device's name (never called).
    pub fn device_name(&self) -> &str {
        match *self {}
    }
    /// Whether the device is simulated (never called).
    pub fn is_simulated(&self) -> bool {
        match *self {}
    }
}

impl CudaStorage {
    /// Never called: the storage type has no values.
    pub(crate) fn sparse24_compress(&self, _: &Layout, _: Option<(&CudaStorage, &Layout)>, _: usize, _: usize) -> Result<Sparse24> {
        match *self {}
    }
    /// Never called: the storage type has no values.
    pub(crate) fn sparse24_im2col(&self, _: &Layout, _: &crate::op_kinds::ConvGeom) -> Result<CudaStorage> {
        match *self {}
    }
    /// Never called: the storage type has no values.
    pub(crate) fn sparse24_matmul(&self, _: &Layout, _: &Sparse24, _: usize) -> Result<CudaStorage> {
        match *self {}
    }
}
