//! A deployed 2:4 Linear on CUDA: the masked f32 weight cast to bf16 and
//! compressed once by cuSPARSELt (`sparsedm_kernels::sparse24`), and its
//! matmul on f32 activations (cast to bf16 at the input, back to f32 at the
//! output, as the bf16 matmul precision does for dense GEMMs).

use std::sync::Arc;

use sparsedm_kernels::sparse24::{SparseLt, SparseWeight};
use sparsedm_kernels::{Gpu, GpuDType};

use crate::backend::cuda::storage::{CudaStorage, dense_f32, kerr, same_gpu};
use crate::{DType, Layout, Result};

/// Weights compressed by cuSPARSELt (real or simulated) in this process.
pub fn sparse24_compressions() -> usize {
    sparsedm_kernels::sparse24::compressions()
}

/// A 2:4 weight `[n, k]` compressed on one GPU, with its bias.
#[derive(Debug)]
pub struct Sparse24 {
    gpu: Arc<Gpu>,
    weight: SparseWeight,
}

impl Sparse24 {
    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.out_features()
    }
    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.in_features()
    }
    /// The device's name (a dispatch key).
    pub fn device_name(&self) -> &str {
        self.gpu.name()
    }
    /// Whether the device is the CUDA simulator (no timings there).
    pub fn is_simulated(&self) -> bool {
        self.gpu.is_simulated()
    }
}

impl CudaStorage {
    /// Casts the view `l` (`[n, k]` f32) and the bias to bf16 and hands
    /// them to cuSPARSELt, which checks the 2:4 pattern along `k` and the
    /// shape and compresses the weight.
    pub(crate) fn sparse24_compress(&self, l: &Layout, bias: Option<(&CudaStorage, &Layout)>, n: usize, k: usize) -> Result<Sparse24> {
        let op = "sparse24_compress";
        let mut inputs = vec![self];
        inputs.extend(bias.map(|b| b.0));
        let gpu = same_gpu(op, &inputs)?;
        let w = dense_f32(self, l, op)?.cast(n * k, DType::BF16, op)?;
        let b = match bias {
            Some((b, lb)) => Some(dense_f32(b, lb, op)?.cast(n, DType::BF16, op)?),
            None => None,
        };
        let lt = SparseLt::get(&gpu).map_err(kerr(op))?;
        let weight = SparseWeight::new(&lt, w.buffer(), n, k, GpuDType::BF16, b.as_ref().map(|b| b.buffer())).map_err(kerr(op))?;
        Ok(Sparse24 { gpu, weight })
    }

    /// The im2col columns `[n, c·kh·kw, ho·wo]` (f32) of the NCHW view `l`.
    pub(crate) fn sparse24_im2col(&self, l: &Layout, g: &crate::op_kinds::ConvGeom) -> Result<CudaStorage> {
        crate::backend::cuda::conv::im2col_owned(self, l, g)
    }

    /// `y [m, n] = x [m, k] · Wᵀ + b` through cuSPARSELt, `x` the f32 view
    /// `l`; the result is f32.
    pub(crate) fn sparse24_matmul(&self, l: &Layout, w: &Sparse24, m: usize) -> Result<CudaStorage> {
        let op = "sparse24_matmul";
        same_gpu(op, &[self])?;
        let k = w.in_features();
        let x = dense_f32(self, l, op)?.cast(m * k, DType::BF16, op)?;
        let mut y = CudaStorage::alloc(&w.gpu, DType::BF16, m * w.out_features(), op)?;
        w.weight.matmul(x.buffer(), m, y.buffer_mut()).map_err(kerr(op))?;
        y.cast(m * w.out_features(), DType::F32, op)
    }
}
