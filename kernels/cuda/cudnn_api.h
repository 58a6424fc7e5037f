// cuDNN's backend (graph) API, loaded at run time. Loom compiles against the cuDNN headers of the
// CUDA toolkit but does not link libcudnn: a machine without cuDNN still runs every other CUDA
// path, and the attention falls back to Loom's own kernels (kernels/cuda/attention.h) with the
// reason cudnn_api() gives. The library is dlopen'ed once ("libcudnn.so.9", found through
// LD_LIBRARY_PATH and the loader's cache; LOOM_CUDNN_LIBRARY overrides the name).
//
// CudnnDescriptor owns one backend descriptor; its setters check every call and throw CudnnError
// naming the attribute, the cuDNN status and cuDNN's last error message, so a graph that cuDNN
// refuses says which piece it refused. Used by kernels/cuda/attention_cudnn.h.
#pragma once

#include <cudnn_graph.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace loom::kernels::cuda {

class CudnnError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The entry points Loom uses, resolved from the loaded library.
struct CudnnApi {
  std::string library;  // the name dlopen accepted
  std::size_t version = 0;  // cudnnGetVersion(), e.g. 91900
  decltype(&::cudnnGetVersion) get_version = nullptr;
  decltype(&::cudnnGetErrorString) get_error_string = nullptr;
  decltype(&::cudnnGetLastErrorString) get_last_error_string = nullptr;
  decltype(&::cudnnCreate) create = nullptr;
  decltype(&::cudnnDestroy) destroy = nullptr;
  decltype(&::cudnnSetStream) set_stream = nullptr;
  decltype(&::cudnnBackendCreateDescriptor) backend_create = nullptr;
  decltype(&::cudnnBackendDestroyDescriptor) backend_destroy = nullptr;
  decltype(&::cudnnBackendFinalize) backend_finalize = nullptr;
  decltype(&::cudnnBackendSetAttribute) backend_set = nullptr;
  decltype(&::cudnnBackendGetAttribute) backend_get = nullptr;
  decltype(&::cudnnBackendExecute) backend_execute = nullptr;
};

// The loaded API, or nullptr with *why saying what is missing (library not found, a symbol
// absent, a version before 9). Loads once; thread-safe.
const CudnnApi* cudnn_api(std::string* why = nullptr);

// "CUDNN_STATUS_...: <cuDNN's last error message>".
std::string cudnn_status_text(const CudnnApi& api, cudnnStatus_t status);

// Throws CudnnError("<what>: <status text>") unless status is CUDNN_STATUS_SUCCESS.
void cudnn_check(const CudnnApi& api, cudnnStatus_t status, const std::string& what);

// One backend descriptor (cudnnBackendCreateDescriptor / ...DestroyDescriptor); move-only.
class CudnnDescriptor {
 public:
  CudnnDescriptor() = default;
  CudnnDescriptor(const CudnnApi& api, cudnnBackendDescriptorType_t type, std::string name);
  ~CudnnDescriptor();
  CudnnDescriptor(CudnnDescriptor&& o) noexcept;
  CudnnDescriptor& operator=(CudnnDescriptor&& o) noexcept;
  CudnnDescriptor(const CudnnDescriptor&) = delete;
  CudnnDescriptor& operator=(const CudnnDescriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return desc_; }
  const std::string& name() const { return name_; }

  // cudnnBackendSetAttribute with `count` elements of `type` at `values`; checked.
  CudnnDescriptor& set(cudnnBackendAttributeName_t attr, cudnnBackendAttributeType_t type,
                       int64_t count, const void* values);
  CudnnDescriptor& set_int64(cudnnBackendAttributeName_t attr, int64_t value);
  CudnnDescriptor& set_int64s(cudnnBackendAttributeName_t attr, const std::vector<int64_t>& values);
  CudnnDescriptor& set_bool(cudnnBackendAttributeName_t attr, bool value);
  CudnnDescriptor& set_float(cudnnBackendAttributeName_t attr, float value);
  CudnnDescriptor& set_data_type(cudnnBackendAttributeName_t attr, cudnnDataType_t value);
  CudnnDescriptor& set_desc(cudnnBackendAttributeName_t attr, const CudnnDescriptor& value);
  CudnnDescriptor& set_descs(cudnnBackendAttributeName_t attr,
                             const std::vector<const CudnnDescriptor*>& values);
  CudnnDescriptor& set_handle(cudnnBackendAttributeName_t attr, cudnnHandle_t handle);
  CudnnDescriptor& finalize();

 private:
  const CudnnApi* api_ = nullptr;
  cudnnBackendDescriptor_t desc_ = nullptr;
  cudnnBackendDescriptorType_t type_{};
  std::string name_;
};

// A cuDNN handle bound to the current device (cudnnCreate / cudnnDestroy); move-only.
class CudnnHandle {
 public:
  explicit CudnnHandle(const CudnnApi& api);
  ~CudnnHandle();
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
  cudnnHandle_t get() const { return handle_; }
  const CudnnApi& api() const { return *api_; }

 private:
  const CudnnApi* api_;
  cudnnHandle_t handle_ = nullptr;
};

}  // namespace loom::kernels::cuda
