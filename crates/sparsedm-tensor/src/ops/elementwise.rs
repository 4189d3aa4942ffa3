//! Element-wise ops: unary maps, scalar affine, binary ops with NumPy
//! broadcasting, `clamp` and `where_cond`. Each op is one backend primitive
//! (an op kind) and one backward rule, itself an element-wise primitive
//! (usually a fused `…Bwd` kind), so it runs on any device.

use crate::autograd::BackwardCtx;
use crate::layout::broadcast_shapes;
use crate::op_kinds::{BinaryKind, UnaryKind};
use crate::tensor::bw;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `kind(self, rhs)` with broadcasting, untracked.
    pub(crate) fn binary_raw(&self, rhs: &Tensor, kind: BinaryKind, op: &'static str) -> Result<Tensor> {
        let shape = broadcast_shapes(op, self.shape(), rhs.shape())?;
        let (la, lb) = (self.layout().broadcast_as(&shape)?, rhs.layout().broadcast_as(&shape)?);
        let s = self.storage().binary(&la, &rhs.storage(), &lb, kind, op)?;
        Ok(Tensor::from_storage(s, &shape))
    }

    /// A tracked unary op whose gradient is `grad(ctx, x)`.
    fn unary(
        &self,
        op: &'static str,
        kind: UnaryKind,
        grad: impl Fn(&BackwardCtx<'_>, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        let s = self.storage().unary(self.layout(), kind, op)?;
        let x = self.clone();
        Ok(Tensor::from_op(s, self.shape(), op, &[self], bw(move |c| Ok(vec![Some(grad(c, &x)?)]))))
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary("neg", UnaryKind::Neg, |c, _| c.grad.mul_scalar(-1.0))
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary("exp", UnaryKind::Exp, |c, _| c.grad.binary_raw(c.out, BinaryKind::Mul, "exp_backward"))
    }
    pub fn log(&self) -> Result<Tensor> {
        self.unary("log", UnaryKind::Log, |c, x| c.grad.binary_raw(x, BinaryKind::Div, "log_backward"))
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary("sqrt", UnaryKind::Sqrt, |c, _| c.grad.binary_raw(c.out, BinaryKind::SqrtBwd, "sqrt_backward"))
    }
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.unary("rsqrt", UnaryKind::Rsqrt, |c, _| c.grad.binary_raw(c.out, BinaryKind::RsqrtBwd, "rsqrt_backward"))
    }
    /// `x^p` for a scalar exponent.
    pub fn powf(&self, p: f32) -> Result<Tensor> {
        self.unary("powf", UnaryKind::Powf(p), move |c, x| c.grad.binary_raw(x, BinaryKind::PowfBwd(p), "powf_backward"))
    }
    pub fn sqr(&self) -> Result<Tensor> {
        self.unary("sqr", UnaryKind::Sqr, |c, x| c.grad.binary_raw(x, BinaryKind::SqrBwd, "sqr_backward"))
    }
    /// |x|; the gradient at 0 is 0, as in PyTorch.
    pub fn abs(&self) -> Result<Tensor> {
        self.unary("abs", UnaryKind::Abs, |c, x| c.grad.binary_raw(x, BinaryKind::AbsBwd, "abs_backward"))
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary("tanh", UnaryKind::Tanh, |c, _| c.grad.binary_raw(c.out, BinaryKind::TanhBwd, "tanh_backward"))
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary("sigmoid", UnaryKind::Sigmoid, |c, _| c.grad.binary_raw(c.out, BinaryKind::SigmoidBwd, "sigmoid_backward"))
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary("relu", UnaryKind::Relu, |c, x| c.grad.binary_raw(x, BinaryKind::ReluBwd, "relu_backward"))
    }
    /// GELU, the exact erf form (`torch.nn.GELU()` default).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary("gelu", UnaryKind::Gelu, |c, x| c.grad.binary_raw(x, BinaryKind::GeluBwd, "gelu_backward"))
    }
    /// SiLU (swish): x·σ(x).
    pub fn silu(&self) -> Result<Tensor> {
        self.unary("silu", UnaryKind::Silu, |c, x| c.grad.binary_raw(x, BinaryKind::SiluBwd, "silu_backward"))
    }
    /// `x·mul + add`.
    pub fn affine(&self, mul: f32, add: f32) -> Result<Tensor> {
        self.unary("affine", UnaryKind::Affine(mul, add), move |c, _| c.grad.mul_scalar(mul))
    }
    pub fn mul_scalar(&self, s: f32) -> Result<Tensor> {
        self.affine(s, 0.0)
    }
    pub fn add_scalar(&self, s: f32) -> Result<Tensor> {
        self.affine(1.0, s)
    }
    /// Clamps into `[min, max]`; the gradient passes where `min ≤ x ≤ max`.
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        if min > max || min.is_nan() || max.is_nan() {
            crate::error::bail!("clamp", "empty range [{min}, {max}]");
        }
        self.unary("clamp", UnaryKind::Clamp(min, max), move |c, x| c.grad.binary_raw(x, BinaryKind::ClampBwd(min, max), "clamp_backward"))
    }

    /// A tracked binary op with broadcasting; `grads` returns the gradients
    /// at the broadcast shape, summed back to each input's shape here.
    fn binary(
        &self,
        rhs: &Tensor,
        op: &'static str,
        kind: BinaryKind,
        grads: impl Fn(&BackwardCtx<'_>, &Tensor, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        if self.device() != rhs.device() {
            return Err(Error::DeviceMismatch { op, lhs: self.device(), rhs: rhs.device() });
        }
        let out = self.binary_raw(rhs, kind, op)?;
        let (a, b) = (self.clone(), rhs.clone());
        Tensor::custom_op(&out, op, &[self, rhs], move |c| {
            let (ga, gb) = grads(c, &a, &b)?;
            let ga = match ga {
                Some(g) if c.needs[0] => Some(g.sum_to_shape(a.shape())?),
                _ => None,
            };
            let gb = match gb {
                Some(g) if c.needs[1] => Some(g.sum_to_shape(b.shape())?),
                _ => None,
            };
            Ok(vec![ga, gb])
        })
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "add", BinaryKind::Add, |c, _, _| Ok((Some(c.grad.clone()), Some(c.grad.clone()))))
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "sub", BinaryKind::Sub, |c, _, _| {
            Ok((Some(c.grad.clone()), c.needs[1].then(|| c.grad.mul_scalar(-1.0)).transpose()?))
        })
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "mul", BinaryKind::Mul, |c, a, b| {
            let ga = c.needs[0].then(|| c.grad.binary_raw(b, BinaryKind::Mul, "mul_backward")).transpose()?;
            let gb = c.needs[1].then(|| c.grad.binary_raw(a, BinaryKind::Mul, "mul_backward")).transpose()?;
            Ok((ga, gb))
        })
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "div", BinaryKind::Div, |c, _, b| {
            let ga = c.needs[0].then(|| c.grad.binary_raw(b, BinaryKind::Div, "div_backward")).transpose()?;
            let gb = if c.needs[1] {
                // d(a/b)/db = -out/b
                let t = c.out.binary_raw(b, BinaryKind::NegDiv, "div_backward")?;
                Some(c.grad.binary_raw(&t, BinaryKind::Mul, "div_backward")?)
            } else {
                None
            };
            Ok((ga, gb))
        })
    }
    /// Element-wise maximum; ties send the gradient to `self`.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "maximum", BinaryKind::Max, |c, a, b| {
            let sel = a.binary_raw(b, BinaryKind::Ge, "maximum_backward")?;
            let ga = c.grad.binary_raw(&sel, BinaryKind::Mul, "maximum_backward")?;
            let gb = c.grad.binary_raw(&sel, BinaryKind::MulComplement, "maximum_backward")?;
            Ok((Some(ga), Some(gb)))
        })
    }

    /// `cond ? a : b` element-wise with broadcasting; `cond` is f32 (non-zero
    /// means true) and receives no gradient.
    pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let op = "where_cond";
        let out = Self::where_raw(cond, a, b)?;
        let (sa, sb, tc) = (a.shape().to_vec(), b.shape().to_vec(), cond.detach());
        Tensor::custom_op(&out, op, &[a, b], move |c| {
            let zero = Tensor::zeros(&[], &c.grad.device())?;
            let ga = c.needs[0].then(|| Tensor::where_raw(&tc, c.grad, &zero)?.sum_to_shape(&sa)).transpose()?;
            let gb = c.needs[1].then(|| Tensor::where_raw(&tc, &zero, c.grad)?.sum_to_shape(&sb)).transpose()?;
            Ok(vec![ga, gb])
        })
    }

    /// `cond ? a : b` as an untracked tensor.
    fn where_raw(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let op = "where_cond";
        let shape = broadcast_shapes(op, &broadcast_shapes(op, cond.shape(), a.shape())?, b.shape())?;
        let (lc, la, lb) = (cond.layout().broadcast_as(&shape)?, a.layout().broadcast_as(&shape)?, b.layout().broadcast_as(&shape)?);
        let s = cond.storage().where_cond(&lc, (&a.storage(), &la), (&b.storage(), &lb))?;
        Ok(Tensor::from_storage(s, &shape))
    }
}
