// Embedding gather and its deterministic backward (embedding.h). The backward sorts (token,
// position) pairs with CUB's stable radix sort, so each token's positions come out in increasing
// order; the first sorted index of each token then sums that token's dout rows column by column
// in that order, starting from the existing dtable value: the same sequence of fp32 additions as
// cpu::embedding_bwd, hence bit-identical results. Tested in tests/kernels/embedding_gpu_test.cc.
#include <fmt/format.h>

#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/bf16_bits.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/embedding.h"

namespace loom::kernels::cuda {
namespace {

// Columns per block: 256 threads, one column each (a dout row segment of 512 bytes, coalesced).
constexpr int kColumnsPerBlock = 256;
// Sub-buffers of the workspace start at multiples of 256 bytes (cudaMalloc's alignment, which
// CUB's temporary storage expects).
constexpr std::size_t kAlign = 256;

std::size_t align_up(std::size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// CUB's temporary storage for sorting n (key, value) int32 pairs (a size query, no launch).
std::size_t radix_sort_temp_bytes(int64_t n) {
  std::size_t bytes = 0;
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), static_cast<int>(n)));
  return bytes;
}

// The workspace: positions 0..N-1, sorted tokens, sorted positions, CUB's storage.
struct Workspace {
  int32_t* positions;
  int32_t* sorted_tokens;
  int32_t* sorted_positions;
  void* sort_temp;
  std::size_t sort_temp_bytes;
};

Workspace carve(void* base, int64_t n) {
  const std::size_t ints = align_up(static_cast<std::size_t>(n) * sizeof(int32_t));
  auto* bytes = static_cast<char*>(base);
  return {reinterpret_cast<int32_t*>(bytes), reinterpret_cast<int32_t*>(bytes + ints),
          reinterpret_cast<int32_t*>(bytes + 2 * ints), bytes + 3 * ints, radix_sort_temp_bytes(n)};
}

__global__ void embedding_fwd_kernel(int64_t c, const int32_t* tokens, const __nv_bfloat16* table,
                                     __nv_bfloat16* out_nc) {
  const int64_t row = blockIdx.x;
  const __nv_bfloat16* src = table + static_cast<int64_t>(tokens[row]) * c;
  __nv_bfloat16* dst = out_nc + row * c;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dst[j] = src[j];
}

__global__ void iota_kernel(int64_t n, int32_t* positions) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) positions[i] = static_cast<int32_t>(i);
}

// Block (i, column block): only the first sorted index of each token works. It finds the end
// of the token's run by binary search over the sorted tokens (all threads read the same
// addresses), then each thread adds the run's dout values of its column in increasing position
// order into a register seeded with dtable, and stores once. The positions of the run are known
// up front, so the loads pipeline; only the additions are sequential.
__global__ void embedding_bwd_runs_kernel(int64_t n, int64_t c, const int32_t* sorted_tokens,
                                          const int32_t* sorted_positions,
                                          const __nv_bfloat16* dout_nc, float* dtable) {
  const int64_t first = blockIdx.x;
  const int32_t token = sorted_tokens[first];
  if (first > 0 && sorted_tokens[first - 1] == token) return;  // not the start of a run
  const int64_t col = int64_t{blockIdx.y} * kColumnsPerBlock + threadIdx.x;
  if (col >= c) return;
  int64_t lo = first + 1;
  int64_t hi = n;
  while (lo < hi) {  // upper bound of `token` in the sorted array
    const int64_t mid = lo + (hi - lo) / 2;
    if (sorted_tokens[mid] == token)
      lo = mid + 1;
    else
      hi = mid;
  }
  float* dst = dtable + static_cast<int64_t>(token) * c + col;
  float acc = *dst;
#pragma unroll 4
  for (int64_t k = first; k < lo; ++k) {
    acc += load_bf16(dout_nc[static_cast<int64_t>(sorted_positions[k]) * c + col]);
  }
  *dst = acc;
}

void check_sizes(const char* name, int64_t n, int64_t c) {
  if (n < 0 || n > INT32_MAX || c < 1 || (c + kColumnsPerBlock - 1) / kColumnsPerBlock > 65535) {
    throw CudaError(fmt::format("{}: need 0 <= N < 2^31 and 1 <= C <= {}, got N={} C={}", name,
                                int64_t{65535} * kColumnsPerBlock, n, c));
  }
}

}  // namespace

void embedding_fwd(int64_t n, int64_t c, const int32_t* tokens, const __nv_bfloat16* table,
                   __nv_bfloat16* out_nc, cudaStream_t stream) {
  check_sizes("embedding_fwd", n, c);
  if (n == 0) return;
  embedding_fwd_kernel<<<static_cast<unsigned>(n), kColumnsPerBlock, 0, stream>>>(c, tokens, table,
                                                                                  out_nc);
  LOOM_CUDA_CHECK_LAUNCH();
}

std::size_t embedding_bwd_workspace_bytes(int64_t n) {
  check_sizes("embedding_bwd_workspace_bytes", n, 1);
  return 3 * align_up(static_cast<std::size_t>(n) * sizeof(int32_t)) + radix_sort_temp_bytes(n);
}

void embedding_bwd(int64_t n, int64_t c, const int32_t* tokens, const __nv_bfloat16* dout_nc,
                   float* dtable, void* workspace, std::size_t workspace_bytes,
                   cudaStream_t stream) {
  check_sizes("embedding_bwd", n, c);
  if (n == 0) return;
  const std::size_t need = embedding_bwd_workspace_bytes(n);
  if (workspace_bytes < need || reinterpret_cast<uintptr_t>(workspace) % kAlign != 0) {
    throw CudaError(fmt::format(
        "embedding_bwd: workspace of {} bytes at {} is too small or not {}-byte aligned; N={} "
        "needs {} (embedding_bwd_workspace_bytes)",
        workspace_bytes, workspace, kAlign, n, need));
  }
  Workspace ws = carve(workspace, n);
  constexpr int kIotaThreads = 256;
  iota_kernel<<<static_cast<unsigned>((n + kIotaThreads - 1) / kIotaThreads), kIotaThreads, 0,
                stream>>>(n, ws.positions);
  LOOM_CUDA_CHECK_LAUNCH();
  // Stable: equal tokens keep their input (position) order.
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      ws.sort_temp, ws.sort_temp_bytes, tokens, ws.sorted_tokens, ws.positions, ws.sorted_positions,
      static_cast<int>(n), 0, static_cast<int>(sizeof(int32_t) * 8), stream));
  const dim3 grid(static_cast<unsigned>(n),
                  static_cast<unsigned>((c + kColumnsPerBlock - 1) / kColumnsPerBlock));
  embedding_bwd_runs_kernel<<<grid, kColumnsPerBlock, 0, stream>>>(
      n, c, ws.sorted_tokens, ws.sorted_positions, dout_nc, dtable);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::kernels::cuda
