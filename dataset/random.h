// Reproducible random numbers for the data pipeline: uniform integers, uniforms, normals (Box-Muller),
// gamma and Dirichlet variates and a Fisher-Yates shuffle, all on std::mt19937_64, whose output the
// C++ standard fixes. std::*_distribution is avoided: its algorithm is implementation-defined, so a
// seed would give different data on libstdc++ and libc++. Tested in tests/dataset/random_test.cc.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace loom::data {

using Rng = std::mt19937_64;

// SplitMix64 (Steele et al. 2014): derives independent seeds for separate streams (split, epochs,
// chain parameters, samples) from one user seed, so nearby seeds do not give correlated streams.
uint64_t mix_seed(uint64_t seed, uint64_t stream);

// Uniform integer in [0, bound) by rejection (no modulo bias); bound > 0.
uint64_t uniform_below(Rng& rng, uint64_t bound);

// Uniform double in the open interval (0, 1): 53 random bits, offset by half a step so that
// log(u) is always finite.
double uniform_open01(Rng& rng);

// Standard normal by Box-Muller (one of the pair is used; simplicity over speed).
double standard_normal(Rng& rng);

// log of a Gamma(alpha, 1) variate (Marsaglia & Tsang 2000; alpha < 1 boosted by
// Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha)). Returned in log space because for tiny alpha the
// variate underflows double (U^(1/alpha) with alpha = 1e-3 is ~1e-300 or less).
double log_gamma_variate(Rng& rng, double alpha);

// A Dirichlet(alpha, ..., alpha) draw of size k: normalised gamma variates, normalised in log space
// (log-sum-exp) so that the largest entry is exact even when alpha is tiny.
std::vector<double> dirichlet_symmetric(Rng& rng, double alpha, int64_t k);

// In-place Fisher-Yates (Knuth, TAOCP vol. 2, Algorithm P) shuffle.
template <typename T>
void shuffle_in_place(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

}  // namespace loom::data
