// The reproducible variates of dataset/random.h: the engine's standard-mandated output, unbiased
// bounded integers, gamma moments (mean = var = alpha) and Dirichlet rows, and the shuffle.
#include "dataset/random.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace loom::data {
namespace {

TEST(Random, Mt19937_64IsTheStandardEngine) {
  // C++ standard [rand.predef]: the 10000th output of a default-constructed mt19937_64.
  Rng rng;
  rng.discard(9999);
  EXPECT_EQ(rng(), 9981545732273789042ULL);
}

TEST(Random, UniformBelowStaysInRangeAndCoversIt) {
  Rng rng(7);
  std::vector<int> counts(6, 0);
  for (int i = 0; i < 60000; ++i) ++counts[uniform_below(rng, 6)];
  // Each count ~ Binomial(60000, 1/6): sd ~ 91; 5 sd = 456.
  for (int c : counts) EXPECT_NEAR(c, 10000, 456);
}

TEST(Random, UniformOpen01NeverHitsTheEnds) {
  Rng rng(3);
  for (int i = 0; i < 100000; ++i) {
    const double u = uniform_open01(rng);
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(Random, GammaVariatesHaveMeanAndVarianceAlpha) {
  for (double alpha : {0.3, 1.0, 4.5}) {
    Rng rng(11);
    const int n = 200000;
    double sum = 0, sum2 = 0;
    for (int i = 0; i < n; ++i) {
      const double g = std::exp(log_gamma_variate(rng, alpha));
      sum += g, sum2 += g * g;
    }
    const double mean = sum / n, var = sum2 / n - mean * mean;
    // sd of the sample mean is sqrt(alpha / n): 5 sd. The sample variance has sd
    // sqrt((mu4 - alpha^2) / n) = sqrt((2 alpha^2 + 6 alpha) / n) (Gamma's 4th central moment is
    // 3 alpha (alpha + 2)): <= 0.018 here, so the bound 5% alpha + 0.01 is over 5 sd.
    EXPECT_NEAR(mean, alpha, 5 * std::sqrt(alpha / n)) << "alpha " << alpha;
    EXPECT_NEAR(var, alpha, 0.05 * alpha + 0.01) << "alpha " << alpha;
  }
}

TEST(Random, DirichletRowsSumToOneEvenForTinyAlpha) {
  Rng rng(5);
  for (double alpha : {1e-4, 0.1, 1.0, 100.0}) {
    const auto p = dirichlet_symmetric(rng, alpha, 50);
    EXPECT_NEAR(std::accumulate(p.begin(), p.end(), 0.0), 1.0, 1e-12);
    EXPECT_TRUE(std::all_of(p.begin(), p.end(), [](double x) { return x >= 0 && x <= 1; }));
  }
  // alpha = 1e-4: one entry holds nearly all the mass.
  const auto p = dirichlet_symmetric(rng, 1e-4, 50);
  EXPECT_GT(*std::max_element(p.begin(), p.end()), 0.99);
}

TEST(Random, ShuffleIsAReproduciblePermutation) {
  std::vector<int> a(100), b(100);
  std::iota(a.begin(), a.end(), 0);
  std::iota(b.begin(), b.end(), 0);
  Rng r1(42), r2(42);
  shuffle_in_place(a, r1);
  shuffle_in_place(b, r2);
  EXPECT_EQ(a, b);
  std::vector<int> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sorted[i], i);
  std::vector<int> identity(100);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(a, identity);
}

TEST(Random, MixSeedSeparatesStreams) {
  EXPECT_NE(mix_seed(1, 0), mix_seed(1, 1));
  EXPECT_NE(mix_seed(1, 0), mix_seed(2, 0));
  EXPECT_EQ(mix_seed(1, 0), mix_seed(1, 0));
}

}  // namespace
}  // namespace loom::data
