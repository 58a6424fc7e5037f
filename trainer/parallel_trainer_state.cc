// ParallelTrainer's state across layouts: the copies between the full model and a rank's flat
// buffer (by tensor name and slice), the shard and full state that checkpoints write, restoring a
// full state under any layout, and the bytes a rank holds. See parallel_trainer.h.
#include <algorithm>
#include <string>
#include <unordered_map>

#include "trainer/parallel_trainer.h"

namespace loom::train {

void ParallelTrainer::scatter_full(const std::vector<float>& full, float* local) const {
  std::unordered_map<std::string, const ParamInfo*> by_name;
  for (const ParamInfo& p : full_layout_.params()) by_name[p.name] = &p;
  for (const ParamInfo& p : rank_layout_.params()) {
    std::fill(local + p.offset, local + p.offset + p.size, 0.f);  // padding rows stay 0
    for_each_run(p, *by_name.at(p.name), [&](int64_t lo, int64_t fo, int64_t n) {
      std::copy(full.data() + fo, full.data() + fo + n, local + lo);
    });
  }
}

// Every rank writes the tensors it owns (not the duplicates) into a zero vector; summing over
// the tensor- and pipeline-parallel groups adds each element to zeros only, so it is exact.
core::Status ParallelTrainer::gather_full(const float* local, std::vector<float>* full) const {
  std::unordered_map<std::string, const ParamInfo*> by_name;
  for (const ParamInfo& p : full_layout_.params()) by_name[p.name] = &p;
  full->assign(static_cast<size_t>(full_layout_.total()), 0.f);
  for (const ParamInfo& p : rank_layout_.params()) {
    if (p.duplicate) continue;
    for_each_run(p, *by_name.at(p.name), [&](int64_t lo, int64_t fo, int64_t n) {
      std::copy(local + lo, local + lo + n, full->data() + fo);
    });
  }
  LOOM_RETURN_IF_ERROR(groups_->tp->all_reduce(full->data(), full_layout_.total(), comm::ReduceOp::kSum));
  return groups_->pp->all_reduce(full->data(), full_layout_.total(), comm::ReduceOp::kSum);
}

core::Status ParallelTrainer::shard_state(std::vector<float>* params, std::vector<float>* exp_avg,
                                          std::vector<float>* exp_avg_sq) {
  if (zero_) {
    using What = ZeroShards::What;
    for (auto [what, out] : {std::pair{What::kParams, params}, {What::kExpAvg, exp_avg},
                             {What::kExpAvgSq, exp_avg_sq}}) {
      LOOM_RETURN_IF_ERROR(zero_->gather(what, out));
    }
    return core::ok_status();
  }
  params->assign(params_.begin(), params_.begin() + count_);
  for (auto [shard, out] : {std::pair{&optim_->exp_avg(), exp_avg}, {&optim_->exp_avg_sq(), exp_avg_sq}}) {
    out->assign(static_cast<size_t>(padded_), 0.f);
    if (layout_.zero == 0) {
      std::copy(shard->begin(), shard->end(), out->begin());
    } else {
      LOOM_RETURN_IF_ERROR(groups_->dp->all_gather(shard->data(), out->data(), padded_ / layout_.dp));
    }
    out->resize(static_cast<size_t>(count_));
  }
  return core::ok_status();
}

core::Status ParallelTrainer::full_state(std::vector<float>* params, std::vector<float>* exp_avg,
                                         std::vector<float>* exp_avg_sq) {
  std::vector<float> p, m, v;
  LOOM_RETURN_IF_ERROR(shard_state(&p, &m, &v));
  LOOM_RETURN_IF_ERROR(gather_full(p.data(), params));
  LOOM_RETURN_IF_ERROR(gather_full(m.data(), exp_avg));
  return gather_full(v.data(), exp_avg_sq);
}

core::Status ParallelTrainer::restore(const std::vector<float>& params,
                                      const std::vector<float>& exp_avg,
                                      const std::vector<float>& exp_avg_sq, int64_t updates) {
  for (const auto* v : {&params, &exp_avg, &exp_avg_sq}) {
    if (static_cast<int64_t>(v->size()) != full_layout_.total()) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "restoring the parallel trainer: {} values for the {} parameters of '{}'",
                         v->size(), full_layout_.total(), spec_.name);
    }
  }
  if (zero_) {
    std::vector<float> p(static_cast<size_t>(count_)), m(p.size()), v(p.size());
    scatter_full(params, p.data());
    scatter_full(exp_avg, m.data());
    scatter_full(exp_avg_sq, v.data());
    zero_->scatter(p.data(), m.data(), v.data());
    zero_->set_updates(updates);
    return core::ok_status();
  }
  scatter_full(params, params_.data());
  std::vector<float> local(static_cast<size_t>(padded_), 0.f);
  for (auto [full, shard] : {std::pair{&exp_avg, &optim_->exp_avg()}, {&exp_avg_sq, &optim_->exp_avg_sq()}}) {
    scatter_full(*full, local.data());
    std::copy(local.begin() + shard_begin_, local.begin() + shard_end_, shard->begin());
  }
  optim_->set_updates(updates);
  return core::ok_status();
}

int64_t ParallelTrainer::state_bytes() const {
  if (zero_) return zero_->state_bytes() + zero_->gathered_high_water_bytes();
  const auto f = static_cast<int64_t>(sizeof(float));
  return f * static_cast<int64_t>(params_.size() + grads_.size() + 2 * (shard_end_ - shard_begin_));
}

int64_t ParallelTrainer::workspace_bytes() const {
  // The chunks share scratch and its tracking.
  return chunks_[0]->workspace_high_water_bytes() + p2p_buffer_bytes_;
}

}  // namespace loom::train
