// The operation graphs of attention_cudnn.h, as cuDNN backend descriptors: the composite
// scaled-dot-product attention that cudnn-frontend lowers SDPA to on cuDNN 9.19 (the fused-SDPA
// engines match this pattern; the single SDPA operation of 9.19 has no causal mask).
//
// Forward (training), tensors [b, h, s, d] with q, o strided over our [B, T, H, D] rows:
//   S = (Q K^T) * scale; causal: S = row >= col ? S : -inf (GEN_INDEX x2, CMP_GE, BINARY_SELECT);
//   M = max_j S; E = exp(S - M); Z = sum_j E; Stats = M + log Z; P = E / Z (bf16); O = P V.
// Backward: softmax_sum = sum_d dO * O; P = exp(S * scale - Stats) (masked); dV = P^T dO;
//   dS = P (dO V^T - softmax_sum) * scale; dK = dS^T Q; dQ = dS K (fp32 accumulator, then
//   bf16). GQA: K and V keep Hkv heads and the products broadcast over heads; dK and dV are
//   formed per query head and summed over each group (REDUCTION ADD).
// K^T and V^T are K and V described with their last two dims and strides swapped; P^T and dS^T
// are RESHAPE views. Internal to the kernels library and its tests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/cudnn_api.h"

namespace loom::kernels::cuda::sdpa {

// Non-virtual tensors' unique ids (the variant pack's keys; cudnn-frontend's sample numbering).
enum Uid : int64_t {
  kQ = 1, kK = 2, kV = 3, kO = 4, kStats = 5,
  kScale = 6, kNegInf = 7, kOne = 8,
  kDO = 101, kDQ = 102, kDK = 103, kDV = 104,
  kSoftmaxSum = 105, kDQAccum = 106,
};

// Choices cuDNN's pattern matcher might be strict about, varied in turn when a graph finds no
// engine (see attention_cudnn.cc); variant 0 is what cudnn-frontend 1.19 builds.
struct Variant {
  bool gen_index_int32_prec = false;   // GEN_INDEX math precision INT32 instead of FLOAT
  bool reshape_k_bf16 = false;         // backward's K view as bf16 instead of FLOAT
  std::string name() const;
};
std::vector<Variant> variants();

// A graph's operations and every descriptor they refer to (kept alive together).
struct Graph {
  explicit Graph(const CudnnApi& api) : api(&api) {}
  const CudnnApi* api;
  std::vector<std::unique_ptr<CudnnDescriptor>> keep;
  std::vector<const CudnnDescriptor*> ops;
  int64_t next_uid = 1000;  // virtual tensors' ids
};

// Builds and finalizes every tensor and operation descriptor of the forward / backward graph
// (no handle or device needed); throws CudnnError naming the descriptor cuDNN refused.
std::unique_ptr<Graph> build_forward(const CudnnApi& api, const AttentionShape& shape,
                                     const Variant& variant);
std::unique_ptr<Graph> build_backward(const CudnnApi& api, const AttentionShape& shape,
                                      const Variant& variant);

// Scratch of the backward graph besides the plan's own workspace: the fp32 dQ accumulator
// [b, Hq, s, d] and softmax_sum [b, Hq, s], each rounded up to 256 bytes.
std::size_t backward_scratch_bytes(const AttentionShape& shape);
std::size_t backward_softmax_sum_offset(const AttentionShape& shape);

}  // namespace loom::kernels::cuda::sdpa
