// Chrome trace (the JSON Perfetto and chrome://tracing open) of one training iteration: named
// spans on named tracks. Written by `loom simulate --trace` (the simulated iteration,
// simulator/step_time.h) and by `loom train --trace` / `loom run --trace` (the measured one,
// trainer/parallel_run.h) with the same span and track names, so both open side by side.
// Tested in tests/core/chrome_trace_test.cc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace loom::core {

struct TraceSpan {
  std::string name;   // "forward mb3 chunk1", "dp gradient reduction", "optimizer", ...
  std::string track;  // "stage 1 compute", "stage 1 tp comm", "stage 1 pp comm", "stage 1 dp comm"
  int64_t stage = 0;
  double start_s = 0;
  double duration_s = 0;
};

// {"traceEvents": [a thread_name record per track, in first-use order, then one complete
// ("X") event per span, times in microseconds], "displayTimeUnit": "ms"}.
nlohmann::json chrome_trace_json(const std::vector<TraceSpan>& spans);

}  // namespace loom::core
