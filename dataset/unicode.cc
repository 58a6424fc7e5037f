// Code-point classes (a range-table approximation of \p{L}, \p{N}, \s; see unicode.h) and
// GPT-2's pre-tokenizer as a hand-written scanner that follows the regex's leftmost-first
// alternation. Tested in tests/dataset/unicode_test.cc.
#include "dataset/unicode.h"

#include <algorithm>
#include <array>

namespace loom::data {

namespace {

struct Range {
  uint32_t lo, hi;
};

// Letters (\p{L}): Lu, Ll, Lt, Lm, Lo over the scripts named in unicode.h; ranges from the
// Unicode 15 code charts, simplified to whole alphabetic blocks minus their marks and symbols.
constexpr std::array kLetters = {
    Range{0x41, 0x5A},       Range{0x61, 0x7A},       Range{0xAA, 0xAA},
    Range{0xB5, 0xB5},       Range{0xBA, 0xBA},       Range{0xC0, 0xD6},
    Range{0xD8, 0xF6},       Range{0xF8, 0x2C1},      Range{0x2C6, 0x2D1},
    Range{0x2E0, 0x2E4},     Range{0x370, 0x374},     Range{0x376, 0x37D},
    Range{0x37F, 0x37F},     Range{0x386, 0x386},     Range{0x388, 0x3F5},
    Range{0x3F7, 0x481},     Range{0x48A, 0x52F},     Range{0x531, 0x556},
    Range{0x559, 0x559},     Range{0x560, 0x588},     Range{0x5D0, 0x5EA},
    Range{0x5EF, 0x5F2},     Range{0x620, 0x64A},     Range{0x66E, 0x66F},
    Range{0x671, 0x6D3},     Range{0x6D5, 0x6D5},     Range{0x6FA, 0x6FC},
    Range{0x904, 0x939},     Range{0x93D, 0x93D},     Range{0x950, 0x950},
    Range{0x958, 0x961},     Range{0x971, 0x980},     Range{0x985, 0x9B9},
    Range{0xA05, 0xA39},     Range{0xA85, 0xAB9},     Range{0xB05, 0xB39},
    Range{0xB85, 0xBB9},     Range{0xC05, 0xC39},     Range{0xC85, 0xCB9},
    Range{0xD05, 0xD3A},     Range{0xE01, 0xE30},     Range{0xE32, 0xE33},
    Range{0xE40, 0xE46},     Range{0xE81, 0xEB0},     Range{0x10A0, 0x10FF},
    Range{0x1100, 0x11FF},   Range{0x1E00, 0x1FBC},   Range{0x1FC2, 0x1FFC},
    Range{0x2071, 0x2071},   Range{0x207F, 0x207F},   Range{0x2090, 0x209C},
    Range{0x2102, 0x2102},   Range{0x2107, 0x2107},   Range{0x210A, 0x2113},
    Range{0x2115, 0x2115},   Range{0x2119, 0x211D},   Range{0x2124, 0x2124},
    Range{0x2C00, 0x2CE4},   Range{0x3005, 0x3006},   Range{0x3031, 0x3035},
    Range{0x3041, 0x3096},   Range{0x309D, 0x309F},   Range{0x30A1, 0x30FA},
    Range{0x30FC, 0x30FF},   Range{0x3105, 0x312F},   Range{0x3131, 0x318E},
    Range{0x3400, 0x4DBF},   Range{0x4E00, 0x9FFF},   Range{0xA000, 0xA48C},
    Range{0xAC00, 0xD7A3},   Range{0xF900, 0xFAFF},   Range{0xFF21, 0xFF3A},
    Range{0xFF41, 0xFF5A},   Range{0xFF66, 0xFFDC},   Range{0x10400, 0x1044F},
    Range{0x20000, 0x2FFFF}, Range{0x30000, 0x3134F},
};

// Numbers (\p{N} = Nd, Nl, No): ASCII and script digits, superscripts, fractions, number forms.
constexpr std::array kNumbers = {
    Range{0x30, 0x39},     Range{0xB2, 0xB3},     Range{0xB9, 0xB9},     Range{0xBC, 0xBE},
    Range{0x660, 0x669},   Range{0x6F0, 0x6F9},   Range{0x966, 0x96F},   Range{0x9E6, 0x9EF},
    Range{0xA66, 0xA6F},   Range{0xAE6, 0xAEF},   Range{0xB66, 0xB6F},   Range{0xBE6, 0xBF2},
    Range{0xC66, 0xC6F},   Range{0xCE6, 0xCEF},   Range{0xD66, 0xD78},   Range{0xE50, 0xE59},
    Range{0xED0, 0xED9},   Range{0x2070, 0x2070}, Range{0x2074, 0x2079}, Range{0x2080, 0x2089},
    Range{0x2150, 0x2182}, Range{0x2185, 0x2189}, Range{0x2460, 0x249B}, Range{0x24EA, 0x24FF},
    Range{0x2776, 0x2793}, Range{0x3007, 0x3007}, Range{0x3021, 0x3029}, Range{0x3038, 0x303A},
    Range{0xFF10, 0xFF19},
};

// White_Space (Unicode PropList.txt), what the `regex` module's \s matches for str patterns,
// plus the ASCII information separators U+001C..U+001F that Python's str.isspace() accepts.
constexpr std::array kSpaces = {
    Range{0x09, 0x0D},     Range{0x1C, 0x20},     Range{0x85, 0x85},     Range{0xA0, 0xA0},
    Range{0x1680, 0x1680}, Range{0x2000, 0x200A}, Range{0x2028, 0x2029}, Range{0x202F, 0x202F},
    Range{0x205F, 0x205F}, Range{0x3000, 0x3000},
};

template <size_t N>
bool in_ranges(const std::array<Range, N>& table, uint32_t cp) {
  // Tables are sorted by lo: binary search for the last range starting at or before cp.
  auto it = std::upper_bound(table.begin(), table.end(), cp,
                             [](uint32_t v, const Range& r) { return v < r.lo; });
  return it != table.begin() && cp <= std::prev(it)->hi;
}

}  // namespace

CharClass classify_code_point(uint32_t cp) {
  if (cp < 0x80) {  // fast path for ASCII
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::kLetter;
    if (cp >= '0' && cp <= '9') return CharClass::kNumber;
    if ((cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20)) return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (in_ranges(kLetters, cp)) return CharClass::kLetter;
  if (in_ranges(kNumbers, cp)) return CharClass::kNumber;
  if (in_ranges(kSpaces, cp)) return CharClass::kSpace;
  return CharClass::kOther;
}

uint32_t decode_utf8(std::string_view s, size_t pos, size_t& length) {
  const auto b0 = static_cast<uint8_t>(s[pos]);
  length = 1;
  if (b0 < 0x80) return b0;
  int extra = 0;
  uint32_t cp = 0, min_cp = 0;
  if ((b0 & 0xE0) == 0xC0) extra = 1, cp = b0 & 0x1F, min_cp = 0x80;
  else if ((b0 & 0xF0) == 0xE0) extra = 2, cp = b0 & 0x0F, min_cp = 0x800;
  else if ((b0 & 0xF8) == 0xF0) extra = 3, cp = b0 & 0x07, min_cp = 0x10000;
  else return 0xFFFFFFFF;
  if (pos + extra >= s.size()) return 0xFFFFFFFF;  // truncated sequence at the end
  for (int i = 1; i <= extra; ++i) {
    const auto b = static_cast<uint8_t>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return 0xFFFFFFFF;
    cp = (cp << 6) | (b & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid UTF-8.
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0xFFFFFFFF;
  length = static_cast<size_t>(extra) + 1;
  return cp;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace {

struct Cp {
  uint32_t cp;
  CharClass cls;
  size_t byte;  // offset of the code point in the text
};

// Length (in code points) of the contraction 's 't 're 've 'm 'll 'd at i, or 0.
size_t contraction_at(const std::vector<Cp>& c, size_t i) {
  if (c[i].cp != '\'' || i + 1 >= c.size()) return 0;
  const uint32_t a = c[i + 1].cp;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  const uint32_t b = i + 2 < c.size() ? c[i + 2].cp : 0;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// Length of the match at i of the alternatives after the contractions.
size_t match_at(const std::vector<Cp>& c, size_t i) {
  if (size_t n = contraction_at(c, i)) return n;
  const size_t n = c.size();
  // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional literal space, then a run of one class.
  const size_t start = (c[i].cp == ' ' && i + 1 < n && c[i + 1].cls != CharClass::kSpace) ? i + 1 : i;
  const CharClass cls = c[start].cls;
  if (cls != CharClass::kSpace) {
    size_t j = start + 1;
    while (j < n && c[j].cls == cls) ++j;
    return j - i;
  }
  // `\s+(?!\S)`: the whitespace run, backing off one so that the last space joins the next word;
  // `\s+` when that leaves nothing (a single space before a non-space).
  size_t j = i + 1;
  while (j < n && c[j].cls == CharClass::kSpace) ++j;
  if (j == n || j - i == 1) return j - i;
  return j - 1 - i;
}

}  // namespace

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<Cp> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    size_t len = 0;
    const uint32_t cp = decode_utf8(text, pos, len);
    cps.push_back({cp, cp == 0xFFFFFFFF ? CharClass::kOther : classify_code_point(cp), pos});
    pos += len;
  }
  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < cps.size();) {
    const size_t j = i + match_at(cps, i);
    const size_t end = j < cps.size() ? cps[j].byte : text.size();
    pieces.push_back(text.substr(cps[i].byte, end - cps[i].byte));
    i = j;
  }
  return pieces;
}

}  // namespace loom::data
