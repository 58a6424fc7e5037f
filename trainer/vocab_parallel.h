// The vocabulary-parallel embedding and cross-entropy of Megatron-LM (Shoeybi et al. 2019,
// Sec. 3; megatron/core/tensor_parallel/{layers,cross_entropy}.py): each tensor-parallel rank
// holds rows [v0, v0 + rows) of the embedding / LM head; a lookup is the sum over ranks of the
// rows each holds, and the loss needs only three numbers per token from each rank (its row
// maximum, its sum of exponentials, the target's logit if it holds it), so the full logits are
// never gathered. Tested through the parallel trainer's equivalence tests
// (tests/trainer/parallel_trainer_test.cc) and directly in tests/trainer/vocab_parallel_test.cc.
#pragma once

#include <cstdint>

#include "comm/communicator.h"
#include "core/status.h"

namespace loom::train {

// out[n, :] = table[tokens[n] - v0, :] when v0 <= tokens[n] < v0 + rows, else 0 (table: this
// rank's [rows, c]). The caller sums `out` over the tensor-parallel group.
template <typename T>
void embedding_fwd_rows(int64_t n, int64_t c, const int32_t* tokens, int64_t v0, int64_t rows,
                        const T* table, T* out_nc);
// dtable[tokens[n] - v0, :] += dout[n, :] for the tokens this rank holds, rows in order.
template <typename T>
void embedding_bwd_rows(int64_t n, int64_t c, const int32_t* tokens, int64_t v0, int64_t rows,
                        const T* dout_nc, T* dtable);

// Cross-entropy over logits split by columns: `logits` [n, cols] holds the global columns
// [v0, v0 + cols) of each row; columns >= v (vocabulary padding) are excluded; rows with
// target < 0 are ignored. With `backward`, logits are overwritten with grad_scale * d loss /
// d logits (softmax - onehot, 0 in padding) as kernels::cpu::cross_entropy_fwd_bwd does.
// Collective over `tp` (three all-reduces of n values). *loss_sum: sum of the row losses (the
// same on every rank). Sums over ranks follow the communicator's rank order, so every rank holds
// the same bits.
template <typename T>
core::Status cross_entropy_vocab_parallel(int64_t n, int64_t cols, int64_t v0, int64_t v,
                                          const int32_t* targets, T* logits, T grad_scale,
                                          bool backward, comm::Communicator& tp,
                                          double* loss_sum);

}  // namespace loom::train
