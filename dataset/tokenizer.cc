// The byte tokenizer and the tokenizer factory (see tokenizer.h). Tested in
// tests/dataset/tokenizer_test.cc (round trips on UTF-8 text, errors on unknown kinds and ids).
#include "dataset/tokenizer.h"

#include "dataset/gpt2_tokenizer.h"

namespace loom::data {

void ByteTokenizer::encode(std::string_view text, std::vector<int32_t>& out) {
  out.reserve(out.size() + text.size());
  for (char c : text) out.push_back(static_cast<uint8_t>(c));
}

core::Result<std::string> ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == kEod) continue;
    if (ids[i] < 0 || ids[i] > 255) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "byte tokenizer: id {} at position {} is not a byte (0..255) or the "
                         "end-of-document token {}", ids[i], i, kEod);
    }
    text += static_cast<char>(ids[i]);
  }
  return text;
}

core::Result<std::unique_ptr<Tokenizer>> make_tokenizer(const TokenizerOptions& o) {
  if (o.kind == "byte") return std::unique_ptr<Tokenizer>(std::make_unique<ByteTokenizer>());
  if (o.kind == "gpt2") {
    if (o.vocab_path.empty() || o.merges_path.empty()) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--tokenizer gpt2 needs --vocab (vocab.json) and --merges (merges.txt), "
                         "e.g. from huggingface.co/openai-community/gpt2");
    }
    LOOM_ASSIGN_OR_RETURN(auto tok, Gpt2Tokenizer::load(o.vocab_path, o.merges_path));
    return std::unique_ptr<Tokenizer>(std::move(tok));
  }
  return core::error(core::ErrorCode::kInvalidArgument,
                     "--tokenizer '{}' is not known (allowed: byte, gpt2)", o.kind);
}

}  // namespace loom::data
