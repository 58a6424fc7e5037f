// GPT-2's byte-level BPE (Radford et al. 2019; openai/gpt-2 src/encoder.py): text is split by the
// GPT-2 pre-tokenizer (unicode.h), each piece's bytes are mapped to printable code points by
// bytes_to_unicode(), then merged pairwise by merge rank (lowest rank first) until no ranked pair
// remains; the resulting symbols are looked up in vocab.json. Loaded from the HF/OpenAI files.
// Tested in tests/dataset/gpt2_tokenizer_test.cc with a small fixture derived by hand.
// The text "<|endoftext|>" inside a document is encoded as ordinary text (like openai/gpt-2's
// encoder.py); only `loom data prepare` inserts the end-of-document id, between documents.
#pragma once

#include <array>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataset/tokenizer.h"

namespace loom::data {

class Gpt2Tokenizer final : public Tokenizer {
 public:
  static constexpr const char* kEodText = "<|endoftext|>";

  // vocab.json maps symbol strings to ids and must hold every byte symbol and "<|endoftext|>";
  // merges.txt has one "left right" pair per line in rank order (an optional "#version" line first).
  static core::Result<std::unique_ptr<Gpt2Tokenizer>> load(const std::string& vocab_path,
                                                           const std::string& merges_path);

  std::string name() const override { return "gpt2"; }
  int64_t vocab_size() const override { return vocab_size_; }
  int32_t eod_token() const override { return eod_; }
  void encode(std::string_view text, std::vector<int32_t>& out) override;
  core::Result<std::string> decode(std::span<const int32_t> ids) const override;

  // GPT-2's bytes_to_unicode(): byte b -> the UTF-8 of a printable code point (e.g. ' ' -> "Ġ").
  static const std::array<std::string, 256>& byte_symbols();

 private:
  Gpt2Tokenizer() = default;
  core::Status load_vocab(const std::string& path);
  core::Status load_merges(const std::string& path);
  void bpe(const std::string& piece, std::vector<int32_t>& out);

  std::unordered_map<std::string, int32_t> encoder_;
  std::vector<std::string> decoder_;  // id -> symbol string ("" for unused ids)
  std::unordered_map<std::string, int32_t> merge_ranks_;  // "left right" -> rank
  std::unordered_map<std::string, std::vector<int32_t>> cache_;  // piece -> ids
  int64_t vocab_size_ = 0;
  int32_t eod_ = -1;
};

}  // namespace loom::data
