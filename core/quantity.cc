// Count parsing and printing: see quantity.h. std::from_chars does the number (locale-free,
// no leading '+', no spaces), so "1,000" can never be read as 1 in a comma-decimal locale.
#include "core/quantity.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <string_view>

#include <fmt/format.h>

namespace loom::core {
namespace {

constexpr const char* kAcceptedForms =
    "write a non-negative number, optionally with one suffix k (1e3), M (1e6), B or G (1e9), "
    "T (1e12): e.g. 300B, 1.4T, 7M, 2.5k, 1.4e12";

Status count_error(const std::string& field, const std::string& text, const char* why) {
  return error(ErrorCode::kInvalidArgument, "{}: '{}' is not a count ({}); {}", field, text, why,
               kAcceptedForms);
}

// The multiplier a trailing suffix stands for, or 0 when `c` is not a suffix.
double suffix_multiplier(char c) {
  switch (std::tolower(static_cast<unsigned char>(c))) {
    case 'k':
      return 1e3;
    case 'm':
      return 1e6;
    case 'b':
    case 'g':
      return 1e9;
    case 't':
      return 1e12;
    default:
      return 0;
  }
}

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t");
  return s.substr(first, last - first + 1);
}

}  // namespace

Result<double> parse_count(const std::string& text, const std::string& field) {
  std::string_view number = trim(text);
  if (number.empty()) return count_error(field, text, "empty");
  double multiplier = 1;
  if (const double m = suffix_multiplier(number.back()); m > 0) {
    multiplier = m;
    number.remove_suffix(1);
    if (number.find_first_of("eE") != std::string_view::npos) {
      return count_error(field, text, "an exponent and a suffix together");
    }
  }
  if (number.empty()) return count_error(field, text, "no digits");
  if (number.front() == '-') return count_error(field, text, "negative");
  double value = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value,
                                         std::chars_format::general);
  if (ec == std::errc::result_out_of_range) return count_error(field, text, "out of range");
  if (ec != std::errc() || end != number.data() + number.size()) {
    return count_error(field, text, "not a number");
  }
  value *= multiplier;
  if (!std::isfinite(value)) return count_error(field, text, "not finite");
  return value;
}

std::string format_count(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value < 0) return fmt::format("-{}", format_count(-value));
  // Round to 4 significant digits first so that 999.96e9 prints as "1T", not "1000B".
  const double rounded = std::stod(fmt::format("{:.4g}", value));
  if (rounded >= 1e15) return fmt::format("{:.4g}", rounded);
  static constexpr struct {
    double scale;
    const char* suffix;
  } kUnits[] = {{1e12, "T"}, {1e9, "B"}, {1e6, "M"}, {1e3, "k"}};
  for (const auto& unit : kUnits) {
    if (rounded >= unit.scale) return fmt::format("{:.4g}{}", rounded / unit.scale, unit.suffix);
  }
  return fmt::format("{:.4g}", rounded);
}

}  // namespace loom::core
