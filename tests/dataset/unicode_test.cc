// GPT-2's pre-tokenizer against splits worked out by hand from the regex
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (leftmost-first alternation, greedy runs, the whitespace lookahead), and the code-point classes.
#include "dataset/unicode.h"

#include <gtest/gtest.h>

namespace loom::data {
namespace {

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  for (auto piece : gpt2_pretokenize(text)) out.emplace_back(piece);
  return out;
}

using Pieces = std::vector<std::string>;

TEST(Gpt2Pretokenize, WordsKeepTheirLeadingSpace) {
  EXPECT_EQ(split("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split("the lower"), (Pieces{"the", " lower"}));
}

TEST(Gpt2Pretokenize, ContractionsSplitOffOnlyAtAMatchStart) {
  EXPECT_EQ(split("don't we'll I'm"), (Pieces{"don", "'t", " we", "'ll", " I", "'m"}));
  EXPECT_EQ(split("they're you've he'd it's"),
            (Pieces{"they", "'re", " you", "'ve", " he", "'d", " it", "'s"}));
  // Case-sensitive: 'S is not a contraction; the apostrophe is punctuation.
  EXPECT_EQ(split("IT'S"), (Pieces{"IT", "'", "S"}));
  // Inside a punctuation run the apostrophe is taken greedily by [^\s\p{L}\p{N}]+.
  EXPECT_EQ(split("!'s"), (Pieces{"!'", "s"}));
}

TEST(Gpt2Pretokenize, NumbersAndPunctuationAreSeparateRuns) {
  EXPECT_EQ(split("abc123def"), (Pieces{"abc", "123", "def"}));
  EXPECT_EQ(split("x = 3.14!"), (Pieces{"x", " =", " 3", ".", "14", "!"}));
  EXPECT_EQ(split("Hello!!"), (Pieces{"Hello", "!!"}));
}

TEST(Gpt2Pretokenize, WhitespaceRunsLeaveTheLastSpaceToTheNextWord) {
  EXPECT_EQ(split("a  b"), (Pieces{"a", " ", " b"}));
  EXPECT_EQ(split("a   b"), (Pieces{"a", "  ", " b"}));
  // A newline is not the optional literal space: \s+ takes it alone.
  EXPECT_EQ(split("a\nb"), (Pieces{"a", "\n", "b"}));
  EXPECT_EQ(split("a\n\n  b"), (Pieces{"a", "\n\n ", " b"}));
  // Trailing whitespace is one piece (\s+(?!\S) matches up to the end).
  EXPECT_EQ(split("end  \n"), (Pieces{"end", "  \n"}));
  EXPECT_EQ(split(" "), (Pieces{" "}));
  EXPECT_EQ(split("a \tb"), (Pieces{"a", " ", "\t", "b"}));
}

TEST(Gpt2Pretokenize, UnicodeLettersNumbersAndMarks) {
  EXPECT_EQ(split("héllo wörld"), (Pieces{"héllo", " wörld"}));
  EXPECT_EQ(split("日本語 テキスト"), (Pieces{"日本語", " テキスト"}));
  EXPECT_EQ(split("Привет, мир"), (Pieces{"Привет", ",", " мир"}));
  EXPECT_EQ(split("x²"), (Pieces{"x", "²"}));  // superscript two is \p{N} (No)
  EXPECT_EQ(split("a 🙂🙂 b"), (Pieces{"a", " 🙂🙂", " b"}));
  // A combining acute (U+0301) is \p{M}, not a letter: it ends the letter run.
  EXPECT_EQ(split("e\u0301t"), (Pieces{"e", "\u0301", "t"}));
}

TEST(Gpt2Pretokenize, PiecesConcatenateToTheInputEvenForInvalidUtf8) {
  const std::string text = std::string("ok \xff\xfe bad \xe6\x97 end");
  std::string joined;
  for (const auto& p : split(text)) joined += p;
  EXPECT_EQ(joined, text);
}

TEST(CodePointClass, SamplesFromEachScriptAndClass) {
  EXPECT_EQ(classify_code_point('a'), CharClass::kLetter);
  EXPECT_EQ(classify_code_point(0xE9), CharClass::kLetter);    // é
  EXPECT_EQ(classify_code_point(0x3B1), CharClass::kLetter);   // α
  EXPECT_EQ(classify_code_point(0x5D0), CharClass::kLetter);   // א
  EXPECT_EQ(classify_code_point(0x4E2D), CharClass::kLetter);  // 中
  EXPECT_EQ(classify_code_point(0xAC00), CharClass::kLetter);  // 가
  EXPECT_EQ(classify_code_point('7'), CharClass::kNumber);
  EXPECT_EQ(classify_code_point(0x663), CharClass::kNumber);   // Arabic-Indic three
  EXPECT_EQ(classify_code_point(0xBD), CharClass::kNumber);    // ½
  EXPECT_EQ(classify_code_point(0x2163), CharClass::kNumber);  // Roman numeral four
  EXPECT_EQ(classify_code_point(0xA0), CharClass::kSpace);     // no-break space
  EXPECT_EQ(classify_code_point(0x3000), CharClass::kSpace);   // ideographic space
  EXPECT_EQ(classify_code_point(0x2014), CharClass::kOther);   // em dash
  EXPECT_EQ(classify_code_point(0x1F642), CharClass::kOther);  // emoji
  EXPECT_EQ(classify_code_point(0x301), CharClass::kOther);    // combining acute
}

TEST(Utf8, DecodeRejectsOverlongsSurrogatesAndTruncation) {
  size_t len = 0;
  EXPECT_EQ(decode_utf8("\xc3\xa9", 0, len), 0xE9u);
  EXPECT_EQ(len, 2u);
  EXPECT_EQ(decode_utf8("\xf0\x9f\x99\x82", 0, len), 0x1F642u);
  EXPECT_EQ(len, 4u);
  EXPECT_EQ(decode_utf8("\xc0\xaf", 0, len), 0xFFFFFFFFu);      // overlong '/'
  EXPECT_EQ(decode_utf8("\xed\xa0\x80", 0, len), 0xFFFFFFFFu);  // surrogate D800
  EXPECT_EQ(decode_utf8("\xe6\x97", 0, len), 0xFFFFFFFFu);      // truncated
  EXPECT_EQ(len, 1u);
  std::string s;
  append_utf8(0x1F642, s);
  EXPECT_EQ(s, "\xf0\x9f\x99\x82");
}

}  // namespace
}  // namespace loom::data
