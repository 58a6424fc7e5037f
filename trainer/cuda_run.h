// `loom train --backend cuda`: the training loop on one GPU with CudaTrainer
// (trainer/cuda_transformer.h): batches from the dataset or synthetic tokens as on the CPU,
// the same learning-rate schedule, Megatron-style iteration lines, and a TrainSummary with the
// measured step time, tokens/s and device memory. As in the CPU trainers: the spike guard
// (skips, and rollbacks to the last checkpoint), --eval-interval, recompute, the loss-spike and
// NaN injections; checkpoints (--save, --save-interval, --resume) are the CPU trainer's format,
// so either backend resumes the other's. --debug-kill-at is refused by name (a CPU test aid).
// Data parallelism (--dp N, one process per GPU over NCCL): cuda_data_parallel.h.
#pragma once

#include <ostream>
#include <string>

#include "core/status.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace loom::train {

// attention: the --attention value (auto, fused, gemm, flash, cudnn; CudaTransformer::Attention).
// dp: 0 trains on one GPU; N >= 1 is this process's rank of an N-GPU data-parallel launch over
// NCCL (cuda_data_parallel.h; --dp 1 takes that path with one rank). *reporting (when given) is
// false on the ranks other than 0, which print nothing.
core::Status run_cuda_training(const TrainConfig& cfg, const std::string& attention,
                               std::ostream* out, TrainSummary* summary, int64_t dp = 0,
                               bool* reporting = nullptr);

}  // namespace loom::train
