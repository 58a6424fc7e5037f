// Plans and runs the cuDNN SDPA graphs of attention_cudnn_graph.h (see attention_cudnn.h).
#include "kernels/cuda/attention_cudnn.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/cuda/attention_cudnn_graph.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cudnn_api.h"

namespace loom::kernels::cuda {
namespace {

// An operation graph with the execution plan of the first engine configuration (in cuDNN's
// heuristic order, mode A) that finalizes for it.
struct Planned {
  std::unique_ptr<sdpa::Graph> graph;
  std::unique_ptr<CudnnDescriptor> op_graph, plan;
  int64_t workspace_bytes = 0;
  int64_t engine = -1;  // CUDNN_ATTR_ENGINE_GLOBAL_INDEX of the chosen engine
};

int64_t engine_index(const CudnnApi& api, const CudnnDescriptor& cfg) {
  CudnnDescriptor engine(api, CUDNN_BACKEND_ENGINE_DESCRIPTOR, "engine");
  cudnnBackendDescriptor_t e = engine.get();
  int64_t n = 0, index = -1;
  if (api.backend_get(cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                      &e) != CUDNN_STATUS_SUCCESS)
    return -1;
  if (api.backend_get(e, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &index) !=
      CUDNN_STATUS_SUCCESS)
    return -1;
  return index;
}

// Returns the planned graph, or nullptr with *why (cuDNN's messages for the last refusal).
std::unique_ptr<Planned> plan_graph(const CudnnApi& api, cudnnHandle_t handle,
                                    std::unique_ptr<sdpa::Graph> graph, const std::string& what,
                                    std::string* why) {
  auto p = std::make_unique<Planned>();
  p->graph = std::move(graph);
  p->op_graph = std::make_unique<CudnnDescriptor>(api, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR,
                                                  what + " operation graph");
  p->op_graph->set_handle(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, handle)
      .set_descs(CUDNN_ATTR_OPERATIONGRAPH_OPS, p->graph->ops)
      .finalize();
  CudnnDescriptor heur(api, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, what + " heuristics");
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, *p->op_graph)
      .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode)
      .finalize();
  int64_t count = 0;
  cudnn_check(api,
              api.backend_get(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr),
              what + ": engine heuristics' result count");
  if (count == 0) {
    *why = fmt::format("{}: cuDNN's heuristics found no engine for the graph", what);
    return nullptr;
  }
  std::vector<CudnnDescriptor> cfgs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    cfgs.emplace_back(api, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, fmt::format("{} config {}", what, i));
    raw.push_back(cfgs.back().get());
  }
  int64_t got = 0;
  cudnn_check(api,
              api.backend_get(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                              CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, raw.data()),
              what + ": engine heuristics' results");
  std::string refusals;
  for (int64_t i = 0; i < got; ++i) {
    auto plan = std::make_unique<CudnnDescriptor>(api, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR,
                                                  fmt::format("{} plan {}", what, i));
    plan->set_handle(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, handle)
        .set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfgs[i]);
    const cudnnStatus_t st = api.backend_finalize(plan->get());
    if (st != CUDNN_STATUS_SUCCESS) {  // NOT_SUPPORTED: try the next configuration
      refusals += fmt::format("; config {}: {}", i, cudnn_status_text(api, st));
      continue;
    }
    int64_t n = 0;
    cudnn_check(api,
                api.backend_get(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                CUDNN_TYPE_INT64, 1, &n, &p->workspace_bytes),
                what + ": plan workspace size");
    p->engine = engine_index(api, cfgs[i]);
    p->plan = std::move(plan);
    return p;
  }
  *why = fmt::format("{}: none of the {} engine configurations finalized{}", what, got, refusals);
  return nullptr;
}

void execute(const CudnnApi& api, cudnnHandle_t handle, const Planned& p,
             const std::vector<int64_t>& uids, const std::vector<void*>& ptrs, void* workspace,
             const char* what) {
  CudnnDescriptor pack(api, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, std::string(what) + " variant pack");
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace)
      .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
           static_cast<int64_t>(ptrs.size()), ptrs.data())
      .set_int64s(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, uids)
      .finalize();
  cudnn_check(api, api.backend_execute(handle, p.plan->get(), pack.get()),
              fmt::format("{}: cudnnBackendExecute", what));
}

}  // namespace

struct CudnnAttention::Impl {
  const CudnnApi* api = nullptr;
  std::unique_ptr<CudnnHandle> handle;
  std::unique_ptr<Planned> fwd, bwd;
  std::string variant;
  // By-value scalars: the variant pack holds pointers to these.
  float scale = 0, neg_inf = -std::numeric_limits<float>::infinity(), one = 1.f;
};

bool attention_cudnn_shape_supported(const AttentionShape& s, std::string* why) {
  auto refuse = [&](std::string m) {
    if (why != nullptr) *why = std::move(m);
    return false;
  };
  if (s.b < 1 || s.t < 2 || s.hq < 1 || s.hkv < 1 || s.d < 1)
    return refuse(fmt::format("shape b {} t {} hq {} hkv {} d {}: every extent >= 1 and t >= 2 "
                              "(cuDNN's backward refuses a sequence of 1)", s.b, s.t, s.hq, s.hkv, s.d));
  if (s.hq % s.hkv != 0)
    return refuse(fmt::format("{} query heads are not a multiple of {} kv heads", s.hq, s.hkv));
  if (s.d % 8 != 0 || s.d > 128)
    return refuse(fmt::format("head dim {}: cuDNN's fused SDPA backward takes multiples of 8 up "
                              "to 128", s.d));
  return true;
}

std::unique_ptr<CudnnAttention> CudnnAttention::create(const AttentionShape& shape, std::string* why) {
  std::string reason;
  auto refuse = [&](const std::string& m) -> std::unique_ptr<CudnnAttention> {
    if (why != nullptr) *why = m;
    return nullptr;
  };
  if (!attention_cudnn_shape_supported(shape, &reason)) return refuse(reason);
  const CudnnApi* api = cudnn_api(&reason);
  if (api == nullptr) return refuse(reason);
  int device = 0, major = 0;
  LOOM_CUDA_CHECK(cudaGetDevice(&device));
  LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8)
    return refuse(fmt::format("device {} is sm_{}x; cuDNN's fused SDPA needs sm_80 or newer", device, major));
  auto impl = std::make_unique<Impl>();
  impl->api = api;
  impl->scale = 1.f / std::sqrt(static_cast<float>(shape.d));
  try {
    impl->handle = std::make_unique<CudnnHandle>(*api);
    std::string refusals;
    for (const sdpa::Variant& v : sdpa::variants()) {
      std::string fwd_why, bwd_why;
      auto fwd = plan_graph(*api, impl->handle->get(), sdpa::build_forward(*api, shape, v),
                            "SDPA forward", &fwd_why);
      auto bwd = fwd ? plan_graph(*api, impl->handle->get(), sdpa::build_backward(*api, shape, v),
                                  "SDPA backward", &bwd_why)
                     : nullptr;
      if (fwd && bwd) {
        impl->fwd = std::move(fwd);
        impl->bwd = std::move(bwd);
        impl->variant = v.name();
        return std::unique_ptr<CudnnAttention>(new CudnnAttention(shape, std::move(impl)));
      }
      refusals += fmt::format("{}[{}] {}", refusals.empty() ? "" : "; ", v.name(),
                              fwd ? bwd_why : fwd_why);
    }
    return refuse(fmt::format("cuDNN {} planned no SDPA graph for b {} t {} hq {} hkv {} d {}: {}",
                              api->version, shape.b, shape.t, shape.hq, shape.hkv, shape.d, refusals));
  } catch (const CudnnError& e) {
    return refuse(fmt::format("cuDNN {}: {}", api->version, e.what()));
  }
}

CudnnAttention::CudnnAttention(const AttentionShape& shape, std::unique_ptr<Impl> impl)
    : shape_(shape), impl_(std::move(impl)) {}

CudnnAttention::~CudnnAttention() = default;

std::size_t CudnnAttention::workspace_bytes() const {
  return std::max(static_cast<std::size_t>(impl_->fwd->workspace_bytes),
                  sdpa::backward_scratch_bytes(shape_) +
                      static_cast<std::size_t>(impl_->bwd->workspace_bytes));
}

std::string CudnnAttention::describe() const {
  return fmt::format("cuDNN {} SDPA: forward engine {} ({} B workspace), backward engine {} ({} B "
                     "+ {} B scratch); graph variant: {}",
                     impl_->api->version, impl_->fwd->engine, impl_->fwd->workspace_bytes,
                     impl_->bwd->engine, impl_->bwd->workspace_bytes,
                     sdpa::backward_scratch_bytes(shape_), impl_->variant);
}

void CudnnAttention::forward(const __nv_bfloat16* q, const __nv_bfloat16* k,
                             const __nv_bfloat16* v, __nv_bfloat16* out, float* lse,
                             void* workspace, cudaStream_t stream) {
  const CudnnApi& api = *impl_->api;
  cudnn_check(api, api.set_stream(impl_->handle->get(), stream), "cudnnSetStream");
  using namespace sdpa;
  execute(api, impl_->handle->get(), *impl_->fwd, {kQ, kK, kV, kO, kStats, kScale, kNegInf},
          {const_cast<__nv_bfloat16*>(q), const_cast<__nv_bfloat16*>(k),
           const_cast<__nv_bfloat16*>(v), out, lse, &impl_->scale, &impl_->neg_inf},
          workspace, "SDPA forward");
}

void CudnnAttention::backward(const __nv_bfloat16* q, const __nv_bfloat16* k,
                              const __nv_bfloat16* v, const __nv_bfloat16* out, const float* lse,
                              const __nv_bfloat16* dout, __nv_bfloat16* dq, __nv_bfloat16* dk,
                              __nv_bfloat16* dv, void* workspace, cudaStream_t stream) {
  const CudnnApi& api = *impl_->api;
  cudnn_check(api, api.set_stream(impl_->handle->get(), stream), "cudnnSetStream");
  char* scratch = static_cast<char*>(workspace);
  void* dq_accum = scratch;
  void* softmax_sum = scratch + sdpa::backward_softmax_sum_offset(shape_);
  void* plan_ws = scratch + sdpa::backward_scratch_bytes(shape_);
  // cuDNN >= 9.6 initialises the accumulator itself (cudnn-frontend stopped zeroing it); zeroing
  // it here costs one memset and keeps older engines correct.
  LOOM_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, sdpa::backward_softmax_sum_offset(shape_), stream));
  using namespace sdpa;
  // The variant pack takes void*; cuDNN only reads the inputs.
  auto in = [](const void* p) { return const_cast<void*>(p); };
  execute(api, impl_->handle->get(), *impl_->bwd,
          {kQ, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kSoftmaxSum, kDQAccum, kOne, kScale, kNegInf},
          {in(q), in(k), in(v), in(out), in(lse), in(dout), dq, dk, dv, softmax_sum, dq_accum,
           &impl_->one, &impl_->scale, &impl_->neg_inf},
          plan_ws, "SDPA backward");
}

}  // namespace loom::kernels::cuda
