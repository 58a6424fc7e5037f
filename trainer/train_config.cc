// TrainConfig validation and its JSON form: see train_config.h.
#include "trainer/train_config.h"

#include <sstream>

#include "comm/bootstrap.h"
#include "core/model_io.h"

namespace loom::train {

namespace {

// Writes every field under its JSON key (the resolved config stored in checkpoints and logs).
struct JsonWriter {
  nlohmann::json& out;
  void text(const char* key, const char*, const char*, std::string& v) { out[key] = v; }
  void flag(const char* key, const char*, const char*, bool& v) { out[key] = v; }
  void flag_inverted(const char* key, const char*, const char*, bool& v) { out[key] = v; }
  void integer(const char* key, const char*, const char*, int64_t& v) { out[key] = v; }
  void unsigned_integer(const char* key, const char*, const char*, uint64_t& v) { out[key] = v; }
  void real(const char* key, const char*, const char*, double& v) { out[key] = v; }
  void recompute(const char* key, const char*, const char*, core::Recompute& v) {
    out[key] = core::to_string(v);
  }
  void hidden_integer(const char* key, const char*, int64_t& v) { out[key] = v; }
  void hidden_text(const char* key, const char*, std::string& v) { out[key] = v; }
};

core::Status positive(const char* flag, int64_t v) {
  if (v > 0) return core::ok_status();
  return core::error(core::ErrorCode::kInvalidArgument, "{} is {}; it must be positive", flag, v);
}

}  // namespace

core::Result<core::ModelSpec> resolve_model(const TrainConfig& c) {
  if (c.model_spec) return *c.model_spec;
  return core::load_model(c.model);
}

nlohmann::json train_config_to_json(const TrainConfig& c) {
  nlohmann::json out = nlohmann::json::object();
  TrainConfig copy = c;
  JsonWriter w{out};
  visit_train_fields(copy, w);
  return out;
}

core::Status validate_train_config(const TrainConfig& c) {
  if (c.model.empty() && !c.model_spec) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--model is required (a preset name such as tiny-llama, a preset YAML "
                       "or a Hugging Face config.json)");
  }
  if (c.data.empty() == !c.synthetic) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "give exactly one of --data PREFIX and --synthetic (got --data '{}'{})",
                       c.data, c.synthetic ? " and --synthetic" : "");
  }
  LOOM_RETURN_IF_ERROR(positive("--steps", c.steps));
  LOOM_RETURN_IF_ERROR(positive("--mbs", c.mbs));
  LOOM_RETURN_IF_ERROR(positive("--gbs", c.gbs));
  LOOM_RETURN_IF_ERROR(positive("--seq", c.seq));
  if (c.gbs % c.mbs != 0) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--gbs {} is not a multiple of --mbs {} (one process: gbs = mbs x "
                       "gradient-accumulation steps)",
                       c.gbs, c.mbs);
  }
  if (!(c.optim.lr > 0.0)) {
    return core::error(core::ErrorCode::kInvalidArgument, "--lr is {}; it must be positive",
                       c.optim.lr);
  }
  if (c.optim.min_lr_ratio < 0.0 || c.optim.min_lr_ratio > 1.0) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--min-lr-ratio is {}; allowed: 0 to 1", c.optim.min_lr_ratio);
  }
  if (c.optim.beta1 < 0.0 || c.optim.beta1 >= 1.0 || c.optim.beta2 < 0.0 ||
      c.optim.beta2 >= 1.0) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--adam-beta1 {} / --adam-beta2 {}: each must be in [0, 1)",
                       c.optim.beta1, c.optim.beta2);
  }
  if (c.train_fraction <= 0.0 || c.train_fraction > 1.0) {
    return core::error(core::ErrorCode::kInvalidArgument, "--split is {}; allowed: (0, 1]",
                       c.train_fraction);
  }
  if (c.resume && c.save.empty()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--resume needs --save DIR (the directory holding the checkpoints)");
  }
  if (!(c.comm_timeout_s > 0)) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--comm-timeout {}: must be a positive number of seconds", c.comm_timeout_s);
  }
  if (c.bootstrap != "auto") {
    auto method = comm::parse_bootstrap_method(c.bootstrap);
    if (!method.ok()) {
      return core::error(core::ErrorCode::kInvalidArgument, "--bootstrap: {} (or auto)",
                         method.status().message());
    }
  }
  if (c.save_interval < 0 || c.keep_last < 1) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--save-interval {} must be >= 0 and --keep-last {} >= 1",
                       c.save_interval, c.keep_last);
  }
  if (!c.debug_loss_spike_at.empty()) {
    const auto colon = c.debug_loss_spike_at.find(':');
    const bool ok = colon != std::string::npos && colon > 0 &&
                    c.debug_loss_spike_at.find_first_not_of("0123456789,") >= colon &&
                    c.debug_loss_spike_at.find_first_not_of("0123456789.eE+-", colon + 1) ==
                        std::string::npos &&
                    colon + 1 < c.debug_loss_spike_at.size();
    if (!ok) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--debug-loss-spike-at '{}': expected STEP[,STEP...]:FACTOR, e.g. 30:10",
                         c.debug_loss_spike_at);
    }
  }
  return core::ok_status();
}

void loss_spike_injection(const TrainConfig& c, std::set<int64_t>* steps, double* factor) {
  steps->clear();
  *factor = 1.0;
  const std::string& spikes = c.debug_loss_spike_at;
  const auto colon = spikes.find(':');
  if (colon == std::string::npos) return;
  *factor = std::stod(spikes.substr(colon + 1));
  std::istringstream list(spikes.substr(0, colon));
  for (std::string item; std::getline(list, item, ',');) {
    if (!item.empty()) steps->insert(std::stoll(item));
  }
}

}  // namespace loom::train
