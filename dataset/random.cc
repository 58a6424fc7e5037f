// Reproducible random variates on std::mt19937_64 (see random.h for why not std::*_distribution).
// Tested in tests/dataset/random_test.cc: fixed outputs for a fixed seed, moments of the variates.
#include "dataset/random.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace loom::data {

uint64_t mix_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t uniform_below(Rng& rng, uint64_t bound) {
  // Values below 2^64 mod bound would be over-represented; reject them (at most half the draws).
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    const uint64_t x = rng();
    if (x >= threshold) return x % bound;
  }
}

double uniform_open01(Rng& rng) {
  return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53;
}

double standard_normal(Rng& rng) {
  const double u1 = uniform_open01(rng);
  const double u2 = uniform_open01(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

double log_gamma_variate(Rng& rng, double alpha) {
  if (alpha < 1.0) {
    // Gamma(a) = Gamma(a + 1) * U^(1/a) (Marsaglia & Tsang 2000, section 6).
    const double boost = std::log(uniform_open01(rng)) / alpha;
    return log_gamma_variate(rng, alpha + 1.0) + boost;
  }
  const double d = alpha - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x = 0, v = 0;
    do {
      x = standard_normal(rng);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = uniform_open01(rng);
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return std::log(d * v);
  }
}

std::vector<double> dirichlet_symmetric(Rng& rng, double alpha, int64_t k) {
  std::vector<double> p(static_cast<size_t>(k));
  for (auto& x : p) x = log_gamma_variate(rng, alpha);
  const double max_log = *std::max_element(p.begin(), p.end());
  double sum = 0;
  for (auto& x : p) {
    x = std::exp(x - max_log);
    sum += x;
  }
  for (auto& x : p) x /= sum;
  return p;
}

}  // namespace loom::data
