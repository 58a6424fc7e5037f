// Tensor construction and dtype conversions for safetensors.h: bf16 / f16 rounding (nearest
// even, as torch's .to(torch.bfloat16) and numpy's float16 do), and reading any dtype back as
// float or double. Tested in tests/checkpoint/safetensors_test.cc (exact bf16/f16 cases).
#include <bit>
#include <cmath>
#include <cstring>

#include "checkpoint/safetensors.h"

namespace loom::ckpt {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian elements; Loom copies them as they are");

uint16_t float_to_bf16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  // Round to nearest even on the 16 dropped bits: add 0x7FFF plus the lowest kept bit.
  const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t float_to_f16(float x) {
  const uint32_t f = std::bit_cast<uint32_t>(x);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const uint32_t absf = f & 0x7FFFFFFFu;
  if (absf >= 0x7F800000u) {  // inf stays inf, NaN stays a (quiet) NaN
    return static_cast<uint16_t>(sign | 0x7C00u | (absf > 0x7F800000u ? 0x200u : 0u));
  }
  // 65520 = max half (65504) + half an ulp (16): it and everything above round to infinity.
  if (absf >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  if (absf < 0x38800000u) {  // below 2^-14, the smallest normal half: subnormal or zero
    // Subnormal halves are multiples of 2^-24; scaling by 2^24 is exact in float.
    const float scaled = std::bit_cast<float>(absf) * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  uint32_t h = ((((absf >> 23) - 127u + 15u)) << 10) | ((absf & 0x7FFFFFu) >> 13);
  const uint32_t rest = absf & 0x1FFFu;  // the 13 dropped mantissa bits
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry bumps the exponent
  return static_cast<uint16_t>(sign | h);
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp - 15u + 127u) << 23) | (mant << 13));
}

int64_t Tensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

template <typename T>
Tensor make_tensor(std::string name, std::vector<int64_t> shape, DType dtype, const T* data) {
  Tensor t{std::move(name), dtype, std::move(shape), {}};
  t.bytes.resize(static_cast<size_t>(t.num_elements()) * sizeof(T));
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
  return t;
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Element i of t as double (exact for every float dtype Loom stores).
double element_as_double(const Tensor& t, size_t i) {
  const uint8_t* p = t.bytes.data() + i * static_cast<size_t>(dtype_size_bytes(t.dtype));
  switch (t.dtype) {
    case DType::kF32: return load<float>(p);
    case DType::kF64: return load<double>(p);
    case DType::kBF16: return bf16_to_float(load<uint16_t>(p));
    case DType::kF16: return f16_to_float(load<uint16_t>(p));
    case DType::kI64: return static_cast<double>(load<int64_t>(p));
    case DType::kI32: return load<int32_t>(p);
    case DType::kU8: return *p;
  }
  return 0.0;
}

}  // namespace

Tensor make_f32_tensor(std::string name, std::vector<int64_t> shape, const float* data) {
  return make_tensor(std::move(name), std::move(shape), DType::kF32, data);
}

Tensor make_f64_tensor(std::string name, std::vector<int64_t> shape, const double* data) {
  return make_tensor(std::move(name), std::move(shape), DType::kF64, data);
}

Tensor make_bf16_tensor(std::string name, std::vector<int64_t> shape, const float* data) {
  Tensor t{std::move(name), DType::kBF16, std::move(shape), {}};
  const size_t n = static_cast<size_t>(t.num_elements());
  std::vector<uint16_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = float_to_bf16(data[i]);
  t.bytes.resize(n * 2);
  if (n > 0) std::memcpy(t.bytes.data(), b.data(), n * 2);
  return t;
}

std::vector<float> as_f32(const Tensor& t) {
  const size_t n = t.bytes.size() / static_cast<size_t>(dtype_size_bytes(t.dtype));
  std::vector<float> out(n);
  if (t.dtype == DType::kF32) {
    if (n > 0) std::memcpy(out.data(), t.bytes.data(), n * sizeof(float));
    return out;
  }
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(element_as_double(t, i));
  return out;
}

std::vector<double> as_f64(const Tensor& t) {
  const size_t n = t.bytes.size() / static_cast<size_t>(dtype_size_bytes(t.dtype));
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = element_as_double(t, i);
  return out;
}

core::Result<Tensor> convert_tensor(const Tensor& t, DType target) {
  auto is_float = [](DType d) {
    return d == DType::kF32 || d == DType::kF64 || d == DType::kBF16 || d == DType::kF16;
  };
  if (!is_float(t.dtype) || !is_float(target)) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "tensor '{}': converting {} to {} is not supported (allowed between F32, "
                       "F64, BF16, F16)",
                       t.name, dtype_name(t.dtype), dtype_name(target));
  }
  if (t.dtype == target) return t;
  if (target == DType::kF64) {
    const std::vector<double> v = as_f64(t);
    return make_f64_tensor(t.name, t.shape, v.data());
  }
  const std::vector<float> v = as_f32(t);
  if (target == DType::kF32) return make_f32_tensor(t.name, t.shape, v.data());
  if (target == DType::kBF16) return make_bf16_tensor(t.name, t.shape, v.data());
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = float_to_f16(v[i]);
  return make_tensor(t.name, t.shape, DType::kF16, h.data());
}

}  // namespace loom::ckpt
