// Trainer checkpoints: what a checkpoint holds (weights, Adam moments, the step, the samples
// consumed, the data loader's position, the spike guard's window, the RNG, the resolved config
// and the model spec), loading it back exactly, and the rollback of the spike guard.
// The atomic on-disk format (manifest, CRC-32C, marker written last) is checkpoint/'s.
#include <sstream>
#include <unordered_map>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/export_checkpoint.h"
#include "core/model_io.h"
#include "trainer/checkpoint_model.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/trainer.h"

namespace loom::train {

namespace {

constexpr const char* kFormat = "loom-train-v1";

std::string spec_yaml(const core::ModelSpec& spec) {
  YAML::Emitter e;
  e << core::model_to_yaml(spec);
  return e.c_str();
}

std::vector<ckpt::Tensor> flat_to_tensors(const ParamLayout& layout, const float* flat,
                                          const std::string& prefix) {
  std::vector<ckpt::Tensor> out;
  out.reserve(layout.params().size());
  for (const ParamInfo& p : layout.params()) {
    out.push_back(ckpt::make_f32_tensor(prefix + p.name, p.shape, flat + p.offset));
  }
  return out;
}

core::Status tensors_to_flat(const ParamLayout& layout, const std::vector<ckpt::Tensor>& ts,
                             const std::string& prefix, const std::string& origin, float* flat) {
  std::unordered_map<std::string, const ckpt::Tensor*> by_name;
  for (const auto& t : ts) by_name[t.name] = &t;
  for (const ParamInfo& p : layout.params()) {
    auto it = by_name.find(prefix + p.name);
    if (it == by_name.end()) {
      return core::error(core::ErrorCode::kInvalidArgument, "{}: tensor {} is missing", origin,
                         prefix + p.name);
    }
    if (it->second->shape != p.shape) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "{}: tensor {} has shape {}, the model needs {}", origin, prefix + p.name,
                         ckpt::shape_string(it->second->shape), ckpt::shape_string(p.shape));
    }
    const std::vector<float> v = ckpt::as_f32(*it->second);
    std::copy(v.begin(), v.end(), flat + p.offset);
  }
  return core::ok_status();
}

}  // namespace

nlohmann::json trainer_checkpoint_meta(const TrainConfig& cfg, const core::ModelSpec& spec,
                                       const TrainerState& state, const std::string& why,
                                       const char* format) {
  return {{"format", format},
          {"reason", why},
          {"step", state.step},
          {"consumed_samples", state.consumed_samples},
          {"adam_updates", state.adam_updates},
          {"data_state", state.data_state},
          {"guard_state", state.guard_state},
          {"rng", state.rng},
          {"config", train_config_to_json(cfg)},
          {ckpt::kModelYamlKey, spec_yaml(spec)}};
}

core::Status save_trainer_state(const TrainConfig& cfg, const core::ModelSpec& spec,
                                const TrainerState& state, const std::string& why) {
  const ParamLayout layout(spec);
  const auto total = static_cast<std::size_t>(layout.total());
  if (state.params.size() != total || state.exp_avg.size() != total ||
      state.exp_avg_sq.size() != total) {
    return core::error(core::ErrorCode::kInternal,
                       "saving a checkpoint: {} parameters, {} / {} Adam moments; model '{}' has {}",
                       state.params.size(), state.exp_avg.size(), state.exp_avg_sq.size(),
                       spec.name, total);
  }
  ckpt::CheckpointData d;
  d.step = state.step;
  d.meta = trainer_checkpoint_meta(cfg, spec, state, why, kFormat);
  d.shards[ckpt::kModelShard] = flat_to_tensors(layout, state.params.data(), "");
  auto opt = flat_to_tensors(layout, state.exp_avg.data(), "exp_avg.");
  auto sq = flat_to_tensors(layout, state.exp_avg_sq.data(), "exp_avg_sq.");
  opt.insert(opt.end(), std::make_move_iterator(sq.begin()), std::make_move_iterator(sq.end()));
  d.shards["optimizer"] = std::move(opt);
  return ckpt::save_checkpoint(cfg.save, d, static_cast<int>(cfg.keep_last))
      .with_context(fmt::format("saving the checkpoint of iteration {} in --save {}", state.step,
                                cfg.save));
}

core::Result<TrainerState> load_trainer_state(const TrainConfig& cfg, const core::ModelSpec& spec,
                                              std::vector<std::string>* warnings,
                                              std::string* origin) {
  auto loaded = ckpt::load_latest_checkpoint(cfg.save, warnings);
  if (!loaded.ok()) return loaded.status();
  const ckpt::CheckpointData& d = *loaded;
  *origin = fmt::format("checkpoint {}/{}", cfg.save, ckpt::checkpoint_dir_name(d.step));
  const std::string format = d.meta.value("format", "");
  if (format != kFormat && format != kShardedFormat) {
    return core::error(core::ErrorCode::kInvalidArgument, "{}: format '{}', expected '{}' or '{}'",
                       *origin, format, kFormat, kShardedFormat);
  }
  if (d.meta.value(ckpt::kModelYamlKey, "") != spec_yaml(spec)) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "{} was trained with a different model than --model {}:\n{}", *origin,
                       cfg.model, d.meta.value(ckpt::kModelYamlKey, ""));
  }
  const int64_t seq = d.meta.at("config").value("seq", int64_t{0});
  if (seq != cfg.seq) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "{} was trained with --seq {}; this run asks for --seq {}", *origin, seq,
                       cfg.seq);
  }
  const ParamLayout layout(spec);
  TrainerState st;
  const auto total = static_cast<std::size_t>(layout.total());
  st.params.assign(total, 0.f);
  st.exp_avg.assign(total, 0.f);
  st.exp_avg_sq.assign(total, 0.f);
  if (format == kShardedFormat) {
    for (auto [prefix, flat] : {std::pair{"", &st.params}, {"exp_avg.", &st.exp_avg},
                                {"exp_avg_sq.", &st.exp_avg_sq}}) {
      LOOM_RETURN_IF_ERROR(assemble_sharded(d, layout, prefix, *origin, flat->data()));
    }
  } else {
    for (const char* shard : {ckpt::kModelShard, "optimizer"}) {
      if (d.shards.count(shard) == 0) {
        return core::error(core::ErrorCode::kInvalidArgument, "{}: shard {} is missing", *origin,
                           shard);
      }
    }
    LOOM_RETURN_IF_ERROR(
        tensors_to_flat(layout, d.shards.at(ckpt::kModelShard), "", *origin, st.params.data()));
    const auto& opt = d.shards.at("optimizer");
    LOOM_RETURN_IF_ERROR(tensors_to_flat(layout, opt, "exp_avg.", *origin, st.exp_avg.data()));
    LOOM_RETURN_IF_ERROR(tensors_to_flat(layout, opt, "exp_avg_sq.", *origin, st.exp_avg_sq.data()));
  }
  st.step = d.step;
  st.adam_updates = d.meta.at("adam_updates").get<int64_t>();
  st.consumed_samples = d.meta.at("consumed_samples").get<int64_t>();
  st.data_state = d.meta.at("data_state");
  st.guard_state = d.meta.at("guard_state");
  st.rng = d.meta.at("rng").get<std::string>();
  return st;
}

core::Status Trainer::save(const std::string& why) {
  TrainerState st;
  st.step = step_;
  st.consumed_samples = consumed_samples_;
  st.adam_updates = optim_->updates();
  st.data_state = data_->state();
  st.guard_state = guard_.state();
  std::ostringstream rng;
  rng << rng_;
  st.rng = rng.str();
  st.params = params_;
  st.exp_avg = optim_->exp_avg();
  st.exp_avg_sq = optim_->exp_avg_sq();
  return save_trainer_state(cfg_, spec(), st, why);
}

core::Status Trainer::load_latest(bool keep_data_position, std::string* loaded_from) {
  std::vector<std::string> warnings;
  std::string origin;
  auto loaded = load_trainer_state(cfg_, spec(), &warnings, &origin);
  for (const auto& w : warnings) {
    if (out_ != nullptr) *out_ << "warning: " << w << "\n";
  }
  if (!loaded.ok()) {
    if (loaded.status().code() == core::ErrorCode::kNotFound && !keep_data_position) {
      *loaded_from = fmt::format("no complete checkpoint in {}: starting from iteration 0",
                                 cfg_.save);
      return core::ok_status();
    }
    return loaded.status();
  }
  TrainerState& st = *loaded;
  params_ = std::move(st.params);
  optim_->exp_avg() = std::move(st.exp_avg);
  optim_->exp_avg_sq() = std::move(st.exp_avg_sq);
  optim_->set_updates(st.adam_updates);
  guard_.restore(st.guard_state);
  std::istringstream rng(st.rng);
  rng >> rng_;
  step_ = st.step;
  loaded_samples_ = st.consumed_samples;
  if (!keep_data_position) {
    consumed_samples_ = st.consumed_samples;
    LOOM_RETURN_IF_ERROR(data_->restore(st.data_state).with_context(origin));
  }
  *loaded_from = fmt::format("resumed from {} (iteration {}, {} samples consumed)", origin,
                             st.step, st.consumed_samples);
  return core::ok_status();
}

core::Status Trainer::rollback(StepRecord* rec, const std::string& reason) {
  guard_.reset_consecutive();
  if (cfg_.save.empty() || ckpt::list_checkpoints(cfg_.save).empty()) {
    rec->event = fmt::format("update skipped: {}; no checkpoint to roll back to (--save)", reason);
    return core::ok_status();
  }
  const int64_t samples_now = consumed_samples_;
  const int64_t failed_step = step_;
  std::string from;
  LOOM_RETURN_IF_ERROR(load_latest(true, &from));
  guard_.reset_consecutive();
  rec->rolled_back = true;
  // The data position stays where it is: the batches drawn since the checkpoint -- those that
  // caused the spikes among them -- are skipped (PaLM's practice).
  rec->event = fmt::format(
      "update skipped: {}; rolled back from iteration {} to {}; the {} samples drawn since are "
      "skipped",
      reason, failed_step, step_, samples_now - loaded_samples_);
  return core::ok_status();
}

core::Result<std::vector<ckpt::Tensor>> checkpoint_model_tensors(const ckpt::CheckpointData& d,
                                                                 const core::ModelSpec& spec) {
  if (d.meta.value("format", "") != kShardedFormat) {
    const auto model = d.shards.find(ckpt::kModelShard);
    if (model == d.shards.end()) {
      return core::error(core::ErrorCode::kInvalidArgument, "{}: shard {} is missing", d.dir,
                         ckpt::kModelShard);
    }
    return model->second;
  }
  const ParamLayout layout(spec);
  std::vector<float> flat(static_cast<size_t>(layout.total()), 0.f);
  LOOM_RETURN_IF_ERROR(assemble_sharded(d, layout, "", d.dir, flat.data()));
  return flat_to_tensors(layout, flat.data(), "");
}

core::Result<CheckpointModel> load_checkpoint_model(const std::string& path,
                                                    std::vector<std::string>* warnings) {
  // "model*": the weights only -- the one "model" shard, or a sharded checkpoint's
  // model-t<T>-p<P> files (sharded_checkpoint.h).
  auto loaded = ckpt::load_checkpoint_at(path, warnings, {std::string(ckpt::kModelShard) + "*"});
  if (!loaded.ok()) return loaded.status().with_context("--checkpoint " + path);
  const ckpt::CheckpointData& d = *loaded;
  const std::string format = d.meta.value("format", "");
  if (format != kFormat && format != kShardedFormat) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--checkpoint {}: not a Loom training checkpoint (format '{}', expected "
                       "'{}' or '{}')",
                       path, format, kFormat, kShardedFormat);
  }
  CheckpointModel m;
  LOOM_ASSIGN_OR_RETURN(m.spec, ckpt::spec_from_checkpoint_meta(d.meta, d.dir));
  const ParamLayout layout(m.spec);
  m.params.assign(layout.total(), 0.f);
  if (format == kShardedFormat) {
    LOOM_RETURN_IF_ERROR(assemble_sharded(d, layout, "", d.dir, m.params.data()));
  } else {
    LOOM_RETURN_IF_ERROR(
        tensors_to_flat(layout, d.shards.at(ckpt::kModelShard), "", d.dir, m.params.data()));
  }
  m.config = d.meta.value("config", nlohmann::json::object());
  m.step = d.step;
  return m;
}

}  // namespace loom::train
