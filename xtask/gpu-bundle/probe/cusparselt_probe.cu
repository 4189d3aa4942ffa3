// cuSPARSELt alone (no sparsedm code): the gpu_sparse24 test's call sequence and shapes in plain
// C++, to tell a cuSPARSELt fault from ours. Found (H200, cuSPARSELt 0.8.0, 2026-12-04): f16 plans die
// in cusparseLtMatmulSearch (illegal instruction) at every shape tried; bf16 searches fine.
#include <cusparseLt.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("  CUDA %s at %s:%d\n", cudaGetErrorString(e_), #x, __LINE__); return 1; } } while (0)
#define LT(x) do { cusparseStatus_t s_ = (x); cudaError_t e_ = cudaDeviceSynchronize(); printf("  %-28s -> %d (sync: %s)\n", #x, (int)s_, cudaGetErrorString(e_)); if (s_ != CUSPARSE_STATUS_SUCCESS || e_ != cudaSuccess) return 1; } while (0)

static unsigned short to16(float f, bool bf) {
  if (bf) { __nv_bfloat16 h = __float2bfloat16(f); return *(unsigned short*)&h; }
  __half h = __float2half(f); return *(unsigned short*)&h;
}

int run(int m, int n, int k, bool bias, bool bf, bool search, int stream_kind) {
  printf("case m=%d n=%d k=%d bias=%d %s search=%d stream=%d\n", m, n, k, bias, bf ? "bf16" : "f16", search, stream_kind);
  cudaDataType ty = bf ? CUDA_R_16BF : CUDA_R_16F;
  int mp = (m + 7) / 8 * 8;
  std::mt19937 rng(1); std::normal_distribution<float> nd;
  std::vector<unsigned short> hw(n * k), hx(mp * k), hb(n);
  for (int r = 0; r < n; r++) for (int g = 0; g < k / 4; g++) for (int j = 0; j < 4; j++) hw[r * k + g * 4 + j] = (j == 0 || j == 2) ? to16(nd(rng), bf) : 0;
  for (auto &v : hx) v = to16(nd(rng), bf);
  for (auto &v : hb) v = to16(nd(rng), bf);
  void *dw, *dx, *dy, *db, *dc, *dbuf; int *dvalid;
  CK(cudaMalloc(&dw, n * k * 2)); CK(cudaMalloc(&dx, mp * k * 2)); CK(cudaMalloc(&dy, mp * n * 2)); CK(cudaMalloc(&db, n * 2)); CK(cudaMalloc(&dvalid, 4));
  CK(cudaMemcpy(dw, hw.data(), n * k * 2, cudaMemcpyHostToDevice)); CK(cudaMemcpy(dx, hx.data(), mp * k * 2, cudaMemcpyHostToDevice)); CK(cudaMemcpy(db, hb.data(), n * 2, cudaMemcpyHostToDevice));
  cudaStream_t st = 0;
  if (stream_kind == 1) CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cusparseLtHandle_t h; LT(cusparseLtInit(&h));
  cusparseLtMatDescriptor_t a, b, d;
  LT(cusparseLtStructuredDescriptorInit(&h, &a, n, k, k, 16, ty, CUSPARSE_ORDER_ROW, CUSPARSELT_SPARSITY_50_PERCENT));
  LT(cusparseLtDenseDescriptorInit(&h, &b, k, mp, k, 16, ty, CUSPARSE_ORDER_COL));
  LT(cusparseLtDenseDescriptorInit(&h, &d, n, mp, n, 16, ty, CUSPARSE_ORDER_COL));
  LT(cusparseLtSpMMAPruneCheck2(&h, &a, 1, CUSPARSE_OPERATION_NON_TRANSPOSE, dw, dvalid, st));
  size_t cs, bs; LT(cusparseLtSpMMACompressedSize2(&h, &a, &cs, &bs));
  CK(cudaMalloc(&dc, cs)); CK(cudaMalloc(&dbuf, bs ? bs : 1));
  LT(cusparseLtSpMMACompress2(&h, &a, 1, CUSPARSE_OPERATION_NON_TRANSPOSE, dw, dc, dbuf, st));
  cusparseLtMatmulDescriptor_t md; cusparseLtMatmulAlgSelection_t alg; cusparseLtMatmulPlan_t plan;
  LT(cusparseLtMatmulDescriptorInit(&h, &md, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &a, &b, &d, &d, CUSPARSE_COMPUTE_32F));
  if (bias) LT(cusparseLtMatmulDescSetAttribute(&h, &md, CUSPARSELT_MATMUL_BIAS_POINTER, &db, sizeof(db)));
  LT(cusparseLtMatmulAlgSelectionInit(&h, &alg, &md, CUSPARSELT_MATMUL_ALG_DEFAULT));
  LT(cusparseLtMatmulPlanInit(&h, &plan, &md, &alg));
  size_t ws = 0; LT(cusparseLtMatmulGetWorkspace(&h, &plan, &ws));
  void *dws = nullptr; if (ws) CK(cudaMalloc(&dws, ws));
  printf("  compressed %zu B, workspace %zu B\n", cs, ws);
  float alpha = 1.f, beta = 0.f;
  if (search) LT(cusparseLtMatmulSearch(&h, &plan, &alpha, dc, dx, &beta, dy, dy, dws, &st, 1));
  LT(cusparseLtMatmul(&h, &plan, &alpha, dc, dx, &beta, dy, dy, dws, &st, 1));
  int id = -1; cusparseLtMatmulAlgGetAttribute(&h, &alg, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &id, sizeof(id));
  printf("  OK alg id %d\n", id);
  cusparseLtMatmulPlanDestroy(&plan); cusparseLtMatmulAlgSelectionDestroy(&alg); cusparseLtMatDescriptorDestroy(&a); cusparseLtMatDescriptorDestroy(&b); cusparseLtMatDescriptorDestroy(&d);
  cusparseLtDestroy(&h);
  cudaFree(dw); cudaFree(dx); cudaFree(dy); cudaFree(db); cudaFree(dc); cudaFree(dbuf); if (dws) cudaFree(dws);
  return 0;
}

int main(int argc, char **argv) {
  // Each case in its own process (argv) so that a fault does not hide the rest.
  if (argc < 8) { printf("usage: probe m n k bias bf search stream\n"); return 2; }
  return run(atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7]));
}
