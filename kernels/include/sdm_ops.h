/* Op codes of the generic element-wise and reduction kernels (see kernels/ABI.md).
 *
 * Plain C so that it compiles as C, C++ and CUDA alike. The values are part of the
 * kernel ABI: `sparsedm_kernels::abi` mirrors every #define here, and a unit test
 * there parses this file and checks both directions, so renumbering means editing
 * both places (the test says which value disagrees).
 */
#ifndef SDM_OPS_H
#define SDM_OPS_H

/* unary_T: y = f(x); `a`, `b` are the kernel's scalar parameters. */
#define SDM_U_NEG 0        /* -x */
#define SDM_U_EXP 1        /* e^x */
#define SDM_U_LOG 2        /* ln x */
#define SDM_U_SQRT 3       /* sqrt x */
#define SDM_U_RSQRT 4      /* 1 / sqrt x */
#define SDM_U_POWF 5       /* x^a */
#define SDM_U_SQR 6        /* x * x */
#define SDM_U_ABS 7        /* |x| */
#define SDM_U_TANH 8       /* tanh x */
#define SDM_U_SIGMOID 9    /* 1 / (1 + e^-x) */
#define SDM_U_RELU 10      /* max(x, 0) */
#define SDM_U_GELU 11      /* x * Phi(x), exact erf form */
#define SDM_U_SILU 12      /* x * sigmoid(x) */
#define SDM_U_AFFINE 13    /* a * x + b */
#define SDM_U_CLAMP 14     /* min(max(x, a), b), NaN stays NaN */
#define SDM_U_RECIP 15     /* 1 / x */
#define SDM_U_SIN 16       /* sin x */
#define SDM_U_COS 17       /* cos x */
#define SDM_U_GELU_TANH 18 /* tanh approximation of GELU */
#define SDM_U_STEP 19      /* x > 0 ? 1 : 0 */

/* binary_T: y = g(a, b) with broadcasting. */
#define SDM_B_ADD 0
#define SDM_B_SUB 1
#define SDM_B_MUL 2
#define SDM_B_DIV 3
#define SDM_B_MAX 4         /* torch.maximum: NaN propagates */
#define SDM_B_MIN 5         /* torch.minimum: NaN propagates */
#define SDM_B_POW 6         /* a^b */
#define SDM_B_GELU_BWD 7    /* a = grad, b = x: a * GELU'(b) */
#define SDM_B_SILU_BWD 8    /* a = grad, b = x: a * SiLU'(b) */
#define SDM_B_TANH_BWD 9    /* a = grad, b = tanh output y: a * (1 - y^2) */
#define SDM_B_SIGMOID_BWD 10 /* a = grad, b = sigmoid output y: a * y * (1 - y) */
#define SDM_B_RELU_BWD 11   /* a = grad, b = x: b > 0 ? a : 0 */
#define SDM_B_GT 12         /* a > b ? 1 : 0 */
#define SDM_B_GE 13         /* a >= b ? 1 : 0 */
#define SDM_B_EQ 14         /* a == b ? 1 : 0 */
#define SDM_B_LT 15         /* a < b ? 1 : 0 */

/* reduce_T over the middle axis of [outer, red, inner]. */
#define SDM_R_SUM 0
#define SDM_R_MEAN 1
#define SDM_R_MAX 2   /* NaN propagates (torch.amax) */
#define SDM_R_MIN 3   /* NaN propagates (torch.amin) */
#define SDM_R_SUMSQ 4 /* sum of squares */

#endif /* SDM_OPS_H */
