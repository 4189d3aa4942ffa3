// CPU emulation of the subset of CUDA that sparsedm's kernels use.
//
// Included before a `.cu` file (`g++ -std=c++20 -pthread -DSDM_EMULATION -include
// kernels/emu/cuda_emu.h`), it turns the kernel source into ordinary C++ so the kernels can be
// tested on a machine without a GPU (tests/emu/mod.rs builds such translation units into shared
// libraries and calls them from Rust). It is a test tool, not a simulator: it aims at running
// correct kernels with the results the GPU gives, and at making wrong kernels fail.
//
// Execution model. `sdm_emu_launch(kernel, grid, block, args...)` runs the blocks of a 1-D grid
// one after another. A block is `block` std::threads (created once per launch and reused for every
// block), so the threads of a block really run concurrently and must synchronise as on a GPU:
//   * `__syncthreads()` is a std::barrier over the block's threads;
//   * warps are groups of 32 consecutive threads; `__syncwarp()` and the warp intrinsics
//     (`__shfl_*_sync`, `__ballot_sync`, `__any_sync`, `__all_sync`) are a per-warp std::barrier
//     plus a per-thread exchange slot;
//   * a thread that returns from the kernel counts as arrived at every later barrier of its block
//     (as exited threads do on the GPU), so `if (i >= n) return;` before a `__syncthreads()` works;
//   * `__shared__` is `static`: one instance per kernel instantiation, shared by the threads of the
//     running block. This is correct because blocks run one at a time and launches are serialised
//     by a process-wide (per shared library) mutex.
//
// Restrictions (a kernel that breaks them deadlocks or misbehaves here, and is suspect on a GPU):
//   * 1-D grids and blocks only, `block` ≤ 1024; no dynamic (`extern __shared__`) shared memory,
//     no streams, no inline `asm`, no cooperative groups, no textures.
//   * Warp intrinsics and `__syncwarp` must be called by every non-exited thread of the warp
//     together (the `mask` argument is ignored: it is treated as "all live lanes"); a lane whose
//     source lane does not exist (beyond the block's last thread) or has exited reads its own value
//     (respectively a stale value): both are undefined on the GPU.
//   * `__syncthreads()` must be reached by every non-exited thread of the block (CUDA's rule).
//   * Arithmetic is the host's: g++ in ISO mode does not contract a·b+c into an FMA and the
//     `__expf`-style fast intrinsics map to the accurate <cmath> functions, so results can differ
//     from the GPU's by a few ulp where nvcc contracts or uses approximate instructions.
//   * `__float2half_rn` / `__float2bfloat16_rn` are bit-exact round-to-nearest-even conversions;
//     a NaN converts to the canonical NaN 0x7FFF, as the GPU's `cvt` instruction does.
#pragma once

#ifndef SDM_EMULATION
#error "cuda_emu.h is for CPU emulation builds only (compile with -DSDM_EMULATION)"
#endif

#include <math.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Qualifiers. `__restrict__` is a g++ keyword already.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __constant__
#define __launch_bounds__(...)

// ---------------------------------------------------------------------------------------------
// Built-in vector types and thread coordinates.
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------------
// The running block: its barriers and the warp exchange slots.
namespace sdm_emu {

struct BlockCtx {
    unsigned block;
    std::unique_ptr<std::barrier<>> bar;                     // __syncthreads
    std::vector<std::unique_ptr<std::barrier<>>> warp_bars;  // __syncwarp and warp intrinsics
    std::vector<std::array<unsigned char, 16>> slot;         // one exchange slot per thread

    explicit BlockCtx(unsigned b) : block(b), slot(b) { reset(); }

    // Fresh barriers for the next block (exited threads dropped out of the previous ones).
    void reset() {
        bar = std::make_unique<std::barrier<>>((std::ptrdiff_t)block);
        unsigned warps = (block + 31) / 32;
        warp_bars.clear();
        for (unsigned w = 0; w < warps; ++w) {
            unsigned lanes = std::min(32u, block - 32 * w);
            warp_bars.push_back(std::make_unique<std::barrier<>>((std::ptrdiff_t)lanes));
        }
    }

    // Thread `t` returned from the kernel: it no longer takes part in this block's barriers.
    void exit_thread(unsigned t) {
        (void)bar->arrive_and_drop();
        (void)warp_bars[t / 32]->arrive_and_drop();
    }
};

inline thread_local BlockCtx* tl_ctx = nullptr;

inline BlockCtx& ctx() {
    if (!tl_ctx) {
        std::fprintf(stderr, "cuda_emu: a block-level intrinsic was called outside sdm_emu_launch\n");
        std::abort();
    }
    return *tl_ctx;
}

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

inline void warp_barrier() { (void)ctx().warp_bars[threadIdx.x / 32]->arrive_and_wait(); }

// Every live lane of the calling warp publishes `v`; returns the value published by lane `src`
// of the same warp (or `v` itself when that lane does not exist).
template <class T>
T warp_exchange(T v, unsigned src) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16, "warp exchange of a type > 16 bytes");
    BlockCtx& c = ctx();
    unsigned tid = threadIdx.x;
    std::memcpy(c.slot[tid].data(), &v, sizeof(T));
    warp_barrier();
    unsigned from = (tid & ~31u) + src;
    T r = v;
    if (from < c.block) std::memcpy(&r, c.slot[from].data(), sizeof(T));
    warp_barrier();  // nobody overwrites its slot before every lane has read
    return r;
}

inline unsigned lane_id() { return threadIdx.x & 31u; }

}  // namespace sdm_emu

inline void __syncthreads() { (void)sdm_emu::ctx().bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { sdm_emu::warp_barrier(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Shuffles follow PTX `shfl.sync`: with `width` < 32 the warp is split into segments of `width`
// lanes; an out-of-segment source lane yields the caller's own value.
template <class T>
T __shfl_sync(unsigned, T var, int src_lane, int width = 32) {
    unsigned lane = sdm_emu::lane_id();
    unsigned seg = lane & ~(unsigned)(width - 1);
    unsigned j = seg | ((unsigned)src_lane & (unsigned)(width - 1));
    return sdm_emu::warp_exchange(var, j);
}
template <class T>
T __shfl_xor_sync(unsigned, T var, int lane_mask, int width = 32) {
    unsigned lane = sdm_emu::lane_id();
    unsigned seg_end = (lane & ~(unsigned)(width - 1)) + (unsigned)width - 1;
    unsigned j = lane ^ (unsigned)lane_mask;
    return sdm_emu::warp_exchange(var, j <= seg_end ? j : lane);
}
template <class T>
T __shfl_down_sync(unsigned, T var, unsigned delta, int width = 32) {
    unsigned lane = sdm_emu::lane_id();
    unsigned seg_end = (lane & ~(unsigned)(width - 1)) + (unsigned)width - 1;
    unsigned j = lane + delta;
    return sdm_emu::warp_exchange(var, j <= seg_end ? j : lane);
}
template <class T>
T __shfl_up_sync(unsigned, T var, unsigned delta, int width = 32) {
    unsigned lane = sdm_emu::lane_id();
    unsigned seg = lane & ~(unsigned)(width - 1);
    int j = (int)lane - (int)delta;
    return sdm_emu::warp_exchange(var, j >= (int)seg ? (unsigned)j : lane);
}

inline unsigned __ballot_sync(unsigned, int pred) {
    sdm_emu::BlockCtx& c = sdm_emu::ctx();
    unsigned tid = threadIdx.x;
    unsigned base = tid & ~31u;
    int p = pred != 0;
    std::memcpy(c.slot[tid].data(), &p, sizeof p);
    sdm_emu::warp_barrier();
    unsigned bits = 0;
    for (unsigned l = 0; l < 32 && base + l < c.block; ++l) {
        int q;
        std::memcpy(&q, c.slot[base + l].data(), sizeof q);
        if (q) bits |= 1u << l;
    }
    sdm_emu::warp_barrier();
    return bits;
}
// Lanes that exist in the caller's warp (a partial last warp has fewer than 32).
inline unsigned __activemask() {
    unsigned base = threadIdx.x & ~31u;
    unsigned lanes = std::min(32u, sdm_emu::ctx().block - base);
    return lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
}
inline int __any_sync(unsigned m, int pred) { return __ballot_sync(m, pred) != 0; }
inline int __all_sync(unsigned m, int pred) { return __ballot_sync(m, pred) == __activemask(); }

// ---------------------------------------------------------------------------------------------
// Atomics (std::atomic_ref on the host memory).
template <class T>
T atomicAdd(T* p, std::type_identity_t<T> v) {
    return std::atomic_ref<T>(*p).fetch_add(v);
}
template <class T>
T atomicSub(T* p, std::type_identity_t<T> v) {
    return std::atomic_ref<T>(*p).fetch_sub(v);
}
template <class T>
T atomicExch(T* p, std::type_identity_t<T> v) {
    return std::atomic_ref<T>(*p).exchange(v);
}
template <class T>
T atomicCAS(T* p, std::type_identity_t<T> expected, std::type_identity_t<T> desired) {
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;  // the old value, whether or not the swap happened
}
template <class T>
T atomicMax(T* p, std::type_identity_t<T> v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
template <class T>
T atomicMin(T* p, std::type_identity_t<T> v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (v < old && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}

// ---------------------------------------------------------------------------------------------
// Integer and bit intrinsics.
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)a < (C)b ? (C)b : (C)a;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
template <class T>
inline T __ldg(const T* p) { return *p; }

// Bit casts between float and integers.
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, 8); return i; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }

// ---------------------------------------------------------------------------------------------
// Float intrinsics: the fast/approximate ones map to the accurate host functions, the `_rn`
// ones are IEEE operations (no contraction under ISO C++).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float exp10f(float x) { return std::pow(10.0f, x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __saturatef(float x) { return std::isnan(x) ? 0.0f : std::min(std::max(x, 0.0f), 1.0f); }
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
// sincosf, expf, logf, erff, tanhf, fmaxf, fminf, fabsf, sqrtf, powf, … come from <math.h>.

// ---------------------------------------------------------------------------------------------
// __half and __nv_bfloat16: 16-bit storage, arithmetic in f32 and rounded back (which is what the
// GPU's correctly rounded half operations give).
namespace sdm_emu {

inline unsigned short f32_to_f16_bits(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7fffu;                   // NaN → canonical NaN
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // ≥ 65520 rounds to ±inf
    if (a >= 0x38800000u) {                                 // normal half (≥ 2^-14)
        uint32_t m = a - 0x38000000u;                       // rebias exponent 127 → 15
        uint32_t r = m >> 13, rem = m & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
        return (unsigned short)(sign | r);
    }
    if (a <= 0x33000000u) return (unsigned short)sign;      // ≤ 2^-25 rounds to ±0
    uint32_t e = a >> 23;                                   // 102 ..= 112
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                               // to units of 2^-24
    uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return (unsigned short)(sign | r);
}

inline float f16_bits_to_f32(unsigned short h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t bits;
    if (e == 31) {
        bits = sign | 0x7f800000u | (m << 13);
    } else if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    } else {
        bits = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline unsigned short f32_to_bf16_bits(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;   // NaN → canonical NaN
    x += 0x7fffu + ((x >> 16) & 1u);                         // round to nearest even
    return (unsigned short)(x >> 16);
}

inline float bf16_bits_to_f32(unsigned short h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

}  // namespace sdm_emu

struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(sdm_emu::f32_to_f16_bits(f)) {}
    __half(double d) : __half((float)d) {}
    __half(int i) : __half((float)i) {}
    operator float() const { return sdm_emu::f16_bits_to_f32(__x); }
};
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(sdm_emu::f32_to_bf16_bits(f)) {}
    __nv_bfloat16(double d) : __nv_bfloat16((float)d) {}
    __nv_bfloat16(int i) : __nv_bfloat16((float)i) {}
    operator float() const { return sdm_emu::bf16_bits_to_f32(__x); }
};
static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2);
typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;

inline float __half2float(__half h) { return sdm_emu::f16_bits_to_f32(h.__x); }
inline __half __float2half_rn(float f) { __half h; h.__x = sdm_emu::f32_to_f16_bits(f); return h; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
inline float __bfloat162float(__nv_bfloat16 h) { return sdm_emu::bf16_bits_to_f32(h.__x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { __nv_bfloat16 h; h.__x = sdm_emu::f32_to_bf16_bits(f); return h; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 h; h.__x = u; return h; }

#define SDM_EMU_HALF_OPS(H)                                                            \
    inline H operator+(H a, H b) { return H((float)a + (float)b); }                    \
    inline H operator-(H a, H b) { return H((float)a - (float)b); }                    \
    inline H operator*(H a, H b) { return H((float)a * (float)b); }                    \
    inline H operator/(H a, H b) { return H((float)a / (float)b); }                    \
    inline H operator-(H a) { H r = a; r.__x ^= 0x8000u; return r; }                   \
    inline H& operator+=(H& a, H b) { return a = a + b; }                              \
    inline H& operator-=(H& a, H b) { return a = a - b; }                              \
    inline H& operator*=(H& a, H b) { return a = a * b; }                              \
    inline H& operator/=(H& a, H b) { return a = a / b; }                              \
    inline bool operator==(H a, H b) { return (float)a == (float)b; }                  \
    inline bool operator!=(H a, H b) { return (float)a != (float)b; }                  \
    inline bool operator<(H a, H b) { return (float)a < (float)b; }                    \
    inline bool operator<=(H a, H b) { return (float)a <= (float)b; }                  \
    inline bool operator>(H a, H b) { return (float)a > (float)b; }                    \
    inline bool operator>=(H a, H b) { return (float)a >= (float)b; }
SDM_EMU_HALF_OPS(__half)
SDM_EMU_HALF_OPS(__nv_bfloat16)
#undef SDM_EMU_HALF_OPS

// ---------------------------------------------------------------------------------------------
// The launch: `grid` blocks of `block` threads, blocks run one after another. Arguments are
// converted to the kernel's parameter types (they are not deduced from the call), as `<<<>>>` does.
template <class... A>
void sdm_emu_launch(void (*kernel)(A...), unsigned grid, unsigned block, std::type_identity_t<A>... args) {
    if (grid == 0 || block == 0 || block > 1024) {
        std::fprintf(stderr, "cuda_emu: invalid launch configuration grid=%u block=%u\n", grid, block);
        std::abort();
    }
    std::lock_guard<std::mutex> lock(sdm_emu::launch_mutex());
    sdm_emu::BlockCtx ctx(block);
    auto next_block = [&ctx]() noexcept { ctx.reset(); };
    std::barrier<decltype(next_block)> block_done((std::ptrdiff_t)block, next_block);
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t) {
        threads.emplace_back([&, t] {
            sdm_emu::tl_ctx = &ctx;
            threadIdx = uint3{t, 0, 0};
            blockDim = dim3(block);
            gridDim = dim3(grid);
            for (unsigned b = 0; b < grid; ++b) {
                blockIdx = uint3{b, 0, 0};
                kernel(args...);
                ctx.exit_thread(t);
                block_done.arrive_and_wait();  // completion resets the barriers for block b + 1
            }
            sdm_emu::tl_ctx = nullptr;
        });
    }
    for (auto& th : threads) th.join();
}
