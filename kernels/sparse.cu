// Module `sparse` (kernels/ABI.md): magnitude N:M masks and the SR-STE weight gradient.
//
// `nm_mask` is sparsedm-layers/src/mask.rs's grouped rule on the GPU: within each group of m
// consecutive input channels (stride k in memory, at a fixed output row and kernel position) keep
// the n largest |w|. The comparison key is `bits(w) & 0x7fffffff`, which orders like |w|, makes
// −0 equal +0 and puts NaN above +∞; ties go to the earlier channel. Element j is kept iff fewer
// than n elements have a larger key or an equal key at an earlier position (its rank), exactly
// mask.rs's definition, so the masks are identical. One thread per group; the common group sizes
// get unrolled copies whose keys stay in registers.
#include "sdm_common.cuh"

namespace {

constexpr int kMaxM = 32;

__device__ __forceinline__ int nm_key(float w) { return __float_as_int(w) & 0x7fffffff; }

// The group at `w` (elements w[0], w[k], …, w[(m−1)·k]) → mask entries at the same offsets.
// M > 0: compile-time group size; M == 0: runtime `m` ≤ kMaxM.
template <int M>
__device__ __forceinline__ void nm_group(const float* __restrict__ w, float* __restrict__ mask, long long k, int n,
                                         int m_rt) {
    constexpr int CAP = M > 0 ? M : kMaxM;
    const int m = M > 0 ? M : m_rt;
    int key[CAP];
#pragma unroll
    for (int j = 0; j < CAP; ++j) {
        if (j < m) key[j] = nm_key(w[j * k]);
    }
#pragma unroll
    for (int j = 0; j < CAP; ++j) {
        if (j >= m) break;
        int rank = 0;
#pragma unroll
        for (int q = 0; q < CAP; ++q) {
            if (q >= m) break;
            rank += (key[q] > key[j]) | ((key[q] == key[j]) & (q < j));
        }
        mask[j * k] = rank < n ? 1.0f : 0.0f;
    }
}

}  // namespace

// weight [rows, inp, k] (PyTorch [out, in, kh·kw]; Linear: k = 1), inp % m == 0, m ≤ 32:
// mask = 1.0 for the n largest |w| of every group, else 0.0. Group g = (row, group of channels,
// kernel position p) with p fastest, so consecutive threads read consecutive addresses when k > 1.
extern "C" __global__ void nm_mask(long long rows, long long inp, long long k, int n, int m, const float* __restrict__ w,
                                   float* __restrict__ mask) {
    const long long groups_per_row = inp / m;
    const long long total = rows * groups_per_row * k;
    SDM_GRID_STRIDE(gi, total) {
        const long long t = gi / k;
        const long long pos = gi - t * k;
        const long long row = t / groups_per_row;
        const long long grp = t - row * groups_per_row;
        const long long first = (row * inp + grp * m) * k + pos;
        switch (m) {
            case 2: nm_group<2>(w + first, mask + first, k, n, m); break;
            case 4: nm_group<4>(w + first, mask + first, k, n, m); break;
            case 8: nm_group<8>(w + first, mask + first, k, n, m); break;
            case 16: nm_group<16>(w + first, mask + first, k, n, m); break;
            case 32: nm_group<32>(w + first, mask + first, k, n, m); break;
            default: nm_group<0>(w + first, mask + first, k, n, m); break;
        }
    }
}

// SR-STE's gradient of the dense weight: out = g + w·(λ·(1 − mask)) (the decay term pulls pruned
// weights towards 0). For a 0/1 mask this is bit-identical to the CPU's `g + w·(−λ·mask + λ)`.
extern "C" __global__ void srste_grad(long long n, float lambda, const float* __restrict__ g, const float* __restrict__ w,
                                      const float* __restrict__ mask, float* __restrict__ out) {
    SDM_GRID_STRIDE(i, n) {
        const float decay = __fmul_rn(lambda, __fsub_rn(1.0f, mask[i]));
        out[i] = __fadd_rn(g[i], __fmul_rn(w[i], decay));
    }
}

// The forward weight w ⊙ mask, stored in the GEMM's dtype (rounded to nearest even).
template <class T>
__device__ __forceinline__ void masked_weight_impl(long long n, const float* __restrict__ w,
                                                   const float* __restrict__ mask, T* __restrict__ y) {
    SDM_GRID_STRIDE(i, n) { sdm_store(y, i, __fmul_rn(w[i], mask[i])); }
}

#define SDM_MASKED_WEIGHT(SUFFIX, T)                                                                        \
    extern "C" __global__ void masked_weight_##SUFFIX(long long n, const float* w, const float* mask, T* y) { \
        masked_weight_impl<T>(n, w, mask, y);                                                             \
    }

SDM_MASKED_WEIGHT(f32, float)
SDM_MASKED_WEIGHT(f16, __half)
SDM_MASKED_WEIGHT(bf16, __nv_bfloat16)
