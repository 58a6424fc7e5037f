// TokenWindowLoader on a dataset whose every token names its document (doc * 100 + position, EOD
// 9999): windows overlap by one token, each epoch is a permutation of the train documents, epochs
// reshuffle, resume is bit-exact, validation is fixed and disjoint from training, errors name the
// problem.
#include "dataset/loader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>

#include "dataset/metadata.h"

namespace loom::data {
namespace {

constexpr int32_t kEod = 9999;
constexpr int kDocs = 40;

// Document i: tokens i * 100 + j for j < 2 + i % 7, then the EOD.
std::string make_dataset(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("loom_ds_loader_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string prefix = (dir / name).string();
  std::vector<std::vector<int32_t>> docs;
  for (int i = 0; i < kDocs; ++i) {
    std::vector<int32_t> d;
    for (int j = 0; j < 2 + i % 7; ++j) d.push_back(i * 100 + j);
    d.push_back(kEod);
    docs.push_back(d);
  }
  EXPECT_TRUE(write_indexed_dataset(prefix, DType::kUint16, docs).ok());
  return prefix;
}

int64_t doc_length(int i) { return 2 + i % 7 + 1; }

TokenWindowLoader open_ok(const LoaderOptions& o) {
  auto l = TokenWindowLoader::open(o);
  EXPECT_TRUE(l.ok()) << l.status().message();
  return std::move(l).value();
}

// The token stream reassembled from consecutive windows (each adds its last seq tokens).
std::vector<int32_t> stream_of(TokenWindowLoader& l, int64_t batches, int64_t batch) {
  const int64_t w = l.seq_len() + 1;
  std::vector<int32_t> stream;
  for (int64_t k = 0; k < batches; ++k) {
    const auto t = l.next_batch(batch);
    EXPECT_EQ(static_cast<int64_t>(t.size()), batch * w);
    for (int64_t b = 0; b < batch; ++b) {
      const auto* row = t.data() + b * w;
      if (!stream.empty()) {
        EXPECT_EQ(row[0], stream.back()) << "windows overlap by one token";
      }
      stream.insert(stream.end(), row + (stream.empty() ? 0 : 1), row + w);
    }
  }
  return stream;
}

// Splits a stream into document ids, checking each document appears whole and in order.
std::vector<int> documents_in(const std::vector<int32_t>& stream, size_t tokens) {
  std::vector<int> order;
  for (size_t i = 0; i < tokens;) {
    const int doc = stream[i] / 100;
    for (int j = 0; j < doc_length(doc) - 1; ++j) EXPECT_EQ(stream[i + j], doc * 100 + j);
    EXPECT_EQ(stream[i + doc_length(doc) - 1], kEod);
    order.push_back(doc);
    i += static_cast<size_t>(doc_length(doc));
  }
  return order;
}

TEST(TokenWindowLoader, EachEpochIsAPermutationOfTheDocumentsAndEpochsReshuffle) {
  auto l = open_ok({.prefix = make_dataset("perm"), .seq_len = 8, .seed = 1, .train_fraction = 1.0});
  const int64_t total = l.train_tokens();
  int64_t expected = 0;
  for (int i = 0; i < kDocs; ++i) expected += doc_length(i);
  ASSERT_EQ(total, expected);
  const auto stream = stream_of(l, (2 * total) / (3 * 8) + 2, 3);
  ASSERT_GE(static_cast<int64_t>(stream.size()), 2 * total);
  const auto epoch0 = documents_in(stream, static_cast<size_t>(total));
  const auto epoch1 = documents_in(std::vector<int32_t>(stream.begin() + total, stream.end()),
                                   static_cast<size_t>(total));
  std::vector<int> all(kDocs);
  std::iota(all.begin(), all.end(), 0);
  for (const auto& e : {epoch0, epoch1}) {
    std::vector<int> sorted = e;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, all);
  }
  EXPECT_NE(epoch0, epoch1);
  EXPECT_NE(epoch0, all);
  EXPECT_EQ(l.epoch(), 2 * total <= l.position() ? 2 : 1);
}

TEST(TokenWindowLoader, ResumeIsBitExact) {
  const std::string prefix = make_dataset("resume");
  const LoaderOptions o{.prefix = prefix, .seq_len = 8, .seed = 7, .train_fraction = 0.9};
  auto a = open_ok(o);
  for (int i = 0; i < 7; ++i) a.next_batch(3);
  // Through text, as a checkpoint would store it.
  const auto saved = nlohmann::json::parse(a.state().dump());
  std::vector<int32_t> first;
  for (int i = 0; i < 5; ++i) {
    const auto t = a.next_batch(3);
    first.insert(first.end(), t.begin(), t.end());
  }
  auto b = open_ok(o);
  ASSERT_TRUE(b.restore(saved).ok());
  std::vector<int32_t> second;
  for (int i = 0; i < 5; ++i) {
    const auto t = b.next_batch(3);
    second.insert(second.end(), t.begin(), t.end());
  }
  EXPECT_EQ(first, second);
  EXPECT_GT(a.epoch(), 0) << "the 12 batches should cross an epoch boundary";
}

TEST(TokenWindowLoader, SameSeedSameStreamOtherSeedOtherStream) {
  const std::string prefix = make_dataset("seeds");
  auto a = open_ok({.prefix = prefix, .seq_len = 4, .seed = 1, .train_fraction = 1.0});
  auto b = open_ok({.prefix = prefix, .seq_len = 4, .seed = 1, .train_fraction = 1.0});
  auto c = open_ok({.prefix = prefix, .seq_len = 4, .seed = 2, .train_fraction = 1.0});
  const auto ta = a.next_batch(16);
  EXPECT_EQ(ta, b.next_batch(16));
  EXPECT_NE(ta, c.next_batch(16));
}

TEST(TokenWindowLoader, ValidationIsFixedAndDisjointFromTraining) {
  auto l = open_ok({.prefix = make_dataset("val"), .seq_len = 4, .seed = 3, .train_fraction = 0.8});
  EXPECT_EQ(l.train_documents(), 32);
  EXPECT_EQ(l.validation_documents(), 8);
  const auto v1 = l.validation_batches(2, 0);
  const auto v2 = l.validation_batches(2, 0);
  ASSERT_FALSE(v1.empty());
  EXPECT_EQ(v1, v2);
  EXPECT_EQ(static_cast<int64_t>(v1.size()), l.validation_windows() / 2);
  EXPECT_EQ(l.validation_batches(2, 1).size(), 1u);
  std::set<int> train_docs;
  for (int k = 0; k < 40; ++k) {  // 40 x 4 windows x 4 tokens: more than one epoch
    for (int32_t t : l.next_batch(4)) if (t != kEod) train_docs.insert(t / 100);
  }
  EXPECT_EQ(train_docs.size(), 32u);
  // The validation windows, reassembled, are the other 8 documents in index order.
  std::vector<int32_t> expected;
  for (int i = 0; i < kDocs; ++i) {
    if (train_docs.count(i)) continue;
    for (int j = 0; j < doc_length(i) - 1; ++j) expected.push_back(i * 100 + j);
    expected.push_back(kEod);
  }
  std::vector<int32_t> stream;
  for (const auto& batch : v1) {
    for (size_t w = 0; w < batch.size(); w += 5) {
      stream.insert(stream.end(), batch.begin() + w + (stream.empty() ? 0 : 1), batch.begin() + w + 5);
    }
  }
  ASSERT_LE(stream.size(), expected.size());
  EXPECT_TRUE(std::equal(stream.begin(), stream.end(), expected.begin()));
  int64_t all = 0;
  for (int i = 0; i < kDocs; ++i) all += doc_length(i);
  EXPECT_EQ(l.train_tokens() + l.validation_tokens(), all);
}

TEST(TokenWindowLoader, VocabSizeHintFromMetadataOrData) {
  const std::string prefix = make_dataset("vocab");
  auto l = open_ok({.prefix = prefix, .seq_len = 4, .train_fraction = 1.0});
  EXPECT_EQ(l.vocab_size_hint(), kEod + 1);
  ASSERT_TRUE(write_metadata(prefix, {{"vocab_size", 50257}}).ok());
  auto m = open_ok({.prefix = prefix, .seq_len = 4, .train_fraction = 1.0});
  EXPECT_EQ(m.vocab_size_hint(), 50257);
}

TEST(TokenWindowLoader, ErrorsNameTheProblem) {
  const std::string prefix = make_dataset("errors");
  auto r = TokenWindowLoader::open({.prefix = prefix + "_missing", .seq_len = 4});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), core::ErrorCode::kNotFound);
  r = TokenWindowLoader::open({.prefix = prefix, .seq_len = 100000, .train_fraction = 1.0});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("longer than the training data"), std::string::npos)
      << r.status().message();
  // 0.99 of 40 documents leaves one validation document (< 10 tokens): no window of 33 tokens.
  r = TokenWindowLoader::open({.prefix = prefix, .seq_len = 32, .train_fraction = 0.99});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("validation split"), std::string::npos) << r.status().message();
  r = TokenWindowLoader::open({.prefix = prefix, .seq_len = 4, .train_fraction = 1.5});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--split 1.5"), std::string::npos);
  r = TokenWindowLoader::open({.prefix = prefix, .seq_len = 4, .train_fraction = 0.01});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no training document"), std::string::npos);
  auto a = open_ok({.prefix = prefix, .seq_len = 4, .seed = 1, .train_fraction = 1.0});
  auto b = open_ok({.prefix = prefix, .seq_len = 4, .seed = 2, .train_fraction = 1.0});
  const auto st = b.restore(a.state());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("\"seed\""), std::string::npos) << st.message();
}

}  // namespace
}  // namespace loom::data
