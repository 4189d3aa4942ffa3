// Module `rng`: Philox4x32-10 uniform, normal and dropout-mask streams, bit-compatible
// with sparsedm-tensor's `Rng` (src/rng.rs; kernels/ABI.md, "Module rng").
//
// Counter-based: block j of a draw is philox(key = (seed_lo, seed_hi),
// ctr = [c_lo, c_hi, 0, 0]) with c = counter + j, and yields outputs 4j … 4j+3. Each
// thread computes whole blocks (grid-stride over ceil(n/4) blocks), so the stream is
// independent of the launch shape and equals the CPU's for the same (seed, counter).
// Uniforms and dropout masks are bit-exact: their arithmetic is written with
// __fmul_rn/__fadd_rn so nvcc cannot contract it into an FMA that the CPU does not do.
#include "sdm_common.cuh"

#define SDM_PHILOX_M0 0xD2511F53u
#define SDM_PHILOX_M1 0xCD9E8D57u
#define SDM_PHILOX_W0 0x9E3779B9u
#define SDM_PHILOX_W1 0xBB67AE85u

// Four 32-bit outputs of one Philox4x32-10 block.
struct Philox4 {
    unsigned int x[4];
};

// Philox4x32-10 on counter (c_lo, c_hi, 0, 0) and key (k0, k1).
__device__ __forceinline__ Philox4 sdm_philox(unsigned long long c, unsigned int k0, unsigned int k1) {
    unsigned int c0 = (unsigned int)c, c1 = (unsigned int)(c >> 32), c2 = 0u, c3 = 0u;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        const unsigned int hi0 = __umulhi(SDM_PHILOX_M0, c0), lo0 = SDM_PHILOX_M0 * c0;
        const unsigned int hi1 = __umulhi(SDM_PHILOX_M1, c2), lo1 = SDM_PHILOX_M1 * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += SDM_PHILOX_W0;
        k1 += SDM_PHILOX_W1;
    }
    Philox4 r;
    r.x[0] = c0;
    r.x[1] = c1;
    r.x[2] = c2;
    r.x[3] = c3;
    return r;
}

// u32 -> [0, 1) with 24 bits: (x >> 8) · 2⁻²⁴ (exact in f32).
__device__ __forceinline__ float sdm_unit(unsigned int x) { return (float)(x >> 8) * 5.9604644775390625e-8f; }

// u32 -> (0, 1] with 24 bits: ((x >> 8) + 1) · 2⁻²⁴ (never 0, so ln is finite).
__device__ __forceinline__ float sdm_unit_open0(unsigned int x) {
    return (float)((x >> 8) + 1u) * 5.9604644775390625e-8f;
}

// Calls f(k, bits) for the valid outputs k = 4j + t < n of every block j this thread
// owns, bits being the t-th word of block j.
template <typename F>
__device__ __forceinline__ void sdm_philox_blocks(long long n, unsigned int seed_lo, unsigned int seed_hi,
                                                  unsigned long long counter, F f) {
    const long long blocks = (n + 3) / 4;
    SDM_GRID_STRIDE(j, blocks) {
        const Philox4 b = sdm_philox(counter + (unsigned long long)j, seed_lo, seed_hi);
#pragma unroll
        for (int t = 0; t < 4; ++t) {
            const long long k = 4 * j + t;
            if (k < n) f(k, b.x[t]);
        }
    }
}

// y = lo + (hi − lo)·u, u uniform in [0, 1) (the CPU's `uniform_vec`, bit-exact).
extern "C" __global__ void philox_uniform(long long n, unsigned int seed_lo, unsigned int seed_hi,
                                          unsigned long long counter, float lo, float hi, float* y) {
    const float span = __fsub_rn(hi, lo);
    sdm_philox_blocks(n, seed_lo, seed_hi, counter,
                      [&](long long k, unsigned int bits) { y[k] = __fadd_rn(lo, __fmul_rn(span, sdm_unit(bits))); });
}

// Standard normals by Box–Muller on the pairs (x0, x1), (x2, x3) of each block:
// r = sqrt(−2 ln u1), (r cos 2πu2, r sin 2πu2) (the CPU's `normal_vec`, up to the ulps
// of logf/sincosf).
extern "C" __global__ void philox_normal(long long n, unsigned int seed_lo, unsigned int seed_hi,
                                         unsigned long long counter, float* y) {
    const long long blocks = (n + 3) / 4;
    SDM_GRID_STRIDE(j, blocks) {
        const Philox4 b = sdm_philox(counter + (unsigned long long)j, seed_lo, seed_hi);
#pragma unroll
        for (int p = 0; p < 2; ++p) {
            const float u1 = sdm_unit_open0(b.x[2 * p]), u2 = sdm_unit_open0(b.x[2 * p + 1]);
            const float r = sqrtf(-2.0f * logf(u1));
            float s, c;
            sincosf(__fmul_rn(6.28318530717958647f, u2), &s, &c);
            const long long k = 4 * j + 2 * p;
            if (k < n) y[k] = __fmul_rn(r, c);
            if (k + 1 < n) y[k + 1] = __fmul_rn(r, s);
        }
    }
}

// Dropout mask: y = u < p ? 0 : scale on the uniform stream u (the CPU's `dropout`
// mask, bit-exact); the caller multiplies it into the activations.
extern "C" __global__ void philox_dropout(long long n, unsigned int seed_lo, unsigned int seed_hi,
                                          unsigned long long counter, float p, float scale, float* y) {
    sdm_philox_blocks(n, seed_lo, seed_hi, counter,
                      [&](long long k, unsigned int bits) { y[k] = sdm_unit(bits) < p ? 0.0f : scale; });
}
