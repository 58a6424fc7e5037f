// Pipeline schedules (trainer/pipeline_schedule.h) checked by running every rank's action list
// against the pipeline's data dependencies with buffered sends (the communicator's contract):
// a forward of virtual stage v needs v - 1's forward of the same micro-batch, a backward needs
// its own forward and v + 1's backward. A schedule that deadlocks stops making progress here.
// Also: every (chunk, micro-batch) runs exactly one forward and one backward, and the
// micro-batches in flight on a rank stay within 1F1B's bound (pp - rank for vpp 1).
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <tuple>
#include <vector>

#include "trainer/pipeline_schedule.h"

namespace loom::train {
namespace {

struct Outcome {
  bool completed = false;
  std::vector<int64_t> max_in_flight;  // per rank
};

Outcome simulate(core::PipelineSchedule kind, int64_t pp, int64_t vpp, int64_t m) {
  std::vector<std::vector<PipelineAction>> lists;
  for (int64_t r = 0; r < pp; ++r) lists.push_back(pipeline_schedule(kind, pp, vpp, m, r).value());
  const int64_t stages = pp * vpp;
  std::set<std::tuple<bool, int64_t, int64_t>> done;  // (forward, virtual stage, micro-batch)
  std::vector<size_t> next(pp, 0);
  Outcome out;
  out.max_in_flight.assign(pp, 0);
  std::vector<int64_t> in_flight(pp, 0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int64_t r = 0; r < pp; ++r) {
      while (next[r] < lists[r].size()) {
        const PipelineAction& a = lists[r][next[r]];
        const int64_t v = a.chunk * pp + r;
        const bool ready = a.forward
                               ? (v == 0 || done.count({true, v - 1, a.microbatch}))
                               : (done.count({true, v, a.microbatch}) &&
                                  (v == stages - 1 || done.count({false, v + 1, a.microbatch})));
        if (!ready) break;
        EXPECT_TRUE(done.insert({a.forward, v, a.microbatch}).second) << "repeated action";
        in_flight[r] += a.forward ? 1 : -1;
        out.max_in_flight[r] = std::max(out.max_in_flight[r], in_flight[r]);
        ++next[r];
        progress = true;
      }
    }
  }
  out.completed = done.size() == static_cast<size_t>(2 * stages * m);
  for (int64_t r = 0; r < pp; ++r) out.completed = out.completed && next[r] == lists[r].size();
  return out;
}

TEST(PipelineSchedule, OneFOneBCompletesWithinItsMemoryBound) {
  for (int64_t pp : {1, 2, 3, 4, 8}) {
    for (int64_t m : {1, 2, 3, 8, 16}) {
      const Outcome o = simulate(core::PipelineSchedule::k1F1B, pp, 1, m);
      EXPECT_TRUE(o.completed) << "pp " << pp << " m " << m;
      for (int64_t r = 0; r < pp; ++r)
        EXPECT_LE(o.max_in_flight[r], std::min(pp - r, m)) << "pp " << pp << " m " << m << " rank " << r;
    }
  }
}

TEST(PipelineSchedule, GPipeHoldsEveryMicroBatch) {
  const Outcome o = simulate(core::PipelineSchedule::kGPipe, 4, 1, 8);
  EXPECT_TRUE(o.completed);
  for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(o.max_in_flight[r], 8);
}

TEST(PipelineSchedule, InterleavedCompletes) {
  for (int64_t pp : {2, 4}) {
    for (int64_t vpp : {2, 3}) {
      for (int64_t m : {pp, 2 * pp, 4 * pp}) {
        const Outcome o = simulate(core::PipelineSchedule::k1F1B, pp, vpp, m);
        EXPECT_TRUE(o.completed) << "pp " << pp << " vpp " << vpp << " m " << m;
        // Megatron-LM's bound: its warm-up forwards, 2 (pp - rank - 1) + (vpp - 1) pp, plus the
        // steady state's one; all m vpp when m == pp (the schedule is then all forwards first).
        for (int64_t r = 0; r < pp; ++r) {
          const int64_t bound = m == pp ? m * vpp : std::min(m * vpp, 2 * (pp - r - 1) + (vpp - 1) * pp + 1);
          EXPECT_LE(o.max_in_flight[r], bound) << "pp " << pp << " vpp " << vpp << " m " << m << " rank " << r;
        }
      }
    }
  }
}

TEST(PipelineSchedule, InterleavingNeedsMicroBatchesInGroupsOfPp) {
  auto r = pipeline_schedule(core::PipelineSchedule::k1F1B, 4, 2, 6, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("multiple of pp (4)"), std::string::npos);
  EXPECT_FALSE(pipeline_schedule(core::PipelineSchedule::kGPipe, 2, 2, 4, 0).ok());
}

}  // namespace
}  // namespace loom::train
