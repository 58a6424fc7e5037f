// Causal grouped-query attention through cuDNN's fused scaled-dot-product attention (the
// FlashAttention-2 engines behind PyTorch's cuDNN SDPA backend), built with cuDNN's backend
// graph API: the forward as one operation graph (Q K^T, scale, causal mask, softmax with the
// log-sum-exp as its statistics, P V) and the backward as another (dP = dO V^T, dS = P (dP -
// delta), dQ, dK, dV), each executed as the plan cuDNN's heuristics rank first.
//
// The same attention as attention_fwd/bwd in attention.h: the same shapes and conventions (q
// [B, T, Hq, D], k and v [B, T, Hkv, D], out [B, T, Hq, D], bf16; lse [B, Hq, T] fp32, the
// natural log-sum-exp of the scaled scores), so the two are interchangeable and checked against
// each other and the CPU backend (tests/kernels/attention_cudnn_gpu_test.cc). No ALiBi: models
// with ALiBi use Loom's kernels. cuDNN is loaded at run time (cudnn_api.h); where it is missing
// or refuses the shape, create() says why and the caller falls back to Loom's kernels.
//
// Usage (one object per shape and device; not thread-safe):
//   std::string why;
//   auto attn = CudnnAttention::create({b, t, hq, hkv, d}, &why);   // nullptr + why if refused
//   attn->forward(q, k, v, out, lse, workspace, stream);            // workspace_bytes() bytes
//   attn->backward(q, k, v, out, lse, dout, dq, dk, dv, workspace, stream);
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace loom::kernels::cuda {

struct AttentionShape {
  int64_t b = 0, t = 0, hq = 0, hkv = 0, d = 0;
};

// Shape limits of cuDNN 9's fused SDPA on sm_80+ (cudnn-frontend's support surface): head dim a
// multiple of 8 up to 128 for the backward, Hq a multiple of Hkv. The device is checked in
// create().
bool attention_cudnn_shape_supported(const AttentionShape& shape, std::string* why);

class CudnnAttention {
 public:
  // Builds and plans both graphs for this shape on the current device, or returns nullptr with
  // *why naming what refused (no cuDNN library, a GPU before sm_80, cuDNN's message for the
  // graph it would not plan).
  static std::unique_ptr<CudnnAttention> create(const AttentionShape& shape, std::string* why);
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  const AttentionShape& shape() const { return shape_; }
  // Device scratch either pass needs (the larger of the two plans' workspaces).
  std::size_t workspace_bytes() const;
  // cuDNN's version and the engines chosen, for logs: "cuDNN 91900, forward engine 3, backward
  // engine 7".
  std::string describe() const;

  // out, lse: overwritten.
  void forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
               __nv_bfloat16* out, float* lse, void* workspace, cudaStream_t stream);
  // dq, dk, dv: overwritten.
  void backward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* dout,
                __nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, void* workspace,
                cudaStream_t stream);

  struct Impl;  // the cuDNN graphs and plans (attention_cudnn.cc)

 private:
  CudnnAttention(const AttentionShape& shape, std::unique_ptr<Impl> impl);
  AttentionShape shape_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::kernels::cuda
