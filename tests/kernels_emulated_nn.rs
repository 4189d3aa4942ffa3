//! The CUDA kernels of `conv.cu`, `pool.cu`, `index.cu`, `optim.cu` and `sparse.cu`, run on the
//! CPU through `kernels/emu/cuda_emu.h`, against the CPU reference implementations: the public ops
//! and autograd of sparsedm-tensor, sparsedm-layers' N:M mask and SR-STE arithmetic, and
//! sparsedm-train's AdamW and EMA.
//!
//! The kernels are written to add in the CPU's order, so almost every comparison is bit for bit;
//! the exceptions (im2col + matmul vs conv2d, col2im of Wᵀ·gy vs conv2d's input gradient, where the
//! CPU uses a blocked GEMM) use a tolerance of 1e-4 on values of order 1, and the adjoint identity
//! of im2col/col2im is checked in f64 to 1e-9 relative. Launches use small grids so the
//! grid-stride loops run several rounds.

mod emu;

use sparsedm_layers::layout::WeightLayout;
use sparsedm_layers::mask::{NonDivisible, compute_mask};
use sparsedm_layers::pattern::NmPattern;
use sparsedm_tensor::{Device, GradStore, Tensor};
use sparsedm_train::ema::Ema;
use sparsedm_train::optim::{AdamW, AdamWConfig};

const CPU: Device = Device::Cpu;
/// Threads per block of the emulated launches.
const BLOCK: u32 = 128;
/// At most this many blocks: with `BLOCK`, larger tensors go round the grid-stride loop.
const MAX_GRID: u32 = 5;

fn grid(work: usize) -> u32 {
    emu::grid(work, BLOCK, MAX_GRID)
}

/// Deterministic pseudo-random values in [−1, 1) (an LCG; no dependency on the tensor crate's RNG).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32) / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Small integers in [−4, 4] (many exact ties) with a NaN, signed zeros and infinities planted.
fn tie_heavy(len: usize, seed: u64) -> Vec<f32> {
    let mut v: Vec<f32> = values(len, seed).iter().map(|x| (x * 4.5).round()).collect();
    for (i, special) in [(3, f32::NAN), (5, -0.0), (6, 0.0), (11, f32::INFINITY), (17, f32::NEG_INFINITY), (23, f32::NAN)] {
        if i < len {
            v[i] = special;
        }
    }
    v
}

fn tensor(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &CPU).unwrap()
}

fn f16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect()
}
fn bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect()
}

/// Asserts bitwise equality (any NaN equals any NaN).
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{what}: [{i}] {a:e} ({:#010x}) vs {b:e} ({:#010x})",
            a.to_bits(),
            b.to_bits()
        );
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: [{i}] {a} vs {b}");
    }
}

// =============================================================================================
// conv.cu

const CONV_EXPORTS: &str = r#"
#define SDM_CONV_WRAPPERS(SUFFIX, T, H)                                                              \
    extern "C" void run_im2col_##SUFFIX(unsigned g, unsigned b, long long n, int c, int h, int w,     \
                                         int kh, int kw, int sh, int sw, int ph, int pw, int oh,        \
                                         int ow, const H* x, H* cols) {                                 \
        sdm_emu_launch(im2col_##SUFFIX, g, b, n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow,              \
                       reinterpret_cast<const T*>(x), reinterpret_cast<T*>(cols));                     \
    }                                                                                                   \
    extern "C" void run_col2im_##SUFFIX(unsigned g, unsigned b, long long n, int c, int h, int w,     \
                                         int kh, int kw, int sh, int sw, int ph, int pw, int oh,        \
                                         int ow, const H* cols, H* x) {                                 \
        sdm_emu_launch(col2im_##SUFFIX, g, b, n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow,              \
                       reinterpret_cast<const T*>(cols), reinterpret_cast<T*>(x));                     \
    }
SDM_CONV_WRAPPERS(f32, float, float)
SDM_CONV_WRAPPERS(f16, __half, unsigned short)
SDM_CONV_WRAPPERS(bf16, __nv_bfloat16, unsigned short)
"#;

type ConvFn<T> = unsafe extern "C" fn(u32, u32, i64, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, *const T, *mut T);

/// One convolution's geometry: x [n, c, h, w], kernel kh×kw, stride, padding, output oh×ow.
#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn new(n: usize, c: usize, h: usize, w: usize, kh: usize, kw: usize, (sh, sw): (usize, usize), (ph, pw): (usize, usize)) -> Self {
        let oh = (h + 2 * ph - kh) / sh + 1;
        let ow = (w + 2 * pw - kw) / sw + 1;
        Geom { n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow }
    }
    fn ck(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    fn cols_len(&self) -> usize {
        self.n * self.ck() * self.p()
    }
    /// Input coordinate read by kernel tap `k` at output position `o` along an axis, if inside.
    fn src(o: usize, k: usize, s: usize, pad: usize, len: usize) -> Option<usize> {
        (o * s + k).checked_sub(pad).filter(|&i| i < len)
    }

    /// im2col by its definition, on any element type (`zero` in the padding).
    fn im2col_ref<T: Copy>(&self, x: &[T], zero: T) -> Vec<T> {
        let mut cols = vec![zero; self.cols_len()];
        for img in 0..self.n {
            for ch in 0..self.c {
                for ky in 0..self.kh {
                    for kx in 0..self.kw {
                        let row = (ch * self.kh + ky) * self.kw + kx;
                        for oy in 0..self.oh {
                            for ox in 0..self.ow {
                                if let (Some(iy), Some(ix)) =
                                    (Self::src(oy, ky, self.sh, self.ph, self.h), Self::src(ox, kx, self.sw, self.pw, self.w))
                                {
                                    cols[(img * self.ck() + row) * self.p() + oy * self.ow + ox] =
                                        x[((img * self.c + ch) * self.h + iy) * self.w + ix];
                                }
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    /// sparsedm-tensor's col2im loop (scatter-add, in its order) for all images.
    fn col2im_ref(&self, cols: &[f32]) -> Vec<f32> {
        let mut x = vec![0f32; self.x_len()];
        for img in 0..self.n {
            for ch in 0..self.c {
                for ky in 0..self.kh {
                    for kx in 0..self.kw {
                        let row = (ch * self.kh + ky) * self.kw + kx;
                        for oy in 0..self.oh {
                            let Some(iy) = Self::src(oy, ky, self.sh, self.ph, self.h) else { continue };
                            for ox in 0..self.ow {
                                if let Some(ix) = Self::src(ox, kx, self.sw, self.pw, self.w) {
                                    x[((img * self.c + ch) * self.h + iy) * self.w + ix] +=
                                        cols[(img * self.ck() + row) * self.p() + oy * self.ow + ox];
                                }
                            }
                        }
                    }
                }
            }
        }
        x
    }
}

/// (n, c, h, w, kh, kw, stride, padding).
type ConvCase = (usize, usize, usize, usize, usize, usize, (usize, usize), (usize, usize));

/// Odd sizes, padding, strides (including stride > kernel and non-square everything).
const CONV_CASES: &[ConvCase] = &[
    (2, 3, 11, 9, 3, 3, (2, 2), (0, 0)),
    (1, 2, 10, 13, 3, 3, (1, 1), (1, 1)),
    (3, 4, 9, 9, 1, 7, (1, 1), (0, 3)),
    (2, 2, 8, 11, 3, 2, (2, 3), (1, 1)),
    (1, 3, 12, 7, 5, 5, (1, 2), (2, 2)),
    (2, 1, 7, 7, 2, 2, (3, 3), (1, 0)),
    (1, 5, 5, 6, 1, 1, (1, 1), (0, 0)),
    (1, 1, 3, 3, 3, 3, (1, 1), (1, 1)),
];

fn conv_lib() -> Option<emu::Lib> {
    emu::compile("conv", CONV_EXPORTS)
}

fn run_conv<T: Copy + Default>(lib: &emu::Lib, name: &str, g: &Geom, input: &[T], out_len: usize) -> Vec<T> {
    // SAFETY: every run_im2col_*/run_col2im_* wrapper in CONV_EXPORTS has the `ConvFn<T>`
    // signature with T = f32 for `_f32` and T = u16 (the 16-bit storage) for `_f16`/`_bf16`.
    let f: ConvFn<T> = unsafe { lib.get(name) };
    let mut out = vec![T::default(); out_len];
    let gr = grid(out_len.max(input.len()));
    let dims = [g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow].map(|d| d as i32);
    // SAFETY: `input` and `out` hold exactly the element counts the kernel reads and writes for
    // this geometry (checked by the callers' lengths: x_len() and cols_len()).
    unsafe {
        f(
            gr,
            BLOCK,
            g.n as i64,
            dims[0],
            dims[1],
            dims[2],
            dims[3],
            dims[4],
            dims[5],
            dims[6],
            dims[7],
            dims[8],
            dims[9],
            dims[10],
            input.as_ptr(),
            out.as_mut_ptr(),
        )
    };
    out
}

#[test]
fn im2col_equals_its_definition_and_with_a_matmul_equals_conv2d() {
    let Some(lib) = conv_lib() else { return };
    for (case, &(n, c, h, w, kh, kw, stride, pad)) in CONV_CASES.iter().enumerate() {
        let g = Geom::new(n, c, h, w, kh, kw, stride, pad);
        let o = 3;
        let x = values(g.x_len(), 10 + case as u64);
        let wt = values(o * g.ck(), 50 + case as u64);
        let cols = run_conv(&lib, "run_im2col_f32", &g, &x, g.cols_len());
        assert_bits(&cols, &g.im2col_ref(&x, 0.0), &format!("im2col case {case}"));

        // y[img, o, p] = Σ_k W[o, k] · cols[img, k, p] (f64) against the CPU conv2d.
        let mut y = vec![0f32; n * o * g.p()];
        for img in 0..n {
            for oc in 0..o {
                for p in 0..g.p() {
                    let s: f64 =
                        (0..g.ck()).map(|k| f64::from(wt[oc * g.ck() + k]) * f64::from(cols[(img * g.ck() + k) * g.p() + p])).sum();
                    y[(img * o + oc) * g.p() + p] = s as f32;
                }
            }
        }
        let want = tensor(&x, &[n, c, h, w]).conv2d(&tensor(&wt, &[o, c, kh, kw]), None, stride, pad).unwrap();
        assert_eq!(want.shape(), &[n, o, g.oh, g.ow]);
        assert_close(&y, &want.to_vec_f32().unwrap(), 1e-4, &format!("im2col·W vs conv2d, case {case}"));

        // The 16-bit variants copy the storage bits.
        let xh = f16_bits(&x);
        assert_eq!(run_conv(&lib, "run_im2col_f16", &g, &xh, g.cols_len()), g.im2col_ref(&xh, 0u16), "im2col_f16 case {case}");
        let xb = bf16_bits(&x);
        assert_eq!(run_conv(&lib, "run_im2col_bf16", &g, &xb, g.cols_len()), g.im2col_ref(&xb, 0u16), "im2col_bf16 case {case}");
    }
}

#[test]
fn col2im_is_the_adjoint_of_im2col_and_gives_conv2ds_input_gradient() {
    let Some(lib) = conv_lib() else { return };
    for (case, &(n, c, h, w, kh, kw, stride, pad)) in CONV_CASES.iter().enumerate() {
        let g = Geom::new(n, c, h, w, kh, kw, stride, pad);
        let cols = values(g.cols_len(), 100 + case as u64);
        let x = values(g.x_len(), 200 + case as u64);

        // Bitwise the CPU's col2im (same summation order).
        let folded = run_conv(&lib, "run_col2im_f32", &g, &cols, g.x_len());
        assert_bits(&folded, &g.col2im_ref(&cols), &format!("col2im case {case}"));

        // <col2im(c), x> = <c, im2col(x)>.
        let unfolded = run_conv(&lib, "run_im2col_f32", &g, &x, g.cols_len());
        let lhs: f64 = folded.iter().zip(&x).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        let rhs: f64 = cols.iter().zip(&unfolded).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        assert!((lhs - rhs).abs() <= 1e-9 * (1.0 + rhs.abs()) + 1e-5, "adjoint case {case}: {lhs} vs {rhs}");

        // conv2d's input gradient = col2im(Wᵀ · gy) per image.
        let o = 4;
        let wt = values(o * g.ck(), 300 + case as u64);
        let gy = values(n * o * g.p(), 400 + case as u64);
        let xv = tensor(&x, &[n, c, h, w]).to_var();
        let y = xv.conv2d(&tensor(&wt, &[o, c, kh, kw]), None, stride, pad).unwrap();
        let grads = y.mul(&tensor(&gy, y.shape())).unwrap().sum_all().unwrap().backward().unwrap();
        let gx_cpu = grads.get(&xv).unwrap().to_vec_f32().unwrap();
        let mut wtg = vec![0f32; g.cols_len()];
        for img in 0..n {
            for k in 0..g.ck() {
                for p in 0..g.p() {
                    let s: f64 = (0..o).map(|oc| f64::from(wt[oc * g.ck() + k]) * f64::from(gy[(img * o + oc) * g.p() + p])).sum();
                    wtg[(img * g.ck() + k) * g.p() + p] = s as f32;
                }
            }
        }
        let gx = run_conv(&lib, "run_col2im_f32", &g, &wtg, g.x_len());
        assert_close(&gx, &gx_cpu, 1e-4, &format!("col2im(Wᵀ·gy) vs conv2d input gradient, case {case}"));

        // 16-bit storage: f32 sums of the decoded columns, rounded once to nearest even.
        let ch = f16_bits(&cols);
        let decoded: Vec<f32> = ch.iter().map(|&b| half::f16::from_bits(b).to_f32()).collect();
        let want = f16_bits(&g.col2im_ref(&decoded));
        assert_eq!(run_conv(&lib, "run_col2im_f16", &g, &ch, g.x_len()), want, "col2im_f16 case {case}");
        let cb = bf16_bits(&cols);
        let decoded: Vec<f32> = cb.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect();
        let want = bf16_bits(&g.col2im_ref(&decoded));
        assert_eq!(run_conv(&lib, "run_col2im_bf16", &g, &cb, g.x_len()), want, "col2im_bf16 case {case}");
    }
}

// =============================================================================================
// pool.cu

const POOL_EXPORTS: &str = r#"
extern "C" void run_maxpool2d_fwd(unsigned g, unsigned b, long long nc, int h, int w, int k, int s, int p, int oh, int ow,
                                  const float* x, float* y, long long* arg) {
    sdm_emu_launch(maxpool2d_fwd, g, b, nc, h, w, k, s, p, oh, ow, x, y, arg);
}
extern "C" void run_maxpool2d_bwd(unsigned g, unsigned b, long long nc, int h, int w, int k, int s, int p, int oh, int ow,
                                  const long long* arg, const float* gy, float* gx) {
    sdm_emu_launch(maxpool2d_bwd, g, b, nc, h, w, k, s, p, oh, ow, arg, gy, gx);
}
extern "C" void run_avgpool2d_fwd(unsigned g, unsigned b, long long nc, int h, int w, int k, int s, int p, int cip, int oh,
                                  int ow, const float* x, float* y) {
    sdm_emu_launch(avgpool2d_fwd, g, b, nc, h, w, k, s, p, cip, oh, ow, x, y);
}
extern "C" void run_avgpool2d_bwd(unsigned g, unsigned b, long long nc, int h, int w, int k, int s, int p, int cip, int oh,
                                  int ow, const float* gy, float* gx) {
    sdm_emu_launch(avgpool2d_bwd, g, b, nc, h, w, k, s, p, cip, oh, ow, gy, gx);
}
extern "C" void run_upsample_fwd(unsigned g, unsigned b, long long nc, int h, int w, int f, const float* x, float* y) {
    sdm_emu_launch(upsample_nearest2d_fwd, g, b, nc, h, w, f, x, y);
}
extern "C" void run_upsample_bwd(unsigned g, unsigned b, long long nc, int h, int w, int f, const float* gy, float* gx) {
    sdm_emu_launch(upsample_nearest2d_bwd, g, b, nc, h, w, f, gy, gx);
}
extern "C" void run_resize_bilinear(unsigned g, unsigned b, long long nc, int h, int w, int oh, int ow, const float* x, float* y) {
    sdm_emu_launch(resize_bilinear_fwd, g, b, nc, h, w, oh, ow, x, y);
}
"#;

/// (h, w, k, s, p) with p ≤ k/2 as the CPU requires; includes s > k (pixels no window reads).
const POOL_CASES: &[(usize, usize, usize, usize, usize)] = &[
    (7, 9, 3, 2, 0),
    (8, 8, 3, 1, 1),
    (5, 6, 2, 2, 1),
    (9, 7, 3, 2, 1),
    (4, 4, 1, 1, 0),
    (13, 11, 5, 3, 2),
    (10, 9, 2, 3, 1),
    (3, 5, 3, 3, 1),
];

fn pool_out(len: usize, k: usize, s: usize, p: usize) -> usize {
    (len + 2 * p - k) / s + 1
}

/// The input gradient of `f(x)` for upstream gradient `gy`, by sparsedm-tensor's autograd.
fn cpu_grad(x: &[f32], shape: &[usize], gy: &[f32], f: impl Fn(&Tensor) -> Tensor) -> Vec<f32> {
    let xv = tensor(x, shape).to_var();
    let y = f(&xv);
    let grads: GradStore = y.mul(&tensor(gy, y.shape())).unwrap().sum_all().unwrap().backward().unwrap();
    grads.get(&xv).unwrap().to_vec_f32().unwrap()
}

#[test]
fn max_pool_forward_argmax_and_backward_match_the_cpu() {
    let Some(lib) = emu::compile("pool", POOL_EXPORTS) else { return };
    type Fwd = unsafe extern "C" fn(u32, u32, i64, i32, i32, i32, i32, i32, i32, i32, *const f32, *mut f32, *mut i64);
    type Bwd = unsafe extern "C" fn(u32, u32, i64, i32, i32, i32, i32, i32, i32, i32, *const i64, *const f32, *mut f32);
    // SAFETY: the wrappers in POOL_EXPORTS have exactly these signatures.
    let (fwd, bwd): (Fwd, Bwd) = unsafe { (lib.get("run_maxpool2d_fwd"), lib.get("run_maxpool2d_bwd")) };
    for (case, &(h, w, k, s, p)) in POOL_CASES.iter().enumerate() {
        let (n, c) = (2, 3);
        let (oh, ow) = (pool_out(h, k, s, p), pool_out(w, k, s, p));
        let x = tie_heavy(n * c * h * w, 7 + case as u64);
        let out_len = n * c * oh * ow;
        let (mut y, mut arg) = (vec![0f32; out_len], vec![0i64; out_len]);
        let d = [h, w, k, s, p, oh, ow].map(|v| v as i32);
        // SAFETY: x holds nc·h·w floats, y and arg nc·oh·ow elements each.
        unsafe {
            fwd(
                grid(out_len),
                BLOCK,
                (n * c) as i64,
                d[0],
                d[1],
                d[2],
                d[3],
                d[4],
                d[5],
                d[6],
                x.as_ptr(),
                y.as_mut_ptr(),
                arg.as_mut_ptr(),
            )
        };
        let xt = tensor(&x, &[n, c, h, w]);
        assert_bits(&y, &xt.max_pool2d(k, s, p).unwrap().to_vec_f32().unwrap(), &format!("maxpool values case {case}"));
        assert_bits(&y, &xt.to_var().max_pool2d(k, s, p).unwrap().to_vec_f32().unwrap(), &format!("maxpool tracked values case {case}"));
        // The argmax by the CPU's rule: first strictly greater in row-major window order, NaN wins.
        for (j, &a) in arg.iter().enumerate() {
            let (pl, oy, ox) = (j / (oh * ow), j / ow % oh, j % ow);
            let plane = &x[pl * h * w..(pl + 1) * h * w];
            let (mut best, mut bi) = (f32::NEG_INFINITY, usize::MAX);
            for iy in (oy * s).saturating_sub(p)..(oy * s + k).saturating_sub(p).min(h) {
                for ix in (ox * s).saturating_sub(p)..(ox * s + k).saturating_sub(p).min(w) {
                    let v = plane[iy * w + ix];
                    if v > best || bi == usize::MAX || (v.is_nan() && !best.is_nan()) {
                        (best, bi) = (v, iy * w + ix);
                    }
                }
            }
            assert_eq!(a, bi as i64, "maxpool argmax case {case} output {j}");
        }
        let gy = values(out_len, 70 + case as u64);
        let mut gx = vec![f32::NAN; x.len()];
        // SAFETY: arg and gy hold nc·oh·ow elements, gx nc·h·w.
        unsafe {
            bwd(grid(x.len()), BLOCK, (n * c) as i64, d[0], d[1], d[2], d[3], d[4], d[5], d[6], arg.as_ptr(), gy.as_ptr(), gx.as_mut_ptr())
        };
        let want = cpu_grad(&x, &[n, c, h, w], &gy, |t| t.max_pool2d(k, s, p).unwrap());
        assert_bits(&gx, &want, &format!("maxpool backward case {case}"));
    }
}

#[test]
fn avg_pool_forward_and_backward_match_the_cpu_bitwise() {
    let Some(lib) = emu::compile("pool", POOL_EXPORTS) else { return };
    type Fn_ = unsafe extern "C" fn(u32, u32, i64, i32, i32, i32, i32, i32, i32, i32, i32, *const f32, *mut f32);
    // SAFETY: both wrappers in POOL_EXPORTS have this signature.
    let (fwd, bwd): (Fn_, Fn_) = unsafe { (lib.get("run_avgpool2d_fwd"), lib.get("run_avgpool2d_bwd")) };
    for (case, &(h, w, k, s, p)) in POOL_CASES.iter().enumerate() {
        for include_pad in [false, true] {
            let (n, c) = (2, 2);
            let (oh, ow) = (pool_out(h, k, s, p), pool_out(w, k, s, p));
            let mut x = values(n * c * h * w, 17 + case as u64);
            x[1] = -0.0; // a −0 window start: the CPU's row sums start from the first element
            let out_len = n * c * oh * ow;
            let d = [h, w, k, s, p, usize::from(include_pad), oh, ow].map(|v| v as i32);
            let mut y = vec![f32::NAN; out_len];
            // SAFETY: x holds nc·h·w floats, y nc·oh·ow.
            unsafe {
                fwd(grid(out_len), BLOCK, (n * c) as i64, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], x.as_ptr(), y.as_mut_ptr())
            };
            let want = tensor(&x, &[n, c, h, w]).avg_pool2d(k, s, p, include_pad).unwrap().to_vec_f32().unwrap();
            assert_bits(&y, &want, &format!("avgpool case {case} pad {include_pad}"));
            let gy = values(out_len, 90 + case as u64);
            let mut gx = vec![f32::NAN; x.len()];
            // SAFETY: gy holds nc·oh·ow floats, gx nc·h·w.
            unsafe {
                bwd(grid(x.len()), BLOCK, (n * c) as i64, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], gy.as_ptr(), gx.as_mut_ptr())
            };
            let want = cpu_grad(&x, &[n, c, h, w], &gy, |t| t.avg_pool2d(k, s, p, include_pad).unwrap());
            assert_bits(&gx, &want, &format!("avgpool backward case {case} pad {include_pad}"));
        }
    }
}

#[test]
fn nearest_upsampling_and_its_backward_match_the_cpu_bitwise() {
    let Some(lib) = emu::compile("pool", POOL_EXPORTS) else { return };
    type Fn_ = unsafe extern "C" fn(u32, u32, i64, i32, i32, i32, *const f32, *mut f32);
    // SAFETY: both wrappers in POOL_EXPORTS have this signature.
    let (fwd, bwd): (Fn_, Fn_) = unsafe { (lib.get("run_upsample_fwd"), lib.get("run_upsample_bwd")) };
    for &(n, c, h, w, f) in &[(2, 3, 5, 7, 2), (1, 2, 3, 3, 3), (2, 1, 4, 6, 1), (1, 1, 1, 1, 4)] {
        let x = tie_heavy(n * c * h * w, (h * w * f) as u64);
        let out_len = n * c * h * f * w * f;
        let mut y = vec![f32::NAN; out_len];
        // SAFETY: x holds nc·h·w floats, y nc·(h·f)·(w·f).
        unsafe { fwd(grid(out_len), BLOCK, (n * c) as i64, h as i32, w as i32, f as i32, x.as_ptr(), y.as_mut_ptr()) };
        assert_bits(&y, &tensor(&x, &[n, c, h, w]).upsample_nearest2d(f).unwrap().to_vec_f32().unwrap(), &format!("upsample {h}x{w} f{f}"));
        let gy = values(out_len, 5);
        let mut gx = vec![f32::NAN; x.len()];
        // SAFETY: gy holds nc·(h·f)·(w·f) floats, gx nc·h·w.
        unsafe { bwd(grid(x.len()), BLOCK, (n * c) as i64, h as i32, w as i32, f as i32, gy.as_ptr(), gx.as_mut_ptr()) };
        let want = cpu_grad(&values(x.len(), 1), &[n, c, h, w], &gy, |t| t.upsample_nearest2d(f).unwrap());
        assert_bits(&gx, &want, &format!("upsample backward {h}x{w} f{f}"));
    }
}

#[test]
fn bilinear_resize_matches_the_cpu_bitwise() {
    let Some(lib) = emu::compile("pool", POOL_EXPORTS) else { return };
    // SAFETY: the wrapper in POOL_EXPORTS has this signature.
    let run: unsafe extern "C" fn(u32, u32, i64, i32, i32, i32, i32, *const f32, *mut f32) = unsafe { lib.get("run_resize_bilinear") };
    for &(h, w, oh, ow) in &[(7, 5, 16, 9), (16, 16, 5, 7), (1, 1, 3, 2), (8, 8, 8, 8), (5, 9, 299, 3), (32, 32, 299, 299)] {
        let nc = 3;
        let x = values(nc * h * w, (h * 31 + w) as u64);
        let mut y = vec![f32::NAN; nc * oh * ow];
        // SAFETY: x holds nc·h·w floats, y nc·oh·ow.
        unsafe { run(grid(y.len()), BLOCK, nc as i64, h as i32, w as i32, oh as i32, ow as i32, x.as_ptr(), y.as_mut_ptr()) };
        let want = tensor(&x, &[1, nc, h, w]).resize_bilinear(oh, ow).unwrap().to_vec_f32().unwrap();
        assert_bits(&y, &want, &format!("resize {h}x{w} -> {oh}x{ow}"));
    }
}

// =============================================================================================
// index.cu

const INDEX_EXPORTS: &str = r#"
#define SDM_INDEX_WRAPPER(SUFFIX, T, H)                                                                       \
    extern "C" void run_index_select_##SUFFIX(unsigned g, unsigned b, long long outer, long long n_idx,       \
                                              long long inner, long long src_dim, const long long* idx,       \
                                              const H* x, H* y) {                                             \
        sdm_emu_launch(index_select_##SUFFIX, g, b, outer, n_idx, inner, src_dim, idx,                        \
                       reinterpret_cast<const T*>(x), reinterpret_cast<T*>(y));                               \
    }
SDM_INDEX_WRAPPER(f32, float, float)
SDM_INDEX_WRAPPER(f16, __half, unsigned short)
SDM_INDEX_WRAPPER(bf16, __nv_bfloat16, unsigned short)
extern "C" void run_index_add_bwd(unsigned g, unsigned b, long long outer, long long n_idx, long long inner,
                                  long long dst_dim, const long long* idx, const float* gy, float* gx) {
    sdm_emu_launch(index_add_bwd, g, b, outer, n_idx, inner, dst_dim, idx, gy, gx);
}
"#;

type SelectFn<T> = unsafe extern "C" fn(u32, u32, i64, i64, i64, i64, *const i64, *const T, *mut T);

fn index_select_kernel<T: Copy + Default>(
    lib: &emu::Lib,
    name: &str,
    (outer, dim, inner): (usize, usize, usize),
    idx: &[i64],
    x: &[T],
) -> Vec<T> {
    assert_eq!(x.len(), outer * dim * inner);
    // SAFETY: run_index_select_* have the `SelectFn<T>` signature (T = f32, or u16 storage).
    let f: SelectFn<T> = unsafe { lib.get(name) };
    let mut y = vec![T::default(); outer * idx.len() * inner];
    // SAFETY: x holds outer·dim·inner elements, y outer·n_idx·inner, every index is in [0, dim).
    unsafe { f(grid(y.len()), BLOCK, outer as i64, idx.len() as i64, inner as i64, dim as i64, idx.as_ptr(), x.as_ptr(), y.as_mut_ptr()) };
    y
}

#[test]
fn index_select_and_its_backward_match_the_cpu() {
    let Some(lib) = emu::compile("index", INDEX_EXPORTS) else { return };
    // SAFETY: the wrapper in INDEX_EXPORTS has this signature.
    let bwd: unsafe extern "C" fn(u32, u32, i64, i64, i64, i64, *const i64, *const f32, *mut f32) = unsafe { lib.get("run_index_add_bwd") };
    let shape = [3, 7, 5];
    let x = values(shape.iter().product(), 3);
    // Repeated indices (gradient rows add up), an unselected row (gradient 0), and an empty list.
    let idx_lists: [&[i64]; 3] = [&[4, 0, 4, 6, 2, 4, 4, 1, 4, 6, 4], &[1], &[]];
    for dim in 0..3 {
        let outer: usize = shape[..dim].iter().product();
        let inner: usize = shape[dim + 1..].iter().product();
        for idx in idx_lists {
            let idx: Vec<i64> = idx.iter().map(|&i| i % shape[dim] as i64).collect();
            let dims = (outer, shape[dim], inner);
            let y = index_select_kernel(&lib, "run_index_select_f32", dims, &idx, &x);
            if idx.is_empty() {
                // (The CPU op cannot take an empty index tensor: to_vec_i64 of an empty tensor
                // panics in sparsedm-tensor, so the kernel is checked on its own here.)
                assert!(y.is_empty());
                let mut gx = vec![f32::NAN; x.len()];
                // SAFETY: no gradient rows are read; gx holds outer·dim·inner floats.
                unsafe {
                    bwd(grid(gx.len()), BLOCK, outer as i64, 0, inner as i64, shape[dim] as i64, idx.as_ptr(), y.as_ptr(), gx.as_mut_ptr())
                };
                assert!(gx.iter().all(|&v| v.to_bits() == 0), "index_add_bwd with no indices must write zeros");
                continue;
            }
            let it = Tensor::from_vec_i64(idx.clone(), &[idx.len()], &CPU).unwrap();
            let want = tensor(&x, &shape).index_select(dim, &it).unwrap().to_vec_f32().unwrap();
            assert_bits(&y, &want, &format!("index_select dim {dim} idx {idx:?}"));
            let xh = f16_bits(&x);
            assert_eq!(index_select_kernel(&lib, "run_index_select_f16", dims, &idx, &xh), f16_bits(&want), "index_select_f16 dim {dim}");
            let xb = bf16_bits(&x);
            assert_eq!(
                index_select_kernel(&lib, "run_index_select_bf16", dims, &idx, &xb),
                bf16_bits(&want),
                "index_select_bf16 dim {dim}"
            );

            // Magnitudes spread over six decades: a different summation order changes the bits.
            let gy: Vec<f32> = values(y.len(), 9).iter().enumerate().map(|(i, v)| v * 10f32.powi((i % 7) as i32 - 3)).collect();
            let mut gx = vec![f32::NAN; x.len()];
            // SAFETY: gy holds outer·n_idx·inner floats, gx outer·dim·inner; indices in range.
            unsafe {
                bwd(
                    grid(gx.len()),
                    BLOCK,
                    outer as i64,
                    idx.len() as i64,
                    inner as i64,
                    shape[dim] as i64,
                    idx.as_ptr(),
                    gy.as_ptr(),
                    gx.as_mut_ptr(),
                )
            };
            let want = cpu_grad(&x, &shape, &gy, |t| t.index_select(dim, &it).unwrap());
            assert_bits(&gx, &want, &format!("index_add_bwd dim {dim} idx {idx:?}"));
        }
    }
    // Embedding lookup = index_select along dim 0 of the table.
    let table = values(11 * 6, 4);
    let ids: Vec<i64> = vec![3, 10, 0, 3, 7, 7, 1];
    let idt = Tensor::from_vec_i64(ids.clone(), &[ids.len()], &CPU).unwrap();
    let y = index_select_kernel(&lib, "run_index_select_f32", (1, 11, 6), &ids, &table);
    assert_bits(&y, &tensor(&table, &[11, 6]).embedding(&idt).unwrap().to_vec_f32().unwrap(), "embedding");
}

// =============================================================================================
// sparse.cu

const SPARSE_EXPORTS: &str = r#"
extern "C" void run_nm_mask(unsigned g, unsigned b, long long rows, long long inp, long long k, int n, int m,
                            const float* w, float* mask) {
    sdm_emu_launch(nm_mask, g, b, rows, inp, k, n, m, w, mask);
}
extern "C" void run_srste_grad(unsigned g, unsigned b, long long n, float lambda, const float* gr, const float* w,
                               const float* mask, float* out) {
    sdm_emu_launch(srste_grad, g, b, n, lambda, gr, w, mask, out);
}
#define SDM_MASKED_WRAPPER(SUFFIX, T, H)                                                                     \
    extern "C" void run_masked_weight_##SUFFIX(unsigned g, unsigned b, long long n, const float* w,          \
                                               const float* mask, H* y) {                                    \
        sdm_emu_launch(masked_weight_##SUFFIX, g, b, n, w, mask, reinterpret_cast<T*>(y));                   \
    }
SDM_MASKED_WRAPPER(f32, float, float)
SDM_MASKED_WRAPPER(f16, __half, unsigned short)
SDM_MASKED_WRAPPER(bf16, __nv_bfloat16, unsigned short)
"#;

type MaskFn = unsafe extern "C" fn(u32, u32, i64, i64, i64, i32, i32, *const f32, *mut f32);

fn nm_mask_kernel(f: MaskFn, w: &[f32], (rows, inp, k): (usize, usize, usize), n: usize, m: usize) -> Vec<f32> {
    assert_eq!(w.len(), rows * inp * k);
    assert_eq!(inp % m, 0);
    let mut mask = vec![f32::NAN; w.len()];
    // SAFETY: w and mask hold rows·inp·k floats; inp % m == 0 and m ≤ 32 as the kernel requires.
    unsafe { f(emu::grid(w.len() / m, 64, 4), 64, rows as i64, inp as i64, k as i64, n as i32, m as i32, w.as_ptr(), mask.as_mut_ptr()) };
    mask
}

#[test]
fn nm_mask_equals_sparsedm_layers_mask_for_every_pattern() {
    let Some(lib) = emu::compile("sparse", SPARSE_EXPORTS) else { return };
    // SAFETY: the wrapper in SPARSE_EXPORTS has the `MaskFn` signature.
    let f: MaskFn = unsafe { lib.get("run_nm_mask") };
    // Every n:m with m ≤ 32 on a Linear and on a 2-tap conv, values full of ties and specials.
    for m in 1..=32usize {
        for n in 1..=m {
            for (kh, kw) in [(1, 1), (1, 2)] {
                let (rows, inp) = (3, 2 * m);
                let layout =
                    if (kh, kw) == (1, 1) { WeightLayout::linear(rows, inp) } else { WeightLayout::conv2d(rows, inp, kh, kw) }.unwrap();
                let w = tie_heavy(layout.numel(), (m * 64 + n) as u64);
                let (want, _) = compute_mask(&w, layout, NmPattern::new(n, m).unwrap(), NonDivisible::LeaveDense).unwrap();
                let got = nm_mask_kernel(f, &w, (rows, inp, kh * kw), n, m);
                assert_bits(&got, &want, &format!("{n}:{m} {kh}x{kw}"));
            }
        }
    }
    // Realistic conv layouts with continuous values, and the mask.rs unit cases.
    for &(o, i, kh, kw, n, m) in
        &[(8, 16, 3, 3, 2, 4), (5, 24, 3, 3, 1, 8), (4, 64, 1, 1, 2, 4), (3, 32, 5, 5, 4, 16), (6, 12, 3, 1, 2, 3), (2, 64, 3, 3, 8, 32)]
    {
        let layout = WeightLayout::conv2d(o, i, kh, kw).unwrap();
        let w = values(layout.numel(), (o * i) as u64);
        let (want, _) = compute_mask(&w, layout, NmPattern::new(n, m).unwrap(), NonDivisible::LeaveDense).unwrap();
        assert_bits(&nm_mask_kernel(f, &w, (o, i, kh * kw), n, m), &want, &format!("conv [{o},{i},{kh},{kw}] {n}:{m}"));
    }
    let unit: [(&[f32], usize, &[f32]); 3] = [
        (&[1.0, -1.0, 1.0, 0.5], 1, &[1.0, 1.0, 0.0, 0.0]),
        (&[0.0, -0.0, 0.0, 0.0], 1, &[1.0, 1.0, 0.0, 0.0]),
        (&[f32::INFINITY, 1.0, f32::NAN, -2.0], 1, &[1.0, 0.0, 1.0, 0.0]),
    ];
    for (w, k, want) in unit {
        assert_bits(&nm_mask_kernel(f, w, (1, 4, k), 2, 4), want, &format!("2:4 of {w:?}"));
    }
    let strided = [1.0, 4.0, 2.0, 3.0, 3.0, 2.0, 4.0, 1.0];
    assert_bits(&nm_mask_kernel(f, &strided, (1, 4, 2), 1, 4), &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0], "strided 1:4");
}

#[test]
fn srste_gradient_and_masked_weights_match_the_cpu() {
    let Some(lib) = emu::compile("sparse", SPARSE_EXPORTS) else { return };
    // SAFETY: the wrappers in SPARSE_EXPORTS have these signatures (u16 = 16-bit storage).
    let (mask_fn, srste, mw32, mw16, mwb16) = unsafe {
        (
            lib.get::<MaskFn>("run_nm_mask"),
            lib.get::<unsafe extern "C" fn(u32, u32, i64, f32, *const f32, *const f32, *const f32, *mut f32)>("run_srste_grad"),
            lib.get::<unsafe extern "C" fn(u32, u32, i64, *const f32, *const f32, *mut f32)>("run_masked_weight_f32"),
            lib.get::<unsafe extern "C" fn(u32, u32, i64, *const f32, *const f32, *mut u16)>("run_masked_weight_f16"),
            lib.get::<unsafe extern "C" fn(u32, u32, i64, *const f32, *const f32, *mut u16)>("run_masked_weight_bf16"),
        )
    };
    let (o, i, kh, kw) = (6, 16, 3, 3);
    let len = o * i * kh * kw;
    let mut w = values(len, 21);
    w[7] = -0.0;
    let g = values(len, 22);
    let mask = nm_mask_kernel(mask_fn, &w, (o, i, kh * kw), 2, 4);
    for lambda in [2e-4f32, 0.37, 0.0] {
        let mut out = vec![f32::NAN; len];
        // SAFETY: g, w, mask and out hold `len` floats each.
        unsafe { srste(grid(len), BLOCK, len as i64, lambda, g.as_ptr(), w.as_ptr(), mask.as_ptr(), out.as_mut_ptr()) };
        // sparsedm-layers' straight-through gradient: g + w ⊙ (−λ·m + λ).
        let wt = tensor(&w, &[len]);
        let decay = wt.mul(&tensor(&mask, &[len]).affine(-lambda, lambda).unwrap()).unwrap();
        let want = tensor(&g, &[len]).add(&decay).unwrap().to_vec_f32().unwrap();
        assert_bits(&out, &want, &format!("srste_grad λ={lambda}"));
    }
    let dense = tensor(&w, &[len]).mul(&tensor(&mask, &[len])).unwrap().to_vec_f32().unwrap();
    let mut y = vec![f32::NAN; len];
    let mut yh = vec![0u16; len];
    let mut yb = vec![0u16; len];
    // SAFETY: w and mask hold `len` floats, the outputs `len` elements of their storage type.
    unsafe {
        mw32(grid(len), BLOCK, len as i64, w.as_ptr(), mask.as_ptr(), y.as_mut_ptr());
        mw16(grid(len), BLOCK, len as i64, w.as_ptr(), mask.as_ptr(), yh.as_mut_ptr());
        mwb16(grid(len), BLOCK, len as i64, w.as_ptr(), mask.as_ptr(), yb.as_mut_ptr());
    }
    assert_bits(&y, &dense, "masked_weight_f32");
    assert_eq!(yh, f16_bits(&dense), "masked_weight_f16");
    assert_eq!(yb, bf16_bits(&dense), "masked_weight_bf16");
}

// =============================================================================================
// optim.cu

const OPTIM_EXPORTS: &str = r#"
extern "C" void run_adamw_step(unsigned g, unsigned b, long long n, float lr, float beta1, float beta2, float eps,
                               float decay, float step_size, float bc2_sqrt, float* p, const float* gr, float* m, float* v) {
    sdm_emu_launch(adamw_step, g, b, n, lr, beta1, beta2, eps, decay, step_size, bc2_sqrt, p, gr, m, v);
}
extern "C" void run_ema_update(unsigned g, unsigned b, long long n, float d, float* ema, const float* p) {
    sdm_emu_launch(ema_update, g, b, n, d, ema, p);
}
"#;

#[test]
fn adamw_steps_match_sparsedm_train_bitwise() {
    let Some(lib) = emu::compile("optim", OPTIM_EXPORTS) else { return };
    type Step = unsafe extern "C" fn(u32, u32, i64, f32, f32, f32, f32, f32, f32, f32, *mut f32, *const f32, *mut f32, *mut f32);
    // SAFETY: the wrapper in OPTIM_EXPORTS has this signature.
    let step: Step = unsafe { lib.get("run_adamw_step") };
    let len = 1000;
    let cfg = AdamWConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.03 };
    let p0 = values(len, 31);
    let param = tensor(&p0, &[10, 100]).to_var();
    let mut opt = AdamW::new(vec![("p".to_string(), param.clone())], cfg);
    let (mut p, mut m, mut v) = (p0.clone(), vec![0f32; len], vec![0f32; len]);
    for (t, lr) in [(1, 1e-3f32), (2, 7e-4), (3, 2e-4), (4, 1e-2), (5, 5e-3)] {
        let mut g = values(len, 40 + t as u64);
        g[0] = 0.0;
        g[1] = -1e-30;
        let mut grads = GradStore::default();
        grads.insert(&param, tensor(&g, &[10, 100]));
        opt.step(&grads, lr).unwrap();
        // The host side of the launch, as optim.rs computes it.
        let (b1, b2) = cfg.betas;
        let bc1 = 1.0 - f64::from(b1).powi(t);
        let bc2_sqrt = (1.0 - f64::from(b2).powi(t)).sqrt() as f32;
        let step_size = (f64::from(lr) / bc1) as f32;
        let decay = 1.0 - lr * cfg.weight_decay;
        // SAFETY: p, g, m and v hold `len` floats each.
        unsafe {
            step(
                grid(len),
                BLOCK,
                len as i64,
                lr,
                b1,
                b2,
                cfg.eps,
                decay,
                step_size,
                bc2_sqrt,
                p.as_mut_ptr(),
                g.as_ptr(),
                m.as_mut_ptr(),
                v.as_mut_ptr(),
            )
        };
        assert_bits(&p, &param.to_vec_f32().unwrap(), &format!("AdamW parameters after step {t}"));
        let state = opt.state_tensors().unwrap();
        let get = |name: &str| state.iter().find(|(n, _)| n == name).unwrap().1.to_vec_f32().unwrap();
        assert_bits(&m, &get("optim.exp_avg.p"), &format!("exp_avg after step {t}"));
        assert_bits(&v, &get("optim.exp_avg_sq.p"), &format!("exp_avg_sq after step {t}"));
    }
}

#[test]
fn ema_updates_match_sparsedm_train_bitwise() {
    let Some(lib) = emu::compile("optim", OPTIM_EXPORTS) else { return };
    // SAFETY: the wrapper in OPTIM_EXPORTS has this signature.
    let update: unsafe extern "C" fn(u32, u32, i64, f32, *mut f32, *const f32) = unsafe { lib.get("run_ema_update") };
    let len = 777;
    let start = values(len, 61);
    for decay in [0.9999f32, 0.999, 0.5, 0.0, 1.0] {
        let mut ema = Ema::new(&[("w".to_string(), tensor(&start, &[len]))], decay).unwrap();
        let mut shadow = start.clone();
        for t in 0..3 {
            let cur = values(len, 70 + t);
            ema.update(&[("w".to_string(), tensor(&cur, &[len]))]).unwrap();
            // SAFETY: shadow and cur hold `len` floats.
            unsafe { update(grid(len), BLOCK, len as i64, decay, shadow.as_mut_ptr(), cur.as_ptr()) };
            assert_bits(&shadow, &ema.tensors()[0].1.to_vec_f32().unwrap(), &format!("EMA decay {decay} update {t}"));
        }
    }
}
