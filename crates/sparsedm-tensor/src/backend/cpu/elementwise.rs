//! Element-wise CPU kernels: unary maps, binary maps over broadcast layouts
//! and `where`. The loops go through [`Walk`], so strided and broadcast
//! operands need no copies; each op kind is its own monomorphised loop,
//! compiled for the CPU's widest vector instructions ([`vectorized_with`]).

use crate::backend::cpu::math::{GELU_BLOCK, gelu_block, gelu_grad, gelu_grad_block, normal_cdf, sigmoid};
use crate::backend::cpu::simd::{Kernel, vectorized_with};
#[cfg(target_arch = "x86_64")]
use crate::backend::cpu::simd::{SimdLevel, simd_level};
use crate::backend::cpu::strided::{Walk, written_vec};
use crate::op_kinds::{BinaryKind, UnaryKind};
use crate::{Layout, Result};
use std::mem::MaybeUninit;

/// One run of [`map`]: `run.len()` outputs `f(src[o + i·s])`; a
/// [`Kernel`], so that it is compiled for the chosen instructions.
struct MapRun<'a, F> {
    run: &'a mut [MaybeUninit<f32>],
    src: &'a [f32],
    o: usize,
    s: usize,
    f: &'a F,
}

impl<F: Fn(f32) -> f32> Kernel for MapRun<'_, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let MapRun { run, src, o, s, f } = self;
        map_run(run, src, o, s, f);
    }
}

#[inline(always)]
fn map_run<F: Fn(f32) -> f32>(run: &mut [MaybeUninit<f32>], src: &[f32], o: usize, s: usize, f: &F) {
    let len = run.len();
    if s == 1 {
        for (d, &x) in run.iter_mut().zip(&src[o..o + len]) {
            d.write(f(x));
        }
    } else {
        for (i, d) in run.iter_mut().enumerate() {
            d.write(f(src[o + i * s]));
        }
    }
}

/// GELU in place, as [`UnaryKind::Gelu`] computes it (the same expression,
/// so the same bits): the fused N:M MLP applies it to its hidden panel.
struct GeluInPlace<'a>(&'a mut [f32]);

impl Kernel for GeluInPlace<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        #[cfg(target_arch = "x86_64")]
        if matches!(simd_level(), SimdLevel::Avx2 | SimdLevel::Avx512) {
            let (n, p) = (self.0.len() / GELU_BLOCK, self.0.as_mut_ptr());
            // SAFETY: the level in use says the CPU has AVX2 and FMA; the
            // n whole blocks lie in the slice, read and written in place.
            unsafe { super::gelu_avx2::gelu_blocks(p, p, n) };
            for v in &mut self.0[n * GELU_BLOCK..] {
                *v = *v * normal_cdf(*v);
            }
            return;
        }
        let mut blocks = self.0.chunks_exact_mut(GELU_BLOCK);
        for b in &mut blocks {
            let b: &mut [f32; GELU_BLOCK] = b.try_into().expect("a whole block");
            let x = *b;
            gelu_block(&x, b);
        }
        for v in blocks.into_remainder() {
            *v = *v * normal_cdf(*v);
        }
    }
}

/// One run of [`UnaryKind::Gelu`]'s map: as [`MapRun`] with `x·Φ(x)`,
/// contiguous runs in [`gelu_block`]s (the same bits, faster).
struct GeluRun<'a> {
    run: &'a mut [MaybeUninit<f32>],
    src: &'a [f32],
    o: usize,
    s: usize,
}

impl Kernel for GeluRun<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let GeluRun { run, src, o, s } = self;
        if s != 1 {
            return map_run(run, src, o, s, &|x: f32| x * normal_cdf(x));
        }
        let src = &src[o..o + run.len()];
        #[cfg(target_arch = "x86_64")]
        if matches!(simd_level(), SimdLevel::Avx2 | SimdLevel::Avx512) {
            let n = src.len() / GELU_BLOCK;
            // SAFETY: the level in use says the CPU has AVX2 and FMA; the
            // n whole blocks lie in both slices (as long as each other), and
            // the output is a buffer of its own.
            unsafe { super::gelu_avx2::gelu_blocks(src.as_ptr(), run.as_mut_ptr().cast::<f32>(), n) };
            for (d, &x) in run[n * GELU_BLOCK..].iter_mut().zip(&src[n * GELU_BLOCK..]) {
                d.write(x * normal_cdf(x));
            }
            return;
        }
        let mut out = run.chunks_exact_mut(GELU_BLOCK);
        let mut inp = src.chunks_exact(GELU_BLOCK);
        let mut y = [0f32; GELU_BLOCK];
        for (d, x) in (&mut out).zip(&mut inp) {
            gelu_block(x.try_into().expect("a whole block"), &mut y);
            for (d, &v) in d.iter_mut().zip(&y) {
                d.write(v);
            }
        }
        for (d, &x) in out.into_remainder().iter_mut().zip(inp.remainder()) {
            d.write(x * normal_cdf(x));
        }
    }
}

/// One run of [`BinaryKind::GeluBwd`]'s map: `g·gelu_grad(x)` as
/// [`Map2Run`] computes it, runs contiguous in both operands in
/// [`gelu_grad_block`]s (the same bits, faster).
struct GeluBwdRun<'a> {
    run: &'a mut [MaybeUninit<f32>],
    g: (&'a [f32], usize, usize),
    x: (&'a [f32], usize, usize),
}

impl Kernel for GeluBwdRun<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let GeluBwdRun { run, g: (g, og, sg), x: (x, ox, sx) } = self;
        let f = |g: f32, x: f32| g * gelu_grad(x);
        if (sg, sx) != (1, 1) {
            return map2_run(run, g, og, sg, x, ox, sx, &f);
        }
        let len = run.len();
        let (g, x) = (&g[og..og + len], &x[ox..ox + len]);
        let mut out = run.chunks_exact_mut(GELU_BLOCK);
        let (mut gs, mut xs) = (g.chunks_exact(GELU_BLOCK), x.chunks_exact(GELU_BLOCK));
        let mut y = [0f32; GELU_BLOCK];
        for ((d, g), x) in (&mut out).zip(&mut gs).zip(&mut xs) {
            gelu_grad_block(g.try_into().expect("a whole block"), x.try_into().expect("a whole block"), &mut y);
            for (d, &v) in d.iter_mut().zip(&y) {
                d.write(v);
            }
        }
        for ((d, &g), &x) in out.into_remainder().iter_mut().zip(gs.remainder()).zip(xs.remainder()) {
            d.write(f(g, x));
        }
    }
}

/// `g·gelu_grad(x)` over two views of one (broadcast) shape ([`GeluBwdRun`] per run).
fn map_gelu_bwd(g: &[f32], lg: &Layout, x: &[f32], lx: &Layout) -> Vec<f32> {
    let walk = Walk::new(lg.shape(), [lg.strides(), lx.strides()]);
    // SAFETY: the runs cover the output; `GeluBwdRun` writes every element.
    unsafe {
        written_vec(lg.elem_count(), |out| {
            walk.for_each_run([lg.offset(), lx.offset()], out, |run, [og, ox], [sg, sx]| {
                vectorized_with(GeluBwdRun { run, g: (g, og, sg), x: (x, ox, sx) })
            })
        })
    }
}

/// GELU over the view `l` of `src` ([`GeluRun`] per run).
fn map_gelu(src: &[f32], l: &Layout) -> Vec<f32> {
    let walk = Walk::new(l.shape(), [l.strides()]);
    // SAFETY: the runs cover the output; `GeluRun` writes every element.
    unsafe {
        written_vec(l.elem_count(), |out| walk.for_each_run([l.offset()], out, |run, [o], [s]| vectorized_with(GeluRun { run, src, o, s })))
    }
}

/// `x ← x·Φ(x)` (exact GELU) for every element, vectorised.
pub(crate) fn gelu_in_place(x: &mut [f32]) {
    vectorized_with(GeluInPlace(x));
}

/// `f(x)` for every element of the view `l` of `src`.
fn map<F: Fn(f32) -> f32 + Sync>(src: &[f32], l: &Layout, f: F) -> Vec<f32> {
    let walk = Walk::new(l.shape(), [l.strides()]);
    // SAFETY: the runs cover the output; `map_run` writes every element.
    unsafe {
        written_vec(l.elem_count(), |out| {
            walk.for_each_run([l.offset()], out, |run, [o], [s]| vectorized_with(MapRun { run, src, o, s, f: &f }))
        })
    }
}

/// One run of [`map2`]: `f(a[oa + i·sa], b[ob + i·sb])` (see [`MapRun`]).
struct Map2Run<'a, F> {
    run: &'a mut [MaybeUninit<f32>],
    a: &'a [f32],
    oa: usize,
    sa: usize,
    b: &'a [f32],
    ob: usize,
    sb: usize,
    f: &'a F,
}

impl<F: Fn(f32, f32) -> f32> Kernel for Map2Run<'_, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Map2Run { run, a, oa, sa, b, ob, sb, f } = self;
        map2_run(run, a, oa, sa, b, ob, sb, f);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn map2_run<F: Fn(f32, f32) -> f32>(run: &mut [MaybeUninit<f32>], a: &[f32], oa: usize, sa: usize, b: &[f32], ob: usize, sb: usize, f: &F) {
    let len = run.len();
    match (sa, sb) {
        (1, 1) => {
            for ((d, &x), &y) in run.iter_mut().zip(&a[oa..oa + len]).zip(&b[ob..ob + len]) {
                d.write(f(x, y));
            }
        }
        (1, 0) => {
            let y = b[ob];
            for (d, &x) in run.iter_mut().zip(&a[oa..oa + len]) {
                d.write(f(x, y));
            }
        }
        (0, 1) => {
            let x = a[oa];
            for (d, &y) in run.iter_mut().zip(&b[ob..ob + len]) {
                d.write(f(x, y));
            }
        }
        _ => {
            for (i, d) in run.iter_mut().enumerate() {
                d.write(f(a[oa + i * sa], b[ob + i * sb]));
            }
        }
    }
}

/// `f(a, b)` over two views of one (broadcast) shape.
fn map2<F: Fn(f32, f32) -> f32 + Sync>(a: &[f32], la: &Layout, b: &[f32], lb: &Layout, f: F) -> Vec<f32> {
    let walk = Walk::new(la.shape(), [la.strides(), lb.strides()]);
    // SAFETY: the runs cover the output; `map2_run` writes every element.
    unsafe {
        written_vec(la.elem_count(), |out| {
            walk.for_each_run([la.offset(), lb.offset()], out, |run, [oa, ob], [sa, sb]| {
                vectorized_with(Map2Run { run, a, oa, sa, b, ob, sb, f: &f })
            })
        })
    }
}

/// `kind(x)` over the view `l`.
pub(crate) fn unary(x: &[f32], l: &Layout, kind: UnaryKind) -> Vec<f32> {
    match kind {
        UnaryKind::Neg => map(x, l, |x| -x),
        UnaryKind::Exp => map(x, l, f32::exp),
        UnaryKind::Log => map(x, l, f32::ln),
        UnaryKind::Sqrt => map(x, l, f32::sqrt),
        UnaryKind::Rsqrt => map(x, l, |x| 1.0 / x.sqrt()),
        UnaryKind::Powf(p) => map(x, l, move |x| x.powf(p)),
        UnaryKind::Sqr => map(x, l, |x| x * x),
        UnaryKind::Abs => map(x, l, f32::abs),
        UnaryKind::Tanh => map(x, l, f32::tanh),
        UnaryKind::Sigmoid => map(x, l, sigmoid),
        UnaryKind::Relu => map(x, l, |x| x.max(0.0)),
        UnaryKind::Gelu => map_gelu(x, l),
        UnaryKind::Silu => map(x, l, |x| x * sigmoid(x)),
        UnaryKind::Affine(mul, add) => map(x, l, move |x| x * mul + add),
        UnaryKind::Clamp(lo, hi) => map(x, l, move |x| x.clamp(lo, hi)),
    }
}

/// `kind(a, b)` over two views of the output shape.
pub(crate) fn binary(a: &[f32], la: &Layout, b: &[f32], lb: &Layout, kind: BinaryKind) -> Vec<f32> {
    match kind {
        BinaryKind::Add => map2(a, la, b, lb, |a, b| a + b),
        BinaryKind::Sub => map2(a, la, b, lb, |a, b| a - b),
        BinaryKind::Mul => map2(a, la, b, lb, |a, b| a * b),
        BinaryKind::Div => map2(a, la, b, lb, |a, b| a / b),
        BinaryKind::Max => map2(a, la, b, lb, f32::max),
        BinaryKind::Ge => map2(a, la, b, lb, |a, b| if a >= b { 1.0 } else { 0.0 }),
        BinaryKind::NegDiv => map2(a, la, b, lb, |a, b| -a / b),
        BinaryKind::MulComplement => map2(a, la, b, lb, |a, b| a * (1.0 - b)),
        BinaryKind::GeluBwd => map_gelu_bwd(a, la, b, lb),
        BinaryKind::SiluBwd => map2(a, la, b, lb, |g, x| {
            let s = sigmoid(x);
            g * s * (1.0 + x * (1.0 - s))
        }),
        BinaryKind::TanhBwd => map2(a, la, b, lb, |g, y| g * (1.0 - y * y)),
        BinaryKind::SigmoidBwd => map2(a, la, b, lb, |g, y| g * y * (1.0 - y)),
        BinaryKind::ReluBwd => map2(a, la, b, lb, |g, x| if x > 0.0 { g } else { 0.0 }),
        BinaryKind::SqrtBwd => map2(a, la, b, lb, |g, y| 0.5 * g / y),
        BinaryKind::RsqrtBwd => map2(a, la, b, lb, |g, y| -0.5 * g * y * y * y),
        BinaryKind::PowfBwd(p) => map2(a, la, b, lb, move |g, x| g * p * x.powf(p - 1.0)),
        BinaryKind::SqrBwd => map2(a, la, b, lb, |g, x| 2.0 * g * x),
        BinaryKind::AbsBwd => map2(a, la, b, lb, |g, x| {
            if x > 0.0 {
                g
            } else if x < 0.0 {
                -g
            } else {
                0.0
            }
        }),
        BinaryKind::ClampBwd(lo, hi) => map2(a, la, b, lb, move |g, x| if (lo..=hi).contains(&x) { g } else { 0.0 }),
    }
}

/// `cond != 0 ? a : b` over three views of the output shape.
pub(crate) fn where_cond(c: &[f32], lc: &Layout, a: &[f32], la: &Layout, b: &[f32], lb: &Layout) -> Result<Vec<f32>> {
    let mut out = vec![0f32; lc.elem_count()];
    let walk = Walk::new(lc.shape(), [lc.strides(), la.strides(), lb.strides()]);
    walk.for_each_run([lc.offset(), la.offset(), lb.offset()], &mut out, |run, [oc, oa, ob], [sc, sa, sb]| {
        for (i, d) in run.iter_mut().enumerate() {
            *d = if c[oc + i * sc] != 0.0 { a[oa + i * sa] } else { b[ob + i * sb] };
        }
    });
    Ok(out)
}
