// Module `reduce`: reductions over the middle axis of a contiguous [outer, red, inner]
// view (kernels/ABI.md, "Module reduce"): sum, mean, max, min, sum of squares, and
// argmax with PyTorch's tie and NaN rules.
//
// Work split: a block owns a *tile* of `tw` consecutive outputs of one outer row
// (tw = the smallest power of two ≥ inner, at most 32) and its blockDim/tw thread
// rows split `red`. Thread (tx, ty) accumulates x[o, r, i0 + tx] for r = ty, ty + R,
// … sequentially, so a warp reads 32 consecutive elements (coalesced) whatever inner
// is; inner = 1 degenerates to the whole block splitting one row. The R partials of
// each output are then combined by a butterfly inside warps and a fixed sequential
// pass over warps in shared memory: the order depends only on blockDim, so results are
// deterministic (no atomics). Blocks stride over the tiles.
#include "sdm_common.cuh"
#include "sdm_ops.h"

#define SDM_FULL_MASK 0xffffffffu
#define SDM_MAX_WARPS 32

__device__ __forceinline__ float sdm_pos_inf() { return __int_as_float(0x7f800000); }

// Accumulator and rules of one float reduction op (all but argmax).
struct FloatReduce {
    int op;
    __device__ __forceinline__ float identity() const {
        return op == SDM_R_MAX ? -sdm_pos_inf() : op == SDM_R_MIN ? sdm_pos_inf() : 0.0f;
    }
    __device__ __forceinline__ float lift(float v, long long /*r*/) const {
        return op == SDM_R_SUMSQ ? v * v : v;
    }
    // MAX/MIN propagate NaN (torch.amax/amin): a NaN operand wins.
    __device__ __forceinline__ float combine(float a, float b) const {
        if (op == SDM_R_MAX) return (a > b || a != a) ? a : b;
        if (op == SDM_R_MIN) return (a < b || a != a) ? a : b;
        return a + b;
    }
    __device__ __forceinline__ float shfl_xor(float a, int o) const {
        return __shfl_xor_sync(SDM_FULL_MASK, a, o);
    }
};

// (value, index) of a running argmax.
struct ArgmaxAcc {
    float v;
    long long i;
};

// Argmax rules: larger value wins, NaN is the largest, ties go to the smaller index.
// The combine is commutative and associative, so any tree order gives the first
// maximal index (as the CPU's sequential scan).
struct ArgmaxReduce {
    __device__ __forceinline__ ArgmaxAcc identity() const {
        ArgmaxAcc a;
        a.v = -sdm_pos_inf();
        a.i = -1; // loses to every real element (see combine)
        return a;
    }
    __device__ __forceinline__ ArgmaxAcc lift(float v, long long r) const {
        ArgmaxAcc a;
        a.v = v;
        a.i = r;
        return a;
    }
    __device__ __forceinline__ ArgmaxAcc combine(ArgmaxAcc a, ArgmaxAcc b) const {
        if (a.i < 0) return b;
        if (b.i < 0) return a;
        const bool an = a.v != a.v, bn = b.v != b.v;
        if (an != bn) return an ? a : b;
        if (!an && a.v != b.v) return a.v > b.v ? a : b;
        return a.i < b.i ? a : b;
    }
    __device__ __forceinline__ ArgmaxAcc shfl_xor(ArgmaxAcc a, int o) const {
        ArgmaxAcc r;
        r.v = __shfl_xor_sync(SDM_FULL_MASK, a.v, o);
        r.i = __shfl_xor_sync(SDM_FULL_MASK, a.i, o);
        return r;
    }
};

// Smallest power of two ≥ inner, capped at 32: the tile width.
__device__ __forceinline__ int sdm_tile_width(long long inner) {
    int tw = 1;
    while (tw < 32 && tw < inner) tw <<= 1;
    return tw;
}

// Reduces every tile of outputs with `R`; `emit(out_index, acc)` writes one output.
// `scratch` is __shared__ storage for SDM_MAX_WARPS × 32 accumulators.
template <typename T, typename Acc, typename R, typename Emit>
__device__ void reduce_tiles(long long outer, long long red, long long inner, const T* x, R rule,
                             Acc* scratch, Emit emit) {
    const int tw = sdm_tile_width(inner);
    const int rows = blockDim.x / tw;
    const int tx = threadIdx.x % tw, ty = threadIdx.x / tw;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const long long tiles_per_row = (inner + tw - 1) / tw;
    const long long tiles = outer * tiles_per_row;
    for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
        const long long o = t / tiles_per_row;
        const long long i = (t - o * tiles_per_row) * tw + tx;
        Acc acc = rule.identity();
        if (i < inner) {
            const T* base = x + o * red * inner + i;
            for (long long r = ty; r < red; r += rows) acc = rule.combine(acc, rule.lift(sdm_load(base, r * inner), r));
        }
        // Lanes tx, tx + tw, tx + 2·tw, … of a warp share an output: fold them.
        for (int off = 16; off >= tw; off >>= 1) acc = rule.combine(acc, rule.shfl_xor(acc, off));
        if (lane < tw) scratch[warp * 32 + lane] = acc;
        __syncthreads();
        if ((int)threadIdx.x < tw && i < inner) {
            Acc total = scratch[tx];
            for (int w = 1; w < nwarps; ++w) total = rule.combine(total, scratch[w * 32 + tx]);
            emit(o * inner + i, total);
        }
        __syncthreads(); // scratch is reused by the next tile
    }
}

template <typename T>
__device__ void reduce(long long outer, long long red, long long inner, int op, const T* x, float* y) {
    __shared__ float scratch[SDM_MAX_WARPS * 32];
    FloatReduce rule;
    rule.op = op;
    // sum · (1/red), as the CPU's mean; an empty axis gives 0 · inf = NaN (torch.mean).
    const float inv = 1.0f / (float)red;
    reduce_tiles<T, float>(outer, red, inner, x, rule, scratch,
                           [&](long long out, float v) { y[out] = op == SDM_R_MEAN ? v * inv : v; });
}

#define SDM_REDUCE_KERNEL(SUFFIX, T)                                                              \
    extern "C" __global__ void reduce_##SUFFIX(long long outer, long long red, long long inner,   \
                                               int op, const T* x, float* y) {                    \
        reduce<T>(outer, red, inner, op, x, y);                                                   \
    }

SDM_REDUCE_KERNEL(f32, float)
SDM_REDUCE_KERNEL(f16, __half)
SDM_REDUCE_KERNEL(bf16, __nv_bfloat16)

// Max over `red` and the first index attaining it (NaN counts as the maximum). An
// empty axis gives (-inf, -1); the host rejects it before launching, as the CPU does.
extern "C" __global__ void argmax_f32(long long outer, long long red, long long inner, const float* x,
                                      float* vals, long long* idx) {
    __shared__ ArgmaxAcc scratch[SDM_MAX_WARPS * 32];
    reduce_tiles<float, ArgmaxAcc>(outer, red, inner, x, ArgmaxReduce(), scratch,
                                   [&](long long out, ArgmaxAcc a) {
                                       vals[out] = a.v;
                                       idx[out] = a.i;
                                   });
}
