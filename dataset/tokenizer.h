// Tokenizers for `loom data prepare`: `byte` (UTF-8 bytes, no training needed) and `gpt2`
// (byte-level BPE from a GPT-2 vocab.json + merges.txt, gpt2_tokenizer.h). Both append nothing by
// themselves: prepare adds the end-of-document token after every document, as Megatron's
// preprocess_data.py --append-eod does. Tested in tests/dataset/tokenizer_test.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace loom::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual int64_t vocab_size() const = 0;  // max id + 1
  virtual int32_t eod_token() const = 0;
  // Appends the ids of `text` to `out` (non-const: BPE keeps a cache of encoded words).
  virtual void encode(std::string_view text, std::vector<int32_t>& out) = 0;
  // The text of `ids`; an id outside the vocabulary is an error naming it.
  virtual core::Result<std::string> decode(std::span<const int32_t> ids) const = 0;
};

// Ids 0-255 are the UTF-8 bytes of the text, 256 is the end of document; vocabulary 257.
// The end-of-document token decodes to nothing.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kEod = 256;
  std::string name() const override { return "byte"; }
  int64_t vocab_size() const override { return 257; }
  int32_t eod_token() const override { return kEod; }
  void encode(std::string_view text, std::vector<int32_t>& out) override;
  core::Result<std::string> decode(std::span<const int32_t> ids) const override;
};

struct TokenizerOptions {
  std::string kind = "byte";  // byte | gpt2
  std::string vocab_path{};   // gpt2: vocab.json
  std::string merges_path{};  // gpt2: merges.txt
};

core::Result<std::unique_ptr<Tokenizer>> make_tokenizer(const TokenizerOptions& options);

}  // namespace loom::data
