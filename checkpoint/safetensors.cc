// Reading and writing safetensors files: see safetensors.h. The validation rules follow the
// reference implementation (safetensors/src/tensor.rs: header start '{', offsets that tile the
// data section exactly, byte counts that match shape x dtype).
#include "checkpoint/safetensors.h"

#include <algorithm>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "checkpoint/file_io.h"

namespace loom::ckpt {

namespace {

using core::ErrorCode;
using OrderedJson = nlohmann::ordered_json;

// The reference implementation refuses headers above 100 MB (tensor.rs: MAX_HEADER_SIZE).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// The header is padded with spaces so that the data section starts 8-byte aligned (format spec).
constexpr size_t kHeaderAlignment = 8;

struct DTypeInfo {
  DType dtype;
  const char* name;
  int64_t size_bytes;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF32, "F32", 4}, {DType::kF64, "F64", 8}, {DType::kBF16, "BF16", 2},
    {DType::kF16, "F16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kU8, "U8", 1},
};

core::Status check_tensor_for_write(const Tensor& t, std::set<std::string>& seen) {
  if (t.name.empty() || t.name == "__metadata__") {
    return core::error(ErrorCode::kInvalidArgument,
                       "tensor name '{}' is not allowed (it must be non-empty and not "
                       "'__metadata__')",
                       t.name);
  }
  if (!seen.insert(t.name).second) {
    return core::error(ErrorCode::kInvalidArgument, "tensor name '{}' appears twice", t.name);
  }
  for (int64_t d : t.shape) {
    if (d < 0) {
      return core::error(ErrorCode::kInvalidArgument, "tensor '{}': shape {} has a negative dim",
                         t.name, shape_string(t.shape));
    }
  }
  const uint64_t want = static_cast<uint64_t>(t.num_elements() * dtype_size_bytes(t.dtype));
  if (t.bytes.size() != want) {
    return core::error(ErrorCode::kInvalidArgument,
                       "tensor '{}': {} bytes but shape {} of {} needs {}", t.name,
                       t.bytes.size(), shape_string(t.shape), dtype_name(t.dtype), want);
  }
  return core::ok_status();
}

// One header entry after validation: where its bytes are in the data section.
struct Entry {
  Tensor tensor;  // name, dtype, shape (bytes filled later)
  uint64_t begin = 0;
  uint64_t end = 0;
};

core::Result<Entry> parse_entry(const std::string& name, const nlohmann::json& v,
                                const std::string& origin) {
  auto bad = [&](const std::string& what) {
    return core::error(ErrorCode::kParse, "{}: tensor '{}': {} (entry: {})", origin, name, what,
                       v.dump());
  };
  if (!v.is_object()) return bad("the entry must be an object {dtype, shape, data_offsets}");
  Entry e;
  e.tensor.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) return bad("missing string field 'dtype'");
  auto dtype = parse_dtype(dt->get<std::string>());
  if (!dtype.ok()) return dtype.status().with_context(origin + ": tensor '" + name + "'");
  e.tensor.dtype = *dtype;
  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) return bad("missing array field 'shape'");
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) return bad("'shape' must hold non-negative integers");
    e.tensor.shape.push_back(d.get<int64_t>());
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return bad("'data_offsets' must be [begin, end] with non-negative integers");
  }
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.end < e.begin) return bad("data_offsets end < begin");
  const uint64_t want = static_cast<uint64_t>(e.tensor.num_elements()) *
                        static_cast<uint64_t>(dtype_size_bytes(e.tensor.dtype));
  if (e.end - e.begin != want) {
    return bad(fmt::format("data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}",
                           e.begin, e.end, e.end - e.begin, shape_string(e.tensor.shape),
                           dtype_name(e.tensor.dtype), want));
  }
  return e;
}

core::Status parse_metadata(const nlohmann::json& v, const std::string& origin,
                            std::map<std::string, std::string>* metadata) {
  if (!v.is_object()) {
    return core::error(ErrorCode::kParse, "{}: '__metadata__' must be an object of strings",
                       origin);
  }
  for (const auto& [k, s] : v.items()) {
    if (!s.is_string()) {
      return core::error(ErrorCode::kParse, "{}: '__metadata__' value '{}' = {} is not a string",
                         origin, k, s.dump());
    }
    if (metadata) (*metadata)[k] = s.get<std::string>();
  }
  return core::ok_status();
}

// Sorted by offset, the entries must cover [0, data_bytes) exactly.
core::Status check_tiling(std::vector<Entry>& entries, uint64_t data_bytes,
                          const std::string& origin) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const Entry& e : entries) {
    if (e.begin != expected) {
      return core::error(ErrorCode::kParse,
                         "{}: tensor '{}' starts at data offset {} but the previous tensor ends "
                         "at {} (offsets must be contiguous, without gaps or overlaps)",
                         origin, e.tensor.name, e.begin, expected);
    }
    expected = e.end;
  }
  if (expected != data_bytes) {
    return core::error(ErrorCode::kParse,
                       "{}: the tensors cover {} data bytes but the file holds {} after the "
                       "header (truncated or trailing bytes)",
                       origin, expected, data_bytes);
  }
  return core::ok_status();
}

}  // namespace

const char* dtype_name(DType d) {
  for (const auto& info : kDTypes) {
    if (info.dtype == d) return info.name;
  }
  return "?";
}

int64_t dtype_size_bytes(DType d) {
  for (const auto& info : kDTypes) {
    if (info.dtype == d) return info.size_bytes;
  }
  return 1;
}

core::Result<DType> parse_dtype(const std::string& s) {
  for (const auto& info : kDTypes) {
    if (s == info.name) return info.dtype;
  }
  return core::error(ErrorCode::kInvalidArgument,
                     "dtype '{}' is not supported (allowed: F32, F64, BF16, F16, I64, I32, U8)", s);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

core::Status write_safetensors(const std::string& path, const std::vector<Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata,
                               WrittenFile* written) {
  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const Tensor& t : tensors) {
    LOOM_RETURN_IF_ERROR(check_tensor_for_write(t, seen).with_context(path));
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((kHeaderAlignment - text.size() % kHeaderAlignment) % kHeaderAlignment, ' ');
  uint8_t length_le[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) length_le[i] = static_cast<uint8_t>(n >> (8 * i));

  DurableFile f;
  LOOM_RETURN_IF_ERROR(f.open(path));
  LOOM_RETURN_IF_ERROR(f.append(length_le, sizeof(length_le)));
  LOOM_RETURN_IF_ERROR(f.append(text));
  for (const Tensor& t : tensors) LOOM_RETURN_IF_ERROR(f.append(t.bytes.data(), t.bytes.size()));
  LOOM_RETURN_IF_ERROR(f.finish());
  if (written) *written = {f.bytes(), f.crc32c()};
  return core::ok_status();
}

core::Result<std::vector<Tensor>> parse_safetensors(
    const std::vector<uint8_t>& file, const std::string& origin,
    std::map<std::string, std::string>* metadata) {
  if (file.size() < 8) {
    return core::error(ErrorCode::kParse,
                       "{}: {} bytes is too short for a safetensors file (8-byte header length)",
                       origin, file.size());
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[static_cast<size_t>(i)];
  if (n > kMaxHeaderBytes || n > file.size() - 8) {
    return core::error(ErrorCode::kParse,
                       "{}: header length {} does not fit (file has {} bytes, limit {} bytes)",
                       origin, n, file.size(), kMaxHeaderBytes);
  }
  if (n == 0 || file[8] != '{') {
    return core::error(ErrorCode::kParse, "{}: the header does not start with '{{'", origin);
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file.begin() + 8, file.begin() + 8 + static_cast<int64_t>(n));
  } catch (const nlohmann::json::exception& e) {
    return core::error(ErrorCode::kParse, "{}: header is not valid JSON: {}", origin, e.what());
  }
  if (!header.is_object()) {
    return core::error(ErrorCode::kParse, "{}: header must be a JSON object", origin);
  }
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      LOOM_RETURN_IF_ERROR(parse_metadata(v, origin, metadata));
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(Entry e, parse_entry(name, v, origin));
    entries.push_back(std::move(e));
  }
  const uint64_t data_start = 8 + n;
  LOOM_RETURN_IF_ERROR(check_tiling(entries, file.size() - data_start, origin));
  std::vector<Tensor> out;
  out.reserve(entries.size());
  for (Entry& e : entries) {
    const auto* p = file.data() + data_start + e.begin;
    e.tensor.bytes.assign(p, p + (e.end - e.begin));
    out.push_back(std::move(e.tensor));
  }
  return out;
}

core::Result<std::vector<Tensor>> read_safetensors(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::vector<uint8_t> file, read_file_bytes(path));
  return parse_safetensors(file, path);
}

}  // namespace loom::ckpt
