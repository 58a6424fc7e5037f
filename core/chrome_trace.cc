// Chrome trace JSON: see chrome_trace.h.
#include "core/chrome_trace.h"

#include <algorithm>

namespace loom::core {

nlohmann::json chrome_trace_json(const std::vector<TraceSpan>& spans) {
  nlohmann::json events = nlohmann::json::array();
  std::vector<std::string> tracks;
  for (const TraceSpan& e : spans) {
    auto it = std::find(tracks.begin(), tracks.end(), e.track);
    const int64_t tid = it == tracks.end() ? static_cast<int64_t>(tracks.size())
                                           : static_cast<int64_t>(it - tracks.begin());
    if (it == tracks.end()) {
      tracks.push_back(e.track);
      events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 0}, {"tid", tid},
                        {"args", {{"name", e.track}}}});
    }
    events.push_back({{"name", e.name}, {"ph", "X"}, {"pid", 0}, {"tid", tid},
                      {"ts", e.start_s * 1e6}, {"dur", e.duration_s * 1e6},
                      {"args", {{"stage", e.stage}}}});
  }
  return {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
}

}  // namespace loom::core
