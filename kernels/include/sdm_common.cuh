// Shared definitions of sparsedm's CUDA kernels (see kernels/ABI.md).
//
// Every kernel is `extern "C" __global__`, takes sizes as `long long`, walks its
// work with a grid-stride loop (so any grid size is correct) and computes in f32
// whatever the storage type. This header must also compile as plain C++ under
// kernels/emu/cuda_emu.h, which runs the kernels on the CPU in tests.
#pragma once

#ifndef SDM_EMULATION
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif

#define SDM_MAX_DIMS 6

// A strided view: element (i0, …, i_{rank-1}) lives at
// offset + Σ i_d · strides[d] (in elements). Unused dims have shape 1, stride 0.
// Mirrored by `sparsedm_kernels::abi::SdmLayout` (same field order, #[repr(C)]).
struct SdmLayout {
    int rank;
    int _pad;
    long long shape[SDM_MAX_DIMS];
    long long strides[SDM_MAX_DIMS];
    long long offset;
};

// Element offset of the row-major logical index `i` in layout `l`.
__device__ __forceinline__ long long sdm_offset(const SdmLayout& l, long long i) {
    long long off = l.offset;
    for (int d = l.rank - 1; d >= 0; --d) {
        long long s = l.shape[d];
        long long q = i / s;
        off += (i - q * s) * l.strides[d];
        i = q;
    }
    return off;
}

#define SDM_GRID_STRIDE(i, n)                                                      \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// Loads and stores that convert between the storage type and f32.
__device__ __forceinline__ float sdm_load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float sdm_load(const __half* p, long long i) { return __half2float(p[i]); }
__device__ __forceinline__ float sdm_load(const __nv_bfloat16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void sdm_store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void sdm_store(__half* p, long long i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void sdm_store(__nv_bfloat16* p, long long i, float v) { p[i] = __float2bfloat16_rn(v); }
