// Embedding on the device (kernels/cuda/embedding.h) against cpu::embedding_fwd / embedding_bwd:
// the gather is a copy, so it must be exact; the backward adds each token's bf16-valued gradient
// rows to the fp32 dtable in token order, the same fp32 additions in the same order as the CPU,
// so it must be bit-identical too -- with heavily repeated tokens (one token at ~30% of the
// positions), accumulation over two calls, and a column count that leaves a partial block.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/embedding.h"
#include "linalg_test_util.h"

namespace loom::kernels::cuda {
namespace {

using testing::download;
using testing::from_bf16;
using testing::random_bf16_values;
using testing::to_bf16;
using testing::upload;
using testing::linalg::as_bf16;
using testing::linalg::bitwise_equal;

// Tokens in [0, v): 30% of them one frequent token (a run of ~0.3 N), the rest spread over a
// few dozen ids and the last id of the vocabulary, so that most ids repeat.
std::vector<int32_t> repetitive_tokens(int64_t n, int64_t v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::uniform_int_distribution<int32_t> few(0, 40);
  std::vector<int32_t> t(static_cast<std::size_t>(n));
  for (auto& x : t) {
    const double u = coin(rng);
    x = u < 0.3 ? 7 : u < 0.35 ? static_cast<int32_t>(v - 1) : few(rng);
  }
  return t;
}

void expect_embedding_matches_cpu(int64_t n, int64_t v, int64_t c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "N=" << n << " V=" << v << " C=" << c);
  const auto tokens = repetitive_tokens(n, v, seed);
  const auto table = random_bf16_values(static_cast<std::size_t>(v * c), seed + 1);
  const auto d_tokens = upload(tokens);

  // Forward: exact copy.
  std::vector<float> want_out(static_cast<std::size_t>(n * c));
  cpu::embedding_fwd(n, c, tokens.data(), table.data(), want_out.data());
  const auto d_table = upload(to_bf16(table));
  DeviceBuffer<uint16_t> d_out(static_cast<std::size_t>(n * c));
  embedding_fwd(n, c, d_tokens.get(), as_bf16(d_table), as_bf16(d_out), nullptr);
  EXPECT_TRUE(bitwise_equal(from_bf16(download(d_out)), want_out));

  // Backward, twice (two micro-batches) into a dtable that starts non-zero.
  std::vector<float> dtable = random_bf16_values(static_cast<std::size_t>(v * c), seed + 2, 0.1f);
  auto d_dtable = upload(dtable);
  DeviceBytes workspace(embedding_bwd_workspace_bytes(n));
  for (int micro = 0; micro < 2; ++micro) {
    const auto dout = random_bf16_values(static_cast<std::size_t>(n * c), seed + 3 + micro);
    const auto d_dout = upload(to_bf16(dout));
    embedding_bwd(n, c, d_tokens.get(), as_bf16(d_dout), d_dtable.get(), workspace.get(),
                  workspace.bytes(), nullptr);
    cpu::embedding_bwd(n, c, tokens.data(), dout.data(), dtable.data());
  }
  EXPECT_TRUE(bitwise_equal(download(d_dtable), dtable));
}

TEST(EmbeddingGpu, ForwardExactAndBackwardBitIdenticalToCpu) {
  LOOM_REQUIRE_GPU();
  expect_embedding_matches_cpu(4096, 1000, 768, 10);
}

TEST(EmbeddingGpu, PartialColumnBlockAndSingleToken) {
  LOOM_REQUIRE_GPU();
  expect_embedding_matches_cpu(517, 64, 300, 20);  // 300 = 256 + 44 columns
  expect_embedding_matches_cpu(1, 64, 300, 30);
}

// The workspace check must refuse too little scratch instead of writing past it.
TEST(EmbeddingGpu, RejectsTooSmallWorkspace) {
  LOOM_REQUIRE_GPU();
  const int64_t n = 1000, c = 8;
  DeviceBuffer<int32_t> tokens(n);
  DeviceBuffer<uint16_t> dout(n * c);
  DeviceBuffer<float> dtable(c);
  DeviceBytes workspace(embedding_bwd_workspace_bytes(n) - 1);
  EXPECT_THROW(embedding_bwd(n, c, tokens.get(), as_bf16(dout), dtable.get(), workspace.get(),
                             workspace.bytes(), nullptr),
               CudaError);
}

}  // namespace
}  // namespace loom::kernels::cuda
