// Trainer: see trainer.h. Checkpoint save / load / rollback live in trainer_checkpoint.cc.
#include "trainer/trainer.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <algorithm>
#include <csignal>
#include <fstream>
#include <sstream>
#include <limits>

#include <fmt/format.h>
#include <omp.h>

#include "core/model_io.h"
#include "dataset/random.h"

namespace loom::train {

namespace {

int64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

}  // namespace

nlohmann::json TrainSummary::to_json() const {
  nlohmann::json j = {{"first_step", first_step},
                      {"last_step", last_step},
                      {"final_loss", final_loss},
                      {"mean_step_time_s", mean_step_time_s},
                      {"tokens_per_s", tokens_per_s},
                      {"skipped", skipped},
                      {"rollbacks", rollbacks},
                      {"state_bytes", state_bytes},
                      {"workspace_bytes", workspace_bytes},
                      {"peak_rss_bytes", peak_rss_bytes}};
  if (validation_loss >= 0.0) j["validation_loss"] = validation_loss;
  if (peak_device_bytes > 0) j["peak_device_bytes"] = peak_device_bytes;
  if (!phase_seconds.empty()) j["phase_seconds"] = phase_seconds;
  if (!attention_kernels.empty()) j["attention_kernels"] = attention_kernels;
  if (!attention_detail.empty()) j["attention_detail"] = attention_detail;
  nlohmann::json losses = nlohmann::json::array();  // per iteration, first_step on
  for (const StepRecord& r : records) losses.push_back(r.loss);
  j["losses"] = losses;
  if (!ranks.empty()) {
    nlohmann::json per_rank = nlohmann::json::array();
    for (size_t r = 0; r < ranks.size(); ++r) {
      const RankBytes& b = ranks[r];
      per_rank.push_back({{"rank", r},
                          {"state_bytes", b.state_bytes},
                          {"workspace_bytes", b.workspace_bytes},
                          {"last_iteration_s",
                           {{"compute", b.compute_s}, {"pp_transfers", b.p2p_s},
                            {"dp_reduction", b.dp_s}, {"optimizer", b.optimizer_s},
                            {"waiting", b.wait_s}}}});
    }
    j["ranks"] = per_rank;
  }
  return j;
}

Trainer::Trainer(const TrainConfig& cfg, const core::ModelSpec& spec, std::ostream* out)
    : cfg_(cfg), out_(out), guard_(cfg.guard), rng_(cfg.seed) {
  model_ = std::make_unique<Transformer<float>>(spec, cfg.recompute);
  if (cfg_.optim.decay_steps <= 0) cfg_.optim.decay_steps = cfg_.steps;
  optim_ = std::make_unique<AdamW>(model_->layout(), cfg_.optim);
  params_.assign(model_->layout().total(), 0.f);
  grads_.assign(model_->layout().total(), 0.f);
  loss_spike_injection(cfg_, &spike_steps_, &spike_factor_);
}

core::Result<std::unique_ptr<Trainer>> Trainer::create(const TrainConfig& cfg,
                                                       std::ostream* out) {
  LOOM_RETURN_IF_ERROR(validate_train_config(cfg));
  LOOM_ASSIGN_OR_RETURN(core::ModelSpec spec, resolve_model(cfg));
  if (spec.position == core::PositionKind::kLearned && cfg.seq > spec.max_seq_len) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--seq {} exceeds the {} learned positions of model {}", cfg.seq,
                       spec.max_seq_len, spec.name);
  }
  if (cfg.threads > 0) omp_set_num_threads(static_cast<int>(cfg.threads));
  std::unique_ptr<Trainer> t(new Trainer(cfg, spec, out));
  LOOM_ASSIGN_OR_RETURN(t->data_, open_batch_source(cfg, spec));
  if (!cfg.log.empty()) {
    auto f = std::make_unique<std::ofstream>(cfg.log, cfg.resume ? std::ios::app : std::ios::trunc);
    if (!*f) {
      return core::error(core::ErrorCode::kIo, "--log {}: cannot open for writing", cfg.log);
    }
    t->log_ = std::move(f);
  }
  t->init_weights();
  return t;
}

core::Result<std::unique_ptr<BatchSource>> open_batch_source(const TrainConfig& cfg,
                                                             const core::ModelSpec& spec) {
  if (cfg.synthetic) return make_synthetic_source(spec.vocab_size, cfg.seq, cfg.seed);
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<BatchSource> data,
                        open_dataset_source(cfg.data, cfg.seq, cfg.seed, cfg.train_fraction));
  if (data->max_token() >= spec.vocab_size) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--data {} holds token id {} but model {} has a vocabulary of {} "
                       "(ids 0..{}); prepare the data with the model's tokenizer",
                       cfg.data, data->max_token(), spec.name, spec.vocab_size,
                       spec.vocab_size - 1);
  }
  return data;
}

void init_weights(const ParamLayout& layout, int64_t num_layers, double init_std,
                  std::mt19937_64& rng, float* params) {
  const double residual_std = init_std / std::sqrt(2.0 * std::max<int64_t>(1, num_layers));
  for (const ParamInfo& p : layout.params()) {
    float* w = params + p.offset;
    for (int64_t i = 0; i < p.size; ++i) {
      switch (p.init) {
        case InitKind::kNormal:
          w[i] = static_cast<float>(init_std * data::standard_normal(rng));
          break;
        case InitKind::kNormalResidual:
          w[i] = static_cast<float>(residual_std * data::standard_normal(rng));
          break;
        case InitKind::kOnes: w[i] = 1.f; break;
        case InitKind::kZeros: w[i] = 0.f; break;
      }
    }
  }
}

void Trainer::init_weights() {
  train::init_weights(model_->layout(), spec().num_layers, cfg_.init_std, rng_, params_.data());
}

core::Status Trainer::train_iteration(StepRecord* rec) {
  const auto t0 = std::chrono::steady_clock::now();
  std::fill(grads_.begin(), grads_.end(), 0.f);
  const int64_t micro = cfg_.gbs / cfg_.mbs;
  const double tokens = static_cast<double>(cfg_.gbs * cfg_.seq);
  const float scale = static_cast<float>(1.0 / tokens);  // mean over the global batch
  double loss_sum = 0.0;
  for (int64_t m = 0; m < micro; ++m) {
    const std::vector<int32_t> batch = data_->next_batch(cfg_.mbs);
    consumed_samples_ += cfg_.mbs;
    loss_sum += model_->forward_backward(params_.data(), grads_.data(), batch.data(), cfg_.mbs,
                                         cfg_.seq, scale);
  }
  const int64_t step = step_ + 1;
  double loss = loss_sum / tokens;
  if (spike_steps_.count(step) > 0 && injected_.insert(step).second) {
    loss *= spike_factor_;
    for (float& g : grads_) g *= static_cast<float>(spike_factor_);
  }
  if (cfg_.debug_nan_grad_at == step && injected_.insert(-step).second) {
    grads_[grads_.size() / 2] = std::numeric_limits<float>::quiet_NaN();
  }
  const double gnorm = AdamW::grad_norm(grads_.data(), static_cast<int64_t>(grads_.size()));
  rec->step = step;
  rec->loss = loss;
  rec->grad_norm = gnorm;
  rec->lr = learning_rate(optim_->config(), step);
  std::string reason;
  const Verdict verdict = guard_.check(loss, gnorm, &reason);
  if (verdict == Verdict::kAccept) {
    const double clip = optim_->config().clip_grad;
    const double coef = clip > 0.0 && gnorm > clip ? clip / (gnorm + 1e-6) : 1.0;  // Megatron
    optim_->update(params_.data(), grads_.data(), rec->lr, coef);
  } else {
    rec->applied = false;
    rec->event = fmt::format("update skipped: {}", reason);
  }
  step_ = step;
  rec->step_time_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rec->tokens_per_s = tokens / rec->step_time_s;
  if (verdict == Verdict::kRollback) return rollback(rec, reason);
  return core::ok_status();
}

double Trainer::evaluate(int64_t max_batches) {
  const auto batches = data_->validation(cfg_.mbs, max_batches);
  double sum = 0.0;
  int64_t count = 0;
  for (const auto& b : batches) {
    const int64_t rows = static_cast<int64_t>(b.size()) / (cfg_.seq + 1);
    sum += model_->forward_loss(params_.data(), b.data(), rows, cfg_.seq);
    count += rows * cfg_.seq;
  }
  return count > 0 ? sum / static_cast<double>(count) : -1.0;
}

void Trainer::emit(const StepRecord& r) {
  const double mem_gib = static_cast<double>(peak_rss_bytes()) / (1 << 30);
  run_time_s_ += r.step_time_s;
  ++run_iterations_;
  const double eta_s = run_time_s_ / static_cast<double>(run_iterations_) *
                       static_cast<double>(std::max<int64_t>(0, cfg_.steps - r.step));
  if (!cfg_.quiet && out_ != nullptr) {
    *out_ << fmt::format(
        " iteration {:>8}/{:>8} | consumed samples: {:>10} | elapsed time per iteration (ms): "
        "{:.1f} | learning rate: {:.6E} | global batch size: {:>5} | lm loss: {:.6E} | grad "
        "norm: {:.3f} | tokens/s: {:.0f} | peak RSS GiB: {:.2f} | ETA {:.0f} s{}\n",
        r.step, cfg_.steps, consumed_samples_, r.step_time_s * 1e3, r.lr, cfg_.gbs, r.loss,
        r.grad_norm, r.tokens_per_s, mem_gib, eta_s, r.event.empty() ? "" : " | " + r.event);
    out_->flush();
  }
  if (log_) {
    nlohmann::json j = {{"step", r.step},           {"loss", r.loss},
                        {"lr", r.lr},               {"grad_norm", r.grad_norm},
                        {"step_time_s", r.step_time_s}, {"tokens_per_s", r.tokens_per_s},
                        {"applied", r.applied},     {"consumed_samples", consumed_samples_},
                        {"peak_rss_gib", mem_gib}};
    if (!r.event.empty()) j["event"] = r.event;
    *log_ << j.dump() << "\n";
    log_->flush();
  }
}

core::Status Trainer::run(TrainSummary* summary) {
  if (cfg_.resume) {
    std::string from;
    LOOM_RETURN_IF_ERROR(load_latest(false, &from));
    if (out_ != nullptr) *out_ << from << "\n";
  }
  summary->first_step = step_ + 1;
  double time_sum = 0.0;
  int64_t timed = 0;
  int64_t last_saved = -1;
  while (step_ < cfg_.steps) {
    StepRecord rec;
    LOOM_RETURN_IF_ERROR(train_iteration(&rec));
    if (!rec.applied) ++summary->skipped;
    if (rec.rolled_back) ++summary->rollbacks;
    if (!summary->records.empty()) {  // the process's first iteration includes warm-up
      time_sum += rec.step_time_s;
      ++timed;
    }
    if (!cfg_.save.empty() && cfg_.save_interval > 0 && step_ % cfg_.save_interval == 0 &&
        rec.applied) {
      LOOM_RETURN_IF_ERROR(save("interval"));
      last_saved = step_;
      rec.event += rec.event.empty() ? "checkpoint saved" : "; checkpoint saved";
    }
    emit(rec);
    summary->records.push_back(rec);
    if (cfg_.eval_interval > 0 && step_ % cfg_.eval_interval == 0 && out_ != nullptr &&
        !cfg_.quiet) {
      *out_ << fmt::format(" validation loss at iteration {}: {:.6E}\n", step_,
                           evaluate(cfg_.eval_batches));
    }
    if (cfg_.debug_kill_at == step_) std::raise(SIGKILL);
  }
  if (!cfg_.save.empty() && last_saved != step_) LOOM_RETURN_IF_ERROR(save("end of run"));
  summary->last_step = step_;
  if (!summary->records.empty()) summary->final_loss = summary->records.back().loss;
  summary->validation_loss = evaluate(cfg_.eval_batches);
  summary->mean_step_time_s = timed > 0 ? time_sum / static_cast<double>(timed)
                              : summary->records.empty() ? 0.0
                                                         : summary->records.back().step_time_s;
  summary->tokens_per_s =
      summary->mean_step_time_s > 0 ? cfg_.gbs * cfg_.seq / summary->mean_step_time_s : 0.0;
  summary->state_bytes = static_cast<int64_t>(params_.size() * 4 * sizeof(float));
  summary->workspace_bytes = model_->workspace_high_water_bytes();
  summary->peak_rss_bytes = peak_rss_bytes();
  return core::ok_status();
}

}  // namespace loom::train
