// Helpers for the communicator tests: run one function per rank on its own thread, and the
// inputs whose fp32 sum depends on the order of addition.
#pragma once

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/thread_comm.h"

namespace loom::comm::test {

// Runs body(rank, comm) for every rank of a fresh thread world of `n` ranks and joins them.
inline void run_thread_world(int n, const std::function<void(int, Communicator&)>& body,
                             std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  std::vector<std::unique_ptr<Communicator>> world = make_thread_world(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    world[r]->set_timeout(timeout);
    threads.emplace_back([&, r] { body(r, *world[r]); });
  }
  for (auto& t : threads) t.join();
}

// Element i of rank r's input (count elements per rank). Element 0 follows 1e8, 1, -1e8, 1, ...:
// in fp32 (24-bit significand, ulp(1e8) = 8) the rank-order sum is ((1e8 + 1) - 1e8) + 1 = 1,
// while e.g. (1 + 1) + (1e8 - 1e8) = 2, so only the rank order gives the reference's bits.
template <typename T>
T test_value(int r, int64_t i) {
  if (i == 0) return r % 2 == 0 ? (r % 4 == 0 ? T(1e8) : T(-1e8)) : T(1);
  return T(0.1) * T(r + 1) + T(0.37) * T(i) - T(0.013) * T(i * i % 7);
}

// The serial reference: contributions added in rank order.
template <typename T>
std::vector<T> serial_sum(int n, int64_t count, int64_t offset = 0) {
  std::vector<T> sum(count, T(0));
  for (int64_t i = 0; i < count; ++i) {
    sum[i] = test_value<T>(0, offset + i);
    for (int r = 1; r < n; ++r) sum[i] += test_value<T>(r, offset + i);
  }
  return sum;
}

}  // namespace loom::comm::test
