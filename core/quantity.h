// Counts as people write them on the command line and in configs: "1.4T" tokens, "300B",
// "7M", "2.5k", "1.4e12". One parser so that `--tokens 300B` means the same everywhere, and
// its inverse for printing. Tested in tests/core/quantity_test.cc.
//
//   LOOM_ASSIGN_OR_RETURN(double tokens, core::parse_count(text, "--tokens"));
//   fmt::print("{} tokens\n", core::format_count(tokens));  // "300B tokens"
#pragma once

#include <string>

#include "core/status.h"

namespace loom::core {

// A non-negative finite count: a decimal number ("300000", "2.5", "1.4e12") or a decimal
// number with one SI-style suffix, case-insensitive: k = 1e3, M = 1e6, B (or G) = 1e9,
// T = 1e12. An exponent and a suffix together ("1e3k"), digit separators ("1_000", "1,000"),
// a sign, NaN and infinity are rejected; surrounding spaces are ignored.
// Errors name `field`, the text and the accepted forms.
Result<double> parse_count(const std::string& text, const std::string& field);

// The shortest readable form with up to 4 significant digits and the largest suffix that keeps
// the mantissa >= 1: 1.4e12 -> "1.4T", 3e11 -> "300B", 7e6 -> "7M", 2500 -> "2.5k", 512 -> "512".
// Values of 1e15 and above print in scientific notation ("2e+15"); parse_count reads every
// output back (to 4 significant digits).
std::string format_count(double value);

}  // namespace loom::core
