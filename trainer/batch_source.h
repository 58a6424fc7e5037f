// BatchSource: where the trainer's token windows come from -- an indexed dataset through
// data::TokenWindowLoader (shuffled documents, concatenated, cut into seq+1 windows), or
// uniform random tokens for throughput runs. Both save and restore their exact position.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace loom::train {

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual std::vector<int32_t> next_batch(int64_t batch) = 0;  // [batch, seq + 1]
  virtual std::vector<std::vector<int32_t>> validation(int64_t batch, int64_t max_batches) = 0;
  virtual nlohmann::json state() const = 0;
  virtual core::Status restore(const nlohmann::json& state) = 0;
  virtual int64_t max_token() const = 0;  // the largest token id it can produce
};

core::Result<std::unique_ptr<BatchSource>> open_dataset_source(const std::string& prefix,
                                                                 int64_t seq, uint64_t seed,
                                                                 double train_fraction);
std::unique_ptr<BatchSource> make_synthetic_source(int64_t vocab, int64_t seq, uint64_t seed);

}  // namespace loom::train
