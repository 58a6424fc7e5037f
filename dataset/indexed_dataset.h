// Megatron-LM's indexed dataset ("MMIDIDX" mmap format, megatron/core/datasets/indexed_dataset.py):
// PREFIX.bin holds the tokens of every sequence back to back; PREFIX.idx holds the header and the
// per-sequence lengths and byte offsets. Loom writes and reads the same files so data prepared by
// either tool trains in both. Tested in tests/dataset/indexed_dataset_test.cc, including a Python
// reader that follows Megatron's layout.
//
// PREFIX.idx, little-endian:
//   9 bytes  magic "MMIDIDX\0\0"
//   uint64   version (1)
//   uint8    dtype code (DType below, Megatron's codes)
//   uint64   sequence count n
//   uint64   document count d (length of the document index array; n + 1 here)
//   int32[n] sequence lengths (tokens)
//   int64[n] sequence pointers (byte offset of each sequence in PREFIX.bin)
//   int64[d] document indices: document k spans sequences [doc[k], doc[k+1]); Loom writes one
//            sequence per document, so [0, 1, ..., n].
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace loom::data {

// Megatron's DType codes (megatron/core/datasets/indexed_dataset.py, class DType).
enum class DType : uint8_t {
  kUint8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUint16 = 8,
};

const char* dtype_name(DType dtype);
int64_t dtype_size_bytes(DType dtype);
// uint16 when every id fits (vocab_size <= 65536), else int32. Megatron's preprocess_data.py
// switches at 65500 (a margin it does not explain); ids up to 65535 fit uint16 exactly.
DType token_dtype_for_vocab(int64_t vocab_size);

inline constexpr char kIndexMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
inline constexpr uint64_t kIndexVersion = 1;
inline constexpr int64_t kIndexHeaderBytes = 9 + 8 + 1 + 8 + 8;

std::string bin_path(const std::string& prefix);
std::string idx_path(const std::string& prefix);

// Streams documents to PREFIX.bin.tmp.<pid> and writes PREFIX.idx.tmp.<pid> on finish(), then
// renames both into place (.bin first, .idx last: a reader that sees the new index sees the new
// data). Destroying an unfinished writer removes the temporary files.
class IndexedDatasetWriter {
 public:
  static core::Result<IndexedDatasetWriter> create(const std::string& prefix, DType dtype);
  IndexedDatasetWriter(IndexedDatasetWriter&&) noexcept;
  IndexedDatasetWriter& operator=(IndexedDatasetWriter&&) noexcept;
  ~IndexedDatasetWriter();

  // Appends one document (one sequence). Ids must fit the dtype (error names the id and position).
  core::Status add_document(std::span<const int32_t> tokens);
  core::Status finish();

  int64_t documents() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t tokens() const { return tokens_; }
  DType dtype() const { return dtype_; }

 private:
  IndexedDatasetWriter() = default;
  void discard();

  std::string prefix_, bin_tmp_, idx_tmp_;
  DType dtype_ = DType::kInt32;
  std::unique_ptr<std::ofstream> bin_;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> pointers_;
  std::vector<char> buffer_;
  int64_t bin_bytes_ = 0, tokens_ = 0;
  bool finished_ = false;
};

// Writes a whole dataset at once (tests, small tools).
core::Status write_indexed_dataset(const std::string& prefix, DType dtype,
                                   const std::vector<std::vector<int32_t>>& documents);

// A read-only view of PREFIX.bin (memory-mapped) with the index loaded and validated: magic,
// version, dtype, the index size against its counts, and every pointer against the lengths and
// the size of PREFIX.bin. Errors name the file.
class IndexedDataset {
 public:
  static core::Result<IndexedDataset> open(const std::string& prefix);
  IndexedDataset(IndexedDataset&&) noexcept;
  IndexedDataset& operator=(IndexedDataset&&) noexcept;
  ~IndexedDataset();

  const std::string& prefix() const { return prefix_; }
  DType dtype() const { return dtype_; }
  int64_t num_documents() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t num_tokens() const { return tokens_; }
  int64_t document_length(int64_t doc) const { return lengths_[static_cast<size_t>(doc)]; }
  const std::vector<int32_t>& lengths() const { return lengths_; }

  // Copies tokens [offset, offset + count) of document `doc`, converted to int32, into out.
  void read(int64_t doc, int64_t offset, int64_t count, int32_t* out) const;
  std::vector<int32_t> document(int64_t doc) const;
  // Largest token id over the whole file (one pass over the data).
  int64_t max_token_id() const;

 private:
  IndexedDataset() = default;
  core::Status load_index(const std::string& path);
  core::Status map_bin(const std::string& path);
  void unmap();

  std::string prefix_;
  DType dtype_ = DType::kInt32;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> pointers_;
  int64_t tokens_ = 0;
  const uint8_t* data_ = nullptr;
  size_t mapped_bytes_ = 0;
};

}  // namespace loom::data
