// Row-major bf16 GEMMs of the CUDA backend through cuBLASLt: the three products of
// kernels/cpu/cpu_ops.h (matmul_nt / matmul_nn / matmul_tn) with bf16 inputs, fp32 accumulation
// (CUBLAS_COMPUTE_32F) and a bf16 or fp32 output. Tested against cpu::matmul_* on the same
// bf16 inputs in tests/kernels/gemm_gpu_test.cc.
//
// Usage (one Gemm per device and stream-ordered thread; it is not thread-safe):
//   cuda::Gemm gemm;                                     // cuBLASLt handle + 32 MiB workspace
//   gemm.matmul_nt(m, n, k, x_mk, w_nk, y_mn, 0.f, s);   // y = x W^T           (bf16 out)
//   gemm.matmul_nn(m, n, k, dy_mn, w_nk, dx_mk, 0.f, s); // dx = dy W          (bf16 out)
//   gemm.matmul_tn(m, n, k, dy_km, x_kn, dw_mn, 1.f, s); // dW += dy^T x (fp32 out, beta 1)
//
// All matrices are dense, row-major, contiguous (leading dimension = number of columns).
// beta == 0 overwrites C without reading it (NaN in C does not leak); beta == 1 accumulates,
// which is how fp32 weight gradients sum over micro-batches. Any m, n, k >= 1 and any element
// alignment are accepted: the actual pointer alignment is passed to the algorithm heuristic, so
// 16-byte aligned pointers and leading dimensions that are multiples of 8 get the fastest
// tensor-core algorithms and other shapes get slower but correct ones.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>
#include <tuple>

#include "kernels/cuda/cuda_check.h"

namespace loom::kernels::cuda {

// Which operand is transposed, in the row-major terms of cpu_ops.h.
enum class GemmOp {
  kNT,  // C[M,N] = beta C + A[M,K] B[N,K]^T
  kNN,  // C[M,N] = beta C + A[M,K] B[K,N]
  kTN,  // C[M,N] = beta C + A[K,M]^T B[K,N]
};

class Gemm {
 public:
  // The cuBLAS API reference (cublasSetWorkspace) recommends 32 MiB of workspace on Hopper
  // (4 MiB on earlier GPUs); PyTorch and llm.c give cuBLASLt the same.
  static constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;

  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // Row-major products, bf16 inputs, fp32 accumulation. Overloads by output type.
  void matmul_nt(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a, const __nv_bfloat16* b,
                 __nv_bfloat16* c, float beta, cudaStream_t stream);
  void matmul_nt(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a, const __nv_bfloat16* b,
                 float* c, float beta, cudaStream_t stream);
  void matmul_nn(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a, const __nv_bfloat16* b,
                 __nv_bfloat16* c, float beta, cudaStream_t stream);
  void matmul_nn(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a, const __nv_bfloat16* b,
                 float* c, float beta, cudaStream_t stream);
  void matmul_tn(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a, const __nv_bfloat16* b,
                 __nv_bfloat16* c, float beta, cudaStream_t stream);
  void matmul_tn(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a, const __nv_bfloat16* b,
                 float* c, float beta, cudaStream_t stream);

  // The general entry point behind the overloads; c_type is CUDA_R_16BF or CUDA_R_32F.
  void run(GemmOp op, int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a,
           const __nv_bfloat16* b, void* c, cudaDataType_t c_type, float beta, cudaStream_t stream);

  // `batch` independent row-major products with explicit row strides (lda, ldb, ldc: elements
  // between consecutive rows) and batch strides (elements between consecutive matrices), and
  // C = alpha op(A) op(B) + beta C. Operand shapes as in run(); the strides let a batch walk
  // the heads of a [B, T, H, D] tensor in place (attention).
  void run_batched(GemmOp op, int64_t m, int64_t n, int64_t k, int64_t batch,
                   const __nv_bfloat16* a, int64_t lda, int64_t stride_a, const __nv_bfloat16* b,
                   int64_t ldb, int64_t stride_b, void* c, cudaDataType_t c_type, int64_t ldc,
                   int64_t stride_c, float alpha, float beta, cudaStream_t stream);

  std::size_t workspace_bytes() const { return kWorkspaceBytes; }
  // Number of distinct problems whose algorithm has been chosen (for tests and logging).
  std::size_t cached_algorithms() const { return algos_.size(); }

 private:
  // (op, m, n, k, C type, alignment of A, B and C in bytes): everything the heuristic sees.
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int, int, int, int>;
  cublasLtMatmulAlgo_t choose(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, int align_a,
                              int align_b, int align_c, const std::string& what);
  const cublasLtMatmulAlgo_t& algorithm(const Key& key, cublasLtMatmulDesc_t desc,
                                        cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                        cublasLtMatrixLayout_t c);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBytes workspace_;
  std::map<Key, cublasLtMatmulAlgo_t> algos_;
  // Batched problems: (op, m, n, k, batch, lda, ldb, ldc, stride a/b/c, C type, alignments).
  using BatchedKey = std::vector<int64_t>;
  std::map<BatchedKey, cublasLtMatmulAlgo_t> batched_algos_;
};

}  // namespace loom::kernels::cuda
