//! A deployed 2:4 Conv2d on CUDA for inference: im2col + cuSPARSELt's
//! 2:4 SpMM (real, or simulated under `SPARSEDM_CUDA_SIM=1`).
//!
//! A Conv2d weight `[O, C, kh, kw]` is N:M along its input channels at each
//! `(o, kh, kw)`: in PyTorch's order those groups are strided by `kh·kw`.
//! cuSPARSELt wants 2:4 along the GEMM's K, consecutive, so the weight is
//! permuted once to `[O, kh, kw, C]` and compressed as a `[O, kh·kw·C]`
//! [`Sparse24Linear`] (bf16, f32 accumulation; cast once), and each call
//! turns the input's im2col columns `[N, C, kh·kw, P]` into channel-last
//! rows `[N·P, kh·kw·C]` (one copy), multiplies, and returns the NCHW output.
//! cuSPARSELt's constraints apply to `(O, kh·kw·C)`: a weight that is not 2:4
//! along the channels (e.g. `C` not a multiple of 4) or dimensions that are not
//! multiples of 16 are refused at construction, and the caller runs dense.
//!
//! Like the Linear, [`Sparse24Conv2d::forward`] picks per problem the faster
//! of this path and the dense convolution on the masked weight (timed once on
//! a real GPU); the simulator has no real timings, so there the 2:4 path
//! always runs (deterministically), and [`crate::nm_cpu::force_path`] pins
//! the choice.

use crate::nm_cpu::{NmPath, forced_path};
use crate::nm_cuda::{Sparse24Linear, timed_choice};
use crate::op_kinds::ConvGeom;
use crate::{DType, Error, Result, Tensor};

/// A 2:4 Conv2d compressed on a GPU, with the masked dense weight for the
/// dense path.
#[derive(Debug)]
pub struct Sparse24Conv2d {
    /// The weight as `[O, kh·kw·C]` (channel-last K), compressed.
    linear: Sparse24Linear,
    /// The masked weight `[O, C, kh, kw]` and bias, for the dense path.
    dense: Tensor,
    bias: Option<Tensor>,
    stride: (usize, usize),
    padding: (usize, usize),
}

impl Sparse24Conv2d {
    /// Compresses `masked_weight` (`[O, C, kh, kw]` f32 on a GPU, at most 2
    /// of every 4 consecutive input channels non-zero) and `bias` (`[O]`).
    ///
    /// # Errors
    /// A tensor not on a GPU, not f32, of the wrong rank or shape, a zero
    /// stride; cuSPARSELt's refusals (not 2:4 along K, dimensions not
    /// multiples of 16, a missing library) as [`Error::Cuda`].
    pub fn new(masked_weight: &Tensor, bias: Option<&Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Self> {
        let op = "sparse24_conv2d";
        if masked_weight.rank() != 4 {
            return Err(Error::bad_shape(op, masked_weight.shape(), "a Conv2d weight [out, in, kh, kw]"));
        }
        if stride.0 == 0 || stride.1 == 0 {
            crate::error::bail!(op, "stride must be positive, got {stride:?}");
        }
        let (o, c, kh, kw) = (masked_weight.shape()[0], masked_weight.shape()[1], masked_weight.shape()[2], masked_weight.shape()[3]);
        let rows = masked_weight.permute(&[0, 2, 3, 1])?.contiguous()?.reshape(&[o, kh * kw * c])?;
        let linear = Sparse24Linear::new(&rows, bias)?;
        Ok(Sparse24Conv2d { linear, dense: masked_weight.detach(), bias: bias.map(Tensor::detach), stride, padding })
    }

    /// The weight's shape `[O, C, kh, kw]`.
    pub fn weight_shape(&self) -> &[usize] {
        self.dense.shape()
    }

    /// The geometry of `x` under this convolution, checked.
    fn geometry(&self, x: &Tensor) -> Result<ConvGeom> {
        let op = "sparse24_conv2d";
        let ws = self.dense.shape();
        let (o, c, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        if x.rank() != 4 || x.shape()[1] != c {
            return Err(Error::ShapeMismatch { op, lhs: x.shape().to_vec(), rhs: ws.to_vec() });
        }
        let (n, h, w) = (x.shape()[0], x.shape()[2], x.shape()[3]);
        let ((sh, sw), (ph, pw)) = (self.stride, self.padding);
        if h + 2 * ph < kh || w + 2 * pw < kw {
            return Err(Error::bad_shape(op, x.shape(), format!("kernel {kh}x{kw} larger than the padded input")));
        }
        let (ho, wo) = ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1);
        Ok(ConvGeom { n, c, h, w, o, kh, kw, sh, sw, ph, pw, ho, wo })
    }

    /// `x [N, C, H, W]` to `[N, O, Ho, Wo]` by the given path: `Dense` is
    /// `Tensor::conv2d` on the masked weight (the model's own path at the
    /// current matmul precision), `Sparse` im2col + cuSPARSELt. Untracked.
    ///
    /// # Errors
    /// A tensor on another device, not f32, or of another shape.
    pub fn forward_with(&self, path: NmPath, x: &Tensor) -> Result<Tensor> {
        let g = self.geometry(x)?;
        if path == NmPath::Dense {
            return x.conv2d(&self.dense, self.bias.as_ref(), self.stride, self.padding);
        }
        if x.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op: "sparse24_conv2d", dtype: x.dtype(), expected: "f32" });
        }
        let xc = x.contiguous()?;
        let cols = xc.storage().sparse24_im2col(xc.layout(), &g)?;
        let (kk, p) = (g.kh * g.kw, g.ho * g.wo);
        // [N, C, kh·kw, P] → [N, P, kh·kw, C]: rows whose K runs over channels fastest.
        let rows = Tensor::from_storage(cols, &[g.n, g.c, kk, p]).permute(&[0, 3, 2, 1])?.contiguous()?.reshape(&[g.n * p, kk * g.c])?;
        let y = self.linear.forward_with(NmPath::Sparse, &rows)?;
        y.reshape(&[g.n, g.ho, g.wo, g.o])?.permute(&[0, 3, 1, 2])?.contiguous()
    }

    /// `x` by the faster path for this problem (timed once on a real GPU;
    /// always 2:4 on the simulator; pinned by [`crate::nm_cpu::force_path`]
    /// when set).
    ///
    /// # Errors
    /// As [`Sparse24Conv2d::forward_with`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(path) = forced_path() {
            return self.forward_with(path, x);
        }
        if self.linear.is_simulated() {
            return self.forward_with(NmPath::Sparse, x);
        }
        let g = self.geometry(x)?;
        let rows = g.n * g.ho * g.wo;
        let key = format!(
            "conv|{}|{}|{:?}|{:?}|{:?}|{:?}|{}",
            self.linear.device_name(),
            rows.max(1).next_power_of_two(),
            self.dense.shape(),
            (g.h, g.w),
            self.stride,
            self.padding,
            self.bias.is_some()
        );
        let path = timed_choice(key, x.device(), |p| self.forward_with(p, x))?;
        self.forward_with(path, x)
    }
}
