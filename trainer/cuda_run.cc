// The CUDA training loop: see cuda_run.h.
#include "trainer/cuda_run.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <random>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "core/model_io.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/device_query.h"
#include "trainer/batch_source.h"
#include "trainer/cuda_data_parallel.h"
#include "trainer/cuda_transformer.h"
#include "trainer/guarded_steps.h"
#include "trainer/spike_guard.h"

namespace loom::train {

namespace {

core::Status refuse(const char* option, const char* why) {
  return core::error(core::ErrorCode::kInvalidArgument, "{}: not supported with --backend cuda ({})",
                     option, why);
}

}  // namespace

// One rank's training loop (the only one without data parallelism): `dp` null, rank 0 of 1.
core::Status run_cuda_rank(TrainConfig cfg, const std::string& attention, std::ostream* out,
                           TrainSummary* summary, CudaDataParallel* dp) {
  const int rank = dp != nullptr ? dp->rank : 0, world = dp != nullptr ? dp->world : 1;
  if (rank != 0) out = nullptr;  // rank 0 reports and writes the checkpoints
  LOOM_ASSIGN_OR_RETURN(core::ModelSpec spec, resolve_model(cfg));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<BatchSource> data, open_batch_source(cfg, spec));
  if (cfg.optim.decay_steps <= 0) cfg.optim.decay_steps = cfg.steps;
  LOOM_ASSIGN_OR_RETURN(const CudaTransformer::Attention kernels,
                        CudaTransformer::parse_attention(attention));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<CudaTransformer> model,
                        CudaTransformer::create(spec, cfg.recompute, kernels));
  summary->attention_kernels = CudaTransformer::attention_name(model->attention());
  if (!cfg.quiet && out != nullptr)
    *out << fmt::format("attention kernels: {}\n", summary->attention_kernels);
  // Every rank draws the same weights (fill.h: a pure function of seed and index).
  CudaTrainer trainer(std::move(model), cfg.optim, cfg.seed, cfg.init_std);
  if (dp != nullptr) trainer.set_reducer(dp->reducer.get());

  const int64_t micro = cfg.gbs / cfg.mbs;
  // Data parallelism: every rank draws the global batch and trains its contiguous share of the
  // micro-batches (as the CPU trainers' --dp does), so the run matches the one-GPU run's data.
  const int64_t share = micro / world;
  const double tokens = static_cast<double>(cfg.gbs * cfg.seq);
  // The spike guard and the debug injections, as in the CPU trainers (guarded_steps.h).
  GuardedSteps guarded(cfg);
  SpikeGuard& guard = guarded.guard();
  // Checkpoints: the CPU trainer's format (trainer_checkpoint.cc), with the guard's state; the
  // RNG is the seed's (the CPU trainer draws from it only to initialise weights).
  int64_t done = 0, consumed = 0;
  auto save = [&](const char* why) -> core::Status {
    if (rank != 0) return core::ok_status();  // the weights and moments are every rank's
    TrainerState st;
    st.step = done;
    st.consumed_samples = consumed;
    st.adam_updates = trainer.updates();
    st.data_state = data->state();
    st.guard_state = guard.state();
    std::ostringstream rng;
    rng << std::mt19937_64(cfg.seed);
    st.rng = rng.str();
    st.params = trainer.params();
    st.exp_avg = trainer.exp_avg();
    st.exp_avg_sq = trainer.exp_avg_sq();
    return save_trainer_state(cfg, spec, st, why);
  };
  // The latest checkpoint's weights, moments and step; the data position and the guard's
  // window too on a resume (a rollback skips the batches drawn since, as the CPU trainers do).
  auto load_latest = [&](bool with_data, std::string* origin) -> core::Result<bool> {
    std::vector<std::string> warnings;
    auto loaded = load_trainer_state(cfg, spec, &warnings, origin);
    for (const auto& w : warnings)
      if (out != nullptr) *out << "warning: " << w << "\n";
    if (!loaded.ok() && loaded.status().code() == core::ErrorCode::kNotFound) return false;
    if (!loaded.ok()) return loaded.status();
    trainer.restore(loaded->params, loaded->exp_avg, loaded->exp_avg_sq, loaded->adam_updates);
    if (with_data) {
      LOOM_RETURN_IF_ERROR(data->restore(loaded->data_state).with_context(*origin));
      if (!loaded->guard_state.is_null()) guard.restore(loaded->guard_state);
      consumed = loaded->consumed_samples;
    }
    done = loaded->step;
    return true;
  };
  if (cfg.resume) {
    std::string origin;
    LOOM_ASSIGN_OR_RETURN(const bool resumed, load_latest(true, &origin));
    if (resumed && out != nullptr) {
      *out << fmt::format("resumed from {} (iteration {}, {} samples consumed)\n", origin, done,
                          consumed);
    } else if (out != nullptr) {
      *out << fmt::format("no complete checkpoint in {}: starting from iteration 0\n", cfg.save);
    }
  }
  auto validation_loss = [&]() {
    double sum = 0;
    int64_t n = 0;
    for (const auto& b : data->validation(cfg.mbs, cfg.eval_batches)) {
      const int64_t rows = static_cast<int64_t>(b.size()) / (cfg.seq + 1);
      sum += trainer.eval_loss(b, rows, cfg.seq) * static_cast<double>(rows * cfg.seq);
      n += rows * cfg.seq;
    }
    return n > 0 ? sum / static_cast<double>(n) : -1.0;
  };

  size_t free0 = 0, total = 0;
  LOOM_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  size_t min_free = free0;
  double timed_s = 0, attention_s = 0, loss_s = 0;
  int64_t timed = 0, last_saved = -1;
  summary->first_step = done + 1;
  TrainSummary::RankBytes last_phases;
  while (done < cfg.steps) {
    const int64_t step = done + 1;
    std::vector<std::vector<int32_t>> batches;
    for (int64_t m = 0; m < micro; ++m) {
      std::vector<int32_t> b = data->next_batch(cfg.mbs);
      if (m / share == rank) batches.push_back(std::move(b));
    }
    consumed += cfg.gbs;
    const double lr = learning_rate(cfg.optim, step);
    const auto t0 = std::chrono::steady_clock::now();
    CudaTrainer::Step s = trainer.compute_step(batches, cfg.mbs, cfg.seq);
    const GuardedSteps::Judged judged = guarded.judge(step, &s.loss, &s.grad_norm);
    const Verdict verdict = judged.verdict;
    const double gradient_scale = judged.gradient_scale;
    if (verdict == Verdict::kAccept) trainer.apply_step(lr, s.grad_norm, gradient_scale);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // The iteration by phase (CUDA events), as the parallel trainer reports its ranks': the rest
    // of the wall time is the host's (token copies, synchronisation, the guard).
    const double optimizer_s = verdict == Verdict::kAccept ? trainer.last_optimizer_s() : 0.0;
    last_phases = {0, 0, s.compute_s, 0, 0, optimizer_s,
                   std::max(0.0, dt - s.compute_s - optimizer_s)};
    size_t free_now = 0;
    LOOM_CUDA_CHECK(cudaMemGetInfo(&free_now, &total));
    min_free = std::min(min_free, free_now);
    if (step > summary->first_step) {  // the first iteration pays for cuBLASLt's algorithm choices
      timed_s += dt;
      attention_s += s.phases.attention_s;
      loss_s += s.phases.lm_head_loss_s;
      ++timed;
    }
    if (summary->attention_detail.empty()) {
      summary->attention_detail = trainer.model().attention_detail();
      if (!summary->attention_detail.empty() && !cfg.quiet && out != nullptr)
        *out << fmt::format("attention: {}\n", summary->attention_detail);
    }
    StepRecord rec = StepRecord::of(step, s.loss, lr, s.grad_norm, dt, tokens);
    done = step;
    LOOM_RETURN_IF_ERROR(guarded.record(
        judged, !cfg.save.empty(), [&](std::string* origin) { return load_latest(false, origin); },
        &done, &rec, summary));
    if (!cfg.save.empty() && cfg.save_interval > 0 && done % cfg.save_interval == 0 &&
        rec.applied) {
      LOOM_RETURN_IF_ERROR(save("interval"));
      last_saved = done;
      rec.event += rec.event.empty() ? "checkpoint saved" : "; checkpoint saved";
    }
    summary->add(rec);
    if (!cfg.quiet && out != nullptr) {
      *out << fmt::format(
          " iteration {:>6}/{:>6} | lm loss {:.6E} | learning rate {:.3E} | grad norm {:.3f} | "
          "elapsed time per iteration (ms): {:.1f} (attention {:.1f}, LM head + loss {:.1f}) | "
          "tokens/s {:.0f} | device memory used {:.2f} GiB{}\n",
          step, cfg.steps, s.loss, lr, s.grad_norm, 1e3 * dt, 1e3 * s.phases.attention_s,
          1e3 * s.phases.lm_head_loss_s, tokens / dt,
          static_cast<double>(total - free_now) / 1073741824.0,
          rec.event.empty() ? "" : " | " + rec.event);
    }
    if (cfg.eval_interval > 0 && done % cfg.eval_interval == 0 && !cfg.synthetic &&
        !cfg.quiet && out != nullptr) {
      *out << fmt::format(" validation loss at iteration {}: {:.6E}\n", done, validation_loss());
    }
  }
  if (!cfg.save.empty() && last_saved != done) LOOM_RETURN_IF_ERROR(save("end of run"));
  summary->mean_step_time_s = timed > 0 ? timed_s / timed : timed_s;
  if (timed > 0) {
    summary->phase_seconds["attention"] = attention_s / static_cast<double>(timed);
    summary->phase_seconds["lm_head_loss"] = loss_s / static_cast<double>(timed);
  }
  summary->tokens_per_s = summary->mean_step_time_s > 0 ? tokens / summary->mean_step_time_s : 0;
  summary->state_bytes = trainer.state_bytes();
  summary->workspace_bytes = trainer.activation_bytes();
  summary->peak_device_bytes = static_cast<int64_t>(total - min_free);
  last_phases.state_bytes = summary->state_bytes;
  last_phases.workspace_bytes = summary->workspace_bytes;
  summary->ranks = {last_phases};
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  summary->peak_rss_bytes = static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux: KiB
  if (!cfg.synthetic) summary->validation_loss = validation_loss();
  return core::ok_status();
}

core::Status run_cuda_training(const TrainConfig& given, const std::string& attention,
                               std::ostream* out, TrainSummary* summary, int64_t dp,
                               bool* reporting) {
  TrainConfig cfg = given;
  LOOM_RETURN_IF_ERROR(validate_train_config(cfg));
  if (reporting != nullptr) *reporting = true;
  if (cfg.debug_kill_at > 0) return refuse("--debug-kill-at", "the kill test runs on the CPU backend");
  const kernels::CudaDeviceList devices = kernels::query_cuda_devices();
  if (devices.devices.empty()) {
    return core::error(core::ErrorCode::kInvalidArgument, "--backend cuda: no CUDA device: {}",
                       devices.no_device_reason);
  }
  if (dp <= 0) return run_cuda_rank(cfg, attention, out, summary, nullptr);
  const int64_t micro = cfg.gbs / cfg.mbs;
  if (micro % dp != 0) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--dp {}: the {} micro-batches of an iteration (--gbs {} / --mbs {}) do not "
                       "split evenly over the data-parallel ranks",
                       dp, micro, cfg.gbs, cfg.mbs);
  }
  LOOM_ASSIGN_OR_RETURN(CudaDataParallel group,
                        open_cuda_data_parallel(dp, cfg.bootstrap, cfg.comm_timeout_s));
  if (group.device >= static_cast<int>(devices.devices.size())) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "rank {} ({} launch): local rank {} but this node has {} CUDA device{}",
                       group.rank, group.launcher, group.device, devices.devices.size(),
                       devices.devices.size() == 1 ? "" : "s");
  }
  LOOM_CUDA_CHECK(cudaSetDevice(group.device));
  if (reporting != nullptr) *reporting = group.rank == 0;
  if (group.rank == 0 && !cfg.quiet && out != nullptr) {
    *out << fmt::format("data parallel over {} GPU{} ({} launch), NCCL, gradients summed per "
                        "unit during the backward\n",
                        group.world, group.world == 1 ? "" : "s", group.launcher);
  }
  core::Status st = run_cuda_rank(cfg, attention, out, summary, &group);
  close_cuda_data_parallel(group);
  return st.ok() ? st : st.with_context(fmt::format("rank {}", group.rank));
}

}  // namespace loom::train
