//! Element-wise ops: unary maps, scalar affine, binary ops with NumPy
//! broadcasting, `clamp` and `where_cond`. The CPU loops go through
//! [`Walk`], so strided and broadcast operands need no copies.

use crate::cpu::strided::Walk;
use crate::layout::broadcast_shapes;
use crate::ops::view::f32_storage;
use crate::tensor::bw;
use crate::{Result, Tensor};

/// eˣ for f32 without a libm call, so loops over it vectorise (scalar
/// `expf` was a tenth of a training step): Cody–Waite range reduction
/// x = n·ln2 + r, a degree-6 polynomial for eʳ on |r| ≤ ln2/2 (Cephes
/// `expf` coefficients), and 2ⁿ built in the exponent bits. Relative error
/// ≤ 3e-7 on [−87, 88]; inputs are clamped to [−87.3, 88.7], so
/// results underflow to ~1e-38 instead of 0 and saturate near f32::MAX.
#[inline]
pub(crate) fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // 2¹²⁷ is the largest power the exponent bits hold; above x ≈ 88.03 the
    // remainder r grows past ln2/2 and the error to ~1e-5 (rarely matters).
    // Round to nearest by adding and removing 1.5·2²³ (pure arithmetic:
    // `f32::round` is a libm call on baseline x86-64 and blocks vectorising).
    const MAGIC: f32 = 12_582_912.0;
    let n = ((x * std::f32::consts::LOG2_E + MAGIC) - MAGIC).min(127.0);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let z = r * r;
    let p = (((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r + 0.5) * z + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// exp(-x²/2)/√(2π).
fn normal_pdf(x: f32) -> f32 {
    fast_exp(-0.5 * x * x) * 0.398_942_3
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7 in exact
/// arithmetic, 5.2e-7 measured in f32 over [−8, 8]: a few units of
/// f32 rounding), branch-free apart from the sign so loops vectorise;
/// `libm::erff` made GELU a tenth of a U-ViT training step.
#[inline]
pub(crate) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * fast_exp(-a * a);
    y.copysign(x)
}

/// Φ(x) through erf (PyTorch's exact GELU uses the same).
fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((super::erf(x) - libm::erf(x as f64) as f32).abs());
        }
        assert!(worst < 6e-7, "max |erf error| {worst}");
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            worst = worst.max(((super::fast_exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 3e-7, "max relative exp error {worst}");
        assert!(super::fast_exp(-1000.0) < 1e-37 && super::fast_exp(1000.0) > 1e38);
        assert!(super::sigmoid(-100.0) < 1e-30 && (super::sigmoid(100.0) - 1.0).abs() < 1e-7);
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

/// What a unary op computes, for the CUDA kernel (`unary_f32`'s op code and
/// scalar parameters); the CPU path runs the op's own closure.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
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
    /// `x > 0 ? 1 : 0`.
    Step,
}

/// What a binary op computes, for the CUDA kernel (`binary_f32`'s op code).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
    /// NaN-propagating maximum.
    Max,
    /// `a·GELU′(b)`, `a·SiLU′(b)`, `a·(1 − b²)`, `a·b·(1 − b)`, `b > 0 ? a : 0`.
    GeluBwd,
    SiluBwd,
    TanhBwd,
    SigmoidBwd,
    ReluBwd,
    /// `a ≥ b` and `a == b` as 1.0/0.0.
    Ge,
    Eq,
}

/// The CUDA recipe of a `zip_with` that is one binary kernel.
fn on_gpu(kind: BinaryKind) -> impl Fn(&Tensor, &Tensor) -> Result<Tensor> {
    move |a, b| a.binary_raw(b, "zip_with", kind)
}

impl Tensor {
    /// Applies `f` to every element (untracked primitive).
    pub(crate) fn map(&self, op: &'static str, f: impl Fn(f32) -> f32 + Sync) -> Result<Vec<f32>> {
        self.with_f32(op, |src, l| {
            let mut out = vec![0f32; l.elem_count()];
            let walk = Walk::new(l.shape(), [l.strides()]);
            walk.for_each_run([l.offset()], &mut out, |run, [o], [s]| {
                let len = run.len();
                if s == 1 {
                    for (d, &x) in run.iter_mut().zip(&src[o..o + len]) {
                        *d = f(x);
                    }
                } else {
                    for (i, d) in run.iter_mut().enumerate() {
                        *d = f(src[o + i * s]);
                    }
                }
            });
            out
        })
    }

    /// `f(a, b)` with broadcasting (untracked primitive); returns the values
    /// and the broadcast shape.
    pub(crate) fn map2(&self, rhs: &Tensor, op: &'static str, f: impl Fn(f32, f32) -> f32 + Sync) -> Result<(Vec<f32>, Vec<usize>)> {
        let shape = broadcast_shapes(op, self.shape(), rhs.shape())?;
        let la = self.layout().broadcast_as(&shape)?;
        let lb = rhs.layout().broadcast_as(&shape)?;
        let sa = self.storage();
        let sb = rhs.storage();
        let (a, b) = (sa.cpu_f32(op)?, sb.cpu_f32(op)?);
        let mut out = vec![0f32; shape.iter().product()];
        let walk = Walk::new(&shape, [la.strides(), lb.strides()]);
        walk.for_each_run([la.offset(), lb.offset()], &mut out, |run, [oa, ob], [sa, sb]| {
            let len = run.len();
            match (sa, sb) {
                (1, 1) => {
                    for ((d, &x), &y) in run.iter_mut().zip(&a[oa..oa + len]).zip(&b[ob..ob + len]) {
                        *d = f(x, y);
                    }
                }
                (1, 0) => {
                    let y = b[ob];
                    for (d, &x) in run.iter_mut().zip(&a[oa..oa + len]) {
                        *d = f(x, y);
                    }
                }
                (0, 1) => {
                    let x = a[oa];
                    for (d, &y) in run.iter_mut().zip(&b[ob..ob + len]) {
                        *d = f(x, y);
                    }
                }
                _ => {
                    for (i, d) in run.iter_mut().enumerate() {
                        *d = f(a[oa + i * sa], b[ob + i * sb]);
                    }
                }
            }
        });
        Ok((out, shape))
    }

    /// `f(a, b)` as an untracked tensor (used by backward rules). `gpu`
    /// computes the same values from CUDA operands with device ops (`f` is a
    /// host closure); it runs without recording and its result is detached.
    pub(crate) fn zip_with(
        &self,
        rhs: &Tensor,
        op: &'static str,
        gpu: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
        f: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.is_cuda() || rhs.is_cuda() {
            if self.device() != rhs.device() {
                return Err(crate::Error::DeviceMismatch { op, lhs: self.device(), rhs: rhs.device() });
            }
            let _g = crate::no_grad();
            return Ok(gpu(self, rhs)?.detach());
        }
        #[cfg(not(feature = "cuda"))]
        let _ = gpu;
        let (v, shape) = self.map2(rhs, op, f)?;
        Ok(Tensor::from_storage(f32_storage(v), &shape))
    }

    /// One binary kernel as an untracked tensor (CUDA operands only).
    pub(crate) fn binary_raw(&self, rhs: &Tensor, op: &'static str, kind: BinaryKind) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        {
            let (s, shape) = crate::cuda::elementwise::binary(self, rhs, op, kind)?;
            Ok(Tensor::from_storage(s, &shape))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (rhs, kind);
            Err(crate::Error::invalid(op, "internal: a CUDA kernel was requested in a build without CUDA"))
        }
    }

    fn unary(
        &self,
        op: &'static str,
        kind: UnaryKind,
        f: impl Fn(f32) -> f32 + Sync,
        grad: impl Fn(&crate::autograd::BackwardCtx<'_>, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.is_cuda() {
            let s = crate::cuda::elementwise::unary(self, op, kind)?;
            let x = self.clone();
            return Ok(Tensor::from_op(s, self.shape(), op, &[self], bw(move |c| Ok(vec![Some(grad(c, &x)?)]))));
        }
        #[cfg(not(feature = "cuda"))]
        let _ = kind;
        let v = self.map(op, f)?;
        let x = self.clone();
        Ok(Tensor::from_op(f32_storage(v), self.shape(), op, &[self], bw(move |c| Ok(vec![Some(grad(c, &x)?)]))))
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary("neg", UnaryKind::Neg, |x| -x, |c, _| c.grad.mul_scalar(-1.0))
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary("exp", UnaryKind::Exp, f32::exp, |c, _| c.grad.zip_with(c.out, "exp_backward", on_gpu(BinaryKind::Mul), |g, y| g * y))
    }
    pub fn log(&self) -> Result<Tensor> {
        self.unary("log", UnaryKind::Log, f32::ln, |c, x| c.grad.zip_with(x, "log_backward", on_gpu(BinaryKind::Div), |g, x| g / x))
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary("sqrt", UnaryKind::Sqrt, f32::sqrt, |c, _| {
            c.grad.zip_with(
                c.out,
                "sqrt_backward",
                |g, y| g.binary_raw(y, "sqrt_backward", BinaryKind::Div)?.affine(0.5, 0.0),
                |g, y| 0.5 * g / y,
            )
        })
    }
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.unary(
            "rsqrt",
            UnaryKind::Rsqrt,
            |x| 1.0 / x.sqrt(),
            |c, _| c.grad.zip_with(c.out, "rsqrt_backward", |g, y| g.mul(&y.powf(3.0)?.affine(-0.5, 0.0)?), |g, y| -0.5 * g * y * y * y),
        )
    }
    /// `x^p` for a scalar exponent.
    pub fn powf(&self, p: f32) -> Result<Tensor> {
        self.unary(
            "powf",
            UnaryKind::Powf(p),
            move |x| x.powf(p),
            move |c, x| {
                c.grad.zip_with(x, "powf_backward", |g, x| g.mul(&x.powf(p - 1.0)?.affine(p, 0.0)?), move |g, x| g * p * x.powf(p - 1.0))
            },
        )
    }
    pub fn sqr(&self) -> Result<Tensor> {
        self.unary(
            "sqr",
            UnaryKind::Sqr,
            |x| x * x,
            |c, x| {
                c.grad.zip_with(
                    x,
                    "sqr_backward",
                    |g, x| g.binary_raw(x, "sqr_backward", BinaryKind::Mul)?.affine(2.0, 0.0),
                    |g, x| 2.0 * g * x,
                )
            },
        )
    }
    /// |x|; the gradient at 0 is 0, as in PyTorch.
    pub fn abs(&self) -> Result<Tensor> {
        self.unary("abs", UnaryKind::Abs, f32::abs, |c, x| {
            // sign(x) = step(x) − step(−x): 0 at 0 and at NaN, as on the CPU.
            let sign = |x: &Tensor| x.step()?.sub(&x.neg()?.step()?);
            c.grad.zip_with(
                x,
                "abs_backward",
                |g, x| g.mul(&sign(x)?),
                |g, x| {
                    if x > 0.0 {
                        g
                    } else if x < 0.0 {
                        -g
                    } else {
                        0.0
                    }
                },
            )
        })
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary("tanh", UnaryKind::Tanh, f32::tanh, |c, _| {
            c.grad.zip_with(c.out, "tanh_backward", on_gpu(BinaryKind::TanhBwd), |g, y| g * (1.0 - y * y))
        })
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary("sigmoid", UnaryKind::Sigmoid, sigmoid, |c, _| {
            c.grad.zip_with(c.out, "sigmoid_backward", on_gpu(BinaryKind::SigmoidBwd), |g, y| g * y * (1.0 - y))
        })
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(
            "relu",
            UnaryKind::Relu,
            |x| x.max(0.0),
            |c, x| c.grad.zip_with(x, "relu_backward", on_gpu(BinaryKind::ReluBwd), |g, x| if x > 0.0 { g } else { 0.0 }),
        )
    }
    /// GELU, the exact erf form (`torch.nn.GELU()` default).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(
            "gelu",
            UnaryKind::Gelu,
            |x| x * normal_cdf(x),
            |c, x| c.grad.zip_with(x, "gelu_backward", on_gpu(BinaryKind::GeluBwd), |g, x| g * (normal_cdf(x) + x * normal_pdf(x))),
        )
    }
    /// SiLU (swish): x·σ(x).
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(
            "silu",
            UnaryKind::Silu,
            |x| x * sigmoid(x),
            |c, x| {
                c.grad.zip_with(x, "silu_backward", on_gpu(BinaryKind::SiluBwd), |g, x| {
                    let s = sigmoid(x);
                    g * s * (1.0 + x * (1.0 - s))
                })
            },
        )
    }
    /// `x·mul + add`.
    pub fn affine(&self, mul: f32, add: f32) -> Result<Tensor> {
        self.unary("affine", UnaryKind::Affine(mul, add), move |x| x * mul + add, move |c, _| c.grad.mul_scalar(mul))
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
        self.unary(
            "clamp",
            UnaryKind::Clamp(min, max),
            move |x| x.clamp(min, max),
            move |c, x| {
                // In range ⇔ clamp(x) == x (false for NaN, as `contains` on the CPU).
                let inside = |x: &Tensor| x.clamp(min, max)?.binary_raw(x, "clamp_backward", BinaryKind::Eq);
                c.grad.zip_with(x, "clamp_backward", |g, x| g.mul(&inside(x)?), move |g, x| if (min..=max).contains(&x) { g } else { 0.0 })
            },
        )
    }

    /// `x > 0 ? 1 : 0` (CUDA only: the building block of sign-like
    /// backward rules; untracked).
    pub(crate) fn step(&self) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        {
            Ok(Tensor::from_storage(crate::cuda::elementwise::unary(self, "step", UnaryKind::Step)?, self.shape()))
        }
        #[cfg(not(feature = "cuda"))]
        Err(crate::Error::invalid("step", "internal: a CUDA kernel was requested in a build without CUDA"))
    }

    fn binary(
        &self,
        rhs: &Tensor,
        op: &'static str,
        kind: BinaryKind,
        f: impl Fn(f32, f32) -> f32 + Sync,
        grads: impl Fn(&crate::autograd::BackwardCtx<'_>, &Tensor, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        if self.device() != rhs.device() {
            return Err(crate::Error::DeviceMismatch { op, lhs: self.device(), rhs: rhs.device() });
        }
        #[cfg(feature = "cuda")]
        let (storage, shape) = if self.is_cuda() {
            crate::cuda::elementwise::binary(self, rhs, op, kind)?
        } else {
            let (v, shape) = self.map2(rhs, op, f)?;
            (f32_storage(v), shape)
        };
        #[cfg(not(feature = "cuda"))]
        let (storage, shape) = {
            let _ = kind;
            let (v, shape) = self.map2(rhs, op, f)?;
            (f32_storage(v), shape)
        };
        let (a, b) = (self.clone(), rhs.clone());
        Ok(Tensor::from_op(
            storage,
            &shape,
            op,
            &[self, rhs],
            bw(move |c| {
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
            }),
        ))
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "add", BinaryKind::Add, |a, b| a + b, |c, _, _| Ok((Some(c.grad.clone()), Some(c.grad.clone()))))
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(
            rhs,
            "sub",
            BinaryKind::Sub,
            |a, b| a - b,
            |c, _, _| Ok((Some(c.grad.clone()), c.needs[1].then(|| c.grad.mul_scalar(-1.0)).transpose()?)),
        )
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(
            rhs,
            "mul",
            BinaryKind::Mul,
            |a, b| a * b,
            |c, a, b| {
                let ga = c.needs[0].then(|| c.grad.zip_with(b, "mul_backward", on_gpu(BinaryKind::Mul), |g, b| g * b)).transpose()?;
                let gb = c.needs[1].then(|| c.grad.zip_with(a, "mul_backward", on_gpu(BinaryKind::Mul), |g, a| g * a)).transpose()?;
                Ok((ga, gb))
            },
        )
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(
            rhs,
            "div",
            BinaryKind::Div,
            |a, b| a / b,
            |c, _, b| {
                let ga = c.needs[0].then(|| c.grad.zip_with(b, "div_backward", on_gpu(BinaryKind::Div), |g, b| g / b)).transpose()?;
                let gb = if c.needs[1] {
                    // d(a/b)/db = -out/b
                    let t =
                        c.out.zip_with(b, "div_backward", |y, b| y.binary_raw(b, "div_backward", BinaryKind::Div)?.neg(), |y, b| -y / b)?;
                    Some(c.grad.zip_with(&t, "div_backward", on_gpu(BinaryKind::Mul), |g, t| g * t)?)
                } else {
                    None
                };
                Ok((ga, gb))
            },
        )
    }
    /// Element-wise maximum; ties send the gradient to `self`.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "maximum", BinaryKind::Max, f32::max, |c, a, b| {
            let sel = a.zip_with(b, "maximum_backward", on_gpu(BinaryKind::Ge), |a, b| if a >= b { 1.0 } else { 0.0 })?;
            let ga = c.grad.zip_with(&sel, "maximum_backward", on_gpu(BinaryKind::Mul), |g, s| g * s)?;
            let gb = c.grad.zip_with(&sel, "maximum_backward", |g, s| g.mul(&s.affine(-1.0, 1.0)?), |g, s| g * (1.0 - s))?;
            Ok((Some(ga), Some(gb)))
        })
    }

    /// `cond ? a : b` element-wise with broadcasting; `cond` is f32 (non-zero
    /// means true) and receives no gradient.
    pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let op = "where_cond";
        let shape = broadcast_shapes(op, &broadcast_shapes(op, cond.shape(), a.shape())?, b.shape())?;
        #[cfg(feature = "cuda")]
        if cond.is_cuda() || a.is_cuda() || b.is_cuda() {
            let s = crate::cuda::elementwise::where_cond(cond, a, b, &shape)?;
            return Ok(Self::where_node(s, &shape, cond, a, b));
        }
        let (lc, la, lb) = (cond.layout().broadcast_as(&shape)?, a.layout().broadcast_as(&shape)?, b.layout().broadcast_as(&shape)?);
        let mut out = vec![0f32; shape.iter().product()];
        {
            let (sc, sa, sb) = (cond.storage(), a.storage(), b.storage());
            let (vc, va, vb) = (sc.cpu_f32(op)?, sa.cpu_f32(op)?, sb.cpu_f32(op)?);
            let walk = Walk::new(&shape, [lc.strides(), la.strides(), lb.strides()]);
            walk.for_each_run([lc.offset(), la.offset(), lb.offset()], &mut out, |run, [oc, oa, ob], [sc, sa, sb]| {
                for (i, d) in run.iter_mut().enumerate() {
                    *d = if vc[oc + i * sc] != 0.0 { va[oa + i * sa] } else { vb[ob + i * sb] };
                }
            });
        }
        Ok(Self::where_node(f32_storage(out), &shape, cond, a, b))
    }

    /// The result of `where_cond` with its backward rule.
    fn where_node(storage: crate::storage::Storage, shape: &[usize], cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        let op = "where_cond";
        let (ta, tb, tc) = (a.clone(), b.clone(), cond.detach());
        Tensor::from_op(
            storage,
            shape,
            op,
            &[a, b],
            bw(move |c| {
                let pick = |want: bool, shape: &[usize]| -> Result<Tensor> {
                    let gpu = |g: &Tensor, m: &Tensor| {
                        let zero = Tensor::zeros(&[], &g.device())?;
                        if want { Tensor::where_cond(m, g, &zero) } else { Tensor::where_cond(m, &zero, g) }
                    };
                    c.grad.zip_with(&tc, "where_backward", gpu, move |g, m| if (m != 0.0) == want { g } else { 0.0 })?.sum_to_shape(shape)
                };
                Ok(vec![c.needs[0].then(|| pick(true, ta.shape())).transpose()?, c.needs[1].then(|| pick(false, tb.shape())).transpose()?])
            }),
        )
    }
}
