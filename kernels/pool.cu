// Module `pool` (kernels/ABI.md): pooling and resampling of `[NC, H, W]` planes, f32.
//
// One thread per output element everywhere; the backward kernels are in gather form (each input
// pixel sums the output gradients that depend on it), so no atomics are needed and every result is
// deterministic. Each kernel adds in the same order as sparsedm-tensor/src/ops/pool.rs and uses
// IEEE-rounded intrinsics where nvcc could otherwise contract a·b + c into an FMA, so the GPU
// reproduces the CPU's values bit for bit (given a build without fast-math flush-to-zero).
#include "sdm_common.cuh"

namespace {

__device__ __forceinline__ bool pool_isnan(float v) { return v != v; }

// First and last window index along an axis (stride s, padding p, kernel k, n windows) whose
// window [o·s − p, o·s − p + k) contains input coordinate i; empty when lo > hi.
__device__ __forceinline__ void windows_containing(int i, int k, int s, int p, int n, int* lo, int* hi) {
    const int first = i + p - k + 1;  // o·s ≥ first
    *lo = first <= 0 ? 0 : (first + s - 1) / s;
    const int last = (i + p) / s;     // o·s ≤ i + p (i + p ≥ 0)
    *hi = last < n - 1 ? last : n - 1;
}

// The window of output `o` along an axis of length `len`, as avg_pool2d's CPU `window`: clipped
// bounds [a, b) and the size of the window clipped to the padded input (count_include_pad).
__device__ __forceinline__ void avg_window(int o, int len, int k, int s, int p, int* a, int* b, int* padded) {
    const int start = o * s - p;
    const int end = start + k < len + p ? start + k : len + p;
    *padded = end - start;
    *a = start > 0 ? start : 0;
    *b = end < len ? end : len;
}

__device__ __forceinline__ float avg_divisor(int oy, int ox, int h, int w, int k, int s, int p, int count_include_pad,
                                             int* h0, int* h1, int* w0, int* w1) {
    int hp, wp;
    avg_window(oy, h, k, s, p, h0, h1, &hp);
    avg_window(ox, w, k, s, p, w0, w1, &wp);
    int d = count_include_pad ? hp * wp : (*h1 - *h0) * (*w1 - *w0);
    return (float)(d > 1 ? d : 1);
}

// ATen's area_pixel_compute_source_index (align_corners=False) as the CPU's `source_indices`:
// the two source indices of output `o` and the weight of the second.
__device__ __forceinline__ void bilinear_source(int o, int in, int out, int* i0, int* i1, float* lambda) {
    const float scale = __fdiv_rn((float)in, (float)out);
    float src = __fsub_rn(__fmul_rn(scale, __fadd_rn((float)o, 0.5f)), 0.5f);
    src = src > 0.0f ? src : 0.0f;
    int j = (int)src;
    j = j < in - 1 ? j : in - 1;
    *i0 = j;
    *i1 = j < in - 1 ? j + 1 : j;
    *lambda = __fsub_rn(src, (float)j);
}

}  // namespace

// y = max over each k×k window (padding −∞ never wins); arg = in-plane flat index of the first
// maximum in row-major window order, a NaN beating every number.
extern "C" __global__ void maxpool2d_fwd(long long nc, int h, int w, int k, int s, int p, int oh, int ow,
                                         const float* __restrict__ x, float* __restrict__ y, long long* __restrict__ arg) {
    const long long total = nc * oh * (long long)ow;
    SDM_GRID_STRIDE(i, total) {
        const long long t = i / ow;
        const int ox = (int)(i - t * ow);
        const long long pl = t / oh;
        const int oy = (int)(t - pl * oh);
        const float* plane = x + pl * h * (long long)w;
        float best = __int_as_float(0xff800000);  // −∞
        long long bi = -1;
        for (int ky = 0; ky < k; ++ky) {
            const int iy = oy * s + ky - p;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; ++kx) {
                const int ix = ox * s + kx - p;
                if (ix < 0 || ix >= w) continue;
                const long long idx = (long long)iy * w + ix;
                const float v = plane[idx];
                if (v > best || bi < 0 || (pool_isnan(v) && !pool_isnan(best))) {
                    best = v;
                    bi = idx;
                }
            }
        }
        y[i] = best;
        arg[i] = bi;
    }
}

// gx[pixel] = Σ gy over the windows (in row-major output order) whose argmax is that pixel.
extern "C" __global__ void maxpool2d_bwd(long long nc, int h, int w, int k, int s, int p, int oh, int ow,
                                         const long long* __restrict__ arg, const float* __restrict__ gy,
                                         float* __restrict__ gx) {
    const long long total = nc * h * (long long)w;
    SDM_GRID_STRIDE(i, total) {
        const long long t = i / w;
        const int ix = (int)(i - t * w);
        const long long pl = t / h;
        const int iy = (int)(t - pl * h);
        const long long me = (long long)iy * w + ix;
        int y0, y1, x0, x1;
        windows_containing(iy, k, s, p, oh, &y0, &y1);
        windows_containing(ix, k, s, p, ow, &x0, &x1);
        float acc = 0.0f;
        for (int oy = y0; oy <= y1; ++oy) {
            for (int ox = x0; ox <= x1; ++ox) {
                const long long j = (pl * oh + oy) * ow + ox;
                if (arg[j] == me) acc += gy[j];
            }
        }
        gx[i] = acc;
    }
}

// PyTorch avg_pool2d (ceil_mode=False): the window sum, row by row and each row left to right as
// the CPU's separable sum, divided by the window size (clipped to the padded input when
// count_include_pad, else to the input).
extern "C" __global__ void avgpool2d_fwd(long long nc, int h, int w, int k, int s, int p, int count_include_pad, int oh,
                                         int ow, const float* __restrict__ x, float* __restrict__ y) {
    const long long total = nc * oh * (long long)ow;
    SDM_GRID_STRIDE(i, total) {
        const long long t = i / ow;
        const int ox = (int)(i - t * ow);
        const long long pl = t / oh;
        const int oy = (int)(t - pl * oh);
        const float* plane = x + pl * h * (long long)w;
        int h0, h1, w0, w1;
        const float d = avg_divisor(oy, ox, h, w, k, s, p, count_include_pad, &h0, &h1, &w0, &w1);
        float acc = 0.0f;
        for (int iy = h0; iy < h1; ++iy) {
            const float* row = plane + (long long)iy * w;
            float r = row[w0];
            for (int ix = w0 + 1; ix < w1; ++ix) r += row[ix];
            acc += r;
        }
        y[i] = acc / d;
    }
}

// gx[pixel] = Σ gy[window] / divisor(window) over the windows containing the pixel, in row-major
// output order.
extern "C" __global__ void avgpool2d_bwd(long long nc, int h, int w, int k, int s, int p, int count_include_pad, int oh,
                                         int ow, const float* __restrict__ gy, float* __restrict__ gx) {
    const long long total = nc * h * (long long)w;
    SDM_GRID_STRIDE(i, total) {
        const long long t = i / w;
        const int ix = (int)(i - t * w);
        const long long pl = t / h;
        const int iy = (int)(t - pl * h);
        int y0, y1, x0, x1;
        windows_containing(iy, k, s, p, oh, &y0, &y1);
        windows_containing(ix, k, s, p, ow, &x0, &x1);
        float acc = 0.0f;
        for (int oy = y0; oy <= y1; ++oy) {
            for (int ox = x0; ox <= x1; ++ox) {
                int a, b, c, e;
                const float d = avg_divisor(oy, ox, h, w, k, s, p, count_include_pad, &a, &b, &c, &e);
                acc += gy[(pl * oh + oy) * ow + ox] / d;
            }
        }
        gx[i] = acc;
    }
}

// y [NC, H·f, W·f]: y[oy, ox] = x[oy / f, ox / f].
extern "C" __global__ void upsample_nearest2d_fwd(long long nc, int h, int w, int f, const float* __restrict__ x,
                                                  float* __restrict__ y) {
    const int oh = h * f, ow = w * f;
    const long long total = nc * oh * (long long)ow;
    SDM_GRID_STRIDE(i, total) {
        const long long t = i / ow;
        const int ox = (int)(i - t * ow);
        const long long pl = t / oh;
        const int oy = (int)(t - pl * oh);
        y[i] = x[(pl * h + oy / f) * w + ox / f];
    }
}

// gx[iy, ix] = Σ of gy's f×f block (rows, then columns, ascending).
extern "C" __global__ void upsample_nearest2d_bwd(long long nc, int h, int w, int f, const float* __restrict__ gy,
                                                  float* __restrict__ gx) {
    const long long oh = (long long)h * f, ow = (long long)w * f;
    const long long total = nc * h * (long long)w;
    SDM_GRID_STRIDE(i, total) {
        const long long t = i / w;
        const int ix = (int)(i - t * w);
        const long long pl = t / h;
        const int iy = (int)(t - pl * h);
        const float* block = gy + (pl * oh + (long long)iy * f) * ow + (long long)ix * f;
        float acc = 0.0f;
        for (int dy = 0; dy < f; ++dy) {
            for (int dx = 0; dx < f; ++dx) acc += block[dy * ow + dx];
        }
        gx[i] = acc;
    }
}

// F.interpolate(mode="bilinear", align_corners=False), no antialiasing: interpolate along W on the
// two source rows, then along H, with the CPU's operation order.
extern "C" __global__ void resize_bilinear_fwd(long long nc, int h, int w, int oh, int ow, const float* __restrict__ x,
                                               float* __restrict__ y) {
    const long long total = nc * oh * (long long)ow;
    SDM_GRID_STRIDE(i, total) {
        const long long t = i / ow;
        const int ox = (int)(i - t * ow);
        const long long pl = t / oh;
        const int oy = (int)(t - pl * oh);
        int h0, h1, w0, w1;
        float lh, lw;
        bilinear_source(oy, h, oh, &h0, &h1, &lh);
        bilinear_source(ox, w, ow, &w0, &w1, &lw);
        const float* plane = x + pl * h * (long long)w;
        const float* r0 = plane + (long long)h0 * w;
        const float* r1 = plane + (long long)h1 * w;
        const float top = __fadd_rn(__fmul_rn(1.0f - lw, r0[w0]), __fmul_rn(lw, r0[w1]));
        const float bot = __fadd_rn(__fmul_rn(1.0f - lw, r1[w0]), __fmul_rn(lw, r1[w1]));
        y[i] = __fadd_rn(__fmul_rn(1.0f - lh, top), __fmul_rn(lh, bot));
    }
}
