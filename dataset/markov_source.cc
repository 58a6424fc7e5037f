// The Dirichlet-Markov source, its stationary distribution and entropy rate, and `synthesize`
// (see markov_source.h). Tested in tests/dataset/markov_source_test.cc.
#include "dataset/markov_source.h"

#include <algorithm>
#include <cmath>

#include "dataset/indexed_dataset.h"

namespace loom::data {

using core::ErrorCode;

namespace {

// Power iteration stops when the L1 change of pi is below this (the brief's 1e-12; the entropy
// rate is then exact to ~1e-12 * max row entropy <= 1e-12 * log V nats).
constexpr double kStationaryTolerance = 1e-12;
// Bound on power-iteration work (iterations x transition entries) so a near-periodic chain
// (alpha -> 0 gives near-permutation rows) cannot run for minutes; the residual is reported.
constexpr double kMaxPowerIterationWork = 4e9;

core::Result<int64_t> count_states(int64_t vocab, int order) {
  if (vocab < 1) {
    return core::error(ErrorCode::kInvalidArgument, "--vocab {} must be at least 1", vocab);
  }
  if (order < 1) return core::error(ErrorCode::kInvalidArgument, "--order {} must be at least 1", order);
  int64_t states = 1;
  for (int i = 0; i < order; ++i) {
    if (states > kMaxTransitionEntries / vocab) states = kMaxTransitionEntries + 1;
    else states *= vocab;
  }
  if (states > kMaxTransitionEntries / vocab) {
    return core::error(ErrorCode::kInvalidArgument, "--vocab {} with --order {} needs vocab^(order+1) "
                       "transition probabilities, more than the {} allowed; use a smaller vocab or "
                       "order", vocab, order, kMaxTransitionEntries);
  }
  return states;
}

}  // namespace

core::Result<MarkovSource> MarkovSource::from_transitions(int64_t vocab, int order,
                                                          std::vector<double> transitions) {
  LOOM_ASSIGN_OR_RETURN(int64_t states, count_states(vocab, order));
  if (static_cast<int64_t>(transitions.size()) != states * vocab) {
    return core::error(ErrorCode::kInvalidArgument, "transition matrix has {} entries; vocab {} and "
                       "order {} need {}", transitions.size(), vocab, order, states * vocab);
  }
  MarkovSource m;
  m.vocab_ = vocab;
  m.order_ = order;
  m.states_ = states;
  m.p_ = std::move(transitions);
  m.cdf_.resize(m.p_.size());
  for (int64_t s = 0; s < states; ++s) {
    double acc = 0;
    for (int64_t v = 0; v < vocab; ++v) m.cdf_[s * vocab + v] = acc += m.p_[s * vocab + v];
    if (std::abs(acc - 1.0) > 1e-9) {
      return core::error(ErrorCode::kInvalidArgument, "transition row {} sums to {}, not 1", s, acc);
    }
    m.cdf_[s * vocab + vocab - 1] = 1.0;  // rounding must not leave a gap above the last token
  }
  m.solve_stationary();
  return m;
}

core::Result<MarkovSource> MarkovSource::create(const MarkovOptions& o) {
  if (!(o.concentration > 0) || !std::isfinite(o.concentration)) {
    return core::error(ErrorCode::kInvalidArgument, "--concentration {} must be a positive number "
                       "(Dirichlet alpha; e.g. 0.01 near-deterministic, 1 flat, 100 near-uniform)",
                       o.concentration);
  }
  LOOM_ASSIGN_OR_RETURN(int64_t states, count_states(o.vocab, o.order));
  Rng rng(mix_seed(o.seed, /*stream=*/1));
  std::vector<double> p;
  p.reserve(static_cast<size_t>(states * o.vocab));
  for (int64_t s = 0; s < states; ++s) {
    const std::vector<double> row = dirichlet_symmetric(rng, o.concentration, o.vocab);
    p.insert(p.end(), row.begin(), row.end());
  }
  return from_transitions(o.vocab, o.order, std::move(p));
}

// Power iteration on the lazy chain (I + P) / 2: same stationary distribution as P, but
// aperiodic, so it converges even when P is (near-)periodic.
void MarkovSource::solve_stationary() {
  const auto n = static_cast<size_t>(states_);
  pi_.assign(n, 1.0 / static_cast<double>(states_));
  std::vector<double> next(n);
  const auto max_iterations = static_cast<int64_t>(
      std::max(200.0, kMaxPowerIterationWork / static_cast<double>(p_.size())));
  for (iterations_ = 1; iterations_ <= max_iterations; ++iterations_) {
    for (size_t s = 0; s < n; ++s) next[s] = 0.5 * pi_[s];
    for (int64_t s = 0; s < states_; ++s) {
      const double w = 0.5 * pi_[static_cast<size_t>(s)];
      if (w == 0) continue;
      const double* row = &p_[static_cast<size_t>(s * vocab_)];
      // next_state(s, v) = base + v: base is a multiple of V below V^k, so no wrap-around.
      double* out = &next[static_cast<size_t>((s * vocab_) % states_)];
      for (int64_t v = 0; v < vocab_; ++v) out[v] += w * row[v];
    }
    residual_ = 0;
    for (size_t s = 0; s < n; ++s) residual_ += std::abs(next[s] - pi_[s]);
    pi_.swap(next);
    if (residual_ < kStationaryTolerance) break;
  }
  iterations_ = std::min(iterations_, max_iterations);
  entropy_rate_ = 0;
  for (int64_t s = 0; s < states_; ++s) {
    double h = 0;
    for (int64_t v = 0; v < vocab_; ++v) {
      const double q = p_[static_cast<size_t>(s * vocab_ + v)];
      if (q > 0) h -= q * std::log(q);
    }
    entropy_rate_ += pi_[static_cast<size_t>(s)] * h;
  }
}

void MarkovSource::sample(Rng& rng, int64_t& state, int64_t count, std::vector<int32_t>& out) const {
  for (int64_t i = 0; i < count; ++i) {
    const double u = uniform_open01(rng);
    const double* row = &cdf_[static_cast<size_t>(state * vocab_)];
    const int64_t v = std::min<int64_t>(std::upper_bound(row, row + vocab_, u) - row, vocab_ - 1);
    out.push_back(static_cast<int32_t>(v));
    state = next_state(state, v);
  }
}

int64_t MarkovSource::sample_stationary_state(Rng& rng) const {
  const double u = uniform_open01(rng);
  double acc = 0;
  for (int64_t s = 0; s < states_; ++s) {
    acc += pi_[static_cast<size_t>(s)];
    if (u < acc) return s;
  }
  return states_ - 1;
}

core::Result<SynthReport> synthesize(const SynthOptions& o) {
  if (o.tokens < 1) return core::error(ErrorCode::kInvalidArgument, "--tokens {} must be >= 1", o.tokens);
  if (o.doc_len < 1) {
    return core::error(ErrorCode::kInvalidArgument, "--doc-len {} must be >= 1", o.doc_len);
  }
  LOOM_ASSIGN_OR_RETURN(MarkovSource chain, MarkovSource::create(o.chain));
  const auto eod = static_cast<int32_t>(o.chain.vocab);
  const DType dtype = token_dtype_for_vocab(o.chain.vocab + 1);
  LOOM_ASSIGN_OR_RETURN(IndexedDatasetWriter writer, IndexedDatasetWriter::create(o.prefix, dtype));
  Rng rng(mix_seed(o.chain.seed, /*stream=*/2));
  int64_t state = chain.sample_stationary_state(rng);
  std::vector<int32_t> doc;
  for (int64_t done = 0; done < o.tokens;) {
    const int64_t n = std::min(o.doc_len, o.tokens - done);
    doc.clear();
    chain.sample(rng, state, n, doc);
    doc.push_back(eod);
    LOOM_RETURN_IF_ERROR(writer.add_document(doc));
    done += n;
  }
  SynthReport r;
  r.documents = writer.documents();
  r.tokens = o.tokens;
  r.tokens_with_eod = writer.tokens();
  r.vocab_size = o.chain.vocab + 1;
  r.entropy_rate_nats = chain.entropy_rate_nats();
  LOOM_RETURN_IF_ERROR(writer.finish());
  const double with_eod = r.entropy_rate_nats * static_cast<double>(r.tokens) /
                          static_cast<double>(r.tokens_with_eod);
  r.metadata = {{"generator", "loom data synth"}, {"source", "dirichlet-markov"},
                {"entropy_rate_nats", r.entropy_rate_nats},
                {"entropy_rate_bits", r.entropy_rate_nats / std::log(2.0)},
                {"entropy_rate_with_eod_nats", with_eod}, {"vocab", o.chain.vocab},
                {"vocab_size", r.vocab_size}, {"eod_token", eod}, {"tokens", r.tokens},
                {"tokens_with_eod", r.tokens_with_eod}, {"documents", r.documents},
                {"doc_len", o.doc_len}, {"order", o.chain.order},
                {"concentration", o.chain.concentration}, {"seed", o.chain.seed},
                {"dtype", dtype_name(dtype)}, {"stationary_iterations", chain.power_iterations()},
                {"stationary_residual", chain.stationary_residual()}};
  LOOM_RETURN_IF_ERROR(write_metadata(o.prefix, r.metadata));
  return r;
}

core::Result<double> read_entropy_rate(const std::string& prefix) {
  LOOM_ASSIGN_OR_RETURN(nlohmann::json j, read_metadata(prefix));
  if (!j.contains("entropy_rate_nats") || !j["entropy_rate_nats"].is_number()) {
    return core::error(ErrorCode::kNotFound, "{} has no numeric \"entropy_rate_nats\" (only data "
                       "from `loom data synth` has a known entropy rate)", metadata_path(prefix));
  }
  return j["entropy_rate_nats"].get<double>();
}

}  // namespace loom::data
