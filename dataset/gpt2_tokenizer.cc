// GPT-2 byte-level BPE: vocabulary and merge loading with validation, encoding with a per-piece
// cache, decoding through the inverse byte map (see gpt2_tokenizer.h). Tested in
// tests/dataset/gpt2_tokenizer_test.cc against encodings of a small fixture derived by hand.
#include "dataset/gpt2_tokenizer.h"

#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "dataset/unicode.h"

namespace loom::data {

using core::ErrorCode;

namespace {

// bytes_to_unicode() of openai/gpt-2 src/encoder.py: printable Latin-1 bytes map to themselves,
// the other 68 bytes to U+0100 + n in byte order, so every byte has a visible, non-space symbol.
std::array<uint32_t, 256> byte_code_points() {
  std::array<uint32_t, 256> cps{};
  uint32_t n = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    cps[b] = printable ? b : 256 + n++;
  }
  return cps;
}

// Inverse of byte_code_points(): code point (< 324) -> byte, -1 when no byte maps there.
const std::array<int, 324>& code_point_bytes() {
  static const std::array<int, 324> inv = [] {
    std::array<int, 324> a{};
    a.fill(-1);
    const auto cps = byte_code_points();
    for (int b = 0; b < 256; ++b) a[cps[static_cast<size_t>(b)]] = b;
    return a;
  }();
  return inv;
}

// Drop the BPE cache past this many pieces: bounds memory on huge corpora (a GPT-2 cache of
// ~1M distinct words is a few hundred MB); frequent words come back after a clear.
constexpr size_t kMaxCacheEntries = 500000;

}  // namespace

const std::array<std::string, 256>& Gpt2Tokenizer::byte_symbols() {
  static const std::array<std::string, 256> symbols = [] {
    std::array<std::string, 256> s;
    const auto cps = byte_code_points();
    for (size_t b = 0; b < 256; ++b) append_utf8(cps[b], s[b]);
    return s;
  }();
  return symbols;
}

core::Status Gpt2Tokenizer::load_vocab(const std::string& path) {
  std::ifstream in(path);
  if (!in) return core::error(ErrorCode::kNotFound, "--vocab {} cannot be opened", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return core::error(ErrorCode::kParse, "--vocab {}: not valid JSON: {}", path, e.what());
  }
  if (!j.is_object()) return core::error(ErrorCode::kParse, "--vocab {}: expected an object "
                                         "mapping token strings to ids", path);
  for (const auto& [symbol, id] : j.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return core::error(ErrorCode::kParse, "--vocab {}: token '{}' has id {}; ids must be "
                         "integers in 0..2^31-1", path, symbol, id.dump());
    }
    const auto v = id.get<int32_t>();
    encoder_[symbol] = v;
    if (static_cast<size_t>(v) >= decoder_.size()) decoder_.resize(static_cast<size_t>(v) + 1);
    if (!decoder_[static_cast<size_t>(v)].empty()) {
      return core::error(ErrorCode::kParse, "--vocab {}: id {} is used by both '{}' and '{}'", path,
                         v, decoder_[static_cast<size_t>(v)], symbol);
    }
    decoder_[static_cast<size_t>(v)] = symbol;
  }
  vocab_size_ = static_cast<int64_t>(decoder_.size());
  for (size_t b = 0; b < 256; ++b) {
    if (!encoder_.count(byte_symbols()[b])) {
      return core::error(ErrorCode::kParse, "--vocab {}: no token for byte {} (symbol '{}'); a "
                         "byte-level BPE vocabulary must hold all 256 byte symbols", path, b,
                         byte_symbols()[b]);
    }
  }
  const auto eod = encoder_.find(kEodText);
  if (eod == encoder_.end()) {
    return core::error(ErrorCode::kParse, "--vocab {}: no end-of-document token \"{}\"", path, kEodText);
  }
  eod_ = eod->second;
  return core::ok_status();
}

core::Status Gpt2Tokenizer::load_merges(const std::string& path) {
  std::ifstream in(path);
  if (!in) return core::error(ErrorCode::kNotFound, "--merges {} cannot be opened", path);
  std::string line;
  int64_t line_no = 0;
  int32_t rank = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      return core::error(ErrorCode::kParse, "--merges {} line {}: '{}' is not a pair \"left right\"",
                         path, line_no, line);
    }
    const std::string merged = line.substr(0, space) + line.substr(space + 1);
    if (!encoder_.count(merged)) {
      return core::error(ErrorCode::kParse, "--merges {} line {}: the merge '{}' makes '{}', which "
                         "is not in the vocabulary", path, line_no, line, merged);
    }
    merge_ranks_.emplace(line, rank++);  // a repeated pair keeps its first (lowest) rank
  }
  return core::ok_status();
}

core::Result<std::unique_ptr<Gpt2Tokenizer>> Gpt2Tokenizer::load(const std::string& vocab_path,
                                                                 const std::string& merges_path) {
  std::unique_ptr<Gpt2Tokenizer> tok(new Gpt2Tokenizer());
  LOOM_RETURN_IF_ERROR(tok->load_vocab(vocab_path));
  LOOM_RETURN_IF_ERROR(tok->load_merges(merges_path));
  return tok;
}

// encoder.py's bpe(): repeatedly merge every occurrence of the lowest-ranked adjacent pair.
void Gpt2Tokenizer::bpe(const std::string& piece, std::vector<int32_t>& out) {
  if (auto it = cache_.find(piece); it != cache_.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<std::string> word;
  for (char c : piece) word.push_back(byte_symbols()[static_cast<uint8_t>(c)]);
  while (word.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    std::string best;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const std::string key = word[i] + " " + word[i + 1];
      auto r = merge_ranks_.find(key);
      if (r != merge_ranks_.end() && r->second < best_rank) best_rank = r->second, best = key;
    }
    if (best.empty()) break;
    const size_t space = best.find(' ');
    const std::string left = best.substr(0, space), right = best.substr(space + 1);
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size(); ++i) {
      if (i + 1 < word.size() && word[i] == left && word[i + 1] == right) {
        merged.push_back(left + right);
        ++i;
      } else {
        merged.push_back(word[i]);
      }
    }
    word = std::move(merged);
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  for (const auto& symbol : word) ids.push_back(encoder_.at(symbol));  // present: checked at load
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  out.insert(out.end(), ids.begin(), ids.end());
  cache_.emplace(piece, std::move(ids));
}

void Gpt2Tokenizer::encode(std::string_view text, std::vector<int32_t>& out) {
  for (std::string_view piece : gpt2_pretokenize(text)) bpe(std::string(piece), out);
}

core::Result<std::string> Gpt2Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  const auto& inv = code_point_bytes();
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size_ || decoder_[static_cast<size_t>(id)].empty()) {
      return core::error(ErrorCode::kInvalidArgument, "gpt2 tokenizer: id {} at position {} is not "
                         "in the vocabulary (0..{})", id, i, vocab_size_ - 1);
    }
    const std::string& symbol = decoder_[static_cast<size_t>(id)];
    for (size_t pos = 0; pos < symbol.size();) {
      size_t len = 0;
      const uint32_t cp = decode_utf8(symbol, pos, len);
      if (cp >= inv.size() || inv[cp] < 0) {
        return core::error(ErrorCode::kInvalidArgument, "gpt2 tokenizer: token {} ('{}') holds a "
                           "character outside GPT-2's byte alphabet", id, symbol);
      }
      text += static_cast<char>(inv[cp]);
      pos += len;
    }
  }
  return text;
}

}  // namespace loom::data
