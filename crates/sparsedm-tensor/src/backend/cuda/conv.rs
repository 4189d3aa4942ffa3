//! conv2d on CUDA: im2col into `[N, C·kh·kw, Ho·Wo]` columns and one
//! strided-batched GEMM with the weight broadcast over the batch (1×1
//! stride-1 unpadded convolutions read the image itself). Backward: the input
//! gradient is col2im of Wᵀ·g (one batched GEMM), the weight gradient the
//! batch sum of g·colsᵀ (one batched GEMM and a deterministic reduction).

use sparsedm_kernels::GpuDType;
use sparsedm_kernels::ops::conv::{ConvGeometry, col2im, im2col};

use crate::cuda::gemm::{broadcast_to, gemm_into};
use crate::cuda::reduce::{Reduce, reduce};
use crate::cuda::storage::{CudaStorage, cuda_ref, dense_f32};
use crate::cuda::{kerr, same_gpu};
use crate::storage::Storage;
use crate::{DType, Result, Tensor};

/// The geometry of one convolution and its output channels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv {
    pub g: ConvGeometry,
    pub o: usize,
}

impl Conv {
    fn pointwise(&self) -> bool {
        self.g.kh == 1 && self.g.kw == 1 && self.g.stride == (1, 1) && self.g.padding == (0, 0)
    }
    fn p(&self) -> Result<usize> {
        let (ho, wo) = self.g.output().map_err(kerr("conv2d"))?;
        Ok(ho * wo)
    }
    fn ck(&self) -> usize {
        self.g.col_rows()
    }

    /// The im2col columns of `x` (`[N, CK, P]`), or `x` itself viewed so for
    /// a pointwise convolution.
    fn columns(&self, x: &Tensor) -> Result<Tensor> {
        let op = "conv2d";
        let (n, ck, p) = (self.g.n, self.ck(), self.p()?);
        let xd = dense_f32(x, op)?;
        if self.pointwise() {
            return xd.reshape(&[n, ck, p]);
        }
        let gpu = same_gpu(op, &[x])?;
        let mut cols = CudaStorage::alloc(&gpu, DType::F32, n * ck * p, op)?;
        {
            let s = xd.storage();
            im2col(&gpu, GpuDType::F32, &self.g, cuda_ref(&s, op)?.buffer(), cols.buffer_mut()).map_err(kerr(op))?;
        }
        Ok(Tensor::from_storage(Storage::Cuda(cols), &[n, ck, p]))
    }

    /// `[N, O, Ho, Wo]` output of `x` with weight `w` (`[O, C, kh, kw]`).
    pub(crate) fn forward(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Storage> {
        let op = "conv2d";
        let mut inputs = vec![x, w];
        inputs.extend(bias);
        let gpu = same_gpu(op, &inputs)?;
        let (n, ck, p, o) = (self.g.n, self.ck(), self.p()?, self.o);
        let cols = self.columns(x)?;
        let w2 = dense_f32(w, op)?.reshape(&[o, ck])?;
        let mut out = match bias {
            Some(b) => broadcast_to(&b.reshape(&[1, o, 1])?, &[n, o, p], op)?,
            None => CudaStorage::alloc(&gpu, DType::F32, n * o * p, op)?,
        };
        gemm_into(op, &w2, &cols, &[n], o, ck, p, &mut out, bias.is_some())?;
        Ok(Storage::Cuda(out))
    }

    /// Input gradient `[N, C, H, W]` from the output gradient `gy`.
    pub(crate) fn backward_input(&self, gy: &Tensor, w: &Tensor) -> Result<Tensor> {
        let op = "conv2d_backward";
        let gpu = same_gpu(op, &[gy, w])?;
        let (n, ck, p, o) = (self.g.n, self.ck(), self.p()?, self.o);
        let gy3 = dense_f32(gy, op)?.reshape(&[n, o, p])?;
        let wt = dense_f32(w, op)?.reshape(&[o, ck])?.t()?;
        let mut colg = CudaStorage::alloc(&gpu, DType::F32, n * ck * p, op)?;
        gemm_into(op, &wt, &gy3, &[n], ck, o, p, &mut colg, false)?;
        let shape = [n, self.g.c, self.g.h, self.g.w];
        if self.pointwise() {
            return Ok(Tensor::from_storage(Storage::Cuda(colg), &shape));
        }
        let mut gx = CudaStorage::alloc(&gpu, DType::F32, shape.iter().product(), op)?;
        col2im(&gpu, GpuDType::F32, &self.g, colg.buffer(), gx.buffer_mut()).map_err(kerr(op))?;
        Ok(Tensor::from_storage(Storage::Cuda(gx), &shape))
    }

    /// Weight gradient `[O, C, kh, kw]`: Σₙ gₙ · colsₙᵀ.
    pub(crate) fn backward_weight(&self, gy: &Tensor, x: &Tensor) -> Result<Tensor> {
        let op = "conv2d_backward";
        let gpu = same_gpu(op, &[gy, x])?;
        let (n, ck, p, o) = (self.g.n, self.ck(), self.p()?, self.o);
        let gy3 = dense_f32(gy, op)?.reshape(&[n, o, p])?;
        let cols_t = self.columns(x)?.transpose(1, 2)?;
        let mut per = CudaStorage::alloc(&gpu, DType::F32, n * o * ck, op)?;
        gemm_into(op, &gy3, &cols_t, &[n], o, p, ck, &mut per, false)?;
        let per = Tensor::from_storage(Storage::Cuda(per), &[n, o, ck]);
        let sum = reduce(&per, &[0], Reduce::Sum, op)?;
        Ok(Tensor::from_storage(sum, &[o, self.g.c, self.g.kh, self.g.kw]))
    }
}
