// safetensors: round trips, exact bf16/f16 rounding, refusal of malformed files, and two
// independent checks: a tiny Python parser (struct + json + numpy, written here from the format
// description) reads a file Loom wrote, and Loom reads a file that Python wrote. The Python
// tests skip when no python3 with numpy is found (LOOM_PYTHON, /usr/bin/python3, python3).
#include "checkpoint/safetensors.h"

#include <bit>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "checkpoint/file_io.h"

#include "tests/checkpoint/python_util.h"

namespace loom::ckpt {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("loom_st_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

using test_util::python_with_numpy;
using test_util::run_capture;

std::vector<Tensor> sample_tensors() {
  const float w[6] = {1.5f, -2.25f, 3.0f, 0.1f, -0.0f, 1e-8f};
  const double d[3] = {1.0 / 3.0, -2.5e-300, 7.0};
  const float b[4] = {1.0f, -0.5f, 3.140625f, 1e30f};
  Tensor ids{"ids", DType::kI64, {3}, {}};
  const int64_t ids_v[3] = {-1, 0, 1234567890123};
  ids.bytes.assign(reinterpret_cast<const uint8_t*>(ids_v),
                   reinterpret_cast<const uint8_t*>(ids_v) + sizeof(ids_v));
  const float one = 42.0f;
  return {make_f32_tensor("layer.w", {2, 3}, w), make_f64_tensor("d", {3}, d),
          make_bf16_tensor("b", {2, 2}, b), ids, make_f32_tensor("scalar", {}, &one),
          make_f32_tensor("empty", {0, 3}, nullptr)};
}

TEST(Safetensors, RoundTripKeepsNamesShapesBytesAndMetadata) {
  const fs::path dir = temp_dir("roundtrip");
  const std::string path = (dir / "t.safetensors").string();
  const std::vector<Tensor> in = sample_tensors();
  WrittenFile w;
  ASSERT_TRUE(write_safetensors(path, in, {{"format", "pt"}, {"k", "v"}}, &w).ok());
  EXPECT_EQ(w.bytes, fs::file_size(path));
  auto bytes = read_file_bytes(path);
  ASSERT_TRUE(bytes.ok());
  std::map<std::string, std::string> meta;
  auto out = parse_safetensors(*bytes, path, &meta);
  ASSERT_TRUE(out.ok()) << out.status().message();
  ASSERT_EQ(out->size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {  // file order is write order
    EXPECT_EQ((*out)[i].name, in[i].name);
    EXPECT_EQ((*out)[i].dtype, in[i].dtype);
    EXPECT_EQ((*out)[i].shape, in[i].shape);
    EXPECT_EQ((*out)[i].bytes, in[i].bytes);
  }
  EXPECT_EQ(meta.at("k"), "v");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | (*bytes)[static_cast<size_t>(i)];
  EXPECT_EQ(n % 8, 0u) << "header must be padded to a multiple of 8";
  EXPECT_EQ((*bytes)[8], '{');
  fs::remove_all(dir);
}

TEST(Safetensors, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie, kept bit 0: down
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, kept bit 1: up
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);  // above the tie: up
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(-3.140625f)), -3.140625f);
}

TEST(Safetensors, F16RoundsToNearestEvenAndRoundTripsEveryHalf) {
  EXPECT_EQ(float_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(float_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7BFF);   // the largest half
  EXPECT_EQ(float_to_f16(65519.0f), 0x7BFF);   // below max + half an ulp
  EXPECT_EQ(float_to_f16(65520.0f), 0x7C00);   // max + half an ulp rounds to infinity
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);      // smallest subnormal
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -25)), 0x0000);      // tie to even (0)
  EXPECT_EQ(float_to_f16(std::ldexp(3.0f, -25)), 0x0002);      // 1.5 ulp: tie to even (2)
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = f16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_f16(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(Safetensors, AsF32ConvertsEveryDtype) {
  const std::vector<Tensor> ts = sample_tensors();
  EXPECT_EQ(as_f32(ts[0])[1], -2.25f);
  EXPECT_FLOAT_EQ(as_f32(ts[1])[0], 1.0f / 3.0f);
  EXPECT_EQ(as_f32(ts[2])[2], 3.140625f);  // exactly representable in bf16
  EXPECT_EQ(as_f32(ts[3])[0], -1.0f);
  EXPECT_EQ(as_f32(ts[4]).size(), 1u);
  auto f16 = convert_tensor(ts[0], DType::kF16);
  ASSERT_TRUE(f16.ok());
  EXPECT_EQ(as_f32(*f16)[0], 1.5f);
  EXPECT_FALSE(convert_tensor(ts[3], DType::kF32).ok()) << "integers are not converted";
}

core::Result<std::vector<Tensor>> parse_edited(std::vector<uint8_t> bytes) {
  return parse_safetensors(bytes, "edited.safetensors");
}

// A file made of the given header text and `data_bytes` zero bytes.
std::vector<uint8_t> file_with_header(const std::string& header, size_t data_bytes) {
  std::string f(8, '\0');
  for (int i = 0; i < 8; ++i) f[static_cast<size_t>(i)] = static_cast<char>(header.size() >> (8 * i));
  f += header;
  f.append(data_bytes, '\0');
  return std::vector<uint8_t>(f.begin(), f.end());
}

TEST(Safetensors, RefusesTruncatedAndMalformedFiles) {
  const std::string ok_header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_TRUE(parse_edited(file_with_header(ok_header, 8)).ok());

  auto truncated = parse_edited(file_with_header(ok_header, 7));
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("truncated"), std::string::npos)
      << truncated.status().message();
  EXPECT_FALSE(parse_edited(file_with_header(ok_header, 9)).ok()) << "trailing bytes";
  EXPECT_FALSE(parse_edited(std::vector<uint8_t>(5, 0)).ok()) << "shorter than the length";

  std::vector<uint8_t> huge = file_with_header(ok_header, 8);
  huge[0] = 0xFF;
  EXPECT_FALSE(parse_edited(huge).ok()) << "header length beyond the file";

  auto bad_dtype = parse_edited(file_with_header(
      R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2));
  ASSERT_FALSE(bad_dtype.ok());
  EXPECT_NE(bad_dtype.status().message().find("'a'"), std::string::npos);
  EXPECT_NE(bad_dtype.status().message().find("F8_E4M3"), std::string::npos);

  auto bad_size = parse_edited(file_with_header(
      R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
  ASSERT_FALSE(bad_size.ok());
  EXPECT_NE(bad_size.status().message().find("needs 12"), std::string::npos);

  EXPECT_FALSE(parse_edited(file_with_header(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12)).ok()) << "gap";
  EXPECT_FALSE(parse_edited(file_with_header(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)).ok()) << "overlap";
  EXPECT_FALSE(parse_edited(file_with_header(R"([1,2])", 0)).ok()) << "not an object";
  EXPECT_FALSE(parse_edited(file_with_header(R"({"a":)", 0)).ok()) << "JSON syntax";
}

TEST(Safetensors, WriteRefusesDuplicateNamesAndWrongByteCounts) {
  const fs::path dir = temp_dir("write_errors");
  const float x[2] = {1, 2};
  const std::string path = (dir / "x.safetensors").string();
  auto dup = write_safetensors(path, {make_f32_tensor("a", {2}, x), make_f32_tensor("a", {2}, x)});
  EXPECT_FALSE(dup.ok());
  Tensor wrong = make_f32_tensor("w", {2}, x);
  wrong.shape = {3};
  auto st = write_safetensors(path, {wrong});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'w'"), std::string::npos) << st.message();
  fs::remove_all(dir);
}

// Written from the format description (8-byte LE length, JSON header, data), not from Loom.
constexpr const char* kPythonReader = R"PY(
import json, struct, sys
import numpy as np
data = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", data[:8])
header = json.loads(data[8:8 + n].decode("utf-8"))
meta = header.pop("__metadata__", {})
codes = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "BF16": "<u2"}
for name in sorted(header):
    e = header[name]
    b, end = e["data_offsets"]
    a = np.frombuffer(data[8 + n + b:8 + n + end], dtype=codes[e["dtype"]])
    if e["dtype"] == "BF16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    a = a.reshape(e["shape"])
    vals = " ".join("%.17g" % v for v in a.astype(np.float64).ravel())
    print("%s %s %s | %s" % (name, e["dtype"], list(a.shape), vals))
print("meta " + json.dumps(meta, sort_keys=True))
)PY";

TEST(Safetensors, IndependentPythonParserReadsLoomFile) {
  const std::string py = python_with_numpy();
  if (py.empty()) GTEST_SKIP() << "no python3 with numpy (set LOOM_PYTHON)";
  const fs::path dir = temp_dir("py_reader");
  const std::string path = (dir / "loom.safetensors").string();
  ASSERT_TRUE(write_safetensors(path, sample_tensors(), {{"format", "pt"}}).ok());
  std::ofstream(dir / "reader.py") << kPythonReader;
  int status = 0;
  const std::string out =
      run_capture(py + " " + (dir / "reader.py").string() + " " + path + " 2>&1", &status);
  ASSERT_EQ(status, 0) << out;
  const std::string expected =
      // 1e30f = 0x7149f2ca rounds up to bf16 0x714a (dropped bits 0xf2ca > 0x8000).
      "b BF16 [2, 2] | 1 -0.5 3.140625 1.0002555517425873e+30\n"
      "d F64 [3] | 0.33333333333333331 -2.5e-300 7\n"
      "empty F32 [0, 3] | \n"
      "ids I64 [3] | -1 0 1234567890123\n"
      "layer.w F32 [2, 3] | 1.5 -2.25 3 0.10000000149011612 -0 9.9999999392252903e-09\n"
      "scalar F32 [] | 42\n"
      "meta {\"format\": \"pt\"}\n";
  EXPECT_EQ(out, expected);
  fs::remove_all(dir);
}

constexpr const char* kPythonWriter = R"PY(
import json, struct, sys
import numpy as np
w = np.arange(6, dtype="<f4").reshape(2, 3) * np.float32(0.5) - np.float32(1)
h = np.array([1.0, -2.0, 0.099609375], dtype="<f4")
bf = (h.view(np.uint32) >> 16).astype("<u2")  # exact: each value fits in bf16
i = np.array([7, -8], dtype="<i4")
tensors = [("w", "F32", w), ("h", "BF16", bf), ("i", "I32", i)]
header, blobs, off = {"__metadata__": {"source": "python"}}, [], 0
for name, dt, a in tensors:
    b = a.tobytes()
    header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
text = json.dumps(header).encode("utf-8")
text += b" " * ((8 - len(text) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
)PY";

TEST(Safetensors, ReadsFileWrittenByIndependentPython) {
  const std::string py = python_with_numpy();
  if (py.empty()) GTEST_SKIP() << "no python3 with numpy (set LOOM_PYTHON)";
  const fs::path dir = temp_dir("py_writer");
  const std::string path = (dir / "py.safetensors").string();
  std::ofstream(dir / "writer.py") << kPythonWriter;
  int status = 0;
  const std::string out =
      run_capture(py + " " + (dir / "writer.py").string() + " " + path + " 2>&1", &status);
  ASSERT_EQ(status, 0) << out;
  auto bytes = read_file_bytes(path);
  ASSERT_TRUE(bytes.ok());
  std::map<std::string, std::string> meta;
  auto ts = parse_safetensors(*bytes, path, &meta);
  ASSERT_TRUE(ts.ok()) << ts.status().message();
  ASSERT_EQ(ts->size(), 3u);
  EXPECT_EQ(meta.at("source"), "python");
  EXPECT_EQ((*ts)[0].name, "w");
  EXPECT_EQ((*ts)[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(as_f32((*ts)[0]), (std::vector<float>{-1, -0.5f, 0, 0.5f, 1, 1.5f}));
  EXPECT_EQ((*ts)[1].dtype, DType::kBF16);
  EXPECT_EQ(as_f32((*ts)[1]), (std::vector<float>{1.0f, -2.0f, 0.099609375f}));
  EXPECT_EQ((*ts)[2].dtype, DType::kI32);
  EXPECT_EQ(as_f64((*ts)[2]), (std::vector<double>{7, -8}));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace loom::ckpt
