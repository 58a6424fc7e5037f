// The Markov source's entropy rate H = sum_s pi(s) H(P(.|s)): against closed forms (a two-state
// chain, uniform rows = log V, a periodic chain), against the empirical conditional entropy of a
// long sample, and `synthesize` (files, PREFIX.json, reproducibility).
#include "dataset/markov_source.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "dataset/indexed_dataset.h"

namespace loom::data {
namespace {

std::string temp_prefix(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("loom_ds_synth_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

double h2(double p) { return -p * std::log(p) - (1 - p) * std::log(1 - p); }

TEST(MarkovSource, TwoStateChainMatchesTheClosedForm) {
  // pi = (0.5, 0.1) / 0.6 = (5/6, 1/6) solves pi P = pi for P = [[0.9, 0.1], [0.5, 0.5]].
  auto m = MarkovSource::from_transitions(2, 1, {0.9, 0.1, 0.5, 0.5});
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_NEAR(m->stationary()[0], 5.0 / 6.0, 1e-11);
  EXPECT_NEAR(m->entropy_rate_nats(), 5.0 / 6.0 * h2(0.1) + 1.0 / 6.0 * std::log(2.0), 1e-11);
}

TEST(MarkovSource, PeriodicChainStillConverges) {
  // [[0, 1], [1, 0]] has period 2: plain power iteration would oscillate; the lazy chain converges.
  auto m = MarkovSource::from_transitions(2, 1, {0.0, 1.0, 1.0, 0.0});
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(m->stationary()[0], 0.5, 1e-12);
  EXPECT_EQ(m->entropy_rate_nats(), 0.0);
}

TEST(MarkovSource, UniformRowsGiveLogV) {
  for (int order : {1, 2}) {
    const int64_t v = 7;
    const int64_t states = order == 1 ? v : v * v;
    auto m = MarkovSource::from_transitions(v, order, std::vector<double>(states * v, 1.0 / v));
    ASSERT_TRUE(m.ok());
    EXPECT_NEAR(m->entropy_rate_nats(), std::log(7.0), 1e-12) << "order " << order;
  }
  // Dirichlet(1e4) rows are nearly uniform: E[KL(P || uniform)] ~ (V - 1) / (2 alpha) = 1.5e-4.
  auto m = MarkovSource::create({.vocab = 31, .order = 1, .concentration = 1e4, .seed = 5});
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(m->entropy_rate_nats(), std::log(31.0), 2e-3);
}

TEST(MarkovSource, TinyConcentrationIsNearlyDeterministic) {
  // alpha = 1e-6: each row puts all but ~V * alpha of its mass on one token.
  auto m = MarkovSource::create({.vocab = 16, .order = 1, .concentration = 1e-6, .seed = 9});
  ASSERT_TRUE(m.ok());
  EXPECT_LT(m->entropy_rate_nats(), 1e-3);
  EXPECT_GE(m->entropy_rate_nats(), 0.0);
}

TEST(MarkovSource, EmpiricalConditionalEntropyApproachesTheRate) {
  for (int order : {1, 2}) {
    auto m = MarkovSource::create({.vocab = 6, .order = order, .concentration = 0.5, .seed = 3});
    ASSERT_TRUE(m.ok());
    Rng rng(17);
    int64_t state = m->sample_stationary_state(rng);
    std::vector<int32_t> x;
    const int64_t n = 300000;
    m->sample(rng, state, n, x);
    // Plug-in H(X_t | context) from (context, next) counts, with Miller-Madow's bias correction
    // (cells - contexts) / 2n; and the mean surprisal -log P(x_t | context) under the true chain.
    std::map<std::pair<int64_t, int32_t>, double> joint;
    std::map<int64_t, double> ctx;
    double surprisal = 0, surprisal2 = 0;
    int64_t s = 0;
    for (int i = 0; i < order; ++i) s = m->next_state(s, x[i]);
    for (int64_t t = order; t < n; ++t) {
      joint[{s, x[t]}] += 1, ctx[s] += 1;
      const double lp = -std::log(m->transition(s, x[t]));
      surprisal += lp, surprisal2 += lp * lp;
      s = m->next_state(s, x[t]);
    }
    const double count = static_cast<double>(n - order);
    double plugin = 0;
    for (const auto& [key, c] : joint) plugin -= c / count * std::log(c / ctx[key.first]);
    plugin += static_cast<double>(joint.size() - ctx.size()) / (2 * count);
    surprisal /= count;
    // Tolerance: 6 standard errors of a mean of `count` surprisals (sd measured from the sample);
    // the chain mixes in a few steps (Dirichlet rows), so the effective sample size is ~count.
    const double sd = std::sqrt(surprisal2 / count - surprisal * surprisal);
    const double tol = 6 * sd / std::sqrt(count);
    EXPECT_NEAR(surprisal, m->entropy_rate_nats(), tol) << "order " << order;
    EXPECT_NEAR(plugin, m->entropy_rate_nats(), tol) << "order " << order;
  }
}

TEST(MarkovSource, RejectsBadOptions) {
  auto r = MarkovSource::create({.vocab = 8, .order = 1, .concentration = 0, .seed = 1});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--concentration 0"), std::string::npos);
  r = MarkovSource::create({.vocab = 50000, .order = 1, .concentration = 1, .seed = 1});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--vocab 50000 with --order 1"), std::string::npos)
      << r.status().message();
  r = MarkovSource::create({.vocab = 64, .order = 4, .concentration = 1, .seed = 1});
  ASSERT_FALSE(r.ok());
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(Synthesize, WritesDocumentsWithEodAndTheEntropyRate) {
  const std::string prefix = temp_prefix("synth");
  SynthOptions o{.prefix = prefix, .chain = {.vocab = 20, .order = 1, .concentration = 0.7, .seed = 4},
                 .tokens = 5050, .doc_len = 100};
  auto r = synthesize(o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->documents, 51);
  EXPECT_EQ(r->tokens_with_eod, 5050 + 51);
  auto ds = IndexedDataset::open(prefix);
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(ds->dtype(), DType::kUint16);
  EXPECT_EQ(ds->document_length(0), 101);
  EXPECT_EQ(ds->document_length(50), 51);  // the last document holds the remaining 50
  for (int64_t d = 0; d < ds->num_documents(); ++d) {
    const auto doc = ds->document(d);
    EXPECT_EQ(doc.back(), 20);
    for (size_t i = 0; i + 1 < doc.size(); ++i) ASSERT_LT(doc[i], 20);
  }
  auto rate = read_entropy_rate(prefix);
  ASSERT_TRUE(rate.ok()) << rate.status().message();
  auto chain = MarkovSource::create(o.chain);
  EXPECT_DOUBLE_EQ(*rate, chain->entropy_rate_nats());
  auto meta = read_metadata(prefix);
  EXPECT_EQ((*meta)["vocab_size"], 21);
  EXPECT_EQ((*meta)["eod_token"], 20);
  EXPECT_LT((*meta)["stationary_residual"].get<double>(), 1e-12);
}

TEST(Synthesize, SameSeedSameBytesOtherSeedOtherBytes) {
  SynthOptions o{.prefix = temp_prefix("a"), .chain = {.vocab = 50, .seed = 77}, .tokens = 3000,
                 .doc_len = 256};
  ASSERT_TRUE(synthesize(o).ok());
  o.prefix = temp_prefix("b");
  ASSERT_TRUE(synthesize(o).ok());
  o.prefix = temp_prefix("c");
  o.chain.seed = 78;
  ASSERT_TRUE(synthesize(o).ok());
  EXPECT_EQ(slurp(temp_prefix("a") + ".bin"), slurp(temp_prefix("b") + ".bin"));
  EXPECT_NE(slurp(temp_prefix("a") + ".bin"), slurp(temp_prefix("c") + ".bin"));
}

TEST(Synthesize, ReadEntropyRateNeedsSynthMetadata) {
  auto r = read_entropy_rate(temp_prefix("never_written"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), core::ErrorCode::kNotFound);
  EXPECT_NE(r.status().message().find("never_written.json"), std::string::npos);
}

}  // namespace
}  // namespace loom::data
