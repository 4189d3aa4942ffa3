// Module `softmax`: softmax and log-softmax over rows of `cols` contiguous elements,
// forward and backward (kernels/ABI.md, "Module softmax").
//
// One block per row (blocks stride over rows), 256 threads. Each pass over a row is a
// coalesced block-stride loop; the row's max and sums are deterministic block
// reductions (sdm_reduce.cuh). The forward makes three passes over x (max, Σ exp,
// write); the later passes hit L1/L2 since the same block has just read the row.
// Semantics as the CPU backend (sparsedm-tensor ops/softmax.rs): the max ignores NaN
// but a NaN element still turns its whole row NaN through the sum, as in PyTorch.
#include "sdm_common.cuh"
#include "sdm_reduce.cuh"

// Max of row `x` (NaN-ignoring), Σ exp(x - max) over it.
template <typename T>
__device__ void row_max_sumexp(long long cols, const T* x, float* scratch, float& max, float& sum) {
    float m = -__int_as_float(0x7f800000);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, sdm_load(x, j));
    max = sdm_block_max(m, scratch);
    float s = 0.0f;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) s += expf(sdm_load(x, j) - max);
    sum = sdm_block_sum(s, scratch);
}

// y = exp(x - max) / Σ exp(x - max).
template <typename T>
__device__ void softmax(long long rows, long long cols, const T* x, T* y) {
    __shared__ float scratch[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        float max, sum;
        row_max_sumexp(cols, xr, scratch, max, sum);
        const float inv = 1.0f / sum;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) sdm_store(yr, j, expf(sdm_load(xr, j) - max) * inv);
    }
}

// y = x - max - ln Σ exp(x - max).
template <typename T>
__device__ void log_softmax(long long rows, long long cols, const T* x, T* y) {
    __shared__ float scratch[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        float max, sum;
        row_max_sumexp(cols, xr, scratch, max, sum);
        const float lse = max + logf(sum);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) sdm_store(yr, j, sdm_load(xr, j) - lse);
    }
}

// gx = y ⊙ (gy − Σ gy⊙y), y the softmax output.
template <typename T>
__device__ void softmax_bwd(long long rows, long long cols, const T* y, const T* gy, T* gx) {
    __shared__ float scratch[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *yr = y + r * cols, *gr = gy + r * cols;
        T* gxr = gx + r * cols;
        float d = 0.0f;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) d += sdm_load(gr, j) * sdm_load(yr, j);
        const float dot = sdm_block_sum(d, scratch);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x)
            sdm_store(gxr, j, sdm_load(yr, j) * (sdm_load(gr, j) - dot));
    }
}

// gx = gy − exp(y) · Σ gy, y the log-softmax output.
template <typename T>
__device__ void log_softmax_bwd(long long rows, long long cols, const T* y, const T* gy, T* gx) {
    __shared__ float scratch[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *yr = y + r * cols, *gr = gy + r * cols;
        T* gxr = gx + r * cols;
        float s = 0.0f;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) s += sdm_load(gr, j);
        const float total = sdm_block_sum(s, scratch);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x)
            sdm_store(gxr, j, sdm_load(gr, j) - expf(sdm_load(yr, j)) * total);
    }
}

#define SDM_SOFTMAX_KERNELS(SUFFIX, T)                                                             \
    extern "C" __global__ void softmax_##SUFFIX(long long rows, long long cols, const T* x, T* y) { \
        softmax<T>(rows, cols, x, y);                                                              \
    }                                                                                              \
    extern "C" __global__ void log_softmax_##SUFFIX(long long rows, long long cols, const T* x,    \
                                                    T* y) {                                        \
        log_softmax<T>(rows, cols, x, y);                                                          \
    }                                                                                              \
    extern "C" __global__ void softmax_bwd_##SUFFIX(long long rows, long long cols, const T* y,    \
                                                    const T* gy, T* gx) {                          \
        softmax_bwd<T>(rows, cols, y, gy, gx);                                                     \
    }                                                                                              \
    extern "C" __global__ void log_softmax_bwd_##SUFFIX(long long rows, long long cols,            \
                                                        const T* y, const T* gy, T* gx) {          \
        log_softmax_bwd<T>(rows, cols, y, gy, gx);                                                 \
    }

SDM_SOFTMAX_KERNELS(f32, float)
SDM_SOFTMAX_KERNELS(f16, __half)
SDM_SOFTMAX_KERNELS(bf16, __nv_bfloat16)
