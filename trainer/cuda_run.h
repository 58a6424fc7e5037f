// `loom train --backend cuda`: the training loop on one GPU with CudaTrainer
// (trainer/cuda_transformer.h): batches from the dataset or synthetic tokens as on the CPU,
// the same learning-rate schedule, Megatron-style iteration lines, and a TrainSummary with the
// measured step time, tokens/s and device memory. Checkpoints (--save, --save-interval,
// --resume) are the CPU trainer's (same format, so either backend resumes the other's). Not on
// this path yet: evaluation intervals, recompute and fault injection are refused by name; the
// spike guard (on by default) is announced as not running.
#pragma once

#include <ostream>
#include <string>

#include "core/status.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace loom::train {

// attention: the --attention value (auto, fused, gemm, flash; CudaTransformer::Attention).
core::Status run_cuda_training(const TrainConfig& cfg, const std::string& attention, std::ostream* out,
                               TrainSummary* summary);

}  // namespace loom::train
