// Deterministic warp and block reductions shared by the row-wise kernels
// (softmax.cu, norm.cu) and reduce.cu.
//
// Both reduce in a fixed tree: an xor butterfly inside each warp (`__shfl_xor_sync`),
// then one value per warp through shared memory, reduced again by a butterfly. The
// order depends only on blockDim, never on timing or the grid size, so a result is
// bit-identical from run to run (no atomics). blockDim.x must be a multiple of 32
// (every launch in kernels/ABI.md uses 256 threads).
#pragma once

#include "sdm_common.cuh"

#define SDM_FULL_MASK 0xffffffffu

// a + b (f32).
struct SdmSumOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// max(a, b) ignoring NaN (fmaxf), as the CPU's `fold(-inf, f32::max)`: a NaN in a
// softmax row still poisons the row through the sum of exponentials.
struct SdmMaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduces `v` over the 32 lanes of the warp; every lane gets the result.
template <typename Op>
__device__ __forceinline__ float sdm_warp_allreduce(float v, Op op) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(SDM_FULL_MASK, v, o));
    return v;
}

// Reduces `v` over the whole block; every thread gets the result. `identity` is the
// op's neutral element (pads the warps' table); `scratch` is a __shared__ float[32]
// that the call may overwrite. Must be reached by all threads of the block.
template <typename Op>
__device__ float sdm_block_allreduce(float v, Op op, float identity, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = sdm_warp_allreduce(v, op);
    __syncthreads(); // earlier readers of scratch are done before it is overwritten
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : identity;
    return sdm_warp_allreduce(v, op);
}

// Block-wide f32 sum (see sdm_block_allreduce).
__device__ __forceinline__ float sdm_block_sum(float v, float* scratch) {
    return sdm_block_allreduce(v, SdmSumOp(), 0.0f, scratch);
}

// Block-wide NaN-ignoring max (see SdmMaxOp); -inf for an all-empty block.
__device__ __forceinline__ float sdm_block_max(float v, float* scratch) {
    return sdm_block_allreduce(v, SdmMaxOp(), -__int_as_float(0x7f800000), scratch);
}
