// Module `conv` (kernels/ABI.md): the data movement of conv2d as im2col + GEMM.
//
// `im2col` unfolds NCHW images into the GEMM's right operand, `[N, C·kh·kw, oh·ow]`, so the
// forward pass is one (batched) GEMM `W [O, C·kh·kw] × cols`; `col2im` is its adjoint, used by the
// backward pass to fold `Wᵀ × gy` back into an input gradient. Both use one thread per *output*
// element (col2im in gather form: each input pixel sums the column entries that read it, in the
// CPU's order ky, kx ascending, so results are bit-identical to sparsedm-tensor's col2im and
// deterministic without atomics). Consecutive threads write consecutive addresses.
#include "sdm_common.cuh"

// x [n_img, c, h, w] → cols [n_img, c·kh·kw, oh·ow]; cols row `(ch·kh + ky)·kw + kx`, column
// `oy·ow + ox` holds x[ch, oy·sh + ky − ph, ox·sw + kx − pw], or 0 in the padding. A pure copy of
// the storage type (no conversion, so NaN payloads survive).
template <class T>
__device__ __forceinline__ void im2col_impl(long long n_img, int c, int h, int w, int kh, int kw, int sh, int sw, int ph,
                                            int pw, int oh, int ow, const T* __restrict__ x, T* __restrict__ cols) {
    const long long p = (long long)oh * ow;
    const long long ck = (long long)c * kh * kw;
    const long long total = n_img * ck * p;
    SDM_GRID_STRIDE(i, total) {
        const long long q = i / p;
        const int pos = (int)(i - q * p);
        const long long img = q / ck;
        const int row = (int)(q - img * ck);
        const int oy = pos / ow, ox = pos - oy * ow;
        const int kx = row % kw, t = row / kw;
        const int ky = t % kh, ch = t / kh;
        const int iy = oy * sh + ky - ph, ix = ox * sw + kx - pw;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
            cols[i] = x[((img * c + ch) * h + iy) * (long long)w + ix];
        } else {
            sdm_store(cols, i, 0.0f);
        }
    }
}

// cols [n_img, c·kh·kw, oh·ow] → x [n_img, c, h, w], x = im2colᵀ(cols): every input pixel sums,
// in f32 starting from 0 and in (ky, kx) order, the entries of the windows that read it.
template <class T>
__device__ __forceinline__ void col2im_impl(long long n_img, int c, int h, int w, int kh, int kw, int sh, int sw, int ph,
                                            int pw, int oh, int ow, const T* __restrict__ cols, T* __restrict__ x) {
    const long long p = (long long)oh * ow;
    const long long kk = (long long)kh * kw;
    const long long total = n_img * c * (long long)h * w;
    SDM_GRID_STRIDE(i, total) {
        const long long t = i / w;
        const int ix = (int)(i - t * w);
        const long long plane = t / h;  // img·c + ch
        const int iy = (int)(t - plane * h);
        // Row block of this (img, ch): rows (ch·kh + ky)·kw + kx of image img start at plane·kh·kw.
        const T* base = cols + plane * kk * p;
        float acc = 0.0f;
        for (int ky = 0; ky < kh; ++ky) {
            const int ty = iy + ph - ky;
            if (ty < 0 || ty % sh != 0) continue;
            const int oy = ty / sh;
            if (oy >= oh) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int tx = ix + pw - kx;
                if (tx < 0 || tx % sw != 0) continue;
                const int ox = tx / sw;
                if (ox >= ow) continue;
                acc += sdm_load(base, ((long long)ky * kw + kx) * p + (long long)oy * ow + ox);
            }
        }
        sdm_store(x, i, acc);
    }
}

#define SDM_CONV_KERNELS(SUFFIX, T)                                                                                   \
    extern "C" __global__ void im2col_##SUFFIX(long long n_img, int c, int h, int w, int kh, int kw, int sh, int sw, \
                                               int ph, int pw, int oh, int ow, const T* x, T* cols) {             \
        im2col_impl<T>(n_img, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow, x, cols);                                   \
    }                                                                                                               \
    extern "C" __global__ void col2im_##SUFFIX(long long n_img, int c, int h, int w, int kh, int kw, int sh, int sw, \
                                               int ph, int pw, int oh, int ow, const T* cols, T* x) {             \
        col2im_impl<T>(n_img, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow, cols, x);                                   \
    }

SDM_CONV_KERNELS(f32, float)
SDM_CONV_KERNELS(f16, __half)
SDM_CONV_KERNELS(bf16, __nv_bfloat16)
