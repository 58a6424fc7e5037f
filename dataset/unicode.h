// UTF-8 decoding, code-point classes and GPT-2's pre-tokenizer, written by hand (no std::regex,
// no ICU). GPT-2 splits text with the pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// before byte-level BPE (Radford et al. 2019, openai/gpt-2 src/encoder.py). Tested in
// tests/dataset/unicode_test.cc against splits worked out by hand from the regex semantics.
//
// Unicode approximation (documented, deliberate): \p{L} and \p{N} are decided by a table of
// ranges covering Latin, Greek, Cyrillic, Armenian, Hebrew, Arabic, Indic, Thai, Georgian,
// Hangul, Kana and CJK ideographs, plus the common number forms (digits of those scripts,
// superscripts, fractions, Roman numerals, circled numbers). Combining marks (\p{M}) are not
// letters, as in the regex. Code points outside the table count as "other" (neither letter,
// number nor space); \s is the Unicode White_Space set. Invalid UTF-8 bytes count as "other".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loom::data {

enum class CharClass { kLetter, kNumber, kSpace, kOther };

CharClass classify_code_point(uint32_t cp);

// Decodes the code point starting at text[pos]; sets `length` to its byte length (1 for an
// invalid byte, returned as 0xFFFFFFFF which classifies as kOther).
uint32_t decode_utf8(std::string_view text, size_t pos, size_t& length);
void append_utf8(uint32_t cp, std::string& out);

// GPT-2's pre-tokenization: the pieces, as views into `text`, whose concatenation is `text`.
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

}  // namespace loom::data
