// Trainer: runs `loom train` on one process with the CPU backend -- gradient accumulation over
// micro-batches, AdamW with clipping and the LR schedule, the spike guard with rollback,
// periodic validation, atomic checkpoints and exact resume (weights, Adam moments, data-loader
// position, RNG and guard state). Per-iteration lines follow Megatron-LM's log format; a
// JSON-lines log carries the same figures. Tested in tests/trainer/trainer_test.cc
// (resume bit for bit, rollback, learning to the Markov source's entropy rate).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model_spec.h"
#include "core/status.h"
#include "trainer/batch_source.h"
#include "trainer/optimizer.h"
#include "trainer/spike_guard.h"
#include "trainer/train_config.h"
#include "trainer/transformer.h"

namespace loom::train {

struct StepRecord {
  // An applied iteration of `tokens` tokens that took step_time_s.
  static StepRecord of(int64_t step, double loss, double lr, double grad_norm,
                       double step_time_s, double tokens) {
    StepRecord r;
    r.step = step;
    r.loss = loss;
    r.lr = lr;
    r.grad_norm = grad_norm;
    r.step_time_s = step_time_s;
    r.tokens_per_s = tokens / step_time_s;
    return r;
  }
  int64_t step = 0;
  double loss = 0.0;         // mean token loss of the iteration (before any skip)
  double lr = 0.0;
  double grad_norm = 0.0;    // before clipping
  double step_time_s = 0.0;
  double tokens_per_s = 0.0;
  bool applied = true;       // false when the guard skipped the update
  bool rolled_back = false;  // the guard rolled back to the last checkpoint
  std::string event;         // guard / rollback / checkpoint events of this iteration
};

struct TrainSummary {
  int64_t first_step = 0;    // first iteration run by this process (after a resume: next one)
  int64_t last_step = 0;
  double final_loss = 0.0;
  double validation_loss = -1.0;  // mean token loss on the validation split, -1 if none
  double mean_step_time_s = 0.0;  // excluding the first iteration of the process (warm-up)
  double tokens_per_s = 0.0;
  int64_t skipped = 0;
  int64_t rollbacks = 0;
  int64_t state_bytes = 0;        // parameters + gradients + Adam moments
  int64_t workspace_bytes = 0;    // activations and scratch, high-water mark
  int64_t peak_rss_bytes = 0;     // the process's maximum resident set
  int64_t peak_device_bytes = 0;  // CUDA backend: most device memory in use (cudaMemGetInfo)
  std::map<std::string, double> phase_seconds;  // CUDA backend: device time per iteration by phase
  std::string attention_kernels;  // CUDA backend: fused, gemm, flash or cudnn (kernels/cuda/attention.h)
  std::string attention_detail;   // cudnn: the library version and the engines cuDNN chose
  std::vector<StepRecord> records;
  struct RankBytes {
    int64_t state_bytes = 0, workspace_bytes = 0;
    // The last iteration's time on this rank by phase (ParallelTrainer's events): forward and
    // backward compute (tensor-parallel collectives inside), pipeline sends, the data-parallel
    // reduction, the optimizer (with ZeRO's weight gather), and the rest of the iteration
    // (waiting for pipeline neighbours: the bubble).
    double compute_s = 0, p2p_s = 0, dp_s = 0, optimizer_s = 0, wait_s = 0;
  };
  std::vector<RankBytes> ranks;   // parallel runs: every rank's buffers and phases, by world rank
  // Appends an iteration's record (final_loss and last_step follow it).
  void add(const StepRecord& r) {
    records.push_back(r);
    final_loss = r.loss;
    last_step = r.step;
  }
  nlohmann::json to_json() const;
};

// The batches of a run: synthetic tokens (--synthetic) or the dataset (--data), whose token
// ids must fit the model's vocabulary (an error names both). Every backend's loop reads these.
core::Result<std::unique_ptr<BatchSource>> open_batch_source(const TrainConfig& cfg,
                                                             const core::ModelSpec& spec);

// The CPU trainer's initial weights: N(0, init_std) matrices in layout order from `rng`
// (residual output projections / sqrt(2 L), GPT-2 / Megatron), norm weights 1, biases 0.
void init_weights(const ParamLayout& layout, int64_t num_layers, double init_std,
                  std::mt19937_64& rng, float* params);

// What a training checkpoint holds besides the resolved config and the model
// (trainer_checkpoint.cc). Both backends write and read it in one format: a run saved on the
// GPU resumes on the CPU and the other way round.
struct TrainerState {
  int64_t step = 0;              // completed iterations
  int64_t consumed_samples = 0;  // sequences drawn from the data, skipped ones included
  int64_t adam_updates = 0;
  nlohmann::json data_state;     // BatchSource::state()
  nlohmann::json guard_state;    // SpikeGuard::state()
  std::string rng;               // std::mt19937_64 state as text
  std::vector<float> params, exp_avg, exp_avg_sq;  // flat, in ParamLayout(spec) order
};

// The manifest meta of a trainer checkpoint in `format` (everything of `state` but its tensors,
// the resolved config and the model spec).
nlohmann::json trainer_checkpoint_meta(const TrainConfig& cfg, const core::ModelSpec& spec,
                                       const TrainerState& state, const std::string& why,
                                       const char* format);

// Writes `state` as a checkpoint under cfg.save (atomically; keeps cfg.keep_last).
core::Status save_trainer_state(const TrainConfig& cfg, const core::ModelSpec& spec,
                                const TrainerState& state, const std::string& why);
// Reads the newest complete checkpoint under cfg.save, checked against the model and --seq;
// *origin names it. kNotFound when there is none; warnings get the incomplete ones skipped.
core::Result<TrainerState> load_trainer_state(const TrainConfig& cfg, const core::ModelSpec& spec,
                                              std::vector<std::string>* warnings,
                                              std::string* origin);

class Trainer {
 public:
  static core::Result<std::unique_ptr<Trainer>> create(const TrainConfig& cfg, std::ostream* out);

  core::Status run(TrainSummary* summary);
  // Mean token loss over up to `max_batches` validation micro-batches.
  double evaluate(int64_t max_batches);

  const core::ModelSpec& spec() const { return model_->spec(); }
  const std::vector<float>& params() const { return params_; }
  int64_t step() const { return step_; }

 private:
  Trainer(const TrainConfig& cfg, const core::ModelSpec& spec, std::ostream* out);
  void init_weights();
  core::Status train_iteration(StepRecord* rec);
  core::Status save(const std::string& why);
  core::Status load_latest(bool keep_data_position, std::string* loaded_from);
  core::Status rollback(StepRecord* rec, const std::string& reason);
  void emit(const StepRecord& rec);

  TrainConfig cfg_;
  std::ostream* out_;
  std::unique_ptr<Transformer<float>> model_;
  std::unique_ptr<AdamW> optim_;
  std::unique_ptr<BatchSource> data_;
  SpikeGuard guard_;
  std::vector<float> params_, grads_;
  std::mt19937_64 rng_;
  int64_t step_ = 0;              // completed iterations
  int64_t consumed_samples_ = 0;  // sequences drawn from the data, skipped ones included
  int64_t loaded_samples_ = 0;    // consumed_samples of the checkpoint loaded last
  std::unique_ptr<std::ostream> log_;
  // --debug-loss-spike-at parsed once: iterations and factor; each fault fires once per
  // iteration number (not again when a rollback replays it).
  std::set<int64_t> spike_steps_;
  double spike_factor_ = 1.0;
  std::set<int64_t> injected_;
  double run_time_s_ = 0.0;       // iteration time summed in this process (for the ETA)
  int64_t run_iterations_ = 0;    // debug faults fire once per iteration number
};

}  // namespace loom::train
