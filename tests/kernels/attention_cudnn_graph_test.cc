// The cuDNN SDPA graphs of kernels/cuda/attention_cudnn_graph.h, built on the host: every tensor
// and operation descriptor of the forward and backward graph, for MHA and GQA shapes and every
// graph variant, must pass cuDNN's own validation (cudnnBackendFinalize), which checks each
// operation's shapes, strides, data types and broadcasting. Planning the graphs needs a GPU
// (tests/kernels/attention_gpu_test.cc runs them against the CPU backend); this catches a
// malformed graph on any machine whose CUDA toolkit ships cuDNN, GPU or not.
#include <gtest/gtest.h>

#include <string>

#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/attention_cudnn_graph.h"
#include "kernels/cuda/cudnn_api.h"

namespace loom::kernels::cuda {
namespace {

#define LOOM_REQUIRE_CUDNN(api)                                    \
  std::string loom_why_;                                           \
  const CudnnApi* api = cudnn_api(&loom_why_);                     \
  if (api == nullptr) GTEST_SKIP() << "no cuDNN library: " << loom_why_

TEST(CudnnSdpaGraph, EveryDescriptorFinalizesForMhaAndGqa) {
  LOOM_REQUIRE_CUDNN(api);
  for (const AttentionShape s : {AttentionShape{2, 77, 4, 4, 64}, AttentionShape{1, 130, 8, 2, 128},
                                 AttentionShape{8, 2048, 16, 16, 128}}) {
    for (const sdpa::Variant& v : sdpa::variants()) {
      SCOPED_TRACE(::testing::Message() << "b " << s.b << " t " << s.t << " hq " << s.hq << " hkv "
                                        << s.hkv << " d " << s.d << ", " << v.name());
      try {
        const auto fwd = sdpa::build_forward(*api, s, v);
        const auto bwd = sdpa::build_backward(*api, s, v);
        // Forward: 2 matmuls, scale, 4 mask ops, 2 reductions, sub, exp, log, add, div.
        EXPECT_EQ(fwd->ops.size(), 14u);
        // Backward: 4 matmuls (+2 group reductions for GQA), 3 reshapes, softmax_sum's 3 ops,
        // scale, sub, 4 mask ops, exp, sub, 2 muls, the dS scale, identity.
        EXPECT_EQ(bwd->ops.size(), s.hq == s.hkv ? 22u : 24u);
      } catch (const CudnnError& e) {
        ADD_FAILURE() << e.what();
      }
    }
  }
}

// The check above can fail: cuDNN's finalize does validate shapes on the host.
TEST(CudnnSdpaGraph, FinalizeRejectsAMatmulWhoseInnerDimsDiffer) {
  LOOM_REQUIRE_CUDNN(api);
  auto tensor = [&](int64_t uid, int64_t rows, int64_t cols) {
    CudnnDescriptor t(*api, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "t");
    t.set_data_type(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_DATA_FLOAT)
        .set_int64s(CUDNN_ATTR_TENSOR_DIMENSIONS, {1, 1, rows, cols})
        .set_int64s(CUDNN_ATTR_TENSOR_STRIDES, {rows * cols, rows * cols, cols, 1})
        .set_int64(CUDNN_ATTR_TENSOR_UNIQUE_ID, uid)
        .set_int64(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, 16)
        .finalize();
    return t;
  };
  const CudnnDescriptor a = tensor(1, 4, 8), b = tensor(2, 9, 4), c = tensor(3, 4, 4);
  CudnnDescriptor mm(*api, CUDNN_BACKEND_MATMUL_DESCRIPTOR, "mm");
  mm.set_data_type(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_DATA_FLOAT).finalize();
  CudnnDescriptor op(*api, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "a b with 8 != 9");
  op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, a)
      .set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, b)
      .set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, c)
      .set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
  try {
    op.finalize();
    ADD_FAILURE() << "cuDNN finalized a [4, 8] x [9, 4] matmul";
  } catch (const CudnnError& e) {
    EXPECT_NE(std::string(e.what()).find("a b with 8 != 9: cudnnBackendFinalize"), std::string::npos)
        << e.what();
  }
}

TEST(CudnnSdpaGraph, ScratchHoldsTheFp32AccumulatorAndTheRowSums) {
  const AttentionShape s{2, 100, 4, 2, 64};
  EXPECT_EQ(sdpa::backward_softmax_sum_offset(s), 204800u);  // 2*4*100*64 floats, 256-aligned
  EXPECT_EQ(sdpa::backward_scratch_bytes(s), 204800u + 3328u);  // + 800 floats rounded to 256
}

TEST(CudnnSdpaGraph, ShapesOutsideTheFusedEnginesAreRefusedWithAReason) {
  std::string why;
  EXPECT_TRUE(attention_cudnn_shape_supported({1, 64, 4, 2, 128}, &why));
  EXPECT_FALSE(attention_cudnn_shape_supported({1, 64, 4, 3, 64}, &why));
  EXPECT_NE(why.find("multiple of 3 kv heads"), std::string::npos) << why;
  EXPECT_FALSE(attention_cudnn_shape_supported({1, 64, 4, 4, 100}, &why));
  EXPECT_NE(why.find("head dim 100"), std::string::npos) << why;
  EXPECT_FALSE(attention_cudnn_shape_supported({1, 64, 4, 4, 256}, &why));
  EXPECT_FALSE(attention_cudnn_shape_supported({1, 1, 4, 4, 64}, &why));
  EXPECT_NE(why.find("sequence of 1"), std::string::npos) << why;
}

}  // namespace
}  // namespace loom::kernels::cuda
