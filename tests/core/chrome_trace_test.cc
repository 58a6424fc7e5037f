// core::chrome_trace_json against the Chrome trace event format: one thread_name record per
// track (first use order, tid = that order), complete events in microseconds.
#include "core/chrome_trace.h"

#include <gtest/gtest.h>

namespace loom::core {
namespace {

TEST(ChromeTrace, TracksBecomeThreadsAndTimesMicroseconds) {
  const auto j = chrome_trace_json({{"forward mb0 chunk0", "stage 0 compute", 0, 0.001, 0.002},
                                    {"p2p forward mb0 chunk0", "stage 0 pp comm", 0, 0.003, 1e-4},
                                    {"optimizer", "stage 0 compute", 0, 0.01, 0.005}});
  const auto& ev = j.at("traceEvents");
  ASSERT_EQ(ev.size(), 5u);  // 2 tracks + 3 spans
  EXPECT_EQ(ev[0].at("ph"), "M");
  EXPECT_EQ(ev[0].at("args").at("name"), "stage 0 compute");
  EXPECT_EQ(ev[1].at("name"), "forward mb0 chunk0");
  EXPECT_DOUBLE_EQ(ev[1].at("ts").get<double>(), 1000.0);
  EXPECT_DOUBLE_EQ(ev[1].at("dur").get<double>(), 2000.0);
  EXPECT_EQ(ev[2].at("args").at("name"), "stage 0 pp comm");
  EXPECT_EQ(ev[3].at("tid"), 1);
  EXPECT_EQ(ev[4].at("tid"), 0) << "the optimizer shares the compute track";
  EXPECT_EQ(j.at("displayTimeUnit"), "ms");
}

}  // namespace
}  // namespace loom::core
