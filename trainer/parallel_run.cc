// The parallel training loop: see parallel_run.h.
#include "trainer/parallel_run.h"

#include <omp.h>
#include <csignal>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <set>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "comm/launch_env.h"
#include "core/chrome_trace.h"
#include "comm/thread_comm.h"
#include "core/model_io.h"
#include "trainer/batch_source.h"
#include "comm/process_groups.h"
#include "trainer/parallel_trainer.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/guarded_steps.h"
#include "trainer/spike_guard.h"
#ifdef LOOM_WITH_MPI
#include "comm/mpi_comm.h"
#endif

namespace loom::train {

namespace {

core::Status refuse(const char* option, const char* why) {
  return core::error(core::ErrorCode::kInvalidArgument,
                     "{}: not supported with --tp/--pp/--dp/--zero ({})", option, why);
}

// The last iteration's events of one rank per pipeline stage (tp 0, dp 0), gathered to rank 0
// and written as a Chrome trace with the simulator's names (a collective over `world`).
core::Status write_trace(const std::string& path, const core::Layout& layout,
                         const ParallelTrainer& trainer, comm::Communicator& world) {
  using Event = ParallelTrainer::Event;
  const core::RankCoords me = core::rank_coords(layout, world.rank());
  // 6 per event: kind, micro-batch, virtual stage, the rank's pipeline stage, start, duration.
  constexpr size_t kFields = 6;
  std::vector<double> mine;
  if (me.tp == 0 && me.dp == 0) {
    for (const auto& e : trainer.last_step_events()) {
      mine.insert(mine.end(), {double(static_cast<int>(e.kind)), double(e.microbatch),
                               double(e.chunk), double(me.pp), e.start_s, e.duration_s});
    }
  }
  double count = static_cast<double>(mine.size());
  LOOM_RETURN_IF_ERROR(world.all_reduce(&count, 1, comm::ReduceOp::kMax));
  mine.resize(static_cast<size_t>(count), -1.0);  // padded to the longest list: kind -1
  std::vector<double> all(mine.size() * static_cast<size_t>(world.size()));
  LOOM_RETURN_IF_ERROR(world.all_gather(mine.data(), all.data(), static_cast<int64_t>(mine.size())));
  if (world.rank() != 0) return core::ok_status();
  std::vector<core::TraceSpan> spans;
  for (size_t i = 0; i + kFields <= all.size(); i += kFields) {
    if (all[i] < 0) continue;
    const auto kind = static_cast<Event>(static_cast<int>(all[i]));
    const auto mb = static_cast<int64_t>(all[i + 1]), chunk = static_cast<int64_t>(all[i + 2]);
    const auto stage = static_cast<int64_t>(all[i + 3]);
    const std::string on = fmt::format("stage {} ", stage);
    const std::string what = fmt::format("{} mb{} chunk{}",
                                         kind == Event::kForward || kind == Event::kP2pForward
                                             ? "forward" : "backward", mb, chunk);
    core::TraceSpan s;
    s.stage = stage;
    s.start_s = all[i + 4];
    s.duration_s = all[i + 5];
    switch (kind) {
      case Event::kForward:
      case Event::kBackward: s.name = what; s.track = on + "compute"; break;
      case Event::kP2pForward:
      case Event::kP2pBackward: s.name = "p2p " + what; s.track = on + "pp comm"; break;
      case Event::kDpReduction: s.name = "dp gradient reduction"; s.track = on + "dp comm"; break;
      case Event::kOptimizer: s.name = "optimizer"; s.track = on + "compute"; break;
    }
    spans.push_back(std::move(s));
  }
  std::ofstream f(path);
  if (!f) return core::error(core::ErrorCode::kIo, "--trace: cannot write '{}'", path);
  f << core::chrome_trace_json(spans).dump() << "\n";
  if (!f) return core::error(core::ErrorCode::kIo, "--trace: writing '{}' failed", path);
  return core::ok_status();
}

// One rank's loop; rank 0 reports.
core::Status run_rank(const TrainConfig& cfg, const core::ModelSpec& spec,
                      const core::Layout& layout, comm::Communicator* world, std::ostream* out,
                      TrainSummary* summary) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<BatchSource> data, open_batch_source(cfg, spec));
  const ParamLayout full(spec);
  std::vector<float> init(static_cast<size_t>(full.total()));
  std::mt19937_64 rng(cfg.seed);
  init_weights(full, spec.num_layers, cfg.init_std, rng, init.data());
  LOOM_ASSIGN_OR_RETURN(const comm::ProcessGroups groups,
                        comm::make_process_groups(*world, layout));
  LOOM_ASSIGN_OR_RETURN(auto trainer,
                        ParallelTrainer::create(spec, layout, cfg.optim, &groups, init));
  const bool report = world->rank() == 0;
  trainer->set_tracing(true);  // the phases of the last iteration (and --trace)
  const int64_t micro = cfg.gbs / cfg.mbs;
  const double tokens = static_cast<double>(cfg.gbs * cfg.seq);

  // The spike guard and the debug injections (guarded_steps.h): every rank judges the same loss
  // and gradient norm, so all skip, apply or roll back together.
  GuardedSteps guarded(cfg);
  SpikeGuard& guard = guarded.guard();

  // Checkpoints: sharded (sharded_checkpoint.h): each model-parallel shard writes its own
  // files, and any layout, or the single-process trainer, resumes them.
  int64_t done = 0, last_saved = -1;
  auto save = [&](const char* why) -> core::Status {
    TrainerState st;
    st.step = done;
    st.consumed_samples = done * cfg.gbs;
    st.adam_updates = trainer->updates();
    st.data_state = data->state();
    st.guard_state = guard.state();
    std::ostringstream rng_text;
    rng_text << std::mt19937_64(cfg.seed);
    st.rng = rng_text.str();
    LOOM_RETURN_IF_ERROR(
        save_sharded_trainer_state(cfg, spec, layout, *trainer, groups, *world, st, why));
    last_saved = done;
    return core::ok_status();
  };
  // The latest checkpoint's weights, moments and step; the data position too on a resume (a
  // rollback skips the batches drawn since, as the single-process trainer does).
  auto load_latest = [&](bool with_data, std::string* origin) -> core::Result<bool> {
    std::vector<std::string> warnings;
    auto loaded = load_trainer_state(cfg, spec, &warnings, origin);
    for (const auto& w : warnings)
      if (report && out != nullptr) *out << "warning: " << w << "\n";
    if (!loaded.ok() && loaded.status().code() == core::ErrorCode::kNotFound) return false;
    if (!loaded.ok()) return loaded.status();
    LOOM_RETURN_IF_ERROR(trainer->restore(loaded->params, loaded->exp_avg, loaded->exp_avg_sq,
                                          loaded->adam_updates));
    if (with_data) {
      LOOM_RETURN_IF_ERROR(data->restore(loaded->data_state).with_context(*origin));
      if (!loaded->guard_state.is_null()) guard.restore(loaded->guard_state);
    }
    done = loaded->step;
    return true;
  };
  if (cfg.resume) {
    std::string origin;
    LOOM_ASSIGN_OR_RETURN(const bool resumed, load_latest(true, &origin));
    if (resumed) {
      if (report && out != nullptr)
        *out << fmt::format("resumed from {} (iteration {}) on {}\n", origin, done,
                            layout.summary());
    } else if (report && out != nullptr) {
      *out << fmt::format("no complete checkpoint in {}: starting from iteration 0\n", cfg.save);
    }
  }
  auto validation_loss = [&]() -> core::Result<double> {
    return trainer->evaluate(data->validation(cfg.mbs, cfg.eval_batches), cfg.mbs, cfg.seq);
  };

  double timed_s = 0;
  int64_t timed = 0;
  summary->first_step = done + 1;
  while (done < cfg.steps) {
    const int64_t step = done + 1;
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::vector<int32_t>> batches;
    for (int64_t m = 0; m < micro; ++m) batches.push_back(data->next_batch(cfg.mbs));
    const double lr = learning_rate(cfg.optim, step);
    LOOM_ASSIGN_OR_RETURN(ParallelTrainer::Step s, trainer->compute_step(batches, cfg.mbs, cfg.seq));
    const GuardedSteps::Judged judged = guarded.judge(step, &s.loss, &s.grad_norm);
    const Verdict verdict = judged.verdict;
    const double gradient_scale = judged.gradient_scale;
    if (verdict == Verdict::kAccept)
      LOOM_RETURN_IF_ERROR(trainer->apply_step(lr, s.grad_norm, gradient_scale));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step > summary->first_step) {
      timed_s += dt;
      ++timed;
    }
    StepRecord rec = StepRecord::of(step, s.loss, lr, s.grad_norm, dt, tokens);
    done = step;
    LOOM_RETURN_IF_ERROR(guarded.record(
        judged, !cfg.save.empty(), [&](std::string* origin) { return load_latest(false, origin); },
        &done, &rec, summary));
    if (!cfg.save.empty() && cfg.save_interval > 0 && done % cfg.save_interval == 0 &&
        rec.applied) {
      LOOM_RETURN_IF_ERROR(save("interval"));
      rec.event += rec.event.empty() ? "checkpoint saved" : "; checkpoint saved";
    }
    summary->add(rec);
    if (report && !cfg.quiet && out != nullptr) {
      *out << fmt::format(
          " iteration {:>8}/{:>8} | consumed samples: {:>10} | elapsed time per iteration (ms): "
          "{:.1f} | learning rate: {:.6E} | global batch size: {:>5} | lm loss: {:.6E} | grad "
          "norm: {:.3f} | tokens/s: {:.0f}{}\n",
          step, cfg.steps, step * cfg.gbs, dt * 1e3, lr, cfg.gbs, s.loss, s.grad_norm,
          tokens / dt, rec.event.empty() ? "" : " | " + rec.event);
      out->flush();
    }
    if (cfg.eval_interval > 0 && done % cfg.eval_interval == 0) {
      LOOM_ASSIGN_OR_RETURN(const double v, validation_loss());
      if (report && !cfg.quiet && out != nullptr)
        *out << fmt::format(" validation loss at iteration {}: {:.6E}\n", done, v);
    }
    // Fault injection for the resume and hang tests: the last rank dies as kill -9 would kill
    // it, or stops answering (the others' next collective times out).
    const bool last_rank = world->rank() == world->size() - 1;
    if (cfg.debug_kill_at == step && last_rank) std::raise(SIGKILL);
    if (cfg.debug_hang_at == step && last_rank)
      std::this_thread::sleep_for(std::chrono::hours(24));
  }
  if (!cfg.save.empty() && last_saved != done) LOOM_RETURN_IF_ERROR(save("end of run"));
  LOOM_ASSIGN_OR_RETURN(summary->validation_loss, validation_loss());
  summary->mean_step_time_s = timed > 0 ? timed_s / static_cast<double>(timed)
                              : summary->records.empty() ? 0.0
                                                         : summary->records.back().step_time_s;
  summary->tokens_per_s = summary->mean_step_time_s > 0 ? tokens / summary->mean_step_time_s : 0;
  if (!cfg.trace.empty()) LOOM_RETURN_IF_ERROR(write_trace(cfg.trace, layout, *trainer, *world));
  summary->state_bytes = trainer->state_bytes();
  summary->workspace_bytes = trainer->workspace_bytes();
  // Every rank's training buffers (pipeline stages differ: the embedding, the head, the
  // activations 1F1B keeps in flight) and the phases of its last iteration, gathered for rank
  // 0's report.
  double phase[4] = {0, 0, 0, 0};  // compute, pipeline sends, DP reduction, optimizer
  for (const ParallelTrainer::TimedEvent& e : trainer->last_step_events()) {
    using Event = ParallelTrainer::Event;
    const int i = e.kind == Event::kForward || e.kind == Event::kBackward       ? 0
                  : e.kind == Event::kP2pForward || e.kind == Event::kP2pBackward ? 1
                  : e.kind == Event::kDpReduction                                ? 2
                                                                                 : 3;
    phase[i] += e.duration_s;
  }
  const double last_s = summary->records.empty() ? 0.0 : summary->records.back().step_time_s;
  constexpr int kFields = 7;
  const double mine[kFields] = {static_cast<double>(summary->state_bytes),
                                static_cast<double>(summary->workspace_bytes),
                                phase[0], phase[1], phase[2], phase[3],
                                std::max(0.0, last_s - phase[0] - phase[1] - phase[2] - phase[3])};
  std::vector<double> all(kFields * static_cast<size_t>(world->size()));
  LOOM_RETURN_IF_ERROR(world->all_gather(mine, all.data(), kFields));
  summary->ranks.clear();
  for (int r = 0; r < world->size(); ++r) {
    const double* f = all.data() + kFields * r;
    summary->ranks.push_back({static_cast<int64_t>(f[0]), static_cast<int64_t>(f[1]), f[2], f[3],
                              f[4], f[5], f[6]});
  }
  return core::ok_status();
}

int64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux: KiB
}

}  // namespace

core::Status run_parallel_training(const TrainConfig& given, const core::Layout& requested,
                                   std::ostream* out, TrainSummary* summary, bool* reporting,
                                   core::Layout* resolved) {
  TrainConfig cfg = given;
  *reporting = true;
  LOOM_RETURN_IF_ERROR(validate_train_config(cfg));
  if ((cfg.debug_nan_grad_at > 0 || !cfg.debug_loss_spike_at.empty()) && !cfg.guard.enabled) {
    return refuse("--debug-nan-grad-at/--debug-loss-spike-at with --no-spike-guard",
                  "on this path the injections scale what the spike guard judges");
  }
  if (cfg.optim.decay_steps <= 0) cfg.optim.decay_steps = cfg.steps;
  LOOM_ASSIGN_OR_RETURN(core::ModelSpec spec, resolve_model(cfg));
  core::Layout want = requested;
  want.mbs = cfg.mbs;
  want.gbs = cfg.gbs;
  want.seq = cfg.seq;
  want.recompute = cfg.recompute;
  want.precision = core::Precision::kFp32;  // the CPU trainer's arithmetic
  want.gpus = want.tp * want.pp * std::max<int64_t>(want.dp, 1);
  LOOM_ASSIGN_OR_RETURN(const core::Layout layout, core::resolve_layout(want, spec));
  LOOM_RETURN_IF_ERROR(ParallelTrainer::check_layout(layout));
  if (resolved != nullptr) *resolved = layout;
  const int64_t ranks = layout.tp * layout.pp * layout.dp;
  LOOM_ASSIGN_OR_RETURN(const comm::LaunchInfo launch, comm::launch_info_from_env());
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(cfg.comm_timeout_s * 1000));

  if (launch.world_size > 1) {  // one rank of a multi-process launch
#ifdef LOOM_WITH_MPI
    if (launch.world_size != ranks) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "layout {} needs tp x pp x dp = {} ranks but the launch ({}) started {} "
                         "processes; they must match",
                         layout.summary(), ranks, launch.source, launch.world_size);
    }
    if (cfg.threads > 0) omp_set_num_threads(static_cast<int>(cfg.threads));
    *reporting = launch.rank == 0;
    core::Status st = core::ok_status();
    {
      LOOM_ASSIGN_OR_RETURN(auto world, comm::make_mpi_world(nullptr, nullptr));
      world->set_timeout(timeout);
      st = run_rank(cfg, spec, layout, world.get(), *reporting ? out : nullptr, summary);
      if (!st.ok()) comm::mpi_abort(st);  // prints "rank N: ..." and stops every process
    }
    comm::mpi_finalize();
    summary->peak_rss_bytes = peak_rss_bytes();
    return st;
#else
    return core::error(core::ErrorCode::kInvalidArgument,
                       "launched as {} ranks by {}, but this build has no MPI backend (install "
                       "Open MPI and rebuild)",
                       launch.world_size, launch.source);
#endif
  }

  // The thread backend: every rank in this process, sharing its cores.
  if (cfg.debug_hang_at > 0)
    return refuse("--debug-hang-at", "a hung thread cannot be stopped; run it under mpirun");
  const int cores = cfg.threads > 0 ? static_cast<int>(cfg.threads) : omp_get_max_threads();
  const int per_rank = std::max(1, cores / static_cast<int>(ranks));
  auto world = comm::make_thread_world(static_cast<int>(ranks));
  for (auto& w : world) w->set_timeout(timeout);
  std::vector<TrainSummary> summaries(static_cast<size_t>(ranks));
  std::vector<core::Status> status(static_cast<size_t>(ranks), core::ok_status());
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      omp_set_num_threads(per_rank);
      status[r] = run_rank(cfg, spec, layout, world[r].get(), r == 0 ? out : nullptr, &summaries[r]);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < ranks; ++r)
    if (!status[r].ok()) return status[r].with_context(fmt::format("rank {}", r));
  *summary = summaries[0];
  summary->peak_rss_bytes = peak_rss_bytes();
  return core::ok_status();
}

}  // namespace loom::train
