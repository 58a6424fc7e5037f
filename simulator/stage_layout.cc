// Stage contents and in-flight micro-batches: see stage_layout.h.
#include "simulator/stage_layout.h"

#include <algorithm>

#include <fmt/format.h>

#include "simulator/pipeline_schedule.h"

namespace loom::sim {

double lm_head_block_equivalents(const core::ModelSpec& m, int64_t seq) {
  const double h = static_cast<double>(m.hidden_size);
  const double block_matmul = static_cast<double>(m.matmul_params() - m.vocab_size * m.hidden_size) /
                              static_cast<double>(m.num_layers);
  // Per token, forward: 2 FLOPs per matmul parameter, and 2 * 2 * seq * q_dim for the
  // attention scores and the weighted sum over values (non-causal count, as Megatron eq. 3).
  const double block_flops = 2.0 * block_matmul + 4.0 * static_cast<double>(seq) *
                                                      static_cast<double>(m.q_dim());
  const double head_flops = 2.0 * static_cast<double>(m.vocab_size) * h;
  return head_flops / block_flops;
}

std::string describe_stage(const core::Layout& l, int64_t stage) {
  const int64_t chunks = l.num_chunks();
  std::string blocks_text;
  int64_t first = 0;
  bool embedding = false, head = false;
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t n = l.partition[k];
    if (l.stage_of_chunk(k) == stage) {
      if (k == 0) embedding = true;
      if (k == chunks - 1) head = true;
      if (n > 0) {
        if (!blocks_text.empty()) blocks_text += ", ";
        blocks_text += n == 1 ? fmt::format("block {}", first)
                              : fmt::format("blocks {}-{}", first, first + n - 1);
      }
    }
    first += n;
  }
  std::string out = embedding ? "embedding" : "";
  if (!blocks_text.empty()) out += (out.empty() ? "" : " + ") + blocks_text;
  if (head) out += (out.empty() ? "" : " + ") + std::string("LM head + loss");
  return out;
}

StageContents stage_contents(const core::ModelSpec& m, const core::Layout& l, int64_t stage) {
  StageContents c;
  const int64_t chunks = l.num_chunks();
  for (int64_t k = stage; k < chunks; k += l.pp) {
    c.blocks += l.partition[k];
    if (k == 0) c.has_embedding = true;
    if (k == chunks - 1) c.has_lm_head = true;
  }

  const int64_t block = m.block_params(l.tp);
  c.params = c.blocks * block;
  c.largest_unit_params = c.blocks > 0 ? block : 0;
  if (c.has_embedding) {
    const int64_t emb = m.embedding_params(l.tp, /*padded=*/true) + m.position_params();
    c.params += emb;
    c.largest_unit_params = std::max(c.largest_unit_params, emb);
  }
  if (c.has_lm_head) {
    int64_t head = m.lm_head_params(l.tp, /*padded=*/true);
    // Tied embeddings with pp > 1: the last stage keeps its own copy of the word embedding
    // for the output layer, kept equal by an all-reduce of the two gradients (Megatron,
    // DeepSpeed TiedLayerSpec).
    if (m.tied_embeddings && !c.has_embedding) {
      head = m.padded_vocab(l.tp) / l.tp * m.hidden_size;
      c.tied_copy_params = head;
    }
    c.params += head + m.final_norm_params();
    c.largest_unit_params = std::max(c.largest_unit_params, head);
  }
  c.work_block_equivalents = static_cast<double>(c.blocks) +
                             (c.has_lm_head ? lm_head_block_equivalents(m, l.seq) : 0.0);
  return c;
}

std::vector<int64_t> inflight_chunks(const core::Layout& l, int64_t stage,
                                     const std::function<double(int64_t)>& weight) {
  std::vector<int64_t> now, best;
  double held = 0, most = -1;
  for (const TaskRef& t : stage_task_order(l, stage)) {
    const double w = weight ? weight(t.chunk) : 1.0;
    if (t.forward) {
      now.push_back(t.chunk);
      held += w;
      if (held > most) most = held, best = now;
    } else {  // the backward frees one micro-batch of its chunk (which one does not matter)
      now.erase(std::find(now.begin(), now.end(), t.chunk));
      held -= w;
    }
  }
  return best;
}

}  // namespace loom::sim
