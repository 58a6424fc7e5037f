// Loads cuDNN's backend API with dlopen and wraps its descriptors (see cudnn_api.h).
#include "kernels/cuda/cudnn_api.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <mutex>
#include <utility>

namespace loom::kernels::cuda {
namespace {

struct Loaded {
  CudnnApi api;
  std::string why;  // empty when api is usable
};

template <typename F>
bool resolve(void* lib, const char* symbol, F* out, std::string* why) {
  *out = reinterpret_cast<F>(dlsym(lib, symbol));
  if (*out == nullptr && why->empty()) *why = fmt::format("symbol {} not found", symbol);
  return *out != nullptr;
}

Loaded load() {
  Loaded l;
  const char* env = std::getenv("LOOM_CUDNN_LIBRARY");
  const std::string name = env != nullptr && *env != '\0' ? env : "libcudnn.so.9";
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* err = dlerror();
    l.why = fmt::format("cannot load {} ({}); set LD_LIBRARY_PATH or LOOM_CUDNN_LIBRARY", name,
                        err != nullptr ? err : "unknown dlopen error");
    return l;
  }
  CudnnApi& a = l.api;
  a.library = name;
  std::string why;
  resolve(lib, "cudnnGetVersion", &a.get_version, &why);
  resolve(lib, "cudnnGetErrorString", &a.get_error_string, &why);
  resolve(lib, "cudnnGetLastErrorString", &a.get_last_error_string, &why);
  resolve(lib, "cudnnCreate", &a.create, &why);
  resolve(lib, "cudnnDestroy", &a.destroy, &why);
  resolve(lib, "cudnnSetStream", &a.set_stream, &why);
  resolve(lib, "cudnnBackendCreateDescriptor", &a.backend_create, &why);
  resolve(lib, "cudnnBackendDestroyDescriptor", &a.backend_destroy, &why);
  resolve(lib, "cudnnBackendFinalize", &a.backend_finalize, &why);
  resolve(lib, "cudnnBackendSetAttribute", &a.backend_set, &why);
  resolve(lib, "cudnnBackendGetAttribute", &a.backend_get, &why);
  resolve(lib, "cudnnBackendExecute", &a.backend_execute, &why);
  if (!why.empty()) {
    l.why = fmt::format("{}: {}", name, why);
    return l;
  }
  a.version = a.get_version();
  // The SDPA graphs of attention_cudnn.h need cuDNN 9's runtime-fusion engines; the headers Loom
  // is compiled against are 9.x, and a library older than them may lack attributes it sets.
  if (a.version < 90000) {
    l.why = fmt::format("{} is version {}; Loom needs cuDNN 9", name, a.version);
    return l;
  }
  return l;  // the library stays loaded for the life of the process
}

}  // namespace

const CudnnApi* cudnn_api(std::string* why) {
  static const Loaded loaded = load();  // thread-safe initialisation (C++11)
  if (!loaded.why.empty()) {
    if (why != nullptr) *why = loaded.why;
    return nullptr;
  }
  return &loaded.api;
}

std::string cudnn_status_text(const CudnnApi& api, cudnnStatus_t status) {
  char last[1024] = {0};
  api.get_last_error_string(last, sizeof last);
  std::string text = api.get_error_string(status);
  if (last[0] != '\0') text += fmt::format(" ({})", last);
  return text;
}

void cudnn_check(const CudnnApi& api, cudnnStatus_t status, const std::string& what) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw CudnnError(fmt::format("{}: {}", what, cudnn_status_text(api, status)));
}

CudnnDescriptor::CudnnDescriptor(const CudnnApi& api, cudnnBackendDescriptorType_t type,
                                 std::string name)
    : api_(&api), type_(type), name_(std::move(name)) {
  cudnn_check(api, api.backend_create(type, &desc_),
              fmt::format("cudnnBackendCreateDescriptor({}, type {})", name_, static_cast<int>(type)));
}

CudnnDescriptor::~CudnnDescriptor() {
  if (desc_ != nullptr) api_->backend_destroy(desc_);
}

CudnnDescriptor::CudnnDescriptor(CudnnDescriptor&& o) noexcept
    : api_(o.api_), desc_(std::exchange(o.desc_, nullptr)), type_(o.type_),
      name_(std::move(o.name_)) {}

CudnnDescriptor& CudnnDescriptor::operator=(CudnnDescriptor&& o) noexcept {
  std::swap(api_, o.api_);
  std::swap(desc_, o.desc_);
  std::swap(type_, o.type_);
  std::swap(name_, o.name_);
  return *this;
}

CudnnDescriptor& CudnnDescriptor::set(cudnnBackendAttributeName_t attr,
                                      cudnnBackendAttributeType_t type, int64_t count,
                                      const void* values) {
  cudnn_check(*api_, api_->backend_set(desc_, attr, type, count, values),
              fmt::format("{}: cudnnBackendSetAttribute(attribute {})", name_, static_cast<int>(attr)));
  return *this;
}

CudnnDescriptor& CudnnDescriptor::set_int64(cudnnBackendAttributeName_t attr, int64_t value) {
  return set(attr, CUDNN_TYPE_INT64, 1, &value);
}

CudnnDescriptor& CudnnDescriptor::set_int64s(cudnnBackendAttributeName_t attr,
                                             const std::vector<int64_t>& values) {
  return set(attr, CUDNN_TYPE_INT64, static_cast<int64_t>(values.size()), values.data());
}

CudnnDescriptor& CudnnDescriptor::set_bool(cudnnBackendAttributeName_t attr, bool value) {
  return set(attr, CUDNN_TYPE_BOOLEAN, 1, &value);
}

CudnnDescriptor& CudnnDescriptor::set_float(cudnnBackendAttributeName_t attr, float value) {
  return set(attr, CUDNN_TYPE_FLOAT, 1, &value);
}

CudnnDescriptor& CudnnDescriptor::set_data_type(cudnnBackendAttributeName_t attr,
                                                cudnnDataType_t value) {
  return set(attr, CUDNN_TYPE_DATA_TYPE, 1, &value);
}

CudnnDescriptor& CudnnDescriptor::set_desc(cudnnBackendAttributeName_t attr,
                                           const CudnnDescriptor& value) {
  cudnnBackendDescriptor_t d = value.get();
  return set(attr, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
}

CudnnDescriptor& CudnnDescriptor::set_descs(cudnnBackendAttributeName_t attr,
                                            const std::vector<const CudnnDescriptor*>& values) {
  std::vector<cudnnBackendDescriptor_t> ds;
  ds.reserve(values.size());
  for (const CudnnDescriptor* v : values) ds.push_back(v->get());
  return set(attr, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ds.size()), ds.data());
}

CudnnDescriptor& CudnnDescriptor::set_handle(cudnnBackendAttributeName_t attr, cudnnHandle_t handle) {
  return set(attr, CUDNN_TYPE_HANDLE, 1, &handle);
}

CudnnDescriptor& CudnnDescriptor::finalize() {
  cudnn_check(*api_, api_->backend_finalize(desc_), fmt::format("{}: cudnnBackendFinalize", name_));
  return *this;
}

CudnnHandle::CudnnHandle(const CudnnApi& api) : api_(&api) {
  cudnn_check(api, api.create(&handle_), "cudnnCreate");
}

CudnnHandle::~CudnnHandle() {
  if (handle_ != nullptr) api_->destroy(handle_);
}

}  // namespace loom::kernels::cuda
