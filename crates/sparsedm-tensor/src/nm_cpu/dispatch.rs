//! Per layer shape, the faster of the dense GEMM and the N:M kernel.
//!
//! A sparse kernel only pays when the shape suits it (enough tokens, a
//! sparse enough pattern), so [`NmLinear::forward`] times both paths the
//! first time it meets a (rows bucket, in, out, n, m) shape, keeps the
//! faster one in a process-wide table, and uses it from then on: never
//! slower than dense, up to timing noise at the first call. Both paths
//! compute the same `X·(W⊙mask)ᵀ + b` (within 1e-5 relative; they differ
//! only in summation order), so results do not depend on the choice in any
//! way that matters.

use super::format::{NmWeight, ROW_BLOCK};
use super::fuse::{NmFuse, NormParams, RowNorm};
use super::spmm::{Isa, as_uninit, mlp_uninit, spmm_best_uninit};
use crate::backend::cpu::gemm_f32_uninit;
use crate::backend::cpu::strided::written_vec;
use crate::{Device, Error, Result, Tensor};
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Timed repetitions of each path at a shape's first use.
const TUNE_REPS: usize = 3;

/// The N:M kernel is chosen over the dense GEMM only when its best time is
/// below this fraction of the GEMM's: near a tie (dense-like patterns such
/// as 31:32, 15:16) the timing noise of a few repetitions otherwise picked
/// the kernel for shapes where it was a few percent slower (the demo
/// U-ViT at 31:32: 7 of 28 layers, 0.98x the GEMM's time), against "never
/// slower than dense"; a real win of under 3 % is given up instead.
pub(crate) const SPARSE_MARGIN: f64 = 0.97;

/// The implementation a layer shape runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NmPath {
    /// Dense GEMM (the `gemm` crate) on the expanded masked weight.
    Dense,
    /// The N:M SpMM kernel ([`crate::nm_cpu::spmm`]) on the compressed weight.
    Sparse,
}

/// Key of the dispatch table: rows rounded up to a power of two, then
/// `in`, `out`, `n`, `m`.
pub type ShapeKey = (usize, usize, usize, usize, usize);

fn table() -> &'static Mutex<HashMap<ShapeKey, NmPath>> {
    static T: OnceLock<Mutex<HashMap<ShapeKey, NmPath>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The key [`NmLinear::forward`] files a call under.
pub fn shape_key(rows: usize, inp: usize, out: usize, n: usize, m: usize) -> ShapeKey {
    (rows.max(1).next_power_of_two(), inp, out, n, m)
}

/// The path chosen for a shape, if it has been timed.
pub fn chosen_path(key: ShapeKey) -> Option<NmPath> {
    table().lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied()
}

/// Forgets every choice (benchmarks re-time after changing threads).
pub fn clear_choices() {
    table().lock().unwrap_or_else(|e| e.into_inner()).clear();
    mlp_table().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Key of the fused-MLP table: rows rounded up to a power of two, `in`,
/// hidden, `out`, and both layers' `(n, m)`.
type MlpKey = (usize, usize, usize, usize, (usize, usize), (usize, usize));

/// Per MLP shape: whether the fused kernel beat the two layers run apart.
fn mlp_table() -> &'static Mutex<HashMap<MlpKey, bool>> {
    static T: OnceLock<Mutex<HashMap<MlpKey, bool>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// 0: choose by timing; 1: always dense; 2: always sparse.
static FORCED: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// Layer calls this thread has run on each path: `[dense, sparse]`.
    static LAYER_CALLS: std::cell::Cell<[u64; 2]> = const { std::cell::Cell::new([0; 2]) };
}

/// How many N:M layer calls ([`NmLinear::forward`], an
/// [`crate::nm_cpu::NmConv2d`]'s, each layer of the fused MLP) this thread
/// has run on each path: a deployed layer whose shape ran faster on the
/// dense GEMM counts as dense. A report differences two readings around a
/// forward to say how many of its N:M layers the kernels actually ran.
/// Per thread (the thread that calls the layer, not the kernels' workers),
/// so that concurrent callers do not mix their counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerCalls {
    pub dense: u64,
    pub sparse: u64,
}

/// This thread's [`LayerCalls`] so far.
pub fn layer_calls() -> LayerCalls {
    let [dense, sparse] = LAYER_CALLS.with(std::cell::Cell::get);
    LayerCalls { dense, sparse }
}

/// Counts `layers` layer calls on `path` (this thread).
pub(crate) fn count_calls(path: NmPath, layers: u64) {
    LAYER_CALLS.with(|c| {
        let mut v = c.get();
        v[usize::from(path == NmPath::Sparse)] += layers;
        c.set(v);
    });
}

/// Runs `f` without counting its layer calls: timing runs that pick a
/// path are not calls of the model.
fn uncounted<T>(f: impl FnOnce() -> T) -> T {
    let before = LAYER_CALLS.with(std::cell::Cell::get);
    let out = f();
    LAYER_CALLS.with(|c| c.set(before));
    out
}

/// Files `path` as the choice for `key`, as a first call's timing would
/// (tests that need a layer on a known path without timing it).
#[doc(hidden)]
pub fn file_choice(key: ShapeKey, path: NmPath) {
    table().lock().unwrap_or_else(|e| e.into_inner()).insert(key, path);
}

/// Makes every later [`NmLinear::forward`] and
/// [`crate::nm_cpu::NmConv2d::forward_tensor`] take `path` without timing
/// (`None`: back to the timed choice). Both paths compute the same values,
/// so this changes speed only: tests force `Sparse` so the kernel runs
/// whatever the machine's timings say, benchmarks compare the two.
pub fn force_path(path: Option<NmPath>) {
    FORCED.store(
        match path {
            None => 0,
            Some(NmPath::Dense) => 1,
            Some(NmPath::Sparse) => 2,
        },
        Ordering::Relaxed,
    );
}

/// The path set by [`force_path`], if any.
pub fn forced_path() -> Option<NmPath> {
    match FORCED.load(Ordering::Relaxed) {
        1 => Some(NmPath::Dense),
        2 => Some(NmPath::Sparse),
        _ => None,
    }
}

/// Dense `y = x·wᵀ + bias` through the `gemm` crate, by the same function
/// `Tensor::linear` calls on the CPU (a band of rows per thread, each from
/// its bias rows): the reference the N:M kernel must beat. `x [rows, in]`,
/// `w [out, in]`, `y [rows, out]`, row-major.
///
/// # Errors
/// Buffer lengths that do not match `rows`, `in`, `out`.
pub fn dense_linear(x: &[f32], rows: usize, w: &[f32], out: usize, inp: usize, bias: Option<&[f32]>, y: &mut [f32]) -> Result<()> {
    check_lengths(x, rows, w, out, inp, bias, y.len())?;
    gemm_f32_uninit(as_uninit(y), rows, out, inp, x, inp, 1, w, 1, inp, true, bias);
    Ok(())
}

/// The length check of [`dense_linear`], naming every buffer.
fn check_lengths(x: &[f32], rows: usize, w: &[f32], out: usize, inp: usize, bias: Option<&[f32]>, y_len: usize) -> Result<()> {
    if x.len() != rows * inp || w.len() != out * inp || y_len != rows * out || bias.is_some_and(|b| b.len() != out) {
        return Err(Error::invalid(
            "dense_linear",
            format!(
                "lengths x {}, w {}, y {}, bias {:?} do not fit rows {rows}, in {inp}, out {out}",
                x.len(),
                w.len(),
                y_len,
                bias.map(<[f32]>::len)
            ),
        ));
    }
    Ok(())
}

/// An N:M Linear for inference: the compressed weight for the SpMM kernel,
/// the expanded masked weight for the dense GEMM, and the bias. This is what
/// a Linear (or an im2col convolution) in eval mode with an N:M weight
/// should call: [`NmLinear::forward`] on `[rows, in]` data, or
/// [`NmLinear::forward_tensor`] on a `[..., in]` CPU tensor.
#[derive(Debug, Clone)]
pub struct NmLinear {
    weight: NmWeight,
    dense: Vec<f32>,
    /// The bias zero-padded to whole row blocks ([`ROW_BLOCK`] rows): the
    /// fused MLP starts every hidden accumulator block from it.
    bias: Option<Vec<f32>>,
}

impl NmLinear {
    /// From a masked dense weight `[out, in]` that is `n:m` sparse along `in`.
    ///
    /// # Errors
    /// As [`NmWeight::compress`] (a group with more than `n` non-zeros is
    /// refused, naming row and group), or a bias of length other than `out`.
    pub fn new(masked_weight: &[f32], out: usize, inp: usize, bias: Option<&[f32]>, n: usize, m: usize) -> Result<Self> {
        let weight = NmWeight::compress(masked_weight, out, inp, n, m)?;
        Self::from_compressed(weight, bias)
    }

    /// From an already compressed weight (a sparse checkpoint).
    ///
    /// # Errors
    /// A bias of length other than `out`.
    pub fn from_compressed(weight: NmWeight, bias: Option<&[f32]>) -> Result<Self> {
        if let Some(b) = bias
            && b.len() != weight.out_features()
        {
            return Err(Error::ElementCount { op: "nm_linear", shape: vec![weight.out_features()], len: b.len() });
        }
        let dense = weight.expand();
        let padded = weight.row_blocks() * ROW_BLOCK;
        let bias = bias.map(|b| {
            let mut p = b.to_vec();
            p.resize(padded, 0.0);
            p
        });
        Ok(NmLinear { weight, dense, bias })
    }

    /// The compressed weight.
    pub fn weight(&self) -> &NmWeight {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref().map(|b| &b[..self.weight.out_features()])
    }

    /// The dispatch-table key of a call with `rows` rows.
    pub fn key(&self, rows: usize) -> ShapeKey {
        let (n, m) = self.weight.pattern();
        shape_key(rows, self.weight.in_features(), self.weight.out_features(), n, m)
    }

    /// `y = x·Wᵀ + b` with a given path.
    ///
    /// # Errors
    /// Buffer lengths that do not match `rows`, `in`, `out`.
    pub fn forward_with(&self, path: NmPath, x: &[f32], rows: usize, y: &mut [f32]) -> Result<()> {
        self.forward_with_uninit(path, x, rows, &NmFuse::NONE, as_uninit(y))
    }

    /// `y = norm(x)·Wᵀ + b + residual` (`fuse`, see `nm_cpu/fuse.rs`) with a
    /// given path: the N:M path fuses the norm and the residual where its
    /// kernel can (AVX2), the dense path runs them apart; the same bits
    /// either way as the separate ops.
    ///
    /// # Errors
    /// Buffer lengths that do not match `rows`, `in`, `out`, including the
    /// norm's affine parts (`in`) and the residual (`rows·out`).
    pub fn forward_fused_with(&self, path: NmPath, x: &[f32], rows: usize, fuse: &NmFuse<'_>, y: &mut [f32]) -> Result<()> {
        self.forward_with_uninit(path, x, rows, fuse, as_uninit(y))
    }

    /// [`NmLinear::forward_fused_with`] into an output that need not be
    /// initialised: on success every element has been written.
    fn forward_with_uninit(&self, path: NmPath, x: &[f32], rows: usize, fuse: &NmFuse<'_>, y: &mut [MaybeUninit<f32>]) -> Result<()> {
        let (out, inp) = (self.weight.out_features(), self.weight.in_features());
        match path {
            NmPath::Dense => {
                check_lengths(x, rows, &self.dense, out, inp, self.bias(), y.len())?;
                fuse.check("nm_linear", rows, inp, out)?;
                let x = fuse.normed(x, inp);
                gemm_f32_uninit(y, rows, out, inp, &x, inp, 1, &self.dense, 1, inp, true, self.bias());
                // SAFETY: the GEMM wrote every element; `check` passed.
                unsafe { fuse.add_residual(y) };
                Ok(())
            }
            NmPath::Sparse => spmm_best_uninit(x, rows, &self.weight, self.bias(), fuse, y),
        }
    }

    /// `y = x·Wᵀ + b` (`x [rows, in]`, `y [rows, out]`, row-major) with the
    /// faster path for this shape: the first call for a shape key times both
    /// ([`TUNE_REPS`] interleaved runs each, best time) and files the winner
    /// (the N:M kernel only by the margin [`SPARSE_MARGIN`]).
    ///
    /// # Errors
    /// Buffer lengths that do not match `rows`, `in`, `out`.
    pub fn forward(&self, x: &[f32], rows: usize, y: &mut [f32]) -> Result<()> {
        self.forward_uninit(x, rows, &NmFuse::NONE, as_uninit(y))
    }

    /// [`NmLinear::forward`] with `fuse` into an output that need not be
    /// initialised: on success every element has been written. The path
    /// is chosen (and timed, on a shape's first call) with `fuse` in.
    fn forward_uninit(&self, x: &[f32], rows: usize, fuse: &NmFuse<'_>, y: &mut [MaybeUninit<f32>]) -> Result<()> {
        let key = self.key(rows);
        if let Some(path) = forced_path().or_else(|| chosen_path(key)) {
            count_calls(path, 1);
            return self.forward_with_uninit(path, x, rows, fuse, y);
        }
        let mut best = [f64::INFINITY; 2];
        for _ in 0..TUNE_REPS {
            for (i, path) in [NmPath::Dense, NmPath::Sparse].into_iter().enumerate() {
                let t = Instant::now();
                self.forward_with_uninit(path, x, rows, fuse, y)?;
                best[i] = best[i].min(t.elapsed().as_secs_f64());
            }
        }
        let path = if best[1] < best[0] * SPARSE_MARGIN { NmPath::Sparse } else { NmPath::Dense };
        table().lock().unwrap_or_else(|e| e.into_inner()).insert(key, path);
        count_calls(path, 1);
        self.forward_with_uninit(path, x, rows, fuse, y)
    }

    /// [`NmLinear::forward`] on a CPU tensor `[..., in]`, giving `[..., out]`
    /// (untracked: this is an inference path).
    ///
    /// # Errors
    /// A tensor not on the CPU or whose last dimension is not `in`.
    pub fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_tensor_fused(x, None, None)
    }

    /// `residual + self(norm(x))` on CPU tensors (`x [..., in]`, the
    /// residual `[..., out]` of the same leading dims; untracked): a
    /// pre-norm block's layer in one call, the norm and the residual fused
    /// into the N:M kernel where it can (`nm_cpu/fuse.rs`). Either part may
    /// be left out.
    ///
    /// # Errors
    /// A tensor not on the CPU, a last dimension other than `in`, norm
    /// parameters not `[in]`, or a residual not of the output's shape.
    pub fn forward_tensor_fused(&self, x: &Tensor, norm: Option<NormParams<'_>>, residual: Option<&Tensor>) -> Result<Tensor> {
        let op = "nm_linear";
        let (inp, out) = (self.weight.in_features(), self.weight.out_features());
        check_input(op, x, inp, out)?;
        let rows = x.elem_count() / inp.max(1);
        with_fuse(op, x, out, norm, residual, |fuse| map_rows(op, x, out, |xv, y| self.forward_uninit(xv, rows, fuse, y)))
    }
}

/// `x` is a CPU tensor whose last dimension is `inp` (`out`: for the message).
fn check_input(op: &'static str, x: &Tensor, inp: usize, out: usize) -> Result<()> {
    if x.device() != Device::Cpu {
        return Err(Error::NotImplementedOnDevice { op, device: x.device() });
    }
    if x.shape().last() != Some(&inp) {
        return Err(Error::ShapeMismatch { op, lhs: x.shape().to_vec(), rhs: vec![out, inp] });
    }
    Ok(())
}

/// `f` with the [`NmFuse`] of `norm` and `residual` over host data: the
/// norm's parameters copied (`[in]` each), the residual read in place when
/// it is contiguous f32. Checks that the residual has the output's shape
/// (`x`'s with the last dimension `out`) and lives on the CPU.
fn with_fuse<R>(
    op: &'static str,
    x: &Tensor,
    out: usize,
    norm: Option<NormParams<'_>>,
    residual: Option<&Tensor>,
    f: impl FnOnce(&NmFuse<'_>) -> Result<R>,
) -> Result<R> {
    let inp = x.shape().last().copied().unwrap_or(0);
    let param = |p: Option<&Tensor>| -> Result<Option<Vec<f32>>> {
        let Some(p) = p else { return Ok(None) };
        if p.shape() != [inp] {
            return Err(Error::ShapeMismatch { op, lhs: x.shape().to_vec(), rhs: p.shape().to_vec() });
        }
        Ok(Some(p.to_vec_f32()?))
    };
    let (nw, nb) = match &norm {
        Some(n) => (param(n.weight)?, param(n.bias)?),
        None => (None, None),
    };
    let norm = norm.map(|n| RowNorm { weight: nw.as_deref(), bias: nb.as_deref(), eps: n.eps });
    let Some(r) = residual else { return f(&NmFuse { norm, residual: None }) };
    let mut want = x.shape().to_vec();
    *want.last_mut().expect("rank >= 1") = out;
    if r.shape() != want.as_slice() {
        return Err(Error::ShapeMismatch { op, lhs: want, rhs: r.shape().to_vec() });
    }
    if r.device() != Device::Cpu {
        return Err(Error::NotImplementedOnDevice { op, device: r.device() });
    }
    r.with_host_f32(op, |rv| f(&NmFuse { norm, residual: Some(rv) }))?
}

/// `f(x's f32 data, y)` into a fresh `[..., out]` CPU tensor of `x`'s
/// leading dims. The input is read in place when contiguous f32 (no copy),
/// and the output is not zeroed first: `f` must write every element when
/// it succeeds (on an error the output is dropped).
fn map_rows(op: &'static str, x: &Tensor, out: usize, f: impl FnOnce(&[f32], &mut [MaybeUninit<f32>]) -> Result<()>) -> Result<Tensor> {
    let n = x.elem_count() / x.shape().last().copied().unwrap_or(1).max(1) * out;
    let y = x.with_host_f32(op, |xv| {
        let mut res = Ok(());
        // SAFETY: on success `f` wrote every element; on an error the
        // closure writes them all (zeros) before returning.
        let y = unsafe {
            written_vec(n, |y| {
                res = f(xv, y);
                if res.is_err() {
                    y.iter_mut().for_each(|d| {
                        d.write(0.0);
                    });
                }
            })
        };
        res.map(|()| y)
    })??;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = out;
    Tensor::from_vec(y, &shape, &Device::Cpu)
}

/// The activation between the two layers of an N:M MLP ([`nm_mlp_forward`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MlpActivation {
    /// Exact GELU, `x·Φ(x)`, as [`Tensor::gelu`] (timm's `Mlp` in U-ViT).
    Gelu,
}

impl MlpActivation {
    fn apply_tensor(self, x: &Tensor) -> Result<Tensor> {
        match self {
            MlpActivation::Gelu => x.gelu(),
        }
    }

    fn apply_in_place(self, x: &mut [f32]) {
        match self {
            MlpActivation::Gelu => crate::backend::cpu::elementwise::gelu_in_place(x),
        }
    }
}

/// `fc2(act(fc1(x)))` on a CPU tensor `[..., in]` (untracked: an inference
/// path), with the faster of two ways once both layers have chosen their
/// N:M kernel for this many rows: the two layers apart (each its own
/// choice, with the activation as a tensor op between them), or the fused
/// kernel, which runs both layers and the activation tile by tile with the
/// hidden activations kept transposed in cache. Until both layers have
/// chosen, and when either chose the dense GEMM, the layers run apart. The
/// first fused-eligible call for a shape times both ways (best of
/// [`TUNE_REPS`] interleaved runs) and files the winner. A path forced by
/// [`force_path`] applies to both: `Sparse` runs fused, `Dense` apart.
/// The two ways agree to rounding (see the kernel's order of sums).
///
/// # Errors
/// A tensor not on the CPU, a last dimension other than `fc1`'s inputs,
/// or `fc1`'s outputs ≠ `fc2`'s inputs.
pub fn nm_mlp_forward(fc1: &NmLinear, act: MlpActivation, fc2: &NmLinear, x: &Tensor) -> Result<Tensor> {
    nm_mlp_forward_fused(fc1, act, fc2, x, None, None)
}

/// `residual + fc2(act(fc1(norm(x))))`: [`nm_mlp_forward`] with a pre-norm
/// block's norm and residual fused in where the kernel can (see
/// [`NmLinear::forward_tensor_fused`]); either may be left out. Timed and
/// chosen as [`nm_mlp_forward`], with the norm and the residual in.
///
/// # Errors
/// As [`nm_mlp_forward`], and norm parameters not `[in]` or a residual not
/// of the output's shape.
pub fn nm_mlp_forward_fused(
    fc1: &NmLinear,
    act: MlpActivation,
    fc2: &NmLinear,
    x: &Tensor,
    norm: Option<NormParams<'_>>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let op = "nm_mlp";
    let (w1, w2) = (&fc1.weight, &fc2.weight);
    check_input(op, x, w1.in_features(), w1.out_features())?;
    if w2.in_features() != w1.out_features() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: vec![w1.out_features(), w1.in_features()],
            rhs: vec![w2.out_features(), w2.in_features()],
        });
    }
    let rows = x.elem_count() / w1.in_features().max(1);
    with_fuse(op, x, w2.out_features(), norm, residual, |fuse| mlp_choosing(fc1, act, fc2, x, rows, fuse))
}

/// The body of [`nm_mlp_forward_fused`] once the fused parts are host data.
fn mlp_choosing(fc1: &NmLinear, act: MlpActivation, fc2: &NmLinear, x: &Tensor, rows: usize, fuse: &NmFuse<'_>) -> Result<Tensor> {
    let (w1, w2) = (&fc1.weight, &fc2.weight);
    // Apart: the norm fused into fc1, the residual into fc2.
    let apart = || {
        let h = act.apply_tensor(&map_rows("nm_mlp", x, w1.out_features(), |xv, y| {
            fc1.forward_uninit(xv, rows, &NmFuse { residual: None, ..*fuse }, y)
        })?)?;
        map_rows("nm_mlp", &h, w2.out_features(), |hv, y| fc2.forward_uninit(hv, rows, &NmFuse { norm: None, ..*fuse }, y))
    };
    let fused = || fused_mlp(fc1, act, fc2, x, rows, fuse);
    match forced_path() {
        Some(NmPath::Dense) => return apart(),
        Some(NmPath::Sparse) => return fused(),
        None => {}
    }
    if chosen_path(fc1.key(rows)) != Some(NmPath::Sparse) || chosen_path(fc2.key(rows)) != Some(NmPath::Sparse) {
        return apart();
    }
    let key = (rows.max(1).next_power_of_two(), w1.in_features(), w1.out_features(), w2.out_features(), w1.pattern(), w2.pattern());
    let known = mlp_table().lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
    if let Some(use_fused) = known {
        return if use_fused { fused() } else { apart() };
    }
    // The timing runs are not counted as layer calls; the call that
    // follows is.
    let mut best = [f64::INFINITY; 2];
    uncounted(|| -> Result<()> {
        for _ in 0..TUNE_REPS {
            for (i, way) in [&apart as &dyn Fn() -> Result<Tensor>, &fused].into_iter().enumerate() {
                let t = Instant::now();
                way()?;
                best[i] = best[i].min(t.elapsed().as_secs_f64());
            }
        }
        Ok(())
    })?;
    let use_fused = best[1] < best[0];
    mlp_table().lock().unwrap_or_else(|e| e.into_inner()).insert(key, use_fused);
    if use_fused { fused() } else { apart() }
}

/// The fused kernel of [`nm_mlp_forward`] with a chosen instruction set on
/// row-major `x [rows, fc1 in]`, writing `y [rows, fc2 out]` (tests run
/// each path directly).
///
/// # Errors
/// An unavailable instruction set, `fc1`'s outputs ≠ `fc2`'s inputs, or
/// buffer lengths that do not match.
#[doc(hidden)]
pub fn nm_mlp_with(isa: Isa, fc1: &NmLinear, act: MlpActivation, fc2: &NmLinear, x: &[f32], rows: usize, y: &mut [f32]) -> Result<()> {
    nm_mlp_fused_with(isa, fc1, act, fc2, x, rows, &NmFuse::NONE, y)
}

/// [`nm_mlp_with`] with a norm of the input and a residual added to the
/// output (`nm_cpu/fuse.rs`).
///
/// # Errors
/// As [`nm_mlp_with`], and affine parts or a residual whose lengths do
/// not fit.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn nm_mlp_fused_with(
    isa: Isa,
    fc1: &NmLinear,
    act: MlpActivation,
    fc2: &NmLinear,
    x: &[f32],
    rows: usize,
    fuse: &NmFuse<'_>,
    y: &mut [f32],
) -> Result<()> {
    mlp_uninit(isa, x, rows, &fc1.weight, fc1.bias.as_deref(), &|h| act.apply_in_place(h), &fc2.weight, fc2.bias(), fuse, as_uninit(y))
}

/// The fused kernel on `x` (`rows` rows of `fc1`'s inputs), shapes checked.
fn fused_mlp(fc1: &NmLinear, act: MlpActivation, fc2: &NmLinear, x: &Tensor, rows: usize, fuse: &NmFuse<'_>) -> Result<Tensor> {
    let op = "nm_mlp";
    count_calls(NmPath::Sparse, 2);
    let (w1, w2) = (&fc1.weight, &fc2.weight);
    map_rows(op, x, w2.out_features(), |xv, y| {
        mlp_uninit(Isa::best(), xv, rows, w1, fc1.bias.as_deref(), &|h| act.apply_in_place(h), w2, fc2.bias(), fuse, y)
    })
}
