// `loom train --backend cuda`: the training loop on one GPU with CudaTrainer
// (trainer/cuda_transformer.h): batches from the dataset or synthetic tokens as on the CPU,
// the same learning-rate schedule, Megatron-style iteration lines, and a TrainSummary with the
// measured step time, tokens/s and device memory. As in the CPU trainers: the spike guard
// (skips, and rollbacks to the last checkpoint), --eval-interval, recompute, the loss-spike and
// NaN injections; checkpoints (--save, --save-interval, --resume) are the CPU trainer's format,
// so either backend resumes the other's. --debug-kill-at is refused by name (a CPU test aid).
#pragma once

#include <ostream>
#include <string>

#include "core/status.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace loom::train {

// attention: the --attention value (auto, fused, gemm, flash, cudnn; CudaTransformer::Attention).
core::Status run_cuda_training(const TrainConfig& cfg, const std::string& attention, std::ostream* out,
                               TrainSummary* summary);

}  // namespace loom::train
