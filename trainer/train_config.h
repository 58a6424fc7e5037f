// TrainConfig: every option of `loom train`, declared once in visit_train_fields() with its
// default, JSON key, CLI flag and help text (the CLI, --help and the resolved config written
// into each checkpoint all come from there). Flags follow Megatron-LM's spelling where one
// exists (--micro-batch-size, --global-batch-size, --seq-length, --lr, --min-lr ...).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "trainer/optimizer.h"
#include "trainer/spike_guard.h"

namespace loom::train {

struct TrainConfig {
  std::string model;                // preset name, preset YAML or HF config.json
  std::string data;                 // indexed dataset prefix (PREFIX.bin / PREFIX.idx)
  bool synthetic = false;           // uniform random tokens instead of --data
  int64_t steps = 100;              // iterations (optimizer steps) to reach
  int64_t mbs = 1;                  // micro-batch size (sequences)
  int64_t gbs = 8;                  // global batch size (sequences per iteration)
  int64_t seq = 128;                // sequence length (tokens per sequence)
  core::Recompute recompute = core::Recompute::kNone;
  OptimizerConfig optim;
  SpikeGuardConfig guard;
  uint64_t seed = 1234;             // weights and synthetic data
  double init_std = 0.02;           // N(0, std) weights; residual projections / sqrt(2 L)
  double train_fraction = 0.99;     // documents used for training; the rest validate
  int64_t eval_interval = 0;        // validation loss every N iterations (0: only at the end)
  int64_t eval_batches = 8;         // validation micro-batches per evaluation
  std::string save;                 // checkpoint root directory ("" : no checkpoints)
  int64_t save_interval = 0;        // checkpoint every N iterations (the end is always saved)
  int64_t keep_last = 3;            // complete checkpoints kept
  bool resume = false;              // continue from the newest complete checkpoint in --save
  std::string log;                  // JSON-lines metrics file ("" : none)
  std::string trace;                // Chrome trace of the last iteration ("" : none)
  int64_t threads = 0;              // OpenMP threads (0: all cores)
  bool quiet = false;               // no per-iteration lines on stdout
  // Fault injection for the tests of the guard and of resume (hidden from --help).
  int64_t debug_nan_grad_at = 0;    // iteration whose gradients become NaN
  std::string debug_loss_spike_at;  // "STEP[,STEP...]:FACTOR": loss and gradients x FACTOR
  int64_t debug_kill_at = 0;        // SIGKILL itself after finishing this iteration
  int64_t debug_hang_at = 0;        // --dp: the last rank stops answering after this iteration
  double comm_timeout_s = 300;      // --dp: a collective waiting longer fails, naming the call
  std::string bootstrap = "auto";   // --backend cuda --dp: how NCCL's id reaches every rank
  // Set by `loom train --plan`: the plan's model (then `model` is its name only). Not an option.
  std::optional<core::ModelSpec> model_spec;
};

// The model to train: model_spec when a plan set it, else core::load_model(model).
core::Result<core::ModelSpec> resolve_model(const TrainConfig& c);

template <typename V>
void visit_train_fields(TrainConfig& c, V& v) {
  v.text("model", "--model", "model preset, preset YAML or Hugging Face config.json", c.model);
  v.text("data", "--data", "indexed dataset prefix (from `loom data prepare|synth`)", c.data);
  v.flag("synthetic", "--synthetic", "train on uniform random tokens (throughput runs)",
         c.synthetic);
  v.integer("steps", "--steps,--train-iters", "iterations to train to", c.steps);
  v.integer("mbs", "--mbs,--micro-batch-size", "micro-batch size (sequences)", c.mbs);
  v.integer("gbs", "--gbs,--global-batch-size", "global batch size (sequences)", c.gbs);
  v.integer("seq", "--seq,--seq-length", "sequence length", c.seq);
  v.recompute("recompute", "--recompute", "activation recomputation: none, selective, full",
              c.recompute);
  v.real("lr", "--lr", "peak learning rate", c.optim.lr);
  v.real("min_lr_ratio", "--min-lr-ratio", "cosine floor as a fraction of the peak",
         c.optim.min_lr_ratio);
  v.integer("warmup_steps", "--warmup,--lr-warmup-iters", "linear warm-up iterations",
            c.optim.warmup_steps);
  v.integer("decay_steps", "--lr-decay-iters", "iterations of the cosine decay (0: --steps)",
            c.optim.decay_steps);
  v.real("beta1", "--adam-beta1", "AdamW beta1", c.optim.beta1);
  v.real("beta2", "--adam-beta2", "AdamW beta2", c.optim.beta2);
  v.real("eps", "--adam-eps", "AdamW epsilon", c.optim.eps);
  v.real("weight_decay", "--weight-decay", "decoupled weight decay (not on norms, biases)",
         c.optim.weight_decay);
  v.real("clip_grad", "--clip-grad", "global gradient-norm clipping (0: off)", c.optim.clip_grad);
  v.flag_inverted("spike_guard", "--no-spike-guard", "disable the loss/grad-norm spike guard",
                  c.guard.enabled);
  v.integer("spike_window", "--spike-window", "accepted iterations in the spike statistics",
            c.guard.window);
  v.real("spike_zscore", "--spike-zscore", "z-score above which an iteration is skipped",
         c.guard.z_threshold);
  v.integer("spike_rollback_after", "--spike-rollback-after",
            "consecutive skipped iterations that roll back to the last checkpoint",
            c.guard.rollback_after);
  v.unsigned_integer("seed", "--seed", "random seed (weights, synthetic data)", c.seed);
  v.real("init_std", "--init-method-std", "standard deviation of the initial weights",
         c.init_std);
  v.real("train_fraction", "--split", "fraction of the documents used for training",
         c.train_fraction);
  v.integer("eval_interval", "--eval-interval", "validation every N iterations (0: at the end)",
            c.eval_interval);
  v.integer("eval_batches", "--eval-iters", "validation micro-batches per evaluation",
            c.eval_batches);
  v.text("save", "--save", "checkpoint directory", c.save);
  v.integer("save_interval", "--save-interval", "checkpoint every N iterations", c.save_interval);
  v.integer("keep_last", "--keep-last", "complete checkpoints to keep", c.keep_last);
  v.flag("resume", "--resume", "continue from the newest complete checkpoint in --save",
         c.resume);
  v.text("log", "--log", "JSON-lines metrics file", c.log);
  v.text("trace", "--trace",
         "write the last iteration of a --tp/--pp/--dp run as a Chrome trace (the event names "
         "of `loom simulate --trace`)",
         c.trace);
  v.integer("threads", "--threads", "CPU threads (0: all cores)", c.threads);
  v.flag("quiet", "--quiet", "no per-iteration lines (the log and the summary remain)", c.quiet);
  v.real("comm_timeout_s", "--comm-timeout",
         "seconds a collective of the data-parallel ranks may wait before failing", c.comm_timeout_s);
  v.text("bootstrap", "--bootstrap",
         "--backend cuda --dp N: how NCCL's unique id reaches the ranks: auto (tcp under "
         "torchrun, mpi under mpirun/srun), tcp (MASTER_ADDR:MASTER_PORT), mpi, file:PATH",
         c.bootstrap);
  v.hidden_integer("debug_nan_grad_at", "--debug-nan-grad-at", c.debug_nan_grad_at);
  v.hidden_text("debug_loss_spike_at", "--debug-loss-spike-at", c.debug_loss_spike_at);
  v.hidden_integer("debug_kill_at", "--debug-kill-at", c.debug_kill_at);
  v.hidden_integer("debug_hang_at", "--debug-hang-at", c.debug_hang_at);
}

// Checks the values (positive sizes, gbs % mbs, a data source) with errors naming the flag.
core::Status validate_train_config(const TrainConfig& c);
// --debug-loss-spike-at "STEP[,STEP...]:FACTOR" (its format checked by validate_train_config):
// the iterations and the factor; none and 1 when it is empty.
void loss_spike_injection(const TrainConfig& c, std::set<int64_t>* steps, double* factor);
nlohmann::json train_config_to_json(const TrainConfig& c);

}  // namespace loom::train
