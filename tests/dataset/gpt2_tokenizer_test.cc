// GPT-2 byte-level BPE on the fixture in tests/data/tokenizer (see its README): encodings derived
// by hand from the merge ranks, round trips of UTF-8 text, and errors on bad vocab/merges files.
#include "dataset/gpt2_tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace loom::data {
namespace {

const std::string kDir = std::string(LOOM_TEST_DATA_DIR) + "/tokenizer";

std::unique_ptr<Gpt2Tokenizer> load_fixture() {
  auto tok = Gpt2Tokenizer::load(kDir + "/vocab.json", kDir + "/merges.txt");
  EXPECT_TRUE(tok.ok()) << tok.status().message();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

std::vector<int32_t> encode(Gpt2Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids;
  tok.encode(text, ids);
  return ids;
}

using Ids = std::vector<int32_t>;

TEST(Gpt2Tokenizer, ByteSymbolsFollowBytesToUnicode) {
  const auto& s = Gpt2Tokenizer::byte_symbols();
  EXPECT_EQ(s['a'], "a");
  EXPECT_EQ(s[' '], "Ġ");   // U+0120: 256 + 32, the 33rd non-printable byte
  EXPECT_EQ(s['\n'], "Ċ");  // U+010A
  EXPECT_EQ(s[0xAD], "Ń");  // soft hyphen, the last non-printable byte: U+0143
}

TEST(Gpt2Tokenizer, FixtureVocabularyAndEod) {
  auto tok = load_fixture();
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->vocab_size(), 267);
  EXPECT_EQ(tok->eod_token(), 266);
}

TEST(Gpt2Tokenizer, EncodingsDerivedByHandFromTheMergeRanks) {
  auto tok = load_fixture();
  ASSERT_TRUE(tok);
  // "the": pairs (t,h) unranked, (h,e) rank 1 -> [t, he]; (t,he) unranked. t = 't' - '!' = 83.
  // " lower": lo (3) -> low (4) -> er (5) -> Ġlow (6) -> Ġlower (7) = 263.
  EXPECT_EQ(encode(*tok, "the lower"), (Ids{83, 257, 263}));
  // " the": Ġt (0) -> he (1) -> Ġthe (2) = 258.
  EXPECT_EQ(encode(*tok, " the"), (Ids{258}));
  // "lowering": lo, low, er, in (8), ing (9); "low er" is not a merge -> [low, er, ing].
  EXPECT_EQ(encode(*tok, "lowering"), (Ids{260, 261, 265}));
  // "Hello": only (l,o) ranks -> [H, e, l, lo]; "!!" is its own piece -> [!, !].
  EXPECT_EQ(encode(*tok, "Hello!!"), (Ids{39, 68, 75, 259, 0, 0}));
  // Contraction piece "'t" has no merge: ' = 6, t = 83.
  EXPECT_EQ(encode(*tok, "don't"), (Ids{67, 78, 77, 6, 83}));
  // "a  b" -> "a", " ", " b": Ġ = 220 (GPT-2's own id for the space symbol).
  EXPECT_EQ(encode(*tok, "a  b"), (Ids{64, 220, 220, 65}));
  EXPECT_EQ(encode(*tok, "\n"), (Ids{198}));
  // é is the bytes C3 A9, both printable Latin-1 (their own symbol); ids count the printable
  // bytes in order (94 ASCII, 12 in A1..AC, then AE..FF): C3 -> 94 + 12 + (0xC3 - 0xAE) = 127,
  // A9 -> 94 + (0xA9 - 0xA1) = 102.
  EXPECT_EQ(encode(*tok, "é"), (Ids{127, 102}));
}

TEST(Gpt2Tokenizer, CachedEncodingsAreIdentical) {
  auto tok = load_fixture();
  ASSERT_TRUE(tok);
  const Ids first = encode(*tok, "the lower the lower");
  EXPECT_EQ(encode(*tok, "the lower the lower"), first);
  EXPECT_EQ(first, (Ids{83, 257, 263, 258, 263}));
}

TEST(Gpt2Tokenizer, RoundTripsUtf8Text) {
  auto tok = load_fixture();
  ASSERT_TRUE(tok);
  for (const std::string& text : std::vector<std::string>{
           "the lowering tower", "héllo wörld — 日本語 テキスト 🙂", "  spaces\n\n\ttabs  ", "x = 3.14!",
        std::string("bytes \xff\xfe invalid")}) {
    const Ids ids = encode(*tok, text);
    auto back = tok->decode(ids);
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(*back, text);
  }
  auto eod = tok->decode(Ids{266});
  ASSERT_TRUE(eod.ok());
  EXPECT_EQ(*eod, "<|endoftext|>");
}

TEST(Gpt2Tokenizer, DecodeRejectsUnknownIds) {
  auto tok = load_fixture();
  ASSERT_TRUE(tok);
  auto r = tok->decode(Ids{5, 9999});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("9999"), std::string::npos) << r.status().message();
}

std::string write_temp(const std::string& name, const std::string& text) {
  const auto dir = std::filesystem::temp_directory_path() / ("loom_ds_bpe_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / name).string();
  std::ofstream(path) << text;
  return path;
}

TEST(Gpt2Tokenizer, BadFilesAreNamed) {
  auto r = Gpt2Tokenizer::load(kDir + "/nope.json", kDir + "/merges.txt");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nope.json"), std::string::npos);
  // A vocabulary without the byte symbols cannot encode arbitrary text.
  r = Gpt2Tokenizer::load(write_temp("small.json", R"({"a": 0, "<|endoftext|>": 1})"),
                          kDir + "/merges.txt");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("256 byte symbols"), std::string::npos) << r.status().message();
  // A merge whose result is not in the vocabulary.
  r = Gpt2Tokenizer::load(kDir + "/vocab.json", write_temp("bad_merges.txt", "#version: 0.2\nx y\n"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("line 2"), std::string::npos) << r.status().message();
  r = Gpt2Tokenizer::load(kDir + "/vocab.json", write_temp("bad_pair.txt", "abc\n"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("line 1"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace loom::data
