// Megatron MMIDIDX files: Loom's writer and reader round-trip, a Python reader written from
// Megatron's layout (megatron/core/datasets/indexed_dataset.py) reads Loom's files, and every
// kind of damage (magic, version, dtype, truncation, pointers) gives an error naming the file.
#include "dataset/indexed_dataset.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

namespace loom::data {
namespace {

namespace fs = std::filesystem;

std::string temp_prefix(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("loom_ds_idx_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

const std::vector<std::vector<int32_t>> kDocs = {{1, 2, 3, 256}, {}, {65535, 0, 7}, {42}};

void patch(const std::string& path, std::streamoff at, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(at);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void truncate_by(const std::string& path, uintmax_t bytes) {
  fs::resize_file(path, fs::file_size(path) - bytes);
}

TEST(IndexedDataset, RoundTripsUint16AndInt32) {
  for (DType dtype : {DType::kUint16, DType::kInt32}) {
    const std::string prefix = temp_prefix(std::string("rt_") + dtype_name(dtype));
    ASSERT_TRUE(write_indexed_dataset(prefix, dtype, kDocs).ok());
    auto ds = IndexedDataset::open(prefix);
    ASSERT_TRUE(ds.ok()) << ds.status().message();
    EXPECT_EQ(ds->dtype(), dtype);
    ASSERT_EQ(ds->num_documents(), 4);
    EXPECT_EQ(ds->num_tokens(), 8);
    for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(ds->document(i), kDocs[i]);
    EXPECT_EQ(ds->max_token_id(), 65535);
    // Header bytes as Megatron writes them: 34 + 12 n + 8 (n + 1).
    EXPECT_EQ(fs::file_size(idx_path(prefix)), 34u + 12 * 4 + 8 * 5);
    EXPECT_EQ(fs::file_size(bin_path(prefix)), 8u * dtype_size_bytes(dtype));
  }
}

TEST(IndexedDataset, VocabularyPicksUint16UpTo65536) {
  EXPECT_EQ(token_dtype_for_vocab(257), DType::kUint16);
  EXPECT_EQ(token_dtype_for_vocab(50257), DType::kUint16);
  EXPECT_EQ(token_dtype_for_vocab(65536), DType::kUint16);
  EXPECT_EQ(token_dtype_for_vocab(65537), DType::kInt32);
  EXPECT_EQ(token_dtype_for_vocab(151936), DType::kInt32);  // Qwen's vocabulary
}

// Megatron's reader, transcribed: header fields with struct, arrays with numpy at the offsets
// _IndexReader computes, tokens from the .bin at each sequence pointer.
constexpr const char* kPythonReader = R"PY(
import json, struct, sys
import numpy as np
prefix = sys.argv[1]
codes = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64,
         7: np.float32, 8: np.uint16}
with open(prefix + ".idx", "rb") as f:
    assert f.read(9) == b"MMIDIDX\x00\x00"
    version = struct.unpack("<Q", f.read(8))[0]
    dtype = codes[struct.unpack("<B", f.read(1))[0]]
    n = struct.unpack("<Q", f.read(8))[0]
    d = struct.unpack("<Q", f.read(8))[0]
    offset = f.tell()
buf = memoryview(np.memmap(prefix + ".idx", mode="r", order="C"))
lengths = np.frombuffer(buf, dtype=np.int32, count=n, offset=offset)
pointers = np.frombuffer(buf, dtype=np.int64, count=n, offset=offset + lengths.nbytes)
docs_idx = np.frombuffer(buf, dtype=np.int64, count=d, offset=offset + lengths.nbytes + pointers.nbytes)
data = np.memmap(prefix + ".bin", mode="r", order="C")
size = np.dtype(dtype).itemsize
seqs = [np.frombuffer(data, dtype=dtype, count=int(l), offset=int(p)).tolist() if l else []
        for l, p in zip(lengths, pointers)]
print(json.dumps({"version": version, "dtype": np.dtype(dtype).name, "document_indices": docs_idx.tolist(),
                  "sequences": seqs}))
)PY";

std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return out;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  pclose(pipe);
  return out;
}

TEST(IndexedDataset, MegatronLayoutPythonReaderReadsLoomFiles) {
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 not found";
  if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "numpy is not installed for /usr/bin/python3";
  }
  const std::string script = temp_prefix("megatron_reader.py");
  std::ofstream(script) << kPythonReader;
  for (DType dtype : {DType::kUint16, DType::kInt32}) {
    const std::string prefix = temp_prefix(std::string("py_") + dtype_name(dtype));
    ASSERT_TRUE(write_indexed_dataset(prefix, dtype, kDocs).ok());
    const std::string out = run_capture("/usr/bin/python3 " + script + " " + prefix + " 2>&1");
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(out)) << out;
    EXPECT_EQ(j["version"], 1);
    EXPECT_EQ(j["dtype"], dtype_name(dtype));
    EXPECT_EQ(j["document_indices"], nlohmann::json({0, 1, 2, 3, 4}));
    EXPECT_EQ(j["sequences"].get<std::vector<std::vector<int32_t>>>(), kDocs);
  }
}

TEST(IndexedDataset, WriterLeavesNoTemporaryFiles) {
  const std::string prefix = temp_prefix("atomic");
  {
    auto w = IndexedDatasetWriter::create(prefix, DType::kUint16);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->add_document(std::vector<int32_t>{1, 2}).ok());
    // Dropped without finish(): nothing appears under the final names, the temporaries go away.
  }
  EXPECT_FALSE(fs::exists(bin_path(prefix)));
  EXPECT_FALSE(fs::exists(idx_path(prefix)));
  for (const auto& e : fs::directory_iterator(fs::path(prefix).parent_path())) {
    EXPECT_EQ(e.path().string().find("atomic.bin.tmp"), std::string::npos) << e.path();
  }
}

TEST(IndexedDataset, TokenThatDoesNotFitTheDtypeIsRejected) {
  auto w = IndexedDatasetWriter::create(temp_prefix("nofit"), DType::kUint16);
  ASSERT_TRUE(w.ok());
  const auto st = w->add_document(std::vector<int32_t>{5, 70000});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("70000"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("uint16"), std::string::npos) << st.message();
}

// Writes a fresh copy of kDocs at `name`, applies `damage`, and returns the open() error.
core::Status damaged(const std::string& name, const std::function<void(const std::string&)>& damage) {
  const std::string prefix = temp_prefix(name);
  EXPECT_TRUE(write_indexed_dataset(prefix, DType::kUint16, kDocs).ok());
  damage(prefix);
  auto ds = IndexedDataset::open(prefix);
  EXPECT_FALSE(ds.ok());
  return ds.status();
}

void expect_mentions(const core::Status& st, const std::string& a, const std::string& b) {
  EXPECT_NE(st.message().find(a), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(b), std::string::npos) << st.message();
}

TEST(IndexedDataset, MissingFilesAreNotFound) {
  auto st = damaged("missing_idx", [](const std::string& p) { fs::remove(idx_path(p)); });
  EXPECT_EQ(st.code(), core::ErrorCode::kNotFound);
  expect_mentions(st, "missing_idx.idx", "does not exist");
  st = damaged("missing_bin", [](const std::string& p) { fs::remove(bin_path(p)); });
  EXPECT_EQ(st.code(), core::ErrorCode::kNotFound);
  expect_mentions(st, "missing_bin.bin", "cannot open");
}

TEST(IndexedDataset, BadMagicVersionAndDtypeAreNamed) {
  auto st = damaged("magic", [](const std::string& p) { patch(idx_path(p), 0, "TNTIDX"); });
  expect_mentions(st, "magic.idx", "bad magic");
  st = damaged("version", [](const std::string& p) { patch(idx_path(p), 9, std::string(1, '\2')); });
  expect_mentions(st, "version.idx", "version 2");
  st = damaged("dtype", [](const std::string& p) { patch(idx_path(p), 17, std::string(1, '\6')); });
  expect_mentions(st, "dtype.idx", "dtype code 6");
  st = damaged("dtype9", [](const std::string& p) { patch(idx_path(p), 17, std::string(1, '\x09')); });
  expect_mentions(st, "dtype9.idx", "dtype code 9");
}

TEST(IndexedDataset, TruncatedFilesAreDetected) {
  auto st = damaged("trunc_idx", [](const std::string& p) { truncate_by(idx_path(p), 8); });
  expect_mentions(st, "trunc_idx.idx", "truncated");
  st = damaged("short_idx", [](const std::string& p) { fs::resize_file(idx_path(p), 20); });
  expect_mentions(st, "short_idx.idx", "shorter than");
  st = damaged("trunc_bin", [](const std::string& p) { truncate_by(bin_path(p), 2); });
  expect_mentions(st, "trunc_bin.bin is 14 bytes", "describes 16 bytes");
}

TEST(IndexedDataset, InconsistentPointersAreDetected) {
  // Sequence 2's pointer (at 34 + 4 * 4 + 2 * 8) moved from byte 8 to byte 6.
  auto st = damaged("pointer", [](const std::string& p) {
    const int64_t bad = 6;
    patch(idx_path(p), 34 + 16 + 16, std::string(reinterpret_cast<const char*>(&bad), 8));
  });
  expect_mentions(st, "pointer.idx", "sequence 2");
  // Document indices must end at the sequence count.
  st = damaged("docidx", [](const std::string& p) {
    const int64_t bad = 3;
    patch(idx_path(p), 34 + 16 + 32 + 4 * 8, std::string(reinterpret_cast<const char*>(&bad), 8));
  });
  expect_mentions(st, "docidx.idx", "document index 4");
}

}  // namespace
}  // namespace loom::data
