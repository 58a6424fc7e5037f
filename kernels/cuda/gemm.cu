// cuBLASLt wrapper for the row-major bf16 GEMMs of gemm.h. cuBLASLt is column-major; a row-major
// [R, S] matrix is, byte for byte, the column-major matrix [S, R] (its transpose). So every
// product is computed transposed: C^T = op(B)^T op(A)^T, i.e. cuBLASLt multiplies "B" by "A"
// with m' = N, n' = M, k' = K and writes column-major C^T [N, M] (ld N) = row-major C [M, N].
// Tested in tests/kernels/gemm_gpu_test.cc.
#include <fmt/format.h>

#include "kernels/cuda/gemm.h"

namespace loom::kernels::cuda {
namespace {

// Owns one cuBLASLt descriptor for the duration of a call.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  MatmulDesc(cublasOperation_t trans_a, cublasOperation_t trans_b) {
    LOOM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                     sizeof(trans_a)));
    LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                     sizeof(trans_b)));
  }
  ~MatmulDesc() { cublasLtMatmulDescDestroy(desc); }
  MatmulDesc(const MatmulDesc&) = delete;
  MatmulDesc& operator=(const MatmulDesc&) = delete;
};

// A column-major stored matrix of `rows` x `cols` with leading dimension `ld` (before any op).
struct Layout {
  cublasLtMatrixLayout_t layout = nullptr;
  Layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
    LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                                 static_cast<uint64_t>(cols), ld));
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(layout); }
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;
};

// Largest power of two (<= 256, cuBLASLt's default assumption) that divides the address.
int pointer_alignment_bytes(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && address % static_cast<uintptr_t>(align) != 0) align /= 2;
  return align;
}

const char* op_name(GemmOp op) {
  switch (op) {
    case GemmOp::kNT:
      return "matmul_nt";
    case GemmOp::kNN:
      return "matmul_nn";
    case GemmOp::kTN:
      return "matmul_tn";
  }
  return "?";
}

}  // namespace

Gemm::Gemm() : workspace_(kWorkspaceBytes) { LOOM_CUBLAS_CHECK(cublasLtCreate(&handle_)); }

Gemm::~Gemm() {
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

cublasLtMatmulAlgo_t Gemm::choose(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                  cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, int align_a,
                                  int align_b, int align_c, const std::string& what) {
  cublasLtMatmulPreference_t pref = nullptr;
  LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = kWorkspaceBytes;
  const uint32_t align_lt_a = static_cast<uint32_t>(align_a);
  const uint32_t align_lt_b = static_cast<uint32_t>(align_b);
  const uint32_t align_lt_c = static_cast<uint32_t>(align_c);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  try {
    LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
    LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_lt_a, sizeof(align_lt_a)));
    LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_lt_b, sizeof(align_lt_b)));
    LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_lt_c, sizeof(align_lt_c)));
    LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_lt_c, sizeof(align_lt_c)));
    LOOM_CUBLAS_CHECK(
        cublasLtMatmulAlgoGetHeuristic(handle_, desc, a, b, c, c, pref, 1, &result, &found));
  } catch (...) {
    cublasLtMatmulPreferenceDestroy(pref);
    throw;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0) {
    throw CudaError(fmt::format("{}:{}: cuBLASLt has no algorithm for {} (alignment A/B/C {}/{}/{} "
                                "bytes)",
                                __FILE__, __LINE__, what, align_b, align_a, align_c));
  }
  return result.algo;
}

const cublasLtMatmulAlgo_t& Gemm::algorithm(const Key& key, cublasLtMatmulDesc_t desc,
                                            cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                            cublasLtMatrixLayout_t c) {
  if (auto it = algos_.find(key); it != algos_.end()) return it->second;
  // cuBLASLt's operand "A" is our B and its "B" is our A (see the file comment).
  const std::string what = fmt::format(
      "{} m={} n={} k={} (C {})", op_name(static_cast<GemmOp>(std::get<0>(key))), std::get<1>(key),
      std::get<2>(key), std::get<3>(key), std::get<4>(key) == CUDA_R_32F ? "fp32" : "bf16");
  const cublasLtMatmulAlgo_t algo =
      choose(desc, a, b, c, std::get<5>(key), std::get<6>(key), std::get<7>(key), what);
  return algos_.emplace(key, algo).first->second;
}

void Gemm::run(GemmOp op, int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a,
               const __nv_bfloat16* b, void* c, cudaDataType_t c_type, float beta,
               cudaStream_t stream) {
  if (m <= 0 || n <= 0 || k <= 0) {
    throw CudaError(fmt::format("{}:{}: {}: sizes must be positive (m={} n={} k={})", __FILE__,
                                __LINE__, op_name(op), m, n, k));
  }
  // Column-major view (file comment): cuBLASLt computes D'[N, M] = op(A') op(B') with A' = our B
  // and B' = our A; each stored operand is described as it lies in memory, before its op.
  //   NT: B[N,K] row-major = col-major [K,N] ld K, transposed -> [N,K];
  //       A[M,K] row-major = col-major [K,M] ld K, as is.
  //   NN: B[K,N] row-major = col-major [N,K] ld N, as is; A as in NT.
  //   TN: B as in NN; A[K,M] row-major = col-major [M,K] ld M, transposed -> [K,M].
  const bool b_transposed = op == GemmOp::kNT;
  const bool a_transposed = op == GemmOp::kTN;
  const MatmulDesc desc(b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N,
                        a_transposed ? CUBLAS_OP_T : CUBLAS_OP_N);
  const Layout lt_a(CUDA_R_16BF, b_transposed ? k : n, b_transposed ? n : k, b_transposed ? k : n);
  const Layout lt_b(CUDA_R_16BF, a_transposed ? m : k, a_transposed ? k : m, a_transposed ? m : k);
  const Layout lt_c(c_type, n, m, n);

  const Key key{static_cast<int>(op),
                m,
                n,
                k,
                static_cast<int>(c_type),
                pointer_alignment_bytes(b),
                pointer_alignment_bytes(a),
                pointer_alignment_bytes(c)};
  const cublasLtMatmulAlgo_t& algo =
      algorithm(key, desc.desc, lt_a.layout, lt_b.layout, lt_c.layout);
  const float alpha = 1.0f;
  LOOM_CUBLAS_CHECK(cublasLtMatmul(handle_, desc.desc, &alpha, b, lt_a.layout, a, lt_b.layout,
                                   &beta, c, lt_c.layout, c, lt_c.layout, &algo, workspace_.get(),
                                   kWorkspaceBytes, stream));
}

void Gemm::run_batched(GemmOp op, int64_t m, int64_t n, int64_t k, int64_t batch,
                       const __nv_bfloat16* a, int64_t lda, int64_t stride_a,
                       const __nv_bfloat16* b, int64_t ldb, int64_t stride_b, void* c,
                       cudaDataType_t c_type, int64_t ldc, int64_t stride_c, float alpha,
                       float beta, cudaStream_t stream) {
  if (m <= 0 || n <= 0 || k <= 0 || batch <= 0) {
    throw CudaError(fmt::format("{}:{}: {} batched: sizes must be positive (m={} n={} k={} "
                                "batch={})",
                                __FILE__, __LINE__, op_name(op), m, n, k, batch));
  }
  // As run(), with the row strides as leading dimensions: a row-major [R, S] matrix with row
  // stride ld is the column-major [S, R] matrix with leading dimension ld.
  const bool b_transposed = op == GemmOp::kNT;
  const bool a_transposed = op == GemmOp::kTN;
  const MatmulDesc desc(b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N,
                        a_transposed ? CUBLAS_OP_T : CUBLAS_OP_N);
  const Layout lt_a(CUDA_R_16BF, b_transposed ? k : n, b_transposed ? n : k, ldb);
  const Layout lt_b(CUDA_R_16BF, a_transposed ? m : k, a_transposed ? k : m, lda);
  const Layout lt_c(c_type, n, m, ldc);
  const int32_t count = static_cast<int32_t>(batch);
  for (const auto& [layout, stride] : {std::pair{lt_a.layout, stride_b}, std::pair{lt_b.layout, stride_a},
                                        std::pair{lt_c.layout, stride_c}}) {
    LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                       &count, sizeof(count)));
    LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  const BatchedKey key{static_cast<int64_t>(op), m, n, k, batch, lda, ldb, ldc, stride_a,
                       stride_b, stride_c, static_cast<int64_t>(c_type),
                       pointer_alignment_bytes(b), pointer_alignment_bytes(a),
                       pointer_alignment_bytes(c)};
  auto it = batched_algos_.find(key);
  if (it == batched_algos_.end()) {
    const std::string what = fmt::format("{} batched m={} n={} k={} batch={} lda={} ldb={} ldc={}",
                                         op_name(op), m, n, k, batch, lda, ldb, ldc);
    it = batched_algos_
             .emplace(key, choose(desc.desc, lt_a.layout, lt_b.layout, lt_c.layout,
                                  static_cast<int>(key[12]), static_cast<int>(key[13]),
                                  static_cast<int>(key[14]), what))
             .first;
  }
  LOOM_CUBLAS_CHECK(cublasLtMatmul(handle_, desc.desc, &alpha, b, lt_a.layout, a, lt_b.layout,
                                   &beta, c, lt_c.layout, c, lt_c.layout, &it->second,
                                   workspace_.get(), kWorkspaceBytes, stream));
}

#define LOOM_GEMM_OVERLOADS(name, op)                                                              \
  void Gemm::name(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a, const __nv_bfloat16* b, \
                  __nv_bfloat16* c, float beta, cudaStream_t stream) {                             \
    run(op, m, n, k, a, b, c, CUDA_R_16BF, beta, stream);                                          \
  }                                                                                                \
  void Gemm::name(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* a, const __nv_bfloat16* b, \
                  float* c, float beta, cudaStream_t stream) {                                     \
    run(op, m, n, k, a, b, c, CUDA_R_32F, beta, stream);                                           \
  }

LOOM_GEMM_OVERLOADS(matmul_nt, GemmOp::kNT)
LOOM_GEMM_OVERLOADS(matmul_nn, GemmOp::kNN)
LOOM_GEMM_OVERLOADS(matmul_tn, GemmOp::kTN)
#undef LOOM_GEMM_OVERLOADS

}  // namespace loom::kernels::cuda
