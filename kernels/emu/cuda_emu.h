// CPU emulation of the subset of CUDA that sparsedm's kernels use.
//
// Included before a `.cu` file (`g++ -std=c++20 -pthread -DSDM_EMULATION -include
// kernels/emu/cuda_emu.h`), it turns the kernel source into ordinary C++ so the kernels can be
// tested on a machine without a GPU (tests/emu/mod.rs builds such translation units into shared
// libraries and calls them from Rust). It is a test tool, not a simulator: it aims at running
// correct kernels with the results the GPU gives, and at making wrong kernels fail.
//
// Execution model (see sdm_fiber.h). `sdm_emu_launch(kernel, grid, block, args...)` runs the
// blocks of a 1-D grid one after another on the calling thread; the simulator (the Rust crate's
// `sim` driver, through SDM_SIM_ENTRY below) runs ranges of blocks on several OS threads at once.
// The threads of a block are fibers of one OS thread, switched only at synchronisation points:
//   * `__syncthreads()` suspends the fiber until every live thread of the block arrived;
//   * warps are groups of 32 consecutive threads; `__syncwarp()` and the warp intrinsics
//     (`__shfl_*_sync`, `__ballot_sync`, `__any_sync`, `__all_sync`) suspend the fiber until every
//     live lane of its warp arrived, exchanging values through a per-thread slot, so the 32 lanes
//     meet in lockstep at each of them;
//   * a thread that returns from the kernel counts as arrived at every later barrier of its block
//     (as exited threads do on the GPU), so `if (i >= n) return;` before a `__syncthreads()` works;
//   * `__shared__` is `static thread_local`: one instance per kernel instantiation and OS thread,
//     shared by the fibers of the block that thread is running;
//   * a barrier that can never open (not reached by every thread) stops the launch with an error.
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
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "sdm_fiber.h"

// ---------------------------------------------------------------------------------------------
// Qualifiers. `__restrict__` is a g++ keyword already.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __constant__
#define __launch_bounds__(...)

// ---------------------------------------------------------------------------------------------
// Built-in vector types and thread coordinates.
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

// uint3, dim3, threadIdx, blockIdx, blockDim and gridDim are defined by sdm_fiber.h.
constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------------
// Warp exchange through the scheduler's per-thread slots.
namespace sdm_emu {

inline void warp_barrier() { wait_at(FiberState::AtWarpBarrier); }

// The slot set of the calling thread's next warp exchange. Exchanges alternate between two sets,
// so one barrier per exchange suffices: a lane can only rewrite a set after every lane of its warp
// arrived at the following exchange's barrier, i.e. finished reading this one.
inline std::array<unsigned char, 16>* exchange_slots() {
    Scheduler& s = tl_sched;
    return s.slot[s.exchanges[threadIdx.x]++ & 1u].data();
}

// Every live lane of the calling warp publishes `v`; returns the value published by lane `src`
// of the same warp (or `v` itself when that lane does not exist).
template <class T>
T warp_exchange(T v, unsigned src) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16, "warp exchange of a type > 16 bytes");
    unsigned tid = threadIdx.x;
    std::array<unsigned char, 16>* slots = exchange_slots();
    std::memcpy(slots[tid].data(), &v, sizeof(T));
    warp_barrier();
    unsigned from = (tid & ~31u) + src;
    T r = v;
    if (from < tl_sched.block) std::memcpy(&r, slots[from].data(), sizeof(T));
    return r;
}

inline unsigned lane_id() { return threadIdx.x & 31u; }

}  // namespace sdm_emu

inline void __syncthreads() { sdm_emu::wait_at(sdm_emu::FiberState::AtBlockBarrier); }
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
    unsigned tid = threadIdx.x;
    unsigned base = tid & ~31u;
    int p = pred != 0;
    std::array<unsigned char, 16>* slots = sdm_emu::exchange_slots();
    std::memcpy(slots[tid].data(), &p, sizeof p);
    sdm_emu::warp_barrier();
    unsigned bits = 0;
    for (unsigned l = 0; l < 32 && base + l < sdm_emu::tl_sched.block; ++l) {
        int q;
        std::memcpy(&q, slots[base + l].data(), sizeof q);
        if (q) bits |= 1u << l;
    }
    return bits;
}
// Lanes that exist in the caller's warp (a partial last warp has fewer than 32).
inline unsigned __activemask() {
    unsigned base = threadIdx.x & ~31u;
    unsigned lanes = std::min(32u, sdm_emu::tl_sched.block - base);
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
// The launch: `grid` blocks of `block` threads, blocks run one after another on the calling
// thread, every block as fibers. Arguments are converted to the kernel's parameter types (they are
// not deduced from the call), as `<<<>>>` does. A deadlocked block aborts with its reason.
template <class... A>
void sdm_emu_launch(void (*kernel)(A...), unsigned grid, unsigned block, std::type_identity_t<A>... args) {
    if (grid == 0 || block == 0 || block > sdm_emu::kMaxBlock) {
        std::fprintf(stderr, "cuda_emu: invalid launch configuration grid=%u block=%u\n", grid, block);
        std::abort();
    }
    auto call = [&]() { kernel(args...); };
    using Call = decltype(call);
    sdm_emu::tl_sched.error[0] = 0;
    for (unsigned b = 0; b < grid; ++b) {
        if (sdm_emu::run_block(b, grid, block, [](void* p) { (*static_cast<Call*>(p))(); }, &call) != 0) {
            std::fprintf(stderr, "cuda_emu: %s\n", sdm_emu::tl_sched.error);
            std::abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Simulator entry points: `SDM_SIM_ENTRY(kernel)` exports, for an `extern "C"` kernel,
//   int sdm_sim_run_<kernel>(const SdmSimLaunch*, void* const* args)  — blocks [first, last)
//   unsigned sdm_sim_sig_<kernel>(unsigned* sizes, unsigned char* is_ptr, unsigned cap)
// `args[i]` points to the value of parameter i (the caller checked its size against the
// signature); `fibers == 0` runs the threads as a plain loop (kernels without barriers or warp
// operations). A failing run returns −1 and `sdm_sim_error()` (same OS thread) says why.
struct SdmSimLaunch {
    unsigned grid, block, first, last;
    int fibers;
};

namespace sdm_emu {

template <class... A>
constexpr size_t arity(void (*)(A...)) {
    return sizeof...(A);
}

template <class... A, size_t... I>
int sim_run(void (*kernel)(A...), const SdmSimLaunch* l, void* const* args, std::index_sequence<I...>) {
    auto call = [&]() { kernel(*static_cast<const std::remove_cvref_t<A>*>(args[I])...); };
    using Call = decltype(call);
    auto body = [](void* p) { (*static_cast<Call*>(p))(); };
    tl_sched.error[0] = 0;
    if (l->block == 0 || l->block > kMaxBlock || l->last > l->grid) {
        std::snprintf(tl_sched.error, sizeof tl_sched.error, "invalid launch grid=%u block=%u blocks %u..%u", l->grid,
                      l->block, l->first, l->last);
        return -1;
    }
    for (unsigned b = l->first; b < l->last; ++b) {
        int rc = l->fibers ? run_block(b, l->grid, l->block, body, &call) : run_block_plain(b, l->grid, l->block, body, &call);
        if (rc != 0) return rc;
    }
    return 0;
}

template <class... A>
unsigned sim_sig(void (*)(A...), unsigned* sizes, unsigned char* is_ptr, unsigned cap) {
    unsigned i = 0;
    ((i < cap ? (void)(sizes[i] = (unsigned)sizeof(std::remove_cvref_t<A>), is_ptr[i] = std::is_pointer_v<std::remove_cvref_t<A>>)
              : (void)0,
      ++i),
     ...);
    return (unsigned)sizeof...(A);
}

}  // namespace sdm_emu

extern "C" __attribute__((used)) inline const char* sdm_sim_error() { return sdm_emu::tl_sched.error; }

#define SDM_SIM_ENTRY(K)                                                                              \
    extern "C" int sdm_sim_run_##K(const SdmSimLaunch* l, void* const* args) {                        \
        return sdm_emu::sim_run(K, l, args, std::make_index_sequence<sdm_emu::arity(K)>{});          \
    }                                                                                                 \
    extern "C" unsigned sdm_sim_sig_##K(unsigned* sizes, unsigned char* is_ptr, unsigned cap) {       \
        return sdm_emu::sim_sig(K, sizes, is_ptr, cap);                                               \
    }
