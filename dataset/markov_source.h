// A random Markov source of known entropy rate, for `loom data synth`: each context (the last
// `order` tokens) has a next-token distribution drawn from a symmetric Dirichlet(alpha). Its exact
// entropy rate H = sum_s pi(s) H(P(.|s)) (Cover & Thomas, Elements of Information Theory, Thm 4.2.4)
// is the loss floor a language model trained on the stream can reach, so training runs on synthetic
// data have a known target. Tested in tests/dataset/markov_source_test.cc (empirical conditional
// entropy of a long sample, deterministic and uniform chains).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "dataset/metadata.h"
#include "dataset/random.h"

namespace loom::data {

struct MarkovOptions {
  int64_t vocab = 256;         // V: chain tokens are 0..V-1
  int order = 1;               // k: contexts are the last k tokens (V^k states)
  double concentration = 1.0;  // Dirichlet alpha: small -> near-deterministic, large -> near-uniform
  uint64_t seed = 1234;
};

// The chain needs V^k x V transition probabilities in memory; beyond this it is refused.
inline constexpr int64_t kMaxTransitionEntries = int64_t{1} << 24;  // 128 MiB of doubles

class MarkovSource {
 public:
  static core::Result<MarkovSource> create(const MarkovOptions& options);
  // A chain with the given rows (row-major [V^order, V], each row summing to 1); for tests.
  static core::Result<MarkovSource> from_transitions(int64_t vocab, int order,
                                                     std::vector<double> transitions);

  int64_t vocab() const { return vocab_; }
  int order() const { return order_; }
  int64_t num_states() const { return states_; }
  double transition(int64_t state, int64_t token) const { return p_[state * vocab_ + token]; }
  int64_t next_state(int64_t state, int64_t token) const { return (state * vocab_ + token) % states_; }
  const std::vector<double>& stationary() const { return pi_; }
  double entropy_rate_nats() const { return entropy_rate_; }
  int64_t power_iterations() const { return iterations_; }
  double stationary_residual() const { return residual_; }

  // Samples `count` tokens continuing from `state` (updated), by inverse CDF on each row.
  void sample(Rng& rng, int64_t& state, int64_t count, std::vector<int32_t>& out) const;
  // A state drawn from the stationary distribution (so the sample starts in equilibrium).
  int64_t sample_stationary_state(Rng& rng) const;

 private:
  MarkovSource() = default;
  void solve_stationary();

  int64_t vocab_ = 0, states_ = 0;
  int order_ = 1;
  std::vector<double> p_, cdf_, pi_;
  double entropy_rate_ = 0, residual_ = 0;
  int64_t iterations_ = 0;
};

struct SynthOptions {
  std::string prefix;
  MarkovOptions chain;
  int64_t tokens = 1000000;  // chain tokens written (end-of-document tokens not counted)
  int64_t doc_len = 1024;    // chain tokens per document; the last one may be shorter
};

struct SynthReport {
  int64_t documents = 0, tokens = 0, tokens_with_eod = 0, vocab_size = 0;
  double entropy_rate_nats = 0;
  nlohmann::json metadata;  // what PREFIX.json holds
};

// Writes PREFIX.bin/.idx (documents of doc_len chain tokens, each followed by the EOD token id V,
// so the vocabulary is V + 1) and PREFIX.json. The chain runs on across documents; the EOD is not
// a chain state. Per token including EODs the floor is H * doc_len / (doc_len + 1) when the
// model predicts the EOD (deterministic given the position) at no cost: "entropy_rate_with_eod_nats".
core::Result<SynthReport> synthesize(const SynthOptions& options);

// Reads "entropy_rate_nats" from PREFIX.json (written by synthesize).
core::Result<double> read_entropy_rate(const std::string& prefix);

}  // namespace loom::data
