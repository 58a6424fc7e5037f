// The tensor x pipeline x data-parallel trainer: see parallel_trainer.h.
#include "trainer/parallel_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include <fmt/format.h>

#include "trainer/pipeline_schedule.h"

namespace loom::train {

namespace {

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

core::Status unsupported(const char* field, const std::string& value, const char* why) {
  return core::error(core::ErrorCode::kInvalidArgument,
                     "layout field '{}' = {}: not run by the parallel trainer ({})", field, value,
                     why);
}

}  // namespace

core::Status ParallelTrainer::check_layout(const core::Layout& layout) {
  if (layout.sp && layout.tp < 2) {
    return unsupported("sp", "true", "sequence parallelism splits over tensor-parallel ranks: tp > 1");
  }
  if (layout.sp && (layout.mbs * layout.seq) % layout.tp != 0) {
    const std::string why = fmt::format("a micro-batch's mbs x seq = {} tokens must split over tp {}",
                                        layout.mbs * layout.seq, layout.tp);
    return unsupported("sp", "true", why.c_str());
  }
  if (layout.zero > 3 || layout.zero < 0) {
    return unsupported("zero", std::to_string(layout.zero), "allowed: 0, 1, 2, 3");
  }
  if (layout.zero >= 2 && layout.pp > 1) {
    return unsupported("zero", std::to_string(layout.zero),
                       "ZeRO-2 and 3 reduce-scatter each micro-batch's gradients, which "
                       "pipelining does not finish one at a time; use zero 1 with pp > 1, as "
                       "DeepSpeed does");
  }
  if (layout.vpp > 1 && layout.pp == 1) {
    return unsupported("vpp", std::to_string(layout.vpp), "interleaving needs pp > 1");
  }
  return core::ok_status();
}

core::Result<std::unique_ptr<ParallelTrainer>> ParallelTrainer::create(
    const core::ModelSpec& spec, const core::Layout& layout, const OptimizerConfig& optim,
    const comm::ProcessGroups* groups, const std::vector<float>& init) {
  if (groups == nullptr || !groups->tp || !groups->pp || !groups->dp) {
    return core::error(core::ErrorCode::kInternal, "parallel trainer without its process groups");
  }
  if (groups->tp->size() != layout.tp || groups->pp->size() != layout.pp ||
      groups->dp->size() != layout.dp) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "process groups tp {} pp {} dp {} do not match the layout {}",
                       groups->tp->size(), groups->pp->size(), groups->dp->size(),
                       layout.summary());
  }
  LOOM_RETURN_IF_ERROR(check_layout(layout));
  if (static_cast<int64_t>(layout.partition.size()) != layout.pp * layout.vpp) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "layout field 'partition' has {} entries, pp x vpp = {} needed (resolve "
                       "the layout first)",
                       layout.partition.size(), layout.pp * layout.vpp);
  }
  const ParamLayout full(spec);
  if (static_cast<int64_t>(init.size()) != full.total()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "initial weights: {} values, model '{}' has {} parameters", init.size(),
                       spec.name, full.total());
  }
  if (spec.pad_vocab_size_to > 0 && spec.padded_vocab(layout.tp) % layout.tp != 0) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--tp {}: the padded vocabulary {} of model '{}' does not split into {} "
                       "equal parts",
                       layout.tp, spec.padded_vocab(layout.tp), spec.name, layout.tp);
  }
  std::unique_ptr<ParallelTrainer> t(new ParallelTrainer(spec, layout, optim, groups));
  if (t->zero_) {
    std::vector<float> local(static_cast<size_t>(t->count_)), zeros(local.size(), 0.f);
    t->scatter_full(init, local.data());
    t->zero_->scatter(local.data(), zeros.data(), zeros.data());
  } else {
    t->scatter_full(init, t->params_.data());
  }
  return t;
}

ModelShard ParallelTrainer::chunk_shard(const core::Layout& layout, int64_t tp_rank,
                                        int64_t pp_rank, int64_t chunk) {
  const int64_t stages = layout.pp * layout.vpp, v = chunk * layout.pp + pp_rank;
  int64_t first = 0;
  for (int64_t s = 0; s < v; ++s) first += layout.partition[s];
  return ModelShard{.tp_rank = tp_rank,
                    .tp = layout.tp,
                    .sp = layout.sp,
                    .first_layer = first,
                    .end_layer = first + layout.partition[v],
                    .embedding = v == 0,
                    .head = v == stages - 1};
}

ParallelTrainer::ParallelTrainer(const core::ModelSpec& spec, const core::Layout& layout,
                                 const OptimizerConfig& optim, const comm::ProcessGroups* groups)
    : spec_(spec), layout_(layout), groups_(groups), optim_cfg_(optim), full_layout_(spec) {
  const int64_t pp = layout.pp, vpp = layout.vpp, stages = pp * vpp;
  const int64_t pp_rank = groups->coords.pp;
  std::vector<const ParamLayout*> parts;
  for (int64_t c = 0; c < vpp; ++c) {
    chunks_.push_back(std::make_unique<Transformer<float>>(
        spec, layout.recompute, chunk_shard(layout, groups->coords.tp, pp_rank, c),
        groups->tp.get()));
    if (c > 0) chunks_.back()->share_scratch(*chunks_[0]);  // one chunk runs at a time
    chunks_.back()->free_released_slots(vpp > 1);
    parts.push_back(&chunks_.back()->layout());
  }
  rank_layout_ = ParamLayout::concat(parts);
  for (int64_t c = 0, offset = 0; c < vpp; ++c) {
    chunk_offset_.push_back(offset);
    offset += chunks_[c]->layout().total();
  }
  for (const ParamInfo& p : rank_layout_.params()) {  // ranges counted in the gradient norm
    if (p.duplicate) continue;
    if (!unique_.empty() && unique_.back().second == p.offset) {
      unique_.back().second += p.size;
    } else {
      unique_.emplace_back(p.offset, p.offset + p.size);
    }
  }
  if (spec.tied_embeddings && stages > 1) {  // Megatron's embedding group: first and last stage
    if (pp_rank == 0) tied_offset_ = chunk_offset_[0] + chunks_[0]->layout().embed;
    if (pp_rank == pp - 1) tied_offset_ = chunk_offset_[vpp - 1] + chunks_[vpp - 1]->layout().lm_head;
    tied_size_ = spec.padded_vocab(layout.tp) / layout.tp * spec.hidden_size;
  }
  count_ = rank_layout_.total();
  if (layout.zero >= 2) {  // pp == 1 (check_layout): one chunk, its units sharded over dp
    zero_ = std::make_unique<ZeroShards>(*chunks_[0], optim, groups->dp.get(),
                                         static_cast<int>(layout.zero));
    chunks_[0]->set_param_source(zero_.get());
    return;
  }
  const int64_t dp = layout.dp;
  padded_ = round_up(count_, dp);
  if (layout.zero >= 1) {
    shard_begin_ = padded_ / dp * groups->coords.dp;
    shard_end_ = shard_begin_ + padded_ / dp;
  } else {
    shard_end_ = padded_;
  }
  params_.assign(padded_, 0.f);
  grads_.assign(padded_, 0.f);
  optim_ = std::make_unique<AdamW>(rank_layout_, optim, shard_begin_, shard_end_);
}

core::Result<ParallelTrainer::Step> ParallelTrainer::train_step(
    const std::vector<std::vector<int32_t>>& micro_batches, int64_t mbs, int64_t seq, double lr) {
  LOOM_ASSIGN_OR_RETURN(const Step s, compute_step(micro_batches, mbs, seq));
  LOOM_RETURN_IF_ERROR(apply_step(lr, s.grad_norm));
  return s;
}

core::Result<ParallelTrainer::Step> ParallelTrainer::compute_step(
    const std::vector<std::vector<int32_t>>& micro_batches, int64_t mbs, int64_t seq) {
  const int64_t m = static_cast<int64_t>(micro_batches.size()), dp = layout_.dp;
  if (m == 0 || m % dp != 0) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "a global batch of {} micro-batches does not split over {} data-parallel "
                       "ranks (gbs / mbs must be a multiple of dp)",
                       m, dp);
  }
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    if (static_cast<int64_t>(micro_batches[i].size()) != mbs * (seq + 1)) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "micro-batch {}: {} tokens, expected mbs x (seq + 1) = {}", i,
                         micro_batches[i].size(), mbs * (seq + 1));
    }
  }
  const int64_t per_rank = m / dp;
  const double tokens = static_cast<double>(m * mbs * seq);
  using clock = std::chrono::steady_clock;
  step_start_ = clock::now();
  events_.clear();
  std::fill(grads_.begin(), grads_.end(), 0.f);
  if (zero_) zero_->zero_grads();
  double loss_sum = 0;
  LOOM_RETURN_IF_ERROR(run_pipeline(micro_batches, groups_->coords.dp * per_rank, per_rank, mbs,
                                    seq, static_cast<float>(1.0 / tokens), &loss_sum));
  LOOM_RETURN_IF_ERROR(sync_tied_embedding());
  // The loss lives on the last stage (every tensor-parallel rank there holds the same sum).
  LOOM_RETURN_IF_ERROR(groups_->pp->all_reduce(&loss_sum, 1, comm::ReduceOp::kSum));
  LOOM_RETURN_IF_ERROR(groups_->dp->all_reduce(&loss_sum, 1, comm::ReduceOp::kSum));

  Step out;
  out.loss = loss_sum / tokens;
  comm::Communicator& dpc = *groups_->dp;
  if (zero_) {  // the gradients are in the shares already (reduce-scattered unit by unit)
    double squares = zero_->grad_sum_of_squares(unique_);
    LOOM_RETURN_IF_ERROR(dpc.all_reduce(&squares, 1, comm::ReduceOp::kSum));
    LOOM_RETURN_IF_ERROR(groups_->tp->all_reduce(&squares, 1, comm::ReduceOp::kSum));
    out.grad_norm = std::sqrt(squares);
    return out;
  }
  // ZeRO-1: the shard's summed gradients land in place, at the start of grads_.
  const float* shard = grads_.data();
  const auto reduce_start = clock::now();
  if (layout_.zero == 0) {
    LOOM_RETURN_IF_ERROR(dpc.all_reduce(grads_.data(), padded_, comm::ReduceOp::kSum));
  } else {
    LOOM_RETURN_IF_ERROR(dpc.reduce_scatter(grads_.data(), grads_.data(), padded_ / dp));
  }
  if (dp > 1) record(Event::kDpReduction, 0, 0, reduce_start);
  // Sum of squares of the tensors this rank owns, within its optimizer shard.
  double squares = 0;
  for (const auto& [begin, end] : unique_) {
    const int64_t b = std::max(begin, shard_begin_), e = std::min(end, shard_end_);
    if (b < e) squares += AdamW::grad_sum_of_squares(shard + (b - shard_begin_), e - b);
  }
  if (layout_.zero >= 1) LOOM_RETURN_IF_ERROR(dpc.all_reduce(&squares, 1, comm::ReduceOp::kSum));
  LOOM_RETURN_IF_ERROR(groups_->tp->all_reduce(&squares, 1, comm::ReduceOp::kSum));
  LOOM_RETURN_IF_ERROR(groups_->pp->all_reduce(&squares, 1, comm::ReduceOp::kSum));
  out.grad_norm = std::sqrt(squares);
  return out;
}

core::Status ParallelTrainer::apply_step(double lr, double grad_norm, double gradient_scale) {
  const auto optimizer_start = std::chrono::steady_clock::now();
  const double clip = optim_cfg_.clip_grad;
  const double coefficient =
      gradient_scale * (clip > 0 && grad_norm > clip ? clip / (grad_norm + 1e-6) : 1.0);
  if (zero_) {
    LOOM_RETURN_IF_ERROR(zero_->update(lr, coefficient));
  } else {
    optim_->update(params_.data() + shard_begin_, grads_.data(), lr, coefficient);
    if (layout_.zero >= 1) {
      LOOM_RETURN_IF_ERROR(groups_->dp->all_gather(params_.data() + shard_begin_, params_.data(),
                                                   padded_ / layout_.dp));
    }
  }
  record(Event::kOptimizer, 0, 0, optimizer_start);  // with ZeRO 1-3 the weights' all-gather
  return core::ok_status();
}

core::Result<double> ParallelTrainer::evaluate(const std::vector<std::vector<int32_t>>& batches,
                                               int64_t mbs, int64_t seq) {
  const int64_t pp = layout_.pp, stages = pp * layout_.vpp, rank = groups_->coords.pp;
  message_floats_ = boundary_floats(mbs, seq);
  std::vector<float> x_in(static_cast<size_t>(message_floats_));
  double loss_sum = 0;
  int64_t local = 0;  // this data-parallel rank's batches, counted as micro-batch tags
  for (size_t i = groups_->coords.dp; i < batches.size(); i += layout_.dp, ++local) {
    if (static_cast<int64_t>(batches[i].size()) != mbs * (seq + 1)) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "validation batch {}: {} tokens, expected mbs x (seq + 1) = {}", i,
                         batches[i].size(), mbs * (seq + 1));
    }
    for (int64_t c = 0; c < layout_.vpp; ++c) {  // this rank's virtual stages, in order
      const int64_t v = c * pp + rank;
      if (v > 0) LOOM_RETURN_IF_ERROR(recv_activation(true, v, local, x_in.data()));
      Transformer<float>& model = *chunks_[c];
      const float* p = zero_ ? nullptr : params_.data() + chunk_offset_[c];
      double loss = 0;
      LOOM_ASSIGN_OR_RETURN(const int slot,
                            model.stage_forward(p, nullptr, batches[i].data(), mbs, seq,
                                                v > 0 ? x_in.data() : nullptr, 0.f, &loss,
                                                /*with_grads=*/false));
      if (v < stages - 1) {
        LOOM_RETURN_IF_ERROR(send_activation(true, v + 1, local, model.stage_output(slot)));
      }
      model.release_slot(slot);
      loss_sum += loss;
    }
  }
  LOOM_RETURN_IF_ERROR(groups_->pp->all_reduce(&loss_sum, 1, comm::ReduceOp::kSum));
  LOOM_RETURN_IF_ERROR(groups_->dp->all_reduce(&loss_sum, 1, comm::ReduceOp::kSum));
  const double tokens = static_cast<double>(batches.size()) * static_cast<double>(mbs * seq);
  return tokens > 0 ? loss_sum / tokens : -1.0;
}

int64_t ParallelTrainer::boundary_floats(int64_t mbs, int64_t seq) const {
  return mbs * seq * spec_.hidden_size / (layout_.sp ? layout_.tp : 1);
}

void ParallelTrainer::record(Event kind, int64_t microbatch, int64_t chunk,
                             std::chrono::steady_clock::time_point since) {
  if (!tracing_) return;
  const auto now = std::chrono::steady_clock::now();
  events_.push_back({kind, microbatch, chunk,
                     std::chrono::duration<double>(since - step_start_).count(),
                     std::chrono::duration<double>(now - since).count()});
}

core::Status ParallelTrainer::run_pipeline(const std::vector<std::vector<int32_t>>& micro_batches,
                                           int64_t first, int64_t count, int64_t mbs, int64_t seq,
                                           float grad_scale, double* loss_sum) {
  const int64_t pp = layout_.pp, stages = pp * layout_.vpp, rank = groups_->coords.pp;
  LOOM_ASSIGN_OR_RETURN(const std::vector<PipelineAction> actions,
                        pipeline_schedule(layout_.schedule, pp, layout_.vpp, count, rank));
  message_floats_ = boundary_floats(mbs, seq);
  // The received activation, the received gradient and the gradient to send (pipelines only).
  const int64_t buffer = stages > 1 ? message_floats_ : 0;
  std::vector<float> x_in(buffer), dy(buffer), dx(buffer);
  p2p_buffer_bytes_ = 3 * buffer * static_cast<int64_t>(sizeof(float));
  std::map<std::pair<int64_t, int64_t>, int> slot_of;  // (chunk, micro-batch) -> slot
  for (const PipelineAction& a : actions) {
    const int64_t v = a.chunk * pp + rank;
    Transformer<float>& model = *chunks_[a.chunk];
    const float* p = params_.data() + chunk_offset_[a.chunk];
    float* g = grads_.data() + chunk_offset_[a.chunk];
    // Timed from after the receive: waiting for the neighbour is the pipeline's bubble.
    if (a.forward) {
      if (v > 0) LOOM_RETURN_IF_ERROR(recv_activation(true, v, a.microbatch, x_in.data()));
      const auto start = std::chrono::steady_clock::now();
      const std::vector<int32_t>& tokens = micro_batches[first + a.microbatch];
      double loss = 0;
      LOOM_ASSIGN_OR_RETURN(const int slot,
                            model.stage_forward(p, g, tokens.data(), mbs, seq,
                                                v > 0 ? x_in.data() : nullptr, grad_scale, &loss));
      *loss_sum += loss;
      record(Event::kForward, a.microbatch, v, start);
      if (v < stages - 1) {
        const auto sent = std::chrono::steady_clock::now();
        LOOM_RETURN_IF_ERROR(send_activation(true, v + 1, a.microbatch, model.stage_output(slot)));
        record(Event::kP2pForward, a.microbatch, v, sent);
      }
      slot_of[{a.chunk, a.microbatch}] = slot;
      continue;
    }
    if (v < stages - 1) LOOM_RETURN_IF_ERROR(recv_activation(false, v, a.microbatch, dy.data()));
    const auto start = std::chrono::steady_clock::now();
    LOOM_RETURN_IF_ERROR(model.stage_backward(slot_of.at({a.chunk, a.microbatch}), p, g,
                                              v < stages - 1 ? dy.data() : nullptr,
                                              v > 0 ? dx.data() : nullptr));
    record(Event::kBackward, a.microbatch, v, start);
    if (v > 0) {
      const auto sent = std::chrono::steady_clock::now();
      LOOM_RETURN_IF_ERROR(send_activation(false, v - 1, a.microbatch, dx.data()));
      record(Event::kP2pBackward, a.microbatch, v, sent);
    }
  }
  return core::ok_status();
}

// A message: (forward, receiving virtual stage, micro-batch) as three int64, then the
// activation (forward) or its gradient (backward), [mbs seq, h] fp32.
core::Status ParallelTrainer::send_activation(bool forward, int64_t to_stage, int64_t microbatch,
                                              const float* data) {
  const int64_t header[3] = {forward ? 1 : 0, to_stage, microbatch};
  std::vector<char> message(sizeof(header) + message_floats_ * sizeof(float));
  std::memcpy(message.data(), header, sizeof(header));
  std::memcpy(message.data() + sizeof(header), data, message_floats_ * sizeof(float));
  return groups_->pp->send(message.data(), static_cast<int64_t>(message.size()),
                           static_cast<int>(to_stage % layout_.pp));
}

core::Status ParallelTrainer::recv_activation(bool forward, int64_t stage, int64_t microbatch,
                                              float* data) {
  const auto key = std::make_tuple(forward, stage, microbatch);
  if (auto it = stash_.find(key); it != stash_.end()) {
    std::copy(it->second.begin(), it->second.end(), data);
    stash_.erase(it);
    return core::ok_status();
  }
  const int64_t stages = layout_.pp * layout_.vpp;
  const int64_t from_stage = forward ? stage - 1 : stage + 1;
  if (from_stage < 0 || from_stage >= stages) {
    return core::error(core::ErrorCode::kInternal, "no stage sends to stage {} ({})", stage,
                       forward ? "forward" : "backward");
  }
  const int peer = static_cast<int>(from_stage % layout_.pp);
  std::vector<char> message(3 * sizeof(int64_t) + message_floats_ * sizeof(float));
  for (;;) {  // messages for other (stage, micro-batch) pairs arriving first wait in the stash
    LOOM_RETURN_IF_ERROR(groups_->pp->recv(message.data(), static_cast<int64_t>(message.size()), peer));
    int64_t header[3];
    std::memcpy(header, message.data(), sizeof(header));
    const float* payload = reinterpret_cast<const float*>(message.data() + sizeof(header));
    const auto got = std::make_tuple(header[0] == 1, header[1], header[2]);
    if (got == key) {
      std::copy(payload, payload + message_floats_, data);
      return core::ok_status();
    }
    stash_[got].assign(payload, payload + message_floats_);
  }
}

core::Status ParallelTrainer::sync_tied_embedding() {
  if (tied_offset_ < 0) return core::ok_status();
  const int first = 0, last = static_cast<int>(layout_.pp - 1);
  const int peer = groups_->coords.pp == 0 ? last : first;
  const int64_t bytes = tied_size_ * static_cast<int64_t>(sizeof(float));
  std::vector<float> other(tied_size_);
  float* mine = grads_.data() + tied_offset_;
  LOOM_RETURN_IF_ERROR(groups_->pp->send(mine, bytes, peer));
  LOOM_RETURN_IF_ERROR(groups_->pp->recv(other.data(), bytes, peer));
  for (int64_t i = 0; i < tied_size_; ++i) mine[i] += other[i];  // a + b == b + a: same bits
  return core::ok_status();
}

}  // namespace loom::train
