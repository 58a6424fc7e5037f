// CudnnAttention in a build whose CUDA toolkit has no cuDNN headers (kernels/CMakeLists.txt):
// nothing can be planned, and create() says so; the trainer then refuses --attention cudnn with
// this reason. No object is ever constructed, so the members below cannot be reached.
#include <stdexcept>

#include "kernels/cuda/attention_cudnn.h"

namespace loom::kernels::cuda {

namespace {
constexpr const char* kAbsent =
    "Loom was built without cuDNN's headers (cudnn_graph.h; set CUDNN_HOME and rebuild)";
}

bool attention_cudnn_shape_supported(const AttentionShape&, std::string* why) {
  if (why != nullptr) *why = kAbsent;
  return false;
}

std::unique_ptr<CudnnAttention> CudnnAttention::create(const AttentionShape&, std::string* why) {
  if (why != nullptr) *why = kAbsent;
  return nullptr;
}

struct CudnnAttention::Impl {};
CudnnAttention::~CudnnAttention() = default;
std::size_t CudnnAttention::workspace_bytes() const { throw std::logic_error(kAbsent); }
std::string CudnnAttention::describe() const { throw std::logic_error(kAbsent); }
void CudnnAttention::forward(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                             __nv_bfloat16*, float*, void*, cudaStream_t) {
  throw std::logic_error(kAbsent);
}
void CudnnAttention::backward(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                              const __nv_bfloat16*, const float*, const __nv_bfloat16*,
                              __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, void*, cudaStream_t) {
  throw std::logic_error(kAbsent);
}

}  // namespace loom::kernels::cuda
