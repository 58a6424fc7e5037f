// BatchSource implementations: see batch_source.h.
#include "trainer/batch_source.h"

#include <sstream>

#include "dataset/loader.h"
#include "dataset/random.h"

namespace loom::train {

namespace {

class DatasetSource final : public BatchSource {
 public:
  explicit DatasetSource(data::TokenWindowLoader loader) : loader_(std::move(loader)) {}
  std::vector<int32_t> next_batch(int64_t batch) override { return loader_.next_batch(batch); }
  std::vector<std::vector<int32_t>> validation(int64_t batch, int64_t max_batches) override {
    return loader_.validation_batches(batch, max_batches);
  }
  nlohmann::json state() const override { return loader_.state(); }
  core::Status restore(const nlohmann::json& state) override { return loader_.restore(state); }
  int64_t max_token() const override { return loader_.vocab_size_hint() - 1; }

 private:
  data::TokenWindowLoader loader_;
};

// Uniform random tokens: what throughput measurements need (the data does not change the
// arithmetic) without a corpus on disk. Validation batches come from a separate fixed seed.
class SyntheticSource final : public BatchSource {
 public:
  SyntheticSource(int64_t vocab, int64_t seq, uint64_t seed)
      : vocab_(vocab), seq_(seq), seed_(seed), rng_(seed) {}
  std::vector<int32_t> next_batch(int64_t batch) override { return draw(rng_, batch); }
  std::vector<std::vector<int32_t>> validation(int64_t batch, int64_t max_batches) override {
    std::mt19937_64 rng(seed_ ^ 0x9E3779B97F4A7C15ull);
    std::vector<std::vector<int32_t>> out;
    for (int64_t i = 0; i < max_batches; ++i) out.push_back(draw(rng, batch));
    return out;
  }
  nlohmann::json state() const override {
    std::ostringstream os;
    os << rng_;
    return {{"kind", "synthetic"}, {"rng", os.str()}};
  }
  core::Status restore(const nlohmann::json& state) override {
    if (state.value("kind", "") != "synthetic" || !state.contains("rng")) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "checkpoint data state {} is not a synthetic-data state (was the run "
                         "trained with --data?)",
                         state.dump());
    }
    std::istringstream is(state.at("rng").get<std::string>());
    is >> rng_;
    return core::ok_status();
  }
  int64_t max_token() const override { return vocab_ - 1; }

 private:
  std::vector<int32_t> draw(std::mt19937_64& rng, int64_t batch) const {
    std::vector<int32_t> out(batch * (seq_ + 1));
    for (auto& t : out) t = static_cast<int32_t>(data::uniform_below(rng, vocab_));
    return out;
  }
  int64_t vocab_, seq_;
  uint64_t seed_;
  std::mt19937_64 rng_;
};

}  // namespace

core::Result<std::unique_ptr<BatchSource>> open_dataset_source(const std::string& prefix,
                                                                 int64_t seq, uint64_t seed,
                                                                 double train_fraction) {
  data::LoaderOptions opt;
  opt.prefix = prefix;
  opt.seq_len = seq;
  opt.seed = seed;
  opt.train_fraction = train_fraction;
  LOOM_ASSIGN_OR_RETURN(data::TokenWindowLoader loader, data::TokenWindowLoader::open(opt));
  return std::unique_ptr<BatchSource>(new DatasetSource(std::move(loader)));
}

std::unique_ptr<BatchSource> make_synthetic_source(int64_t vocab, int64_t seq, uint64_t seed) {
  return std::make_unique<SyntheticSource>(vocab, seq, seed);
}

}  // namespace loom::train
