// The byte tokenizer (ids are the UTF-8 bytes, EOD 256) and the tokenizer factory's errors.
#include "dataset/tokenizer.h"

#include <gtest/gtest.h>

namespace loom::data {
namespace {

TEST(ByteTokenizer, IdsAreTheUtf8Bytes) {
  ByteTokenizer tok;
  std::vector<int32_t> ids;
  tok.encode("Aé", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{65, 0xC3, 0xA9}));
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.eod_token(), 256);
}

TEST(ByteTokenizer, RoundTripsUtf8TextAndDropsTheEod) {
  ByteTokenizer tok;
  const std::string text = "héllo wörld — 日本語 🙂\n\ttabs";
  std::vector<int32_t> ids;
  tok.encode(text, ids);
  ids.push_back(tok.eod_token());
  auto back = tok.decode(ids);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, text);
}

TEST(ByteTokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  ByteTokenizer tok;
  auto r = tok.decode(std::vector<int32_t>{65, 300});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("300"), std::string::npos) << r.status().message();
}

TEST(MakeTokenizer, NamesTheAllowedKinds) {
  auto r = make_tokenizer({.kind = "sentencepiece"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("byte, gpt2"), std::string::npos) << r.status().message();
  auto g = make_tokenizer({.kind = "gpt2"});
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("--vocab"), std::string::npos) << g.status().message();
}

}  // namespace
}  // namespace loom::data
