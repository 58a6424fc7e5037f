// The mmap reader of Megatron's MMIDIDX indexed dataset (layout in indexed_dataset.h): loads and
// validates PREFIX.idx, maps PREFIX.bin and converts tokens of any integer dtype to int32.
// Tested in tests/dataset/indexed_dataset_test.cc (one test per validation error).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "dataset/indexed_dataset.h"

namespace loom::data {

using core::ErrorCode;

namespace {

template <typename T>
T get_at(const std::vector<char>& bytes, size_t at) {
  T v;
  std::memcpy(&v, bytes.data() + at, sizeof(T));
  return v;
}

template <typename T>
void convert_from(const uint8_t* src, int64_t count, int32_t* out) {
  for (int64_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, src + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
    out[i] = static_cast<int32_t>(v);
  }
}

core::Result<std::vector<char>> read_whole_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return core::error(ErrorCode::kNotFound, "{} does not exist (expected PREFIX.bin and PREFIX.idx, "
                       "as written by `loom data prepare` or Megatron's preprocess_data.py)", path);
  }
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return core::error(ErrorCode::kIo, "reading {} failed: {}", path, std::strerror(errno));
  return bytes;
}

}  // namespace

core::Status IndexedDataset::load_index(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::vector<char> b, read_whole_file(path));
  if (static_cast<int64_t>(b.size()) < kIndexHeaderBytes) {
    return core::error(ErrorCode::kParse, "{}: {} bytes is shorter than the {}-byte MMIDIDX header "
                       "(truncated?)", path, b.size(), kIndexHeaderBytes);
  }
  if (std::memcmp(b.data(), kIndexMagic, sizeof(kIndexMagic)) != 0) {
    return core::error(ErrorCode::kParse, "{}: bad magic (expected \"MMIDIDX\\0\\0\", Megatron's "
                       "mmap indexed dataset; older 'lazy'/'cached' indexes are not supported)", path);
  }
  const auto version = get_at<uint64_t>(b, 9);
  if (version != kIndexVersion) {
    return core::error(ErrorCode::kParse, "{}: index version {} is not supported (only {})", path,
                       version, kIndexVersion);
  }
  const auto code = get_at<uint8_t>(b, 17);
  if (code < 1 || code > 8 || code == 6 || code == 7) {
    return core::error(ErrorCode::kParse, "{}: dtype code {} is not a token dtype (allowed 1 uint8, "
                       "2 int8, 3 int16, 4 int32, 5 int64, 8 uint16)", path, code);
  }
  dtype_ = static_cast<DType>(code);
  const auto n = get_at<uint64_t>(b, 18);
  const auto d = get_at<uint64_t>(b, 26);
  // Megatron appends one int8 mode per sequence for multimodal data; accepted and ignored.
  const uint64_t body = b.size() - kIndexHeaderBytes;
  const uint64_t expected = n * 12 + d * 8;
  if (n > body / 12 || d > body / 8 || (body != expected && body != expected + n)) {
    return core::error(ErrorCode::kParse, "{}: {} bytes do not match {} sequences and {} document "
                       "indices (expected {} bytes; truncated or not an MMIDIDX index?)", path,
                       b.size(), n, d, kIndexHeaderBytes + expected);
  }
  lengths_.resize(n);
  pointers_.resize(n);
  std::memcpy(lengths_.data(), b.data() + kIndexHeaderBytes, n * 4);
  std::memcpy(pointers_.data(), b.data() + kIndexHeaderBytes + n * 4, n * 8);
  // Document indices: ranges of sequences; must start at 0, not decrease and end at n.
  int64_t prev = 0;
  for (uint64_t k = 0; k < d; ++k) {
    const auto v = get_at<int64_t>(b, kIndexHeaderBytes + n * 12 + k * 8);
    if ((k == 0 && v != 0) || v < prev || v > static_cast<int64_t>(n) ||
        (k + 1 == d && v != static_cast<int64_t>(n))) {
      return core::error(ErrorCode::kParse, "{}: document index {} is {} (must start at 0, not "
                         "decrease and end at the sequence count {})", path, k, v, n);
    }
    prev = v;
  }
  return core::ok_status();
}

core::Status IndexedDataset::map_bin(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    return core::error(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo, "cannot open {}: {}",
                       path, std::strerror(errno));
  }
  struct stat st {};
  ::fstat(fd, &st);
  mapped_bytes_ = static_cast<size_t>(st.st_size);
  const int64_t size = dtype_size_bytes(dtype_);
  int64_t expect = 0;
  for (size_t i = 0; i < lengths_.size(); ++i) {
    if (lengths_[i] < 0 || pointers_[i] != expect) {
      ::close(fd);
      return core::error(ErrorCode::kParse, "{}: sequence {} has length {} and pointer {} but the "
                         "previous sequences end at byte {} (pointers must be contiguous)",
                         idx_path(prefix_), i, lengths_[i], pointers_[i], expect);
    }
    expect += int64_t{lengths_[i]} * size;
  }
  tokens_ = expect / size;
  if (static_cast<int64_t>(mapped_bytes_) != expect) {
    ::close(fd);
    return core::error(ErrorCode::kParse, "{} is {} bytes but {} describes {} bytes ({} {} tokens)",
                       path, mapped_bytes_, idx_path(prefix_), expect, tokens_, dtype_name(dtype_));
  }
  if (mapped_bytes_ > 0) {
    void* p = ::mmap(nullptr, mapped_bytes_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return core::error(ErrorCode::kIo, "mmap {} failed: {}", path, std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping stays valid after close
  return core::ok_status();
}

core::Result<IndexedDataset> IndexedDataset::open(const std::string& prefix) {
  IndexedDataset ds;
  ds.prefix_ = prefix;
  LOOM_RETURN_IF_ERROR(ds.load_index(idx_path(prefix)));
  LOOM_RETURN_IF_ERROR(ds.map_bin(bin_path(prefix)));
  return ds;
}

IndexedDataset::IndexedDataset(IndexedDataset&& o) noexcept { *this = std::move(o); }

IndexedDataset& IndexedDataset::operator=(IndexedDataset&& o) noexcept {
  if (this == &o) return *this;
  unmap();
  prefix_ = std::move(o.prefix_);
  dtype_ = o.dtype_;
  lengths_ = std::move(o.lengths_);
  pointers_ = std::move(o.pointers_);
  tokens_ = o.tokens_;
  data_ = o.data_;
  mapped_bytes_ = o.mapped_bytes_;
  o.data_ = nullptr;
  o.mapped_bytes_ = 0;
  return *this;
}

IndexedDataset::~IndexedDataset() { unmap(); }

void IndexedDataset::unmap() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), mapped_bytes_);
  data_ = nullptr;
  mapped_bytes_ = 0;
}

void IndexedDataset::read(int64_t doc, int64_t offset, int64_t count, int32_t* out) const {
  const uint8_t* src = data_ + pointers_[static_cast<size_t>(doc)] + offset * dtype_size_bytes(dtype_);
  switch (dtype_) {
    case DType::kUint8: convert_from<uint8_t>(src, count, out); break;
    case DType::kInt8: convert_from<int8_t>(src, count, out); break;
    case DType::kInt16: convert_from<int16_t>(src, count, out); break;
    case DType::kUint16: convert_from<uint16_t>(src, count, out); break;
    case DType::kInt64: convert_from<int64_t>(src, count, out); break;
    default: convert_from<int32_t>(src, count, out); break;
  }
}

std::vector<int32_t> IndexedDataset::document(int64_t doc) const {
  std::vector<int32_t> out(static_cast<size_t>(document_length(doc)));
  read(doc, 0, static_cast<int64_t>(out.size()), out.data());
  return out;
}

int64_t IndexedDataset::max_token_id() const {
  int64_t best = -1;
  std::vector<int32_t> chunk;
  for (int64_t doc = 0; doc < num_documents(); ++doc) {
    const int64_t len = document_length(doc);
    chunk.resize(static_cast<size_t>(len));
    read(doc, 0, len, chunk.data());
    for (int32_t t : chunk) best = std::max<int64_t>(best, t);
  }
  return best;
}

}  // namespace loom::data
