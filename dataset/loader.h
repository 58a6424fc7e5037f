// The training-data loader: windows of seq_len + 1 tokens cut with stride seq_len from the
// concatenated documents of a Megatron indexed dataset (Megatron's GPTDataset / Qwen practice:
// inputs are tokens[0:seq], targets tokens[1:seq+1]; the EOD tokens are already in the data).
// Documents are split train / validation by a seeded shuffle; the train documents are reshuffled
// every epoch (seed + epoch) and the stream runs on across epochs with no token dropped. state() /
// restore() resume bit-exactly. Tested in tests/dataset/loader_test.cc.
//
// Usage:
//   LOOM_ASSIGN_OR_RETURN(auto loader, TokenWindowLoader::open({.prefix = "data/synth", .seq_len = 256}));
//   std::vector<int32_t> tokens = loader.next_batch(8);  // [8, 257] int32, row-major
//   nlohmann::json s = loader.state();                   // store in the checkpoint
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "dataset/indexed_dataset.h"

namespace loom::data {

struct LoaderOptions {
  std::string prefix{};           // PREFIX.bin / PREFIX.idx
  int64_t seq_len = 0;            // tokens per training example (windows hold seq_len + 1)
  uint64_t seed = 1234;           // split and epoch shuffles
  double train_fraction = 0.99;   // --split: fraction of documents for training; 1 = no validation
};

class TokenWindowLoader {
 public:
  static core::Result<TokenWindowLoader> open(const LoaderOptions& opt);

  // tokens [batch * (seq_len + 1)], row-major, int32: the next `batch` training windows.
  std::vector<int32_t> next_batch(int64_t batch);
  // The validation documents in index order, concatenated and cut like the training stream (no
  // shuffle, same every call); full batches only, at most max_batches of them (<= 0: all).
  std::vector<std::vector<int32_t>> validation_batches(int64_t batch, int64_t max_batches) const;

  // {"position", "epoch", "seed", "seq_len", "train_fraction", "train_tokens", ...}: enough to
  // continue exactly; restore() checks that it belongs to the same data and options.
  nlohmann::json state() const;
  core::Status restore(const nlohmann::json& state);

  // "vocab_size" from PREFIX.json when present, else the largest token id in the data + 1.
  int64_t vocab_size_hint() const;
  int64_t train_tokens() const { return train_.tokens; }
  int64_t validation_tokens() const { return validation_.tokens; }
  int64_t train_documents() const { return static_cast<int64_t>(train_.docs.size()); }
  int64_t validation_documents() const { return static_cast<int64_t>(validation_.docs.size()); }
  int64_t validation_windows() const;
  int64_t seq_len() const { return opt_.seq_len; }
  int64_t epoch() const { return position_ / train_.tokens; }
  int64_t position() const { return position_; }  // start of the next window in the token stream

 private:
  // Documents in stream order with the stream offset at which each starts.
  struct DocOrder {
    int64_t epoch = -1;
    std::vector<int64_t> docs, starts;
    int64_t tokens = 0;
  };

  TokenWindowLoader() = default;
  static void set_docs(const IndexedDataset& ds, std::vector<int64_t> docs, DocOrder& order);
  core::Status split_documents();
  const DocOrder& epoch_order(int64_t epoch);
  void copy_train(int64_t position, int64_t count, int32_t* out);
  void copy_from(const DocOrder& order, int64_t offset, int64_t count, int32_t* out) const;

  LoaderOptions opt_;
  std::shared_ptr<const IndexedDataset> ds_;
  DocOrder train_, validation_;  // both in index order
  DocOrder epoch_cache_[2];      // the shuffled order of the two most recent epochs
  int64_t position_ = 0;
  std::optional<int64_t> metadata_vocab_;
  mutable std::optional<int64_t> scanned_vocab_;
};

}  // namespace loom::data
