// Module `index` (kernels/ABI.md): index_select along one dimension and its backward.
//
// Tensors are viewed as [outer, dim, inner]; indices are i64 and were validated on the host. The
// backward (index_add of the output gradient into zeros) is in gather form: each element of gx
// walks the index list and sums the matching gradient rows in index order — the CPU's order, so
// results are bit-identical to sparsedm-tensor's and deterministic without atomics. Threads of a
// warp share (o, r) when inner ≥ 32, so the index reads are broadcasts.
#include "sdm_common.cuh"

// y[o, i, j] = x[o, idx[i], j] (a copy of the storage type).
template <class T>
__device__ __forceinline__ void index_select_impl(long long outer, long long n_idx, long long inner, long long src_dim,
                                                  const long long* __restrict__ idx, const T* __restrict__ x,
                                                  T* __restrict__ y) {
    const long long total = outer * n_idx * inner;
    SDM_GRID_STRIDE(e, total) {
        const long long t = e / inner;
        const long long j = e - t * inner;
        const long long o = t / n_idx;
        const long long i = t - o * n_idx;
        y[e] = x[(o * src_dim + idx[i]) * inner + j];
    }
}

#define SDM_INDEX_KERNELS(SUFFIX, T)                                                                               \
    extern "C" __global__ void index_select_##SUFFIX(long long outer, long long n_idx, long long inner,          \
                                                     long long src_dim, const long long* idx, const T* x, T* y) { \
        index_select_impl<T>(outer, n_idx, inner, src_dim, idx, x, y);                                          \
    }

SDM_INDEX_KERNELS(f32, float)
SDM_INDEX_KERNELS(f16, __half)
SDM_INDEX_KERNELS(bf16, __nv_bfloat16)

// gx[o, r, j] = Σ_{i : idx[i] = r} gy[o, i, j], summed in increasing i from 0 (every element of gx
// is written, 0 where r is never selected).
extern "C" __global__ void index_add_bwd(long long outer, long long n_idx, long long inner, long long dst_dim,
                                         const long long* __restrict__ idx, const float* __restrict__ gy,
                                         float* __restrict__ gx) {
    const long long total = outer * dst_dim * inner;
    SDM_GRID_STRIDE(e, total) {
        const long long t = e / inner;
        const long long j = e - t * inner;
        const long long o = t / dst_dim;
        const long long r = t - o * dst_dim;
        const float* g = gy + o * n_idx * inner + j;
        float acc = 0.0f;
        for (long long i = 0; i < n_idx; ++i) {
            if (idx[i] == r) acc += g[i * inner];
        }
        gx[e] = acc;
    }
}
