// Fast strided offsets for the element-wise and copy kernels (copy.cu, elementwise.cu).
//
// Same result as `sdm_offset` of sdm_common.cuh, computed cheaper: that loop indexes
// the layout's arrays with a runtime dim, which puts the by-value SdmLayout in local
// memory (a stack frame per thread) and pays one 64-bit division per dim. Here the
// loop is unrolled over SDM_MAX_DIMS with a rank guard, so every array index is a
// constant and the layout stays in registers/parameter space; and when the whole
// index space fits in 32 bits (always, in practice) the divisions are 32-bit.
#pragma once

#include "sdm_common.cuh"

// Offset of logical index `i` (0 ≤ i < n) of layout `l`, for an index space of `n`
// elements. `small` must be `n <= 0xffffffff` (computed once per kernel): then every
// dim and index fits in 32 bits.
__device__ __forceinline__ long long sdm_strided_offset(const SdmLayout& l, long long i, bool small) {
    if (l.rank == 1) return l.offset + i * l.strides[0];
    long long off = l.offset;
    if (small) {
        unsigned int u = (unsigned int)i;
#pragma unroll
        for (int d = SDM_MAX_DIMS - 1; d >= 0; --d) {
            if (d < l.rank) {
                const unsigned int s = (unsigned int)l.shape[d];
                const unsigned int q = u / s;
                off += (long long)(u - q * s) * l.strides[d];
                u = q;
            }
        }
    } else {
#pragma unroll
        for (int d = SDM_MAX_DIMS - 1; d >= 0; --d) {
            if (d < l.rank) {
                const long long s = l.shape[d];
                const long long q = i / s;
                off += (i - q * s) * l.strides[d];
                i = q;
            }
        }
    }
    return off;
}

// The `small` argument of sdm_strided_offset for an index space of `n` elements.
__device__ __forceinline__ bool sdm_index_is_small(long long n) { return n <= 0xffffffffLL; }
