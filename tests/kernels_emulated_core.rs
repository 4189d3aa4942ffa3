//! The core CUDA kernels (`kernels/{copy,elementwise,reduce,softmax,norm,rng}.cu`) run on the CPU
//! under `kernels/emu/cuda_emu.h` and checked against the CPU backend of sparsedm-tensor.
//!
//! Each test compiles one kernel module with g++ (tests/emu/mod.rs), launches its kernels with
//! small grids (so the grid-stride and block-stride loops wrap) and odd sizes (not multiples of 32
//! or 256), and compares with the CPU ops: strided and broadcast layouts, NaN/±inf/−0 edge cases,
//! and every storage type. f16/bf16 results are compared with the f32 reference computed on the
//! same (rounded) inputs and then rounded to the storage type, allowing one unit in the last place
//! of that type; f32 results allow the few ulps by which the CPU's approximations (`fast_exp`, the
//! rational `erf`, f64 sums) differ from the kernels' libm calls and f32 trees. The RNG is bit-exact.

mod emu;

use std::ffi::c_void;

use half::{bf16, f16};
use sparsedm_kernels::abi::{self, SdmLayout};
use sparsedm_tensor::{Device, Rng, Tensor};

// ------------------------------------------------------------------------------------------------
// Storage types and host buffers.

/// A kernel storage type.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dt {
    F32,
    F16,
    Bf16,
}

const DTYPES: [Dt; 3] = [Dt::F32, Dt::F16, Dt::Bf16];

impl Dt {
    /// The kernel-name suffix and the C type.
    fn suffix(self) -> &'static str {
        match self {
            Dt::F32 => "f32",
            Dt::F16 => "f16",
            Dt::Bf16 => "bf16",
        }
    }
    fn c_type(self) -> &'static str {
        match self {
            Dt::F32 => "float",
            Dt::F16 => "__half",
            Dt::Bf16 => "__nv_bfloat16",
        }
    }
    /// `v` rounded to this type (round-to-nearest-even, as the kernels store).
    fn round(self, v: f32) -> f32 {
        match self {
            Dt::F32 => v,
            Dt::F16 => f16::from_f32(v).to_f32(),
            Dt::Bf16 => bf16::from_f32(v).to_f32(),
        }
    }
    /// Relative size of one unit in the last place (2^-mantissa bits).
    fn ulp(self) -> f32 {
        match self {
            Dt::F32 => f32::EPSILON,
            Dt::F16 => 1.0 / 1024.0,
            Dt::Bf16 => 1.0 / 128.0,
        }
    }
}

/// A host buffer in a kernel storage type.
#[derive(Clone, Debug)]
enum Buf {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Buf {
    fn new(dt: Dt, v: &[f32]) -> Buf {
        match dt {
            Dt::F32 => Buf::F32(v.to_vec()),
            Dt::F16 => Buf::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            Dt::Bf16 => Buf::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    }
    /// An output buffer pre-filled with NaN, so an element the kernel fails to write shows.
    fn poisoned(dt: Dt, n: usize) -> Buf {
        Buf::new(dt, &vec![f32::NAN; n])
    }
    fn ptr(&self) -> *const c_void {
        match self {
            Buf::F32(v) => v.as_ptr().cast(),
            Buf::F16(v) => v.as_ptr().cast(),
            Buf::Bf16(v) => v.as_ptr().cast(),
        }
    }
    fn mut_ptr(&mut self) -> *mut c_void {
        match self {
            Buf::F32(v) => v.as_mut_ptr().cast(),
            Buf::F16(v) => v.as_mut_ptr().cast(),
            Buf::Bf16(v) => v.as_mut_ptr().cast(),
        }
    }
    fn values(&self) -> Vec<f32> {
        match self {
            Buf::F32(v) => v.clone(),
            Buf::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Buf::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
    /// The raw bits (for bit-exact comparisons).
    fn bits(&self) -> Vec<u32> {
        match self {
            Buf::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            Buf::F16(v) => v.iter().map(|x| x.to_bits() as u32).collect(),
            Buf::Bf16(v) => v.iter().map(|x| x.to_bits() as u32).collect(),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Inputs, references and comparisons.

fn cpu() -> Device {
    Device::Cpu
}

fn tensor(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &cpu()).unwrap()
}

/// `n` reproducible normal values times `scale`.
fn normals(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    Rng::new(seed).normal_vec(n).into_iter().map(|x| x * scale).collect()
}

/// The edge cases every map is fed besides random values.
const SPECIALS: [f32; 14] = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-3, -1e-3, 20.0, -20.0, 88.0, -100.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];

/// The kernel layout of a CPU tensor view.
fn layout_of(t: &Tensor) -> SdmLayout {
    let l = t.layout();
    SdmLayout::new(l.shape(), l.strides(), l.offset()).unwrap()
}

fn contiguous(shape: &[usize]) -> SdmLayout {
    SdmLayout::contiguous(shape).unwrap()
}

/// Asserts `got ≈ want` elementwise: equal, both NaN, or within `abs + rel·|want|`.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = g == w || (g.is_nan() && w.is_nan()) || (g - w).abs() <= abs + rel * w.abs();
        assert!(ok, "{what}: element {i}: got {g:e}, want {w:e} (tolerance {abs:e} + {rel:e}·|want|)");
    }
}

/// Compares a kernel output of type `dt` with an f32 reference computed on the same inputs:
/// f32 within (`abs`, `rel`); f16/bf16 against the reference rounded to the type, within one
/// unit in the last place of the type (plus `abs`, covering values that round across a boundary).
#[track_caller]
fn assert_dt_close(what: &str, dt: Dt, got: &Buf, want: &[f32], abs: f32, rel: f32) {
    let want: Vec<f32> = want.iter().map(|&w| dt.round(w)).collect();
    let (abs, rel) = match dt {
        Dt::F32 => (abs, rel),
        // f16 subnormals have a fixed step of 2^-24.
        Dt::F16 => (abs + 6e-8, dt.ulp() * 1.01 + rel),
        Dt::Bf16 => (abs, dt.ulp() * 1.01 + rel),
    };
    assert_close(&format!("{what} [{}]", dt.suffix()), &got.values(), &want, abs, rel);
}

/// `extern "C" void run_<kernel>(unsigned grid, unsigned block, <params>)` wrappers launching
/// each kernel with `sdm_emu_launch`; `kernels` holds (name, C parameter list).
fn wrappers(kernels: &[(String, String)]) -> String {
    let mut out = String::new();
    for (name, params) in kernels {
        let args: Vec<&str> = params.split(',').map(|p| p.trim().rsplit([' ', '*']).next().unwrap()).collect();
        out += &format!(
            "extern \"C\" void run_{name}(unsigned grid, unsigned block, {params}) {{ sdm_emu_launch({name}, grid, block, {}); }}\n",
            args.join(", ")
        );
    }
    out
}

/// Wrappers for `stem_T` in every dtype, `params` using `T` for the storage type.
fn typed(stem: &str, params: &str) -> Vec<(String, String)> {
    DTYPES.iter().map(|dt| (format!("{stem}_{}", dt.suffix()), params.replace('T', dt.c_type()))).collect()
}

/// Builds the emulation library of `module` with the given wrappers (None: no C++ compiler).
fn build(module: &str, kernels: &[(String, String)]) -> Option<emu::Lib> {
    emu::compile(module, &wrappers(kernels))
}

/// A test-only kernel appended to copy.cu: every path of `sdm_strided_offset` (rank-1, 32-bit,
/// 64-bit) and the reference `sdm_offset` of sdm_common.cuh, for the indices 0..n of `l`. The
/// 64-bit path only runs on the GPU for views of over 2³² elements, so it is checked here.
const OFFSET_PROBE: &str = r#"
__global__ void offset_probe(long long n, SdmLayout l, long long* small, long long* wide, long long* ref) {
    SDM_GRID_STRIDE(i, n) {
        small[i] = sdm_strided_offset(l, i, true);
        wide[i] = sdm_strided_offset(l, i, false);
        ref[i] = sdm_offset(l, i);
    }
}
"#;

/// The launch grid of `work` units at `block` threads, capped at `cap` blocks.
fn grid(work: usize, block: u32, cap: u32) -> u32 {
    emu::grid(work, block, cap)
}

// ------------------------------------------------------------------------------------------------
// Module copy.

type CopyFn = unsafe extern "C" fn(u32, u32, i64, SdmLayout, *const c_void, SdmLayout, *mut c_void);
type CastFn = unsafe extern "C" fn(u32, u32, i64, *const c_void, *mut c_void);
type FillFn = unsafe extern "C" fn(u32, u32, i64, f32, *mut c_void);

fn copy_lib() -> Option<emu::Lib> {
    let mut k = typed("copy_strided", "long long n, SdmLayout sl, const T* src, SdmLayout dl, T* dst");
    k.extend(typed("fill", "long long n, float v, T* y"));
    for (s, d) in [(Dt::F32, Dt::F16), (Dt::F32, Dt::Bf16), (Dt::F16, Dt::F32), (Dt::Bf16, Dt::F32)] {
        k.push((format!("cast_{}_{}", s.suffix(), d.suffix()), format!("long long n, const {}* x, {}* y", s.c_type(), d.c_type())));
    }
    k.push(("offset_probe".into(), "long long n, SdmLayout l, long long* small, long long* wide, long long* ref".into()));
    emu::compile("copy", &format!("{OFFSET_PROBE}\n{}", wrappers(&k)))
}

#[test]
fn strided_offsets_agree_on_every_path() {
    let Some(lib) = copy_lib() else { return };
    type ProbeFn = unsafe extern "C" fn(u32, u32, i64, SdmLayout, *mut i64, *mut i64, *mut i64);
    // SAFETY: the wrapper is declared with this signature by copy_lib.
    let run: ProbeFn = unsafe { lib.get("run_offset_probe") };
    let base = tensor(&[0.0; 2 * 3 * 5 * 7], &[2, 3, 5, 7]);
    let views = [
        base.clone(),
        base.permute(&[3, 1, 0, 2]).unwrap(),
        base.narrow(3, 2, 4).unwrap().narrow(0, 1, 1).unwrap(),
        base.reshape(&[210]).unwrap().narrow(0, 5, 200).unwrap(),
        base.reshape(&[6, 35]).unwrap().t().unwrap().unsqueeze(1).unwrap().broadcast_as(&[35, 4, 6]).unwrap(),
        base.reshape(&[1, 2, 3, 5, 7, 1]).unwrap().permute(&[5, 4, 3, 2, 1, 0]).unwrap(),
    ];
    for v in &views {
        let n = v.elem_count();
        let (mut small, mut wide, mut reference) = (vec![-1i64; n], vec![-1i64; n], vec![-1i64; n]);
        // SAFETY: the three outputs hold n i64 each.
        unsafe { run(2, 64, n as i64, layout_of(v), small.as_mut_ptr(), wide.as_mut_ptr(), reference.as_mut_ptr()) };
        // The CPU's own element offsets of the view, in row-major order.
        let l = v.layout();
        let want: Vec<i64> = (0..n)
            .map(|mut i| {
                let mut off = l.offset();
                for d in (0..l.rank()).rev() {
                    off += (i % l.shape()[d]) * l.strides()[d];
                    i /= l.shape()[d];
                }
                off as i64
            })
            .collect();
        assert_eq!(reference, want, "sdm_offset of {:?}", l);
        assert_eq!(small, want, "32-bit sdm_strided_offset of {:?}", l);
        assert_eq!(wide, want, "64-bit sdm_strided_offset of {:?}", l);
    }
}

#[test]
fn copy_strided_gathers_every_view_kind() {
    let Some(lib) = copy_lib() else { return };
    let base_vals = normals(1, 4 * 5 * 7, 2.0);
    let base = tensor(&base_vals, &[4, 5, 7]);
    let row = tensor(&normals(2, 5, 1.0), &[1, 5, 1]);
    // (name, source view, its storage)
    let views: Vec<(&str, Tensor, Vec<f32>)> = vec![
        ("contiguous", base.clone(), base_vals.clone()),
        ("permuted", base.permute(&[2, 0, 1]).unwrap(), base_vals.clone()),
        ("transposed", base.transpose(0, 2).unwrap(), base_vals.clone()),
        ("narrowed", base.narrow(1, 1, 3).unwrap().narrow(2, 2, 5).unwrap(), base_vals.clone()),
        ("broadcast", row.broadcast_as(&[4, 5, 7]).unwrap(), row.to_vec_f32().unwrap()),
        ("rank 1 strided", base.reshape(&[70, 2]).unwrap().narrow(1, 1, 1).unwrap().squeeze(1).unwrap(), base_vals.clone()),
        ("rank 6", base.reshape(&[2, 2, 5, 1, 7, 1]).unwrap().permute(&[4, 1, 2, 3, 0, 5]).unwrap(), base_vals.clone()),
        ("scalar", Tensor::scalar(3.5, &cpu()).unwrap(), vec![3.5]),
    ];
    for dt in DTYPES {
        // SAFETY: the wrapper is declared with this signature by copy_lib.
        let run: CopyFn = unsafe { lib.get(&format!("run_copy_strided_{}", dt.suffix())) };
        for (name, view, storage) in &views {
            let n = view.elem_count();
            let src = Buf::new(dt, storage);
            let want: Vec<f32> = view.contiguous().unwrap().to_vec_f32().unwrap().iter().map(|&v| dt.round(v)).collect();
            let mut dst = Buf::poisoned(dt, n);
            let (sl, dl) = (layout_of(view), contiguous(view.shape()));
            // SAFETY: src holds every element sl reaches (it is the view's storage); dst holds n.
            unsafe { run(grid(n, 64, 3), 64, n as i64, sl, src.ptr(), dl, dst.mut_ptr()) };
            assert_eq!(dst.values(), want, "copy_strided {name} [{}]", dt.suffix());
        }
        // A strided destination: write a [3, 4] block into columns 2..6 of a [5, 9] buffer
        // (narrow-assign); everything outside the block keeps its value.
        let src_vals = normals(3, 12, 1.0);
        let mut dst = Buf::new(dt, &[-7.0; 45]);
        let target = tensor(&[0.0; 45], &[5, 9]).narrow(0, 1, 3).unwrap().narrow(1, 2, 4).unwrap();
        let src = Buf::new(dt, &src_vals);
        // SAFETY: src holds 12 elements, dst 45, and the destination view stays inside it.
        unsafe { run(1, 32, 12, contiguous(&[3, 4]), src.ptr(), layout_of(&target), dst.mut_ptr()) };
        let got = dst.values();
        for r in 0..5 {
            for c in 0..9 {
                let want = if (1..4).contains(&r) && (2..6).contains(&c) { dt.round(src_vals[(r - 1) * 4 + c - 2]) } else { -7.0 };
                assert_eq!(got[r * 9 + c], want, "narrow-assign at ({r}, {c}) [{}]", dt.suffix());
            }
        }
    }
}

#[test]
fn casts_round_to_nearest_even_and_widen_exactly() {
    let Some(lib) = copy_lib() else { return };
    let cast = |name: &str| -> CastFn {
        // SAFETY: the wrapper is declared with this signature by copy_lib.
        unsafe { lib.get(&format!("run_cast_{name}")) }
    };
    // A stride through every f32 bit pattern plus the rounding boundaries of both types.
    let mut x: Vec<f32> = (0..=u32::MAX).step_by(65_521).map(f32::from_bits).collect();
    x.extend([
        0.0,
        -0.0,
        65504.0,
        65519.99,
        65520.0,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        2.9802322e-8,
        6e-8,
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
    ]);
    x.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, 3.3961776e38]);
    let n = x.len();
    let src = Buf::F32(x.clone());
    for dt in [Dt::F16, Dt::Bf16] {
        let mut y = Buf::poisoned(dt, n);
        // SAFETY: src holds n f32, y holds n elements of dt.
        unsafe { cast(&format!("f32_{}", dt.suffix()))(grid(n, 256, 5), 256, n as i64, src.ptr(), y.mut_ptr()) };
        let want = Buf::new(dt, &x);
        for (i, (g, w)) in y.bits().iter().zip(want.bits()).enumerate() {
            if x[i].is_nan() {
                assert!(y.values()[i].is_nan(), "cast f32→{} of NaN", dt.suffix());
            } else {
                assert_eq!(*g, w, "cast f32→{} of {:e} ({:#010x})", dt.suffix(), x[i], x[i].to_bits());
            }
        }
        // Widening is exact for every 16-bit pattern.
        let all: Buf = match dt {
            Dt::F16 => Buf::F16((0..=u16::MAX).map(f16::from_bits).collect()),
            _ => Buf::Bf16((0..=u16::MAX).map(bf16::from_bits).collect()),
        };
        let mut wide = Buf::poisoned(Dt::F32, 65536);
        // SAFETY: all holds 65536 16-bit values, wide 65536 f32.
        unsafe { cast(&format!("{}_f32", dt.suffix()))(grid(65536, 256, 7), 256, 65536, all.ptr(), wide.mut_ptr()) };
        for (i, (g, w)) in wide.values().iter().zip(all.values()).enumerate() {
            assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "cast {}→f32 of {i:#06x}: {g} vs {w}", dt.suffix());
        }
    }
}

#[test]
fn fill_writes_every_element_rounded() {
    let Some(lib) = copy_lib() else { return };
    for dt in DTYPES {
        // SAFETY: the wrapper is declared with this signature by copy_lib.
        let run: FillFn = unsafe { lib.get(&format!("run_fill_{}", dt.suffix())) };
        for n in [1usize, 31, 1000] {
            let mut y = Buf::poisoned(dt, n);
            // SAFETY: y holds n elements.
            unsafe { run(grid(n, 128, 2), 128, n as i64, 0.1, y.mut_ptr()) };
            assert_eq!(y.values(), vec![dt.round(0.1); n], "fill n={n} [{}]", dt.suffix());
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Module elementwise.

type UnaryFn = unsafe extern "C" fn(u32, u32, i64, i32, f32, f32, SdmLayout, *const c_void, *mut c_void);
type BinaryFn = unsafe extern "C" fn(u32, u32, i64, i32, SdmLayout, *const c_void, SdmLayout, *const c_void, *mut c_void);
type WhereFn =
    unsafe extern "C" fn(u32, u32, i64, SdmLayout, *const c_void, SdmLayout, *const c_void, SdmLayout, *const c_void, *mut c_void);

fn elementwise_lib() -> Option<emu::Lib> {
    let mut k = typed("unary", "long long n, int op, float a, float b, SdmLayout xl, const T* x, T* y");
    k.extend(typed("binary", "long long n, int op, SdmLayout al, const T* a, SdmLayout bl, const T* b, T* y"));
    k.extend(typed("where", "long long n, SdmLayout cl, const T* c, SdmLayout al, const T* a, SdmLayout bl, const T* b, T* y"));
    build("elementwise", &k)
}

/// exact GELU in f64 (reference for the ops the CPU backend lacks).
fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2))
}

/// erf in f64 by its Taylor series / continued fraction split (|error| < 1e-15), so the test
/// needs no libm crate.
fn libm_erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        // Σ (−1)^k x^(2k+1) / (k! (2k+1)) · 2/√π
        let (mut term, mut sum, mut k) = (a, a, 0.0f64);
        while term.abs() > 1e-17 * sum.abs() {
            k += 1.0;
            term *= -a * a / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc by the Laplace continued fraction, evaluated bottom-up.
        let mut f = 0.0f64;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * (a + f))
    };
    r.copysign(x)
}

#[test]
fn unary_ops_match_the_cpu_ops() {
    let Some(lib) = elementwise_lib() else { return };
    use abi::unary as u;
    type CpuOp = Box<dyn Fn(&Tensor) -> Tensor>;
    type F64Op = fn(f64) -> f64;
    // (op code, a, b, CPU reference, abs tolerance, rel tolerance)
    let cpu_ops: Vec<(&str, i32, f32, f32, CpuOp, f32, f32)> = vec![
        ("neg", u::NEG, 0.0, 0.0, Box::new(|t| t.neg().unwrap()), 0.0, 0.0),
        ("exp", u::EXP, 0.0, 0.0, Box::new(|t| t.exp().unwrap()), 0.0, 2e-7),
        ("log", u::LOG, 0.0, 0.0, Box::new(|t| t.log().unwrap()), 1e-7, 2e-7),
        ("sqrt", u::SQRT, 0.0, 0.0, Box::new(|t| t.sqrt().unwrap()), 0.0, 0.0),
        ("rsqrt", u::RSQRT, 0.0, 0.0, Box::new(|t| t.rsqrt().unwrap()), 0.0, 0.0),
        ("powf", u::POWF, 2.5, 0.0, Box::new(|t| t.powf(2.5).unwrap()), 0.0, 3e-7),
        ("powf int", u::POWF, 3.0, 0.0, Box::new(|t| t.powf(3.0).unwrap()), 0.0, 3e-7),
        ("sqr", u::SQR, 0.0, 0.0, Box::new(|t| t.sqr().unwrap()), 0.0, 0.0),
        ("abs", u::ABS, 0.0, 0.0, Box::new(|t| t.abs().unwrap()), 0.0, 0.0),
        ("tanh", u::TANH, 0.0, 0.0, Box::new(|t| t.tanh().unwrap()), 1e-7, 3e-7),
        ("sigmoid", u::SIGMOID, 0.0, 0.0, Box::new(|t| t.sigmoid().unwrap()), 1e-30, 5e-7),
        ("relu", u::RELU, 0.0, 0.0, Box::new(|t| t.relu().unwrap()), 0.0, 0.0),
        ("gelu", u::GELU, 0.0, 0.0, Box::new(|t| t.gelu().unwrap()), 2e-6, 1e-6),
        ("silu", u::SILU, 0.0, 0.0, Box::new(|t| t.silu().unwrap()), 1e-30, 5e-7),
        ("affine", u::AFFINE, -1.5, 0.25, Box::new(|t| t.affine(-1.5, 0.25).unwrap()), 0.0, 1e-7),
        ("clamp", u::CLAMP, -0.5, 2.0, Box::new(|t| t.clamp(-0.5, 2.0).unwrap()), 0.0, 0.0),
    ];
    let f64_ops: Vec<(&str, i32, F64Op, f32, f32)> = vec![
        ("recip", u::RECIP, |x| 1.0 / x, 0.0, 1e-7),
        ("sin", u::SIN, f64::sin, 1e-7, 1e-6),
        ("cos", u::COS, f64::cos, 1e-7, 1e-6),
        (
            "gelu_tanh",
            u::GELU_TANH,
            |x| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()),
            1e-7,
            1e-6,
        ),
        ("step", u::STEP, |x| if x > 0.0 { 1.0 } else { 0.0 }, 0.0, 0.0),
    ];

    // Random values plus the edge cases, stored [7, 41] and read through a transposed view.
    let mut vals = normals(4, 7 * 41 - SPECIALS.len(), 3.0);
    vals.extend(SPECIALS);
    let stored = tensor(&vals, &[7, 41]);
    let view = stored.t().unwrap(); // [41, 7], strides [1, 41]
    let n = view.elem_count();
    for dt in DTYPES {
        // SAFETY: the wrapper is declared with this signature by elementwise_lib.
        let run: UnaryFn = unsafe { lib.get(&format!("run_unary_{}", dt.suffix())) };
        let rounded: Vec<f32> = vals.iter().map(|&v| dt.round(v)).collect();
        let x_view = tensor(&rounded, &[7, 41]).t().unwrap();
        let x = Buf::new(dt, &vals);
        let launch = |op: i32, a: f32, b: f32, layout: SdmLayout| {
            let mut y = Buf::poisoned(dt, n);
            // SAFETY: x holds the 287 stored elements the layout reaches; y holds n.
            unsafe { run(grid(n, 64, 3), 64, n as i64, op, a, b, layout, x.ptr(), y.mut_ptr()) };
            y
        };
        let xs = x_view.to_vec_f32().unwrap();
        for (name, op, a, b, f, abs, rel) in &cpu_ops {
            // The CPU's SiLU gives −inf at −inf where x·σ(x) (the kernel, PyTorch) gives NaN.
            let keep: Vec<usize> = (0..n).filter(|&i| !(*op == u::SILU && xs[i].is_infinite())).collect();
            let pick = |v: &[f32]| keep.iter().map(|&i| v[i]).collect::<Vec<f32>>();
            let want = f(&x_view).to_vec_f32().unwrap();
            let got = launch(*op, *a, *b, layout_of(&view));
            assert_dt_close(&format!("unary {name} (strided)"), dt, &Buf::new(dt, &pick(&got.values())), &pick(&want), *abs, *rel);
        }
        for (name, op, f, abs, rel) in &f64_ops {
            let want: Vec<f32> = xs.iter().map(|&v| f(v as f64) as f32).collect();
            let got = launch(*op, 0.0, 0.0, layout_of(&view));
            assert_dt_close(&format!("unary {name} (strided)"), dt, &got, &want, *abs, *rel);
        }
        // Contiguous rank-1 layout: same results as the strided one for the same elements.
        let flat = launch(u::GELU, 0.0, 0.0, contiguous(&[n]));
        let want: Vec<f32> = rounded.iter().map(|&v| gelu_f64(v as f64) as f32).collect();
        assert_dt_close("unary gelu (contiguous) vs f64 erf", dt, &flat, &want, 1e-7, 2e-7);
    }
}

/// PyTorch's `maximum`/`minimum`: a NaN operand gives NaN.
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() { f32::NAN } else { a.max(b) }
}
fn nan_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() { f32::NAN } else { a.min(b) }
}

/// `d/dx (f(x)·g)` summed, i.e. g·f′(x), through the CPU backend's autograd.
fn cpu_grad(x: &[f32], g: &[f32], f: impl Fn(&Tensor) -> Tensor) -> Vec<f32> {
    let xv = tensor(x, &[x.len()]).to_var();
    let loss = f(&xv).mul(&tensor(g, &[g.len()])).unwrap().sum_all().unwrap();
    loss.backward().unwrap().get(&xv).unwrap().to_vec_f32().unwrap()
}

#[test]
fn binary_ops_broadcast_and_match_the_cpu_ops() {
    let Some(lib) = elementwise_lib() else { return };
    use abi::binary as b;
    // a [3, 1, 37] read through a narrowed view of a [3, 1, 40] buffer, b [4, 1] (a column):
    // the output is [3, 4, 37] with zero strides on both sides.
    let mut a_vals = normals(5, 120, 2.0);
    a_vals[..SPECIALS.len()].copy_from_slice(&SPECIALS);
    let mut b_vals = normals(6, 4, 2.0);
    b_vals[1] = f32::NAN;
    b_vals[2] = 0.0;
    let shape = [3usize, 4, 37];
    let n: usize = shape.iter().product();
    for dt in DTYPES {
        // SAFETY: the wrapper is declared with this signature by elementwise_lib.
        let run: BinaryFn = unsafe { lib.get(&format!("run_binary_{}", dt.suffix())) };
        let (ar, br): (Vec<f32>, Vec<f32>) = (a_vals.iter().map(|&v| dt.round(v)).collect(), b_vals.iter().map(|&v| dt.round(v)).collect());
        let a_view = tensor(&ar, &[3, 1, 40]).narrow(2, 2, 37).unwrap();
        let b_view = tensor(&br, &[4, 1]);
        let (la, lb) = (layout_of(&a_view.broadcast_as(&shape).unwrap()), layout_of(&b_view.broadcast_as(&shape).unwrap()));
        let (abuf, bbuf) = (Buf::new(dt, &a_vals), Buf::new(dt, &b_vals));
        let launch = |op: i32| {
            let mut y = Buf::poisoned(dt, n);
            // SAFETY: a and b hold the elements their broadcast layouts reach; y holds n.
            unsafe { run(grid(n, 128, 3), 128, n as i64, op, la, abuf.ptr(), lb, bbuf.ptr(), y.mut_ptr()) };
            y
        };
        let ab = a_view.broadcast_as(&shape).unwrap().to_vec_f32().unwrap();
        let bb = b_view.broadcast_as(&shape).unwrap().to_vec_f32().unwrap();
        let zip = |f: fn(f32, f32) -> f32| -> Vec<f32> { ab.iter().zip(&bb).map(|(&x, &y)| f(x, y)).collect() };
        let cpu = |t: Tensor| t.to_vec_f32().unwrap();
        let cases: Vec<(&str, i32, Vec<f32>, f32, f32)> = vec![
            ("add", b::ADD, cpu(a_view.add(&b_view).unwrap()), 0.0, 0.0),
            ("sub", b::SUB, cpu(a_view.sub(&b_view).unwrap()), 0.0, 0.0),
            ("mul", b::MUL, cpu(a_view.mul(&b_view).unwrap()), 0.0, 0.0),
            ("div", b::DIV, cpu(a_view.div(&b_view).unwrap()), 0.0, 0.0),
            ("max", b::MAX, zip(nan_max), 0.0, 0.0),
            ("min", b::MIN, zip(nan_min), 0.0, 0.0),
            ("pow", b::POW, zip(f32::powf), 0.0, 3e-7),
            ("tanh_bwd", b::TANH_BWD, zip(|g, y| g * (1.0 - y * y)), 0.0, 1e-7),
            ("sigmoid_bwd", b::SIGMOID_BWD, zip(|g, y| g * y * (1.0 - y)), 0.0, 1e-7),
            ("relu_bwd", b::RELU_BWD, zip(|g, x| if x > 0.0 { g } else { 0.0 }), 0.0, 0.0),
            ("gt", b::GT, zip(|x, y| (x > y) as u8 as f32), 0.0, 0.0),
            ("ge", b::GE, zip(|x, y| (x >= y) as u8 as f32), 0.0, 0.0),
            ("eq", b::EQ, zip(|x, y| (x == y) as u8 as f32), 0.0, 0.0),
            ("lt", b::LT, zip(|x, y| (x < y) as u8 as f32), 0.0, 0.0),
        ];
        for (name, op, want, abs, rel) in &cases {
            assert_dt_close(&format!("binary {name}"), dt, &launch(*op), want, *abs, *rel);
        }
        // The CPU's `maximum` ignores NaN; it must agree with the kernel wherever there is none.
        let cpu_max = cpu(a_view.maximum(&b_view).unwrap());
        let got = launch(b::MAX).values();
        for i in (0..n).filter(|&i| !ab[i].is_nan() && !bb[i].is_nan()) {
            assert_eq!(got[i], dt.round(cpu_max[i]), "binary max vs Tensor::maximum at {i}");
        }
    }
}

#[test]
fn activation_backwards_match_the_cpu_autograd() {
    let Some(lib) = elementwise_lib() else { return };
    use abi::binary as b;
    // g = a contiguous, x = b read through a transposed view; finite x only (the CPU's
    // approximations saturate differently at ±inf).
    let (rows, cols) = (13usize, 77usize);
    let n = rows * cols;
    let g = normals(9, n, 1.0);
    let mut x_stored = normals(10, n, 3.0);
    x_stored[..6].copy_from_slice(&[0.0, -0.0, 1e-3, -1e-3, 30.0, -30.0]);
    let x_view = tensor(&x_stored, &[cols, rows]).t().unwrap();
    for dt in DTYPES {
        // SAFETY: the wrapper is declared with this signature by elementwise_lib.
        let run: BinaryFn = unsafe { lib.get(&format!("run_binary_{}", dt.suffix())) };
        let (gb, xb) = (Buf::new(dt, &g), Buf::new(dt, &x_stored));
        let gr = gb.values();
        let xr = tensor(&xb.values(), &[cols, rows]).t().unwrap().to_vec_f32().unwrap();
        for (name, op, f, abs) in [
            ("gelu_bwd", b::GELU_BWD, (|t: &Tensor| t.gelu().unwrap()) as fn(&Tensor) -> Tensor, 2e-6f32),
            ("silu_bwd", b::SILU_BWD, |t: &Tensor| t.silu().unwrap(), 1e-6),
        ] {
            let want = cpu_grad(&xr, &gr, f);
            let mut y = Buf::poisoned(dt, n);
            // SAFETY: g holds n contiguous elements, x the n stored elements its view reaches.
            unsafe {
                run(grid(n, 256, 2), 256, n as i64, op, contiguous(&[rows, cols]), gb.ptr(), layout_of(&x_view), xb.ptr(), y.mut_ptr())
            };
            assert_dt_close(&format!("binary {name} vs CPU autograd"), dt, &y, &want, abs, 1e-6);
        }
    }
}

#[test]
fn where_selects_through_broadcast_conditions() {
    let Some(lib) = elementwise_lib() else { return };
    let c_vals = [1.0, 0.0, -0.0, f32::NAN, 2.5, 0.0, -1.0];
    let a_vals = normals(7, 7 * 9, 1.0);
    let b_vals = normals(8, 9, 1.0);
    let shape = [7usize, 9];
    for dt in DTYPES {
        // SAFETY: the wrapper is declared with this signature by elementwise_lib.
        let run: WhereFn = unsafe { lib.get(&format!("run_where_{}", dt.suffix())) };
        let round = |v: &[f32]| v.iter().map(|&x| dt.round(x)).collect::<Vec<f32>>();
        let (c, a, bt) =
            (tensor(&round(&c_vals), &[7, 1]), tensor(&round(&a_vals), &[9, 7]).t().unwrap(), tensor(&round(&b_vals), &[1, 9]));
        let want = Tensor::where_cond(&c, &a, &bt).unwrap().to_vec_f32().unwrap();
        let (cb, ab, bb) = (Buf::new(dt, &c_vals), Buf::new(dt, &a_vals), Buf::new(dt, &b_vals));
        let mut y = Buf::poisoned(dt, 63);
        let ls = [&c, &a, &bt].map(|t| layout_of(&t.broadcast_as(&shape).unwrap()));
        // SAFETY: each operand holds the elements its layout reaches; y holds 63.
        unsafe { run(2, 32, 63, ls[0], cb.ptr(), ls[1], ab.ptr(), ls[2], bb.ptr(), y.mut_ptr()) };
        assert_eq!(y.values(), want, "where [{}]", dt.suffix());
    }
}

// ------------------------------------------------------------------------------------------------
// Module reduce.

type ReduceFn = unsafe extern "C" fn(u32, u32, i64, i64, i64, i32, *const c_void, *mut f32);
type ArgmaxFn = unsafe extern "C" fn(u32, u32, i64, i64, i64, *const f32, *mut f32, *mut i64);

fn reduce_lib() -> Option<emu::Lib> {
    let mut k = typed("reduce", "long long outer, long long red, long long inner, int op, const T* x, float* y");
    k.push(("argmax_f32".into(), "long long outer, long long red, long long inner, const float* x, float* vals, long long* idx".into()));
    build("reduce", &k)
}

/// `[outer, red, inner]` test shapes: whole-block rows, tiles narrower and wider than a warp,
/// odd sizes, a single element.
const REDUCE_SHAPES: [(usize, usize, usize); 7] = [(3, 1000, 1), (2, 37, 5), (2, 300, 70), (5, 3, 33), (1, 1, 1), (4, 1, 9), (2, 513, 2)];

#[test]
fn reduce_ops_match_the_cpu_reductions() {
    let Some(lib) = reduce_lib() else { return };
    use abi::reduce as r;
    for dt in DTYPES {
        // SAFETY: the wrapper is declared with this signature by reduce_lib.
        let run: ReduceFn = unsafe { lib.get(&format!("run_reduce_{}", dt.suffix())) };
        for (si, &(outer, red, inner)) in REDUCE_SHAPES.iter().enumerate() {
            let mut vals = normals(10 + si as u64, outer * red * inner, 1.0);
            vals.iter_mut().for_each(|v| *v += 0.5); // a non-zero mean: sums do not cancel to ~0
            let rounded: Vec<f32> = vals.iter().map(|&v| dt.round(v)).collect();
            let t = tensor(&rounded, &[outer, red, inner]);
            let cpu = |t: Tensor| t.to_vec_f32().unwrap();
            let neg_max = cpu(t.neg().unwrap().max_dim(1, false).unwrap());
            let cases = [
                ("sum", r::SUM, cpu(t.sum_dims(&[1], false).unwrap())),
                ("mean", r::MEAN, cpu(t.mean_dims(&[1], false).unwrap())),
                ("max", r::MAX, cpu(t.max_dim(1, false).unwrap())),
                ("min", r::MIN, neg_max.iter().map(|v| -v).collect()),
                ("sumsq", r::SUMSQ, cpu(t.sqr().unwrap().sum_dims(&[1], false).unwrap())),
            ];
            // f32 tree sums vs the CPU's f64 sums: a few ulps of the row's Σ|x| (Σx² for SUMSQ).
            let abs_sum = cpu(t.abs().unwrap().sum_dims(&[1], false).unwrap());
            let sq_sum = cases[4].2.clone();
            let x = Buf::new(dt, &vals);
            for (name, op, want) in &cases {
                let mut outs = Vec::new();
                // The ABI's 256 threads at two grid sizes (same bits), and a 64-thread block.
                for (block, cap) in [(256u32, 2u32), (256, 64), (64, 3)] {
                    let mut y = vec![f32::NAN; outer * inner];
                    // SAFETY: x holds outer·red·inner elements, y outer·inner.
                    unsafe {
                        run(grid(outer * inner, 1, cap), block, outer as i64, red as i64, inner as i64, *op, x.ptr(), y.as_mut_ptr())
                    };
                    for (i, (&g, &w)) in y.iter().zip(want).enumerate() {
                        let tol = match *op {
                            r::MAX | r::MIN => 0.0,
                            r::SUMSQ => 8.0 * f32::EPSILON * sq_sum[i],
                            r::MEAN => 8.0 * f32::EPSILON * abs_sum[i] / red as f32,
                            _ => 8.0 * f32::EPSILON * abs_sum[i],
                        };
                        assert!(
                            (g - w).abs() <= tol,
                            "reduce {name} {outer}x{red}x{inner} block {block} [{}] output {i}: got {g:e}, want {w:e}",
                            dt.suffix()
                        );
                    }
                    outs.push(y.iter().map(|v| v.to_bits()).collect::<Vec<u32>>());
                }
                assert_eq!(outs[0], outs[1], "reduce {name} {outer}x{red}x{inner}: the result depends on the grid size");
            }
        }
    }
}

#[test]
fn reduce_propagates_nan_and_handles_infinities() {
    let Some(lib) = reduce_lib() else { return };
    use abi::reduce as r;
    // SAFETY: the wrapper is declared with this signature by reduce_lib.
    let run: ReduceFn = unsafe { lib.get("run_reduce_f32") };
    // Rows of [4, 40, 3]: row 0 has a NaN in column 1, row 1 ±inf in column 0, row 2 only −inf.
    let (outer, red, inner) = (4usize, 40usize, 3usize);
    let mut x = normals(20, outer * red * inner, 1.0);
    let at = |o: usize, k: usize, i: usize| (o * red + k) * inner + i;
    x[at(0, 17, 1)] = f32::NAN;
    x[at(1, 3, 0)] = f32::INFINITY;
    x[at(1, 30, 0)] = f32::NEG_INFINITY;
    for k in 0..red {
        x[at(2, k, 2)] = f32::NEG_INFINITY;
    }
    let t = tensor(&x, &[outer, red, inner]);
    let go = |op: i32| {
        let mut y = vec![0f32; outer * inner];
        // SAFETY: x holds outer·red·inner elements, y outer·inner.
        unsafe { run(3, 256, outer as i64, red as i64, inner as i64, op, x.as_ptr().cast(), y.as_mut_ptr()) };
        y
    };
    let (sum, max, min) = (go(r::SUM), go(r::MAX), go(r::MIN));
    assert!(sum[1].is_nan() && max[1].is_nan() && min[1].is_nan(), "NaN must propagate: {:?}", (sum[1], max[1], min[1]));
    assert!(sum[3].is_nan(), "inf + -inf is NaN");
    assert_eq!((max[3], min[3]), (f32::INFINITY, f32::NEG_INFINITY));
    assert_eq!((sum[8], max[8], min[8]), (f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY));
    // The CPU's max_dim agrees (NaN wins there too).
    let cpu = t.max_dim(1, false).unwrap().to_vec_f32().unwrap();
    assert_close("reduce max vs Tensor::max_dim", &max, &cpu, 0.0, 0.0);
}

#[test]
fn argmax_takes_the_first_maximum_and_nan_wins() {
    let Some(lib) = reduce_lib() else { return };
    // SAFETY: the wrapper is declared with this signature by reduce_lib.
    let run: ArgmaxFn = unsafe { lib.get("run_argmax_f32") };
    for (si, &(outer, red, inner)) in REDUCE_SHAPES.iter().enumerate() {
        // Coarse values (ties everywhere), ±0, and NaNs in some rows.
        let mut x: Vec<f32> = normals(30 + si as u64, outer * red * inner, 2.0).into_iter().map(|v| v.round()).collect();
        for (i, v) in x.iter_mut().enumerate() {
            if i % 97 == 13 {
                *v = -0.0;
            }
            if i % 211 == 5 {
                *v = f32::NAN;
            }
        }
        let t = tensor(&x, &[outer, red, inner]);
        let (vals, idx) = t.max_dim_with_index(1, false).unwrap();
        let (want_v, want_i) = (vals.to_vec_f32().unwrap(), idx.to_vec_i64().unwrap());
        for (block, cap) in [(256u32, 2u32), (64, 5)] {
            let (mut v, mut i) = (vec![0f32; outer * inner], vec![-9i64; outer * inner]);
            // SAFETY: x holds outer·red·inner floats; v and i hold outer·inner each.
            unsafe {
                run(grid(outer * inner, 1, cap), block, outer as i64, red as i64, inner as i64, x.as_ptr(), v.as_mut_ptr(), i.as_mut_ptr())
            };
            assert_eq!(i, want_i, "argmax indices {outer}x{red}x{inner} block {block}");
            assert_close(&format!("argmax values {outer}x{red}x{inner}"), &v, &want_v, 0.0, 0.0);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Module softmax.

type RowsFn = unsafe extern "C" fn(u32, u32, i64, i64, *const c_void, *mut c_void);
type RowsBwdFn = unsafe extern "C" fn(u32, u32, i64, i64, *const c_void, *const c_void, *mut c_void);

fn softmax_lib() -> Option<emu::Lib> {
    let mut k = typed("softmax", "long long rows, long long cols, const T* x, T* y");
    k.extend(typed("log_softmax", "long long rows, long long cols, const T* x, T* y"));
    k.extend(typed("softmax_bwd", "long long rows, long long cols, const T* y, const T* gy, T* gx"));
    k.extend(typed("log_softmax_bwd", "long long rows, long long cols, const T* y, const T* gy, T* gx"));
    build("softmax", &k)
}

/// Row shapes: several rows per block (grid 2), rows longer than a block, odd, one column.
const ROW_SHAPES: [(usize, usize); 5] = [(5, 1000), (3, 7), (4, 257), (2, 1), (3, 33)];

/// Softmax inputs: random logits with −inf (masked) entries, large values (max subtraction must
/// keep exp finite), and, when `with_nan`, a NaN in the last row.
fn logits(seed: u64, rows: usize, cols: usize, with_nan: bool) -> Vec<f32> {
    let mut x = normals(seed, rows * cols, 3.0);
    for r in 0..rows {
        if cols > 2 {
            x[r * cols + (r * 7) % cols] = f32::NEG_INFINITY;
        }
        if r == 1 {
            x[r * cols] = 1e4;
        }
    }
    if with_nan && rows > 2 && cols > 3 {
        x[(rows - 1) * cols + 3] = f32::NAN;
    }
    x
}

#[test]
fn softmax_forward_matches_the_cpu() {
    let Some(lib) = softmax_lib() else { return };
    for dt in DTYPES {
        // SAFETY: the wrappers are declared with this signature by softmax_lib.
        let (sm, lsm): (RowsFn, RowsFn) =
            unsafe { (lib.get(&format!("run_softmax_{}", dt.suffix())), lib.get(&format!("run_log_softmax_{}", dt.suffix()))) };
        for (si, &(rows, cols)) in ROW_SHAPES.iter().enumerate() {
            let x = logits(40 + si as u64, rows, cols, true);
            let xt = tensor(&x.iter().map(|&v| dt.round(v)).collect::<Vec<_>>(), &[rows, cols]);
            let xb = Buf::new(dt, &x);
            for (name, f, want, abs) in [
                ("softmax", sm, xt.softmax(1).unwrap().to_vec_f32().unwrap(), 1e-7f32),
                ("log_softmax", lsm, xt.log_softmax(1).unwrap().to_vec_f32().unwrap(), 2e-6),
            ] {
                let mut y = Buf::poisoned(dt, rows * cols);
                // SAFETY: x and y hold rows·cols elements.
                unsafe { f(2, 256, rows as i64, cols as i64, xb.ptr(), y.mut_ptr()) };
                assert_dt_close(&format!("{name} {rows}x{cols}"), dt, &y, &want, abs, 2e-6);
                if rows > 2 && cols > 3 {
                    assert!(y.values()[(rows - 1) * cols..].iter().all(|v| v.is_nan()), "{name}: a NaN must poison its row");
                }
            }
        }
    }
}

#[test]
fn softmax_backward_matches_the_cpu_autograd() {
    let Some(lib) = softmax_lib() else { return };
    for dt in DTYPES {
        // SAFETY: the wrappers are declared with this signature by softmax_lib.
        let (smb, lsmb): (RowsBwdFn, RowsBwdFn) =
            unsafe { (lib.get(&format!("run_softmax_bwd_{}", dt.suffix())), lib.get(&format!("run_log_softmax_bwd_{}", dt.suffix()))) };
        for (si, &(rows, cols)) in ROW_SHAPES.iter().enumerate() {
            let x = logits(50 + si as u64, rows, cols, false);
            let g = normals(60 + si as u64, rows * cols, 1.0);
            for (name, f, log) in [("softmax_bwd", smb, false), ("log_softmax_bwd", lsmb, true)] {
                let xv = tensor(&x, &[rows, cols]).to_var();
                let y = if log { xv.log_softmax(1) } else { xv.softmax(1) }.unwrap();
                let yv = y.to_vec_f32().unwrap();
                let (yb, gb) = (Buf::new(dt, &yv), Buf::new(dt, &g));
                let want = if dt == Dt::F32 {
                    let loss = y.mul(&tensor(&g, &[rows, cols])).unwrap().sum_all().unwrap();
                    loss.backward().unwrap().get(&xv).unwrap().to_vec_f32().unwrap()
                } else {
                    // The CPU's backward formula on exactly the rounded y and gy the kernel reads.
                    let (yr, gr) = (yb.values(), gb.values());
                    let mut out = vec![0f32; rows * cols];
                    for r in 0..rows {
                        let (ys, gs) = (&yr[r * cols..(r + 1) * cols], &gr[r * cols..(r + 1) * cols]);
                        let s: f64 = if log {
                            gs.iter().map(|&v| v as f64).sum()
                        } else {
                            ys.iter().zip(gs).map(|(&a, &b)| a as f64 * b as f64).sum()
                        };
                        for c in 0..cols {
                            let (yv, gv) = (ys[c] as f64, gs[c] as f64);
                            out[r * cols + c] = if log { gv - yv.exp() * s } else { yv * (gv - s) } as f32;
                        }
                    }
                    out
                };
                let mut gx = Buf::poisoned(dt, rows * cols);
                // SAFETY: y, gy and gx hold rows·cols elements.
                unsafe { f(2, 256, rows as i64, cols as i64, yb.ptr(), gb.ptr(), gx.mut_ptr()) };
                // Σ over the row in f32 (kernel tree, CPU sequential): error grows like √cols.
                assert_dt_close(&format!("{name} {rows}x{cols}"), dt, &gx, &want, 3e-6 * (cols as f32).sqrt(), 1e-5);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Module norm.

type StdFwdFn = unsafe extern "C" fn(u32, u32, i64, i64, f32, *const c_void, *mut c_void, *mut f32, *mut f32);
type StdBwdFn = unsafe extern "C" fn(u32, u32, i64, i64, *const c_void, *const f32, *const c_void, *mut c_void);

fn norm_lib() -> Option<emu::Lib> {
    let mut k = typed("standardize_fwd", "long long rows, long long cols, float eps, const T* x, T* y, float* mean, float* rstd");
    k.extend(typed("standardize_bwd", "long long rows, long long cols, const T* y, const float* rstd, const T* gy, T* gx"));
    build("norm", &k)
}

/// Rows with a large common offset (a one-pass E[x²] − mean² variance would cancel) and a
/// constant row (variance 0: rstd = 1/√eps).
fn norm_input(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut x = normals(seed, rows * cols, 1.5);
    for r in 0..rows {
        for c in 0..cols {
            x[r * cols + c] += match r % 3 {
                0 => 300.0,
                1 => -2.0,
                _ => 0.0,
            };
        }
    }
    if rows > 2 {
        x[2 * cols..3 * cols].iter_mut().for_each(|v| *v = 0.75);
    }
    x
}

#[test]
fn standardize_forward_matches_the_cpu() {
    let Some(lib) = norm_lib() else { return };
    let eps = 1e-5f32;
    for dt in DTYPES {
        // SAFETY: the wrapper is declared with this signature by norm_lib.
        let run: StdFwdFn = unsafe { lib.get(&format!("run_standardize_fwd_{}", dt.suffix())) };
        for (si, &(rows, cols)) in ROW_SHAPES.iter().enumerate() {
            let x = norm_input(70 + si as u64, rows, cols);
            let xb = Buf::new(dt, &x);
            let xr = xb.values();
            let want = tensor(&xr, &[rows, cols]).standardize_last(eps).unwrap().to_vec_f32().unwrap();
            let (mut y, mut mean, mut rstd) = (Buf::poisoned(dt, rows * cols), vec![f32::NAN; rows], vec![f32::NAN; rows]);
            // SAFETY: x and y hold rows·cols elements, mean and rstd rows.
            unsafe { run(2, 256, rows as i64, cols as i64, eps, xb.ptr(), y.mut_ptr(), mean.as_mut_ptr(), rstd.as_mut_ptr()) };
            // y = (x − mean)·rstd is ~1 in size; f32 mean/var carry a few ulps of |x| ≈ 300.
            assert_dt_close(&format!("standardize {rows}x{cols}"), dt, &y, &want, 2e-4, 1e-5);
            for r in 0..rows {
                let row = &xr[r * cols..(r + 1) * cols];
                let m = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
                let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / cols as f64;
                let rs = 1.0 / (var + eps as f64).sqrt();
                assert!((mean[r] as f64 - m).abs() <= 4e-6 * (1.0 + m.abs()), "mean of row {r}: {} vs {m}", mean[r]);
                assert!((rstd[r] as f64 - rs).abs() <= 1e-4 * rs, "rstd of row {r}: {} vs {rs}", rstd[r]);
            }
        }
    }
}

#[test]
fn standardize_backward_matches_the_cpu_autograd() {
    let Some(lib) = norm_lib() else { return };
    let eps = 1e-5f32;
    for dt in DTYPES {
        // SAFETY: the wrapper is declared with this signature by norm_lib.
        let run: StdBwdFn = unsafe { lib.get(&format!("run_standardize_bwd_{}", dt.suffix())) };
        for (si, &(rows, cols)) in ROW_SHAPES.iter().enumerate() {
            let x = norm_input(80 + si as u64, rows, cols);
            let g = normals(90 + si as u64, rows * cols, 1.0);
            let xv = tensor(&x, &[rows, cols]).to_var();
            let y = xv.standardize_last(eps).unwrap();
            let rstd: Vec<f32> = (0..rows)
                .map(|r| {
                    let row = &x[r * cols..(r + 1) * cols];
                    let m = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
                    (1.0 / (row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / cols as f64 + eps as f64).sqrt()) as f32
                })
                .collect();
            let (yb, gb) = (Buf::new(dt, &y.to_vec_f32().unwrap()), Buf::new(dt, &g));
            let want = if dt == Dt::F32 {
                let loss = y.mul(&tensor(&g, &[rows, cols])).unwrap().sum_all().unwrap();
                loss.backward().unwrap().get(&xv).unwrap().to_vec_f32().unwrap()
            } else {
                // The same formula on exactly the rounded y and gy the kernel reads.
                let (yr, gr) = (yb.values(), gb.values());
                let mut out = vec![0f32; rows * cols];
                for r in 0..rows {
                    let (ys, gs) = (&yr[r * cols..(r + 1) * cols], &gr[r * cols..(r + 1) * cols]);
                    let mg = gs.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
                    let mgy = gs.iter().zip(ys).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / cols as f64;
                    for c in 0..cols {
                        out[r * cols + c] = (rstd[r] as f64 * (gs[c] as f64 - mg - ys[c] as f64 * mgy)) as f32;
                    }
                }
                out
            };
            let mut gx = Buf::poisoned(dt, rows * cols);
            // SAFETY: y, gy and gx hold rows·cols elements, rstd rows.
            unsafe { run(2, 256, rows as i64, cols as i64, yb.ptr(), rstd.as_ptr(), gb.ptr(), gx.mut_ptr()) };
            // The constant row has rstd = 1/√eps ≈ 316: its gradient scale is large.
            let scale = rstd.iter().fold(0f32, |m, &v| m.max(v));
            assert_dt_close(&format!("standardize_bwd {rows}x{cols}"), dt, &gx, &want, 4e-7 * scale, 1e-4);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Module rng.

type UniformFn = unsafe extern "C" fn(u32, u32, i64, u32, u32, u64, f32, f32, *mut f32);
type NormalFn = unsafe extern "C" fn(u32, u32, i64, u32, u32, u64, *mut f32);
type DropoutFn = unsafe extern "C" fn(u32, u32, i64, u32, u32, u64, f32, f32, *mut f32);

fn rng_lib() -> Option<emu::Lib> {
    let head = "long long n, unsigned seed_lo, unsigned seed_hi, unsigned long long counter";
    build(
        "rng",
        &[
            ("philox_uniform".into(), format!("{head}, float lo, float hi, float* y")),
            ("philox_normal".into(), format!("{head}, float* y")),
            ("philox_dropout".into(), format!("{head}, float p, float scale, float* y")),
        ],
    )
}

/// (seed, counter, n): a seed with both halves set, a counter whose low word carries into the
/// high word mid-draw, lengths that are not multiples of 4.
const STREAMS: [(u64, u64, usize); 4] = [(0, 0, 1), (7, 3, 1001), (0xDEAD_BEEF_0123_4567, 0xFFFF_FFF0, 1030), (u64::MAX, u64::MAX - 2, 18)];

#[test]
fn philox_uniform_and_dropout_are_bit_exact() {
    let Some(lib) = rng_lib() else { return };
    // SAFETY: the wrappers are declared with these signatures by rng_lib.
    let (uniform, dropout): (UniformFn, DropoutFn) = unsafe { (lib.get("run_philox_uniform"), lib.get("run_philox_dropout")) };
    for &(seed, counter, n) in &STREAMS {
        let (lo, hi) = (-1.5f32, 2.25f32);
        let want = Rng::from_state(seed, counter).uniform_vec(n, lo, hi);
        let mut y = vec![f32::NAN; n];
        // SAFETY: y holds n floats.
        unsafe { uniform(grid(n.div_ceil(4), 64, 3), 64, n as i64, seed as u32, (seed >> 32) as u32, counter, lo, hi, y.as_mut_ptr()) };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&want), "philox_uniform seed {seed:#x} counter {counter:#x} n {n}");

        let p = 0.3f32;
        let mut rng = Rng::from_state(seed, counter);
        let want = Tensor::ones(&[n], &cpu()).unwrap().dropout(p, true, &mut rng).unwrap().to_vec_f32().unwrap();
        let mut m = vec![f32::NAN; n];
        // SAFETY: m holds n floats.
        unsafe {
            dropout(grid(n.div_ceil(4), 64, 2), 64, n as i64, seed as u32, (seed >> 32) as u32, counter, p, 1.0 / (1.0 - p), m.as_mut_ptr())
        };
        assert_eq!(bits(&m), bits(&want), "philox_dropout seed {seed:#x} counter {counter:#x} n {n}");
    }
}

#[test]
fn philox_normal_matches_the_cpu_stream() {
    let Some(lib) = rng_lib() else { return };
    // SAFETY: the wrapper is declared with this signature by rng_lib.
    let normal: NormalFn = unsafe { lib.get("run_philox_normal") };
    for &(seed, counter, n) in &STREAMS {
        let want = Rng::from_state(seed, counter).normal_vec(n);
        let mut y = vec![f32::NAN; n];
        // SAFETY: y holds n floats.
        unsafe { normal(grid(n.div_ceil(4), 32, 3), 32, n as i64, seed as u32, (seed >> 32) as u32, counter, y.as_mut_ptr()) };
        // Same uniforms; logf/sincosf may differ from the CPU's by a few ulp.
        assert_close(&format!("philox_normal seed {seed:#x} counter {counter:#x}"), &y, &want, 1e-6, 4e-6);
    }
}
