// Module `optim` (kernels/ABI.md): the fused AdamW step and the EMA update on f32 master weights.
//
// Both reproduce the CPU's per-element arithmetic (sparsedm-train/src/optim.rs and ema.rs)
// operation by operation with IEEE-rounded intrinsics (`__fmul_rn` & co. are never contracted
// into FMAs, `__fsqrt_rn`/`__fdiv_rn` are correctly rounded whatever -prec-* flags say), so a GPU
// step gives the CPU's parameters bit for bit.
#include "sdm_common.cuh"

// One AdamW step (PyTorch semantics, amsgrad off); `decay = 1 − lr·wd`, `step_size = lr / bc1`
// and `bc2_sqrt = √(1 − β₂ᵗ)` come from the host (computed in f64 as the CPU does):
//   p ← p·decay;  m ← m + (1−β₁)(g − m);  v ← β₂v + (1−β₂)g²;  p ← p − step_size·m / (√v/bc2_sqrt + ε)
extern "C" __global__ void adamw_step(long long n, float lr, float beta1, float beta2, float eps, float decay,
                                      float step_size, float bc2_sqrt, float* __restrict__ p,
                                      const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v) {
    (void)lr;  // folded into decay and step_size by the host; kept in the ABI for launch symmetry
    const float one_minus_b1 = __fsub_rn(1.0f, beta1);
    const float one_minus_b2 = __fsub_rn(1.0f, beta2);
    SDM_GRID_STRIDE(i, n) {
        const float gi = g[i];
        const float pi = __fmul_rn(p[i], decay);
        const float mi = __fadd_rn(m[i], __fmul_rn(one_minus_b1, __fsub_rn(gi, m[i])));
        const float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(one_minus_b2, gi), gi));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = __fsub_rn(pi, __fdiv_rn(__fmul_rn(step_size, mi), denom));
    }
}

// ema ← d·ema + (1 − d)·p.
extern "C" __global__ void ema_update(long long n, float d, float* __restrict__ ema, const float* __restrict__ p) {
    const float one_minus_d = __fsub_rn(1.0f, d);
    SDM_GRID_STRIDE(i, n) {
        ema[i] = __fadd_rn(__fmul_rn(d, ema[i]), __fmul_rn(one_minus_d, p[i]));
    }
}
