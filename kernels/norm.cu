// Module `norm`: per-row standardisation (x − mean)·rstd and its backward
// (kernels/ABI.md, "Module norm"). LayerNorm and GroupNorm are this plus an affine map
// done by the element-wise kernels.
//
// One block per row (blocks stride over rows), 256 threads, coalesced block-stride
// passes and deterministic block sums (sdm_reduce.cuh). The variance is two-pass
// (Σ(x − mean)² after the mean), which keeps f32 accurate for rows with a large mean
// where E[x²] − mean² would cancel; the CPU reference does the same in f64.
#include "sdm_common.cuh"
#include "sdm_reduce.cuh"

// mean, rstd = 1/sqrt(var_biased + eps) per row (f32, written for the backward and for
// the host), y = (x − mean)·rstd.
template <typename T>
__device__ void standardize_fwd(long long rows, long long cols, float eps, const T* x, T* y, float* mean,
                                float* rstd) {
    __shared__ float scratch[32];
    const float inv_n = 1.0f / (float)cols;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        float s = 0.0f;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) s += sdm_load(xr, j);
        const float mu = sdm_block_sum(s, scratch) * inv_n;
        float q = 0.0f;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            const float d = sdm_load(xr, j) - mu;
            q += d * d;
        }
        const float var = sdm_block_sum(q, scratch) * inv_n;
        const float rs = 1.0f / sqrtf(var + eps);
        if (threadIdx.x == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) sdm_store(yr, j, (sdm_load(xr, j) - mu) * rs);
    }
}

// gx = rstd · (gy − mean(gy) − y · mean(gy ⊙ y)), y the standardized output.
template <typename T>
__device__ void standardize_bwd(long long rows, long long cols, const T* y, const float* rstd, const T* gy,
                                T* gx) {
    __shared__ float scratch[32];
    const float inv_n = 1.0f / (float)cols;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *yr = y + r * cols, *gr = gy + r * cols;
        T* gxr = gx + r * cols;
        float sg = 0.0f, sgy = 0.0f;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            const float g = sdm_load(gr, j);
            sg += g;
            sgy += g * sdm_load(yr, j);
        }
        const float mg = sdm_block_sum(sg, scratch) * inv_n;
        const float mgy = sdm_block_sum(sgy, scratch) * inv_n;
        const float rs = rstd[r];
        for (long long j = threadIdx.x; j < cols; j += blockDim.x)
            sdm_store(gxr, j, rs * (sdm_load(gr, j) - mg - sdm_load(yr, j) * mgy));
    }
}

#define SDM_NORM_KERNELS(SUFFIX, T)                                                                  \
    extern "C" __global__ void standardize_fwd_##SUFFIX(long long rows, long long cols, float eps,   \
                                                        const T* x, T* y, float* mean, float* rstd) { \
        standardize_fwd<T>(rows, cols, eps, x, y, mean, rstd);                                       \
    }                                                                                                \
    extern "C" __global__ void standardize_bwd_##SUFFIX(long long rows, long long cols, const T* y,  \
                                                        const float* rstd, const T* gy, T* gx) {     \
        standardize_bwd<T>(rows, cols, y, rstd, gy, gx);                                             \
    }

SDM_NORM_KERNELS(f32, float)
SDM_NORM_KERNELS(f16, __half)
SDM_NORM_KERNELS(bf16, __nv_bfloat16)
