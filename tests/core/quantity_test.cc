// parse_count / format_count: the written forms of token counts ("300B", "1.4T", "1.4e12"),
// the errors for everything else (they must name the field, the text and the accepted forms),
// and that every printed count parses back.
#include "core/quantity.h"

#include <gtest/gtest.h>

namespace loom::core {
namespace {

double parsed(const std::string& text) { return parse_count(text, "--tokens").value(); }

TEST(ParseCount, AcceptsSuffixesAndScientificNotation) {
  EXPECT_DOUBLE_EQ(parsed("1.4e12"), 1.4e12);
  EXPECT_DOUBLE_EQ(parsed("1.4E12"), 1.4e12);
  EXPECT_DOUBLE_EQ(parsed("1.4T"), 1.4e12);
  EXPECT_DOUBLE_EQ(parsed("300B"), 300e9);
  EXPECT_DOUBLE_EQ(parsed("300b"), 300e9);
  EXPECT_DOUBLE_EQ(parsed("300G"), 300e9);
  EXPECT_DOUBLE_EQ(parsed("7M"), 7e6);
  EXPECT_DOUBLE_EQ(parsed("2.5k"), 2500);
  EXPECT_DOUBLE_EQ(parsed("2.5K"), 2500);
  EXPECT_DOUBLE_EQ(parsed("1000000"), 1e6);
  EXPECT_DOUBLE_EQ(parsed("0"), 0);
  EXPECT_DOUBLE_EQ(parsed(".5k"), 500);
  EXPECT_DOUBLE_EQ(parsed(" 15T "), 15e12);  // surrounding spaces from YAML or shell quoting
}

TEST(ParseCount, RejectsWhatIsNotACount) {
  for (const char* text : {"", "  ", "T", "1_000", "1,000", "-5B", "+5B", "1e3k", "5X", "1.4TT",
                           "1.4 T", "abc", "nan", "inf", "1e400", "0x10", "5BT"}) {
    EXPECT_FALSE(parse_count(text, "--tokens").ok()) << "'" << text << "'";
  }
}

TEST(ParseCount, ErrorNamesFieldValueAndAcceptedForms) {
  const auto r = parse_count("1_000", "--tokens");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  const std::string& m = r.status().message();
  EXPECT_NE(m.find("--tokens"), std::string::npos) << m;
  EXPECT_NE(m.find("'1_000'"), std::string::npos) << m;
  EXPECT_NE(m.find("300B"), std::string::npos) << m;
  EXPECT_NE(m.find("1.4e12"), std::string::npos) << m;
}

TEST(FormatCount, UsesTheLargestSuffix) {
  EXPECT_EQ(format_count(1.4e12), "1.4T");
  EXPECT_EQ(format_count(300e9), "300B");
  EXPECT_EQ(format_count(7e6), "7M");
  EXPECT_EQ(format_count(2500), "2.5k");
  EXPECT_EQ(format_count(512), "512");
  EXPECT_EQ(format_count(0), "0");
  EXPECT_EQ(format_count(1.23456e12), "1.235T");  // 4 significant digits
  EXPECT_EQ(format_count(999.96e9), "1T");        // rounding carries into the next suffix
  EXPECT_EQ(format_count(2e15), "2e+15");
  EXPECT_EQ(format_count(-3e9), "-3B");
}

TEST(FormatCount, ParsesBack) {
  for (double v : {0.0, 0.5, 7.0, 999.0, 1000.0, 2.5e3, 6.5e4, 7e6, 1.8e9, 300e9, 1.4e12,
                   15.6e12, 2e15, 3.7e18}) {
    const std::string s = format_count(v);
    EXPECT_NEAR(parsed(s), v, 5e-4 * v) << s;  // 4 significant digits
  }
}

}  // namespace
}  // namespace loom::core
