// Module `copy`: strided copies, dtype casts and fills (kernels/ABI.md, "Module copy").
//
// These are the data-movement primitives the backend builds contiguous(), cat, pad,
// narrow-assign and dtype conversion from. All are memory-bound grid-stride loops:
// consecutive threads touch consecutive logical elements, so contiguous operands are
// read and written coalesced.
#include "sdm_common.cuh"
#include "sdm_strided.cuh"

// dst[off(dl, i)] = src[off(sl, i)] for the row-major logical index i < n of the
// common shape. Same storage type on both sides: a bit copy, no conversion.
template <typename T>
__device__ void copy_strided(long long n, SdmLayout sl, const T* src, SdmLayout dl, T* dst) {
    const bool small = sdm_index_is_small(n);
    SDM_GRID_STRIDE(i, n) { dst[sdm_strided_offset(dl, i, small)] = src[sdm_strided_offset(sl, i, small)]; }
}

// Contiguous conversion S -> D through f32 (exact for widening; round-to-nearest-even
// for narrowing, via sdm_store).
template <typename S, typename D>
__device__ void cast(long long n, const S* x, D* y) {
    SDM_GRID_STRIDE(i, n) { sdm_store(y, i, sdm_load(x, i)); }
}

// y[i] = v, rounded once to the storage type.
template <typename T>
__device__ void fill(long long n, float v, T* y) {
    SDM_GRID_STRIDE(i, n) { sdm_store(y, i, v); }
}

#define SDM_COPY_KERNELS(SUFFIX, T)                                                               \
    extern "C" __global__ void copy_strided_##SUFFIX(long long n, SdmLayout sl, const T* src,     \
                                                     SdmLayout dl, T* dst) {                      \
        copy_strided<T>(n, sl, src, dl, dst);                                                     \
    }                                                                                             \
    extern "C" __global__ void fill_##SUFFIX(long long n, float v, T* y) { fill<T>(n, v, y); }

SDM_COPY_KERNELS(f32, float)
SDM_COPY_KERNELS(f16, __half)
SDM_COPY_KERNELS(bf16, __nv_bfloat16)

#define SDM_CAST_KERNEL(SN, S, DN, D)                                                   \
    extern "C" __global__ void cast_##SN##_##DN(long long n, const S* x, D* y) {        \
        cast<S, D>(n, x, y);                                                            \
    }

SDM_CAST_KERNEL(f32, float, f16, __half)
SDM_CAST_KERNEL(f32, float, bf16, __nv_bfloat16)
SDM_CAST_KERNEL(f16, __half, f32, float)
SDM_CAST_KERNEL(bf16, __nv_bfloat16, f32, float)
