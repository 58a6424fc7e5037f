// Data-parallel training with ZeRO 0-2: see data_parallel.h.
#include "trainer/data_parallel.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace loom::train {

namespace {

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace

core::Result<std::unique_ptr<DataParallelTrainer>> DataParallelTrainer::create(
    const core::ModelSpec& spec, core::Recompute recompute, const OptimizerConfig& optim,
    int zero_stage, comm::Communicator* dp, const std::vector<float>& init) {
  if (zero_stage < 0 || zero_stage > 2) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--zero {}: the data-parallel trainer runs ZeRO stages 0, 1 and 2", zero_stage);
  }
  if (dp == nullptr) {
    return core::error(core::ErrorCode::kInternal, "data-parallel trainer without a communicator");
  }
  const ParamLayout layout(spec);
  if (static_cast<int64_t>(init.size()) != layout.total()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "initial weights: {} values, model '{}' has {} parameters", init.size(),
                       spec.name, layout.total());
  }
  return std::unique_ptr<DataParallelTrainer>(
      new DataParallelTrainer(spec, recompute, optim, zero_stage, dp, init));
}

namespace {

int64_t shard_of(int64_t padded, const comm::Communicator& dp, bool begin) {
  const int64_t per = padded / dp.size();
  return per * (dp.rank() + (begin ? 0 : 1));
}

}  // namespace

DataParallelTrainer::DataParallelTrainer(const core::ModelSpec& spec, core::Recompute recompute,
                                         const OptimizerConfig& optim, int zero_stage,
                                         comm::Communicator* dp, const std::vector<float>& init)
    : model_(spec, recompute),
      dp_(dp),
      zero_(zero_stage),
      count_(model_.layout().total()),
      padded_(round_up(count_, dp->size())),
      shard_begin_(zero_stage == 0 ? 0 : shard_of(padded_, *dp, true)),
      shard_end_(zero_stage == 0 ? padded_ : shard_of(padded_, *dp, false)),
      optim_cfg_(optim),
      optim_(model_.layout(), optim, shard_begin_, shard_end_) {
  params_.assign(padded_, 0.f);
  std::copy(init.begin(), init.end(), params_.begin());
  grads_.assign(padded_, 0.f);
  if (zero_ >= 1) shard_grads_.assign(shard_end_ - shard_begin_, 0.f);
  if (zero_ == 2) staging_.assign(shard_end_ - shard_begin_, 0.f);
}

core::Result<DataParallelTrainer::Step> DataParallelTrainer::train_step(
    const std::vector<std::vector<int32_t>>& micro_batches, int64_t mbs, int64_t seq, double lr) {
  const int64_t m = static_cast<int64_t>(micro_batches.size()), dp = dp_->size();
  if (m == 0 || m % dp != 0) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "a global batch of {} micro-batches does not split over {} data-parallel "
                       "ranks (gbs / mbs must be a multiple of dp)",
                       m, dp);
  }
  const int64_t per_rank = m / dp, first = dp_->rank() * per_rank;
  const double tokens = static_cast<double>(m * mbs * seq);
  const float grad_scale = static_cast<float>(1.0 / tokens);
  std::fill(grads_.begin(), grads_.end(), 0.f);
  if (zero_ >= 1) std::fill(shard_grads_.begin(), shard_grads_.end(), 0.f);

  double loss_sum = 0;
  for (int64_t i = first; i < first + per_rank; ++i) {
    const auto& tokens_i = micro_batches[static_cast<size_t>(i)];
    if (static_cast<int64_t>(tokens_i.size()) != mbs * (seq + 1)) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "micro-batch {}: {} tokens, expected mbs x (seq + 1) = {}", i,
                         tokens_i.size(), mbs * (seq + 1));
    }
    loss_sum += model_.forward_backward(params_.data(), grads_.data(), tokens_i.data(), mbs, seq,
                                        grad_scale);
    if (zero_ == 2) {  // this micro-batch's gradients into the shard; the full buffer is free
      LOOM_RETURN_IF_ERROR(dp_->reduce_scatter(grads_.data(), staging_.data(), padded_ / dp));
      for (size_t j = 0; j < shard_grads_.size(); ++j) shard_grads_[j] += staging_[j];
      std::fill(grads_.begin(), grads_.end(), 0.f);
    }
  }
  LOOM_RETURN_IF_ERROR(dp_->all_reduce(&loss_sum, 1, comm::ReduceOp::kSum));

  Step out;
  out.loss = loss_sum / tokens;
  const double clip = optim_cfg_.clip_grad;
  auto coefficient = [&](double norm) { return clip > 0 && norm > clip ? clip / (norm + 1e-6) : 1.0; };
  if (zero_ == 0) {
    LOOM_RETURN_IF_ERROR(dp_->all_reduce(grads_.data(), padded_, comm::ReduceOp::kSum));
    out.grad_norm = AdamW::grad_norm(grads_.data(), count_);
    optim_.update(params_.data(), grads_.data(), lr, coefficient(out.grad_norm));
    return out;
  }
  if (zero_ == 1)
    LOOM_RETURN_IF_ERROR(dp_->reduce_scatter(grads_.data(), shard_grads_.data(), padded_ / dp));
  double squares = AdamW::grad_sum_of_squares(shard_grads_.data(), shard_end_ - shard_begin_);
  LOOM_RETURN_IF_ERROR(dp_->all_reduce(&squares, 1, comm::ReduceOp::kSum));
  out.grad_norm = std::sqrt(squares);
  optim_.update(params_.data() + shard_begin_, shard_grads_.data(), lr, coefficient(out.grad_norm));
  LOOM_RETURN_IF_ERROR(
      dp_->all_gather(params_.data() + shard_begin_, params_.data(), padded_ / dp));
  return out;
}

core::Status DataParallelTrainer::gather_moments(std::vector<float>* exp_avg,
                                                 std::vector<float>* exp_avg_sq) {
  for (auto [shard, full] : {std::pair{&optim_.exp_avg(), exp_avg}, {&optim_.exp_avg_sq(), exp_avg_sq}}) {
    full->assign(static_cast<size_t>(padded_), 0.f);
    if (zero_ == 0) {
      std::copy(shard->begin(), shard->end(), full->begin());
    } else {
      LOOM_RETURN_IF_ERROR(dp_->all_gather(shard->data(), full->data(), padded_ / dp_->size()));
    }
    full->resize(static_cast<size_t>(count_));
  }
  return core::ok_status();
}

core::Status DataParallelTrainer::restore(const std::vector<float>& params,
                                          const std::vector<float>& exp_avg,
                                          const std::vector<float>& exp_avg_sq, int64_t updates) {
  for (const auto* v : {&params, &exp_avg, &exp_avg_sq}) {
    if (static_cast<int64_t>(v->size()) != count_) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "restoring the data-parallel trainer: {} values for {} parameters",
                         v->size(), count_);
    }
  }
  std::fill(params_.begin(), params_.end(), 0.f);
  std::copy(params.begin(), params.end(), params_.begin());
  for (auto [full, shard] : {std::pair{&exp_avg, &optim_.exp_avg()}, {&exp_avg_sq, &optim_.exp_avg_sq()}}) {
    for (int64_t i = shard_begin_; i < shard_end_; ++i)
      (*shard)[static_cast<size_t>(i - shard_begin_)] = i < count_ ? (*full)[static_cast<size_t>(i)] : 0.f;
  }
  optim_.set_updates(updates);
  return core::ok_status();
}

std::vector<float> DataParallelTrainer::params() const {
  return std::vector<float>(params_.begin(), params_.begin() + count_);
}

int64_t DataParallelTrainer::state_bytes() const {
  const auto f = static_cast<int64_t>(sizeof(float));
  return f * static_cast<int64_t>(params_.size() + grads_.size() + shard_grads_.size() +
                                  staging_.size() + 2 * (shard_end_ - shard_begin_));
}

}  // namespace loom::train
