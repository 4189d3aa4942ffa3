//! A 2:4 Linear layer for inference: `Y[m, n] = X[m, k]·Wᵀ + b` through cuSPARSELt where that is
//! faster, through cuBLAS where it is not (timed once per problem by [`crate::dispatch`]), and
//! always through cuBLAS when cuSPARSELt cannot take the shape (one log line, then dense). Both
//! paths compute on the same masked weights, so the choice changes speed, not results beyond
//! rounding.

use std::sync::Arc;

use crate::abi::SdmLayout;
use crate::dispatch::{Choice, Dispatch, Problem};
use crate::gemm::{F32Math, GemmShape, Operand, gemm};
use crate::ops;
use crate::sparse24::{SparseLt, SparseWeight};
use crate::timing::time_ms;
use crate::{DeviceBuffer, Gpu, GpuDType, KernelsError, Result};

/// Weights of one layer on the GPU, with their compressed 2:4 form when available.
#[derive(Debug)]
pub struct Linear24 {
    gpu: Arc<Gpu>,
    n: usize,
    k: usize,
    dtype: GpuDType,
    weight: DeviceBuffer,
    bias: Option<DeviceBuffer>,
    sparse: Option<SparseWeight>,
    dispatch: Arc<Dispatch>,
    name: String,
}

impl Linear24 {
    /// Takes ownership of `weight` (`[n, k]`, `dtype`, already 2:4-masked) and `bias` (`n`,
    /// `dtype`). If cuSPARSELt is missing or refuses the shape, the layer stays dense and says so
    /// once on stderr, naming the layer.
    pub fn new(
        gpu: &Arc<Gpu>,
        name: &str,
        weight: DeviceBuffer,
        bias: Option<DeviceBuffer>,
        n: usize,
        k: usize,
        dtype: GpuDType,
        dispatch: Arc<Dispatch>,
    ) -> Result<Linear24> {
        weight.check_fits("linear24", "weight", n * k, dtype.size())?;
        if let Some(b) = &bias {
            b.check_fits("linear24", "bias", n, dtype.size())?;
        }
        let sparse = match SparseLt::get(gpu).and_then(|lt| SparseWeight::new(&lt, &weight, n, k, dtype, bias.as_ref())) {
            Ok(s) => Some(s),
            Err(e @ KernelsError::Invalid { .. }) => return Err(e),
            Err(e) => {
                eprintln!("sparsedm: layer {name} [{n}, {k}] {dtype} runs dense: {e}");
                None
            }
        };
        Ok(Linear24 { gpu: gpu.clone(), n, k, dtype, weight, bias, sparse, dispatch, name: name.to_string() })
    }

    /// Whether a compressed 2:4 form exists (the dispatch may still prefer dense for some `m`).
    pub fn has_sparse(&self) -> bool {
        self.sparse.is_some()
    }

    /// Layer name (for logs and reports).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path `forward` takes for `m` rows (timing both once if this problem is new).
    pub fn choice(&self, x: &DeviceBuffer, m: usize, y: &mut DeviceBuffer) -> Result<Choice> {
        let Some(sparse) = &self.sparse else { return Ok(Choice::Dense) };
        let problem =
            Problem { device: self.gpu.name().to_string(), m, n: self.n, k: self.k, dtype: self.dtype, bias: self.bias.is_some() };
        if let Some(d) = self.dispatch.cached(&problem) {
            return Ok(d.choice);
        }
        if self.gpu.is_simulated() {
            // The simulator has no meaningful timings: exercise the 2:4 path, record nothing.
            return Ok(Choice::Sparse);
        }
        let dense_ms = time_ms(&self.gpu, 2, 3, 10, || self.dense(x, m, y))?;
        let sparse_ms = time_ms(&self.gpu, 2, 3, 10, || sparse.matmul(x, m, y))?;
        Ok(self.dispatch.decide(&problem, || Ok(dense_ms), || Ok(sparse_ms))?.choice)
    }

    /// `y[m, n] = x[m, k]·Wᵀ + b` by the faster path.
    pub fn forward(&self, x: &DeviceBuffer, m: usize, y: &mut DeviceBuffer) -> Result<()> {
        match (self.choice(x, m, y)?, &self.sparse) {
            (Choice::Sparse, Some(s)) => s.matmul(x, m, y),
            _ => self.dense(x, m, y),
        }
    }

    /// The cuSPARSELt path, whatever the dispatch would choose (for measurements).
    pub fn forward_sparse(&self, x: &DeviceBuffer, m: usize, y: &mut DeviceBuffer) -> Result<()> {
        match &self.sparse {
            Some(s) => s.matmul(x, m, y),
            None => Err(KernelsError::Sparse { call: "linear24", reason: format!("layer {} has no 2:4 form", self.name) }),
        }
    }

    /// The cuBLAS path: bias broadcast into `y`, then `y = x·Wᵀ + 1·y`.
    pub fn dense(&self, x: &DeviceBuffer, m: usize, y: &mut DeviceBuffer) -> Result<()> {
        let (n, k) = (self.n, self.k);
        let beta = match &self.bias {
            Some(b) => {
                let bl = SdmLayout::new(&[m, n], &[0, 1], 0).ok_or_else(|| KernelsError::invalid("linear24", "layout"))?;
                let yl = SdmLayout::contiguous(&[m, n]).ok_or_else(|| KernelsError::invalid("linear24", "layout"))?;
                ops::copy::copy_strided(&self.gpu, self.dtype, b, &bl, y, &yl)?;
                1.0
            }
            None => 0.0,
        };
        let s = GemmShape { m, n, k, batch: 1, input: self.dtype, output: self.dtype, f32_math: F32Math::Exact };
        let a = Operand { buf: x, offset: 0, ld: k, batch_stride: 0, trans: false };
        let w = Operand { buf: &self.weight, offset: 0, ld: k, batch_stride: 0, trans: true };
        gemm(&self.gpu, &s, 1.0, a, w, beta, y, 0, n, 0)
    }
}
