// Hugging Face safetensors files (github.com/huggingface/safetensors, "Format"): 8-byte LE
// header length N, a JSON header {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}} padded with spaces to a multiple of 8, then the row-major LE data.
// Loom's checkpoints and its Hugging Face export both use it. Tested in
// tests/checkpoint/safetensors_test.cc, also against an independent Python reader and writer.

// Usage:
//   std::vector<Tensor> ts = {make_f32_tensor("w", {2, 3}, data)};
//   LOOM_RETURN_IF_ERROR(write_safetensors("w.safetensors", ts, {{"format", "pt"}}));
//   LOOM_ASSIGN_OR_RETURN(std::vector<Tensor> back, read_safetensors("w.safetensors"));
//   std::vector<float> w = as_f32(back[0]);
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"

namespace loom::ckpt {

// The subset of safetensors dtypes Loom reads and writes ("F32", "F64", "BF16", ...).
enum class DType { kF32, kF64, kBF16, kF16, kI64, kI32, kU8 };

const char* dtype_name(DType d);                         // "F32"
core::Result<DType> parse_dtype(const std::string& s);  // "F32" -> kF32; errors list the allowed
int64_t dtype_size_bytes(DType d);

struct Tensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // row-major; {} is a scalar (one element)
  std::vector<uint8_t> bytes;  // little-endian elements, product(shape) * dtype_size_bytes

  int64_t num_elements() const;
};

// "[2, 3]": shapes in error messages.
std::string shape_string(const std::vector<int64_t>& shape);

// Size and CRC-32C of a written file (the checkpoint manifest records both).
struct WrittenFile {
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
};

// Writes the tensors in the given order (names must be unique and not "__metadata__"; each
// tensor's byte count must match its shape and dtype) and fsyncs the file.
core::Status write_safetensors(const std::string& path, const std::vector<Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata = {},
                               WrittenFile* written = nullptr);

// Reads and validates a file: header length within the file, JSON syntax, known dtypes,
// data_offsets that match each shape and tile the data section exactly (no gap, overlap or
// trailing bytes), as the reference Rust implementation requires. Tensors come back in file
// order. Errors name the file, the tensor and the offending field.
core::Result<std::vector<Tensor>> read_safetensors(const std::string& path);
// The same on bytes already in memory; `origin` names them in errors.
core::Result<std::vector<Tensor>> parse_safetensors(
    const std::vector<uint8_t>& file, const std::string& origin,
    std::map<std::string, std::string>* metadata = nullptr);

Tensor make_f32_tensor(std::string name, std::vector<int64_t> shape, const float* data);
Tensor make_f64_tensor(std::string name, std::vector<int64_t> shape, const double* data);
// Rounds each value to the nearest bfloat16 (ties to even; NaN stays NaN).
Tensor make_bf16_tensor(std::string name, std::vector<int64_t> shape, const float* data);

// The elements as float / double, converting from any dtype (bf16 and f16 exactly, f64 and
// integers by rounding).
std::vector<float> as_f32(const Tensor& t);
std::vector<double> as_f64(const Tensor& t);

// A floating-point tensor in another floating-point dtype (F32, F64, BF16, F16).
core::Result<Tensor> convert_tensor(const Tensor& t, DType target);

uint16_t float_to_bf16(float x);  // round to nearest even
float bf16_to_float(uint16_t b);
uint16_t float_to_f16(float x);   // round to nearest even, overflow to infinity
float f16_to_float(uint16_t h);

}  // namespace loom::ckpt
