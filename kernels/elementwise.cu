// Module `elementwise`: generic unary and binary maps and `where` over strided,
// broadcast operands (kernels/ABI.md, "Module elementwise").
//
// One kernel per arity and dtype, the op chosen by a runtime code (`SDM_U_*`,
// `SDM_B_*` of sdm_ops.h): the switch is uniform across the grid, so it costs a few
// instructions per element against a memory-bound loop, and keeps the module small.
// All math is f32. The semantics follow the CPU backend (sparsedm-tensor's
// ops/elementwise.rs) and PyTorch where the ABI says so (NaN-propagating MAX/MIN).
#include "sdm_common.cuh"
#include "sdm_strided.cuh"
#include "sdm_ops.h"

// Standard normal CDF Φ(x) through erff (PyTorch's exact GELU).
__device__ __forceinline__ float sdm_normal_cdf(float x) {
    return 0.5f * (1.0f + erff(x * 0.70710678118654752f));
}

// Standard normal density φ(x).
__device__ __forceinline__ float sdm_normal_pdf(float x) {
    return expf(-0.5f * x * x) * 0.39894228040143268f;
}

__device__ __forceinline__ float sdm_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ bool sdm_isnan(float x) { return x != x; }

__device__ float unary_op(int op, float a, float b, float x) {
    switch (op) {
    case SDM_U_NEG: return -x;
    case SDM_U_EXP: return expf(x);
    case SDM_U_LOG: return logf(x);
    case SDM_U_SQRT: return sqrtf(x);
    case SDM_U_RSQRT: return 1.0f / sqrtf(x);
    case SDM_U_POWF: return powf(x, a);
    case SDM_U_SQR: return x * x;
    case SDM_U_ABS: return fabsf(x);
    case SDM_U_TANH: return tanhf(x);
    case SDM_U_SIGMOID: return sdm_sigmoid(x);
    // fmaxf returns the non-NaN operand: relu(NaN) = 0, as the CPU's `x.max(0.0)`.
    case SDM_U_RELU: return fmaxf(x, 0.0f);
    case SDM_U_GELU: return x * sdm_normal_cdf(x);
    case SDM_U_SILU: return x * sdm_sigmoid(x);
    case SDM_U_AFFINE: return a * x + b;
    // NaN stays NaN, as Rust's f32::clamp and torch.clamp.
    case SDM_U_CLAMP: return sdm_isnan(x) ? x : fminf(fmaxf(x, a), b);
    case SDM_U_RECIP: return 1.0f / x;
    case SDM_U_SIN: return sinf(x);
    case SDM_U_COS: return cosf(x);
    case SDM_U_GELU_TANH: {
        const float k = 0.79788456080286536f; // sqrt(2/pi)
        return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
    case SDM_U_STEP: return x > 0.0f ? 1.0f : 0.0f;
    default: return __int_as_float(0x7fc00000); // unknown op: NaN, never silently wrong
    }
}

__device__ float binary_op(int op, float a, float b) {
    switch (op) {
    case SDM_B_ADD: return a + b;
    case SDM_B_SUB: return a - b;
    case SDM_B_MUL: return a * b;
    case SDM_B_DIV: return a / b;
    // torch.maximum/minimum: a NaN operand makes the result NaN (a + b is that NaN).
    case SDM_B_MAX: return (sdm_isnan(a) || sdm_isnan(b)) ? a + b : fmaxf(a, b);
    case SDM_B_MIN: return (sdm_isnan(a) || sdm_isnan(b)) ? a + b : fminf(a, b);
    case SDM_B_POW: return powf(a, b);
    case SDM_B_GELU_BWD: return a * (sdm_normal_cdf(b) + b * sdm_normal_pdf(b));
    case SDM_B_SILU_BWD: {
        float s = sdm_sigmoid(b);
        return a * s * (1.0f + b * (1.0f - s));
    }
    case SDM_B_TANH_BWD: return a * (1.0f - b * b);
    case SDM_B_SIGMOID_BWD: return a * b * (1.0f - b);
    // A select, not a product: a NaN/inf gradient where x <= 0 still gives 0 (CPU).
    case SDM_B_RELU_BWD: return b > 0.0f ? a : 0.0f;
    case SDM_B_GT: return a > b ? 1.0f : 0.0f;
    case SDM_B_GE: return a >= b ? 1.0f : 0.0f;
    case SDM_B_EQ: return a == b ? 1.0f : 0.0f;
    case SDM_B_LT: return a < b ? 1.0f : 0.0f;
    default: return __int_as_float(0x7fc00000); // unknown op: NaN
    }
}

template <typename T>
__device__ void unary(long long n, int op, float a, float b, SdmLayout xl, const T* x, T* y) {
    const bool small = sdm_index_is_small(n);
    SDM_GRID_STRIDE(i, n) { sdm_store(y, i, unary_op(op, a, b, sdm_load(x, sdm_strided_offset(xl, i, small)))); }
}

template <typename T>
__device__ void binary(long long n, int op, SdmLayout al, const T* a, SdmLayout bl, const T* b, T* y) {
    const bool small = sdm_index_is_small(n);
    SDM_GRID_STRIDE(i, n) {
        float va = sdm_load(a, sdm_strided_offset(al, i, small));
        float vb = sdm_load(b, sdm_strided_offset(bl, i, small));
        sdm_store(y, i, binary_op(op, va, vb));
    }
}

// y = c != 0 ? a : b (a NaN condition counts as true, as on the CPU). Only the
// selected operand is read.
template <typename T>
__device__ void where_select(long long n, SdmLayout cl, const T* c, SdmLayout al, const T* a,
                             SdmLayout bl, const T* b, T* y) {
    const bool small = sdm_index_is_small(n);
    SDM_GRID_STRIDE(i, n) {
        bool take_a = sdm_load(c, sdm_strided_offset(cl, i, small)) != 0.0f;
        y[i] = take_a ? a[sdm_strided_offset(al, i, small)] : b[sdm_strided_offset(bl, i, small)];
    }
}

#define SDM_ELEMENTWISE_KERNELS(SUFFIX, T)                                                        \
    extern "C" __global__ void unary_##SUFFIX(long long n, int op, float a, float b, SdmLayout xl, \
                                              const T* x, T* y) {                                 \
        unary<T>(n, op, a, b, xl, x, y);                                                          \
    }                                                                                             \
    extern "C" __global__ void binary_##SUFFIX(long long n, int op, SdmLayout al, const T* a,     \
                                               SdmLayout bl, const T* b, T* y) {                  \
        binary<T>(n, op, al, a, bl, b, y);                                                        \
    }                                                                                             \
    extern "C" __global__ void where_##SUFFIX(long long n, SdmLayout cl, const T* c, SdmLayout al, \
                                              const T* a, SdmLayout bl, const T* b, T* y) {       \
        where_select<T>(n, cl, c, al, a, bl, b, y);                                               \
    }

SDM_ELEMENTWISE_KERNELS(f32, float)
SDM_ELEMENTWISE_KERNELS(f16, __half)
SDM_ELEMENTWISE_KERNELS(bf16, __nv_bfloat16)
