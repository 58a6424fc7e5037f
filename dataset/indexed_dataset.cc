// Writer and mmap reader of Megatron's MMIDIDX indexed dataset (layout in indexed_dataset.h).
// Tested in tests/dataset/indexed_dataset_test.cc: round trip, Megatron-layout Python reader,
// and one test per validation error (magic, version, dtype, truncation, pointers).
#include "dataset/indexed_dataset.h"

#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

namespace loom::data {

// The files are little-endian (Megatron packs "<Q"; numpy arrays are native on x86 / ARM).
static_assert(std::endian::native == std::endian::little, "Loom's dataset I/O assumes little-endian");

using core::ErrorCode;

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kUint8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat64: return "float64";
    case DType::kFloat32: return "float32";
    case DType::kUint16: return "uint16";
  }
  return "unknown";
}

int64_t dtype_size_bytes(DType dtype) {
  switch (dtype) {
    case DType::kUint8: case DType::kInt8: return 1;
    case DType::kInt16: case DType::kUint16: return 2;
    case DType::kInt32: case DType::kFloat32: return 4;
    case DType::kInt64: case DType::kFloat64: return 8;
  }
  return 0;
}

DType token_dtype_for_vocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? DType::kUint16 : DType::kInt32;
}

std::string bin_path(const std::string& prefix) { return prefix + ".bin"; }
std::string idx_path(const std::string& prefix) { return prefix + ".idx"; }

namespace {

bool is_token_dtype(uint8_t code) {
  return code == 1 || code == 2 || code == 3 || code == 4 || code == 5 || code == 8;
}

// Range of token ids representable in a dtype (int32 ids are the loader's type, so int64 files
// are capped at int32 too).
std::pair<int64_t, int64_t> token_range(DType d) {
  switch (d) {
    case DType::kUint8: return {0, 255};
    case DType::kInt8: return {-128, 127};
    case DType::kInt16: return {-32768, 32767};
    case DType::kUint16: return {0, 65535};
    default: return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
  }
}

template <typename T>
void append_as(std::vector<char>& buf, std::span<const int32_t> tokens) {
  const size_t at = buf.size();
  buf.resize(at + tokens.size() * sizeof(T));
  for (size_t i = 0; i < tokens.size(); ++i) {
    const T v = static_cast<T>(tokens[i]);
    std::memcpy(buf.data() + at + i * sizeof(T), &v, sizeof(T));
  }
}

template <typename T>
void put(std::ofstream& out, const T& v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof(T));
}

constexpr size_t kFlushBytes = size_t{4} << 20;  // write the .bin in 4 MiB chunks

}  // namespace

// ---- writer ----------------------------------------------------------------------------------

core::Result<IndexedDatasetWriter> IndexedDatasetWriter::create(const std::string& prefix,
                                                                DType dtype) {
  if (!is_token_dtype(static_cast<uint8_t>(dtype))) {
    return core::error(ErrorCode::kInvalidArgument,
                       "token dtype {} is not allowed (use uint8, int8, int16, uint16, int32, int64)",
                       dtype_name(dtype));
  }
  IndexedDatasetWriter w;
  w.prefix_ = prefix;
  w.dtype_ = dtype;
  const std::string tag = ".tmp." + std::to_string(::getpid());
  w.bin_tmp_ = bin_path(prefix) + tag;
  w.idx_tmp_ = idx_path(prefix) + tag;
  w.bin_ = std::make_unique<std::ofstream>(w.bin_tmp_, std::ios::binary | std::ios::trunc);
  if (!*w.bin_) {
    return core::error(ErrorCode::kIo, "cannot create {}: {} (does the output directory exist?)",
                       w.bin_tmp_, std::strerror(errno));
  }
  w.pointers_.push_back(0);
  return w;
}

IndexedDatasetWriter::IndexedDatasetWriter(IndexedDatasetWriter&& o) noexcept { *this = std::move(o); }

IndexedDatasetWriter& IndexedDatasetWriter::operator=(IndexedDatasetWriter&& o) noexcept {
  if (this == &o) return *this;
  discard();
  prefix_ = std::move(o.prefix_);
  bin_tmp_ = std::move(o.bin_tmp_);
  idx_tmp_ = std::move(o.idx_tmp_);
  dtype_ = o.dtype_;
  bin_ = std::move(o.bin_);
  lengths_ = std::move(o.lengths_);
  pointers_ = std::move(o.pointers_);
  buffer_ = std::move(o.buffer_);
  bin_bytes_ = o.bin_bytes_;
  tokens_ = o.tokens_;
  finished_ = o.finished_;
  o.finished_ = true;  // the moved-from writer owns no files
  return *this;
}

IndexedDatasetWriter::~IndexedDatasetWriter() { discard(); }

void IndexedDatasetWriter::discard() {
  if (finished_ || !bin_) return;
  bin_.reset();
  std::error_code ec;
  std::filesystem::remove(bin_tmp_, ec);
  std::filesystem::remove(idx_tmp_, ec);
}

core::Status IndexedDatasetWriter::add_document(std::span<const int32_t> tokens) {
  if (finished_) return core::error(ErrorCode::kInternal, "add_document after finish on {}", prefix_);
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return core::error(ErrorCode::kInvalidArgument,
                       "document {} has {} tokens; Megatron's index stores lengths as int32",
                       lengths_.size(), tokens.size());
  }
  const auto [lo, hi] = token_range(dtype_);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < lo || tokens[i] > hi) {
      return core::error(ErrorCode::kInvalidArgument,
                         "document {} token {}: id {} does not fit dtype {} (allowed {}..{})",
                         lengths_.size(), i, tokens[i], dtype_name(dtype_), lo, hi);
    }
  }
  switch (dtype_) {
    case DType::kUint8: append_as<uint8_t>(buffer_, tokens); break;
    case DType::kInt8: append_as<int8_t>(buffer_, tokens); break;
    case DType::kInt16: append_as<int16_t>(buffer_, tokens); break;
    case DType::kUint16: append_as<uint16_t>(buffer_, tokens); break;
    case DType::kInt64: append_as<int64_t>(buffer_, tokens); break;
    default: append_as<int32_t>(buffer_, tokens); break;
  }
  const int64_t bytes = static_cast<int64_t>(tokens.size()) * dtype_size_bytes(dtype_);
  lengths_.push_back(static_cast<int32_t>(tokens.size()));
  bin_bytes_ += bytes;
  pointers_.push_back(bin_bytes_);
  tokens_ += static_cast<int64_t>(tokens.size());
  if (buffer_.size() >= kFlushBytes) {
    bin_->write(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    buffer_.clear();
    if (!*bin_) return core::error(ErrorCode::kIo, "writing {} failed (disk full?)", bin_tmp_);
  }
  return core::ok_status();
}

core::Status IndexedDatasetWriter::finish() {
  if (finished_) return core::error(ErrorCode::kInternal, "finish called twice on {}", prefix_);
  bin_->write(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
  buffer_.clear();
  bin_->close();
  if (!*bin_) return core::error(ErrorCode::kIo, "writing {} failed (disk full?)", bin_tmp_);
  std::ofstream idx(idx_tmp_, std::ios::binary | std::ios::trunc);
  if (!idx) return core::error(ErrorCode::kIo, "cannot create {}: {}", idx_tmp_, std::strerror(errno));
  const uint64_t n = lengths_.size();
  idx.write(kIndexMagic, sizeof(kIndexMagic));
  put(idx, kIndexVersion);
  put(idx, static_cast<uint8_t>(dtype_));
  put(idx, n);
  put(idx, n + 1);  // document indices [0, 1, ..., n]: one sequence per document
  idx.write(reinterpret_cast<const char*>(lengths_.data()), static_cast<std::streamsize>(n * 4));
  idx.write(reinterpret_cast<const char*>(pointers_.data()), static_cast<std::streamsize>(n * 8));
  for (uint64_t k = 0; k <= n; ++k) put(idx, static_cast<int64_t>(k));
  idx.close();
  if (!idx) return core::error(ErrorCode::kIo, "writing {} failed (disk full?)", idx_tmp_);
  std::error_code ec;
  std::filesystem::rename(bin_tmp_, bin_path(prefix_), ec);
  if (!ec) std::filesystem::rename(idx_tmp_, idx_path(prefix_), ec);
  if (ec) return core::error(ErrorCode::kIo, "cannot move {} into place: {}", prefix_, ec.message());
  finished_ = true;
  return core::ok_status();
}

core::Status write_indexed_dataset(const std::string& prefix, DType dtype,
                                   const std::vector<std::vector<int32_t>>& documents) {
  LOOM_ASSIGN_OR_RETURN(IndexedDatasetWriter w, IndexedDatasetWriter::create(prefix, dtype));
  for (const auto& d : documents) LOOM_RETURN_IF_ERROR(w.add_document(d));
  return w.finish();
}

}  // namespace loom::data
