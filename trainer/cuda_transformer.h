// CudaTransformer: the forward and backward passes of Transformer<T> (trainer/transformer.h) on
// one GPU, in Megatron / llm.c mixed precision: bf16 activations and bf16 copies of the GEMM
// weights, fp32 master parameters (norm weights, biases and position tables are read from
// them), fp32 gradients that the weight-gradient GEMMs accumulate in place across
// micro-batches, fp32 statistics, loss in fp32. Residual adds are fused into the following
// norm (sum = x + residual, then normalise), and into its backward (dx += dresidual).
// Kernels: kernels/cuda/ (cuBLASLt GEMMs, fused norms, RoPE, SwiGLU / GeLU, flash attention,
// vocabulary-chunked fused cross-entropy, deterministic embedding and bias gradients).
//
// Activations live in one device allocation sized when the batch shape is first seen
// (activation_bytes()); scratch for the backward in another. Recompute (Korthikanti et al.
// 2022): none keeps every block's activations; selective keeps q, k, v and reruns the attention
// before each block's backward (one output and log-sum-exp buffer for all blocks); full keeps
// each block's input and reruns the block before its backward (one set of the rest for all
// blocks). The reruns give the forward's bits, so all three train identically.
// CudaTrainer runs the whole iteration (micro-batches, global-norm clipping, AdamW over the flat
// buffers) as trainer/trainer.cc does on the CPU. Tested against the CPU trainer in
// tests/trainer/cuda_trainer_gpu_test.cc (50 steps of the tiny models from the same weights).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"
#include "trainer/optimizer.h"
#include "trainer/param_layout.h"

namespace loom::train {

class CudaTransformer {
 public:
  // Attention kernels (kernels/cuda/attention.h): the fused FlashAttention-2 kernels on tensor
  // cores (head dims 16, 32, 64, 128), batched cuBLASLt GEMMs with the scores materialised per
  // sequence, or the flash kernel on CUDA cores (the reference: no T x T buffer, about 20x
  // slower than the GEMM path on a 1.3B model at seq 2048), or cuDNN's fused SDPA
  // (kernels/cuda/attention_cudnn.h: no ALiBi; head dims multiples of 8 up to 128; cuDNN loaded at
  // run time; its dq accumulates with atomics, so runs are not bitwise repeatable). kAuto: fused
  // where the head dim allows, else GEMM (cuDNN stays opt-in until measured on a device).
  enum class Attention { kAuto, kFused, kGemm, kFlash, kCudnn };
  static core::Result<std::unique_ptr<CudaTransformer>> create(
      const core::ModelSpec& spec, core::Recompute recompute, Attention attention = Attention::kAuto);
  ~CudaTransformer();
  // "auto", "fused", "gemm", "flash", "cudnn" (the --attention values); an error names the value.
  static core::Result<Attention> parse_attention(const std::string& name);
  static const char* attention_name(Attention a);
  Attention attention() const { return attention_; }
  // The cuDNN engines chosen (CudnnAttention::describe()) once a batch shape was seen with
  // kCudnn; empty otherwise.
  std::string attention_detail() const;

  const ParamLayout& layout() const { return layout_; }

  // tokens: host [b, s + 1] int32 (inputs tokens[:, :s], targets tokens[:, 1:]). params: fp32
  // master [P] and bf16 copy [P] on the device; grads: fp32 [P] on the device, to which
  // grad_scale * d(sum of token losses) is added. Returns the sum of the token losses
  // (synchronises the stream twice: after the loss, whose row losses it sums on the host, and at
  // the end).
  double forward_backward(const float* params, const __nv_bfloat16* params_bf16, float* grads,
                          const int32_t* tokens, int64_t b, int64_t s, float grad_scale,
                          cudaStream_t stream);
  // Sum of the token losses, no gradients.
  double forward_loss(const float* params, const __nv_bfloat16* params_bf16,
                      const int32_t* tokens, int64_t b, int64_t s, cudaStream_t stream);

  // Device bytes of the activation and scratch allocations now.
  int64_t activation_bytes() const;

  // Units of the flat parameter buffer, each one contiguous range (param_layout.cc orders the
  // tensors so): 0 the embedding (with a tied LM head), 1..L the blocks, L + 1 the final norm
  // and an untied head. [unit_begin(u), unit_begin(u + 1)).
  int num_units() const { return static_cast<int>(layout_.blocks.size()) + 2; }
  int64_t unit_begin(int unit) const;
  // Called during forward_backward's backward as each unit's gradients are complete on
  // `stream` (the head unit first, the embedding last): the data-parallel trainer starts that
  // unit's reduction there, overlapping the rest of the backward. Empty: not called.
  using GradsReadyHook = std::function<void(int unit, cudaStream_t stream)>;
  void set_grads_ready_hook(GradsReadyHook hook) { grads_ready_ = std::move(hook); }

  // Device time of the phases of the calls since the last take_phase_times(), from CUDA events
  // around them: attention (forward and backward kernels) and the LM head with the loss.
  struct PhaseTimes {
    double attention_s = 0;
    double lm_head_loss_s = 0;
  };
  PhaseTimes take_phase_times();

 private:
  CudaTransformer(const core::ModelSpec& spec, core::Recompute recompute, Attention attention);
  struct Block {  // activations of one block; N = b * s rows (bf16 unless said)
    __nv_bfloat16 *r, *xn1, *q, *k, *v, *o, *x_mid, *xn2, *g, *u, *act;
    float *mean1, *rstd1, *mean2, *rstd2, *lse;  // fp32
  };
  void prepare(int64_t b, int64_t s);
  void forward(const float* p, const __nv_bfloat16* pb, cudaStream_t st);
  void block_fwd(Block& k, const BlockOffsets& o, const float* p, const __nv_bfloat16* pb,
                 cudaStream_t st);
  void attention_fwd(Block& k, cudaStream_t st);
  double loss(const __nv_bfloat16* pb, float* gr, float grad_scale, bool backward, cudaStream_t st);
  void backward(const float* p, const __nv_bfloat16* pb, float* gr, cudaStream_t st);
  void norm_fwd(const __nv_bfloat16* x, const __nv_bfloat16* residual, int64_t w, int64_t bias,
                const float* p, __nv_bfloat16* sum, __nv_bfloat16* y, float* mean, float* rstd,
                cudaStream_t st);
  void norm_bwd(const __nv_bfloat16* dy, const __nv_bfloat16* x, int64_t w, int64_t bias,
                const float* p, float* gr, const float* mean, const float* rstd,
                const __nv_bfloat16* dresidual, __nv_bfloat16* dx, cudaStream_t st);
  void linear_fwd(const __nv_bfloat16* x, const float* p, const __nv_bfloat16* pb, int64_t w,
                  int64_t bias, int64_t out, int64_t in, __nv_bfloat16* y, cudaStream_t st);
  void linear_bwd(const __nv_bfloat16* dy, const __nv_bfloat16* x, const __nv_bfloat16* pb,
                  float* gr, int64_t w, int64_t bias, int64_t out, int64_t in, __nv_bfloat16* dx,
                  bool accumulate_dx, cudaStream_t st);

  // CUDA events bracketing timed work: pairs of (start, stop) per phase, reused every call.
  class PhaseTimer {
   public:
    ~PhaseTimer();
    void start(int phase, cudaStream_t st);
    void stop(cudaStream_t st);
    void collect(double* seconds);  // adds elapsed time per phase (the stream has synchronised)
   private:
    struct Pair {
      cudaEvent_t start, stop;
      int phase;
    };
    std::vector<Pair> pairs_;
    size_t used_ = 0;
  };
  PhaseTimer timer_;
  double phase_s_[2] = {0, 0};

  core::ModelSpec spec_;
  ParamLayout layout_;
  core::Recompute recompute_;
  Attention attention_;
  ModelDims d_;  // widths from the spec
  int64_t b_ = 0, s_ = 0, n_ = 0, chunk_rows_ = 0;
  kernels::cuda::Gemm gemm_;
  // kCudnn: the plans by (b, s), and the one for the current shape.
  std::map<std::pair<int64_t, int64_t>, std::unique_ptr<kernels::cuda::CudnnAttention>> cudnn_plans_;
  kernels::cuda::CudnnAttention* cudnn_ = nullptr;
  GradsReadyHook grads_ready_;
  kernels::cuda::DeviceBytes acts_mem_, scratch_mem_, tables_mem_;
  std::vector<Block> blocks_;
  __nv_bfloat16 *embed_pre_ = nullptr, *r_final_ = nullptr, *xf_ = nullptr, *mlp_out_ = nullptr;
  __nv_bfloat16 *dr_ = nullptr, *dxn_ = nullptr, *dact_ = nullptr, *dg_ = nullptr, *du_ = nullptr;
  __nv_bfloat16 *dattn_ = nullptr, *dq_ = nullptr, *dk_ = nullptr, *dv_ = nullptr;
  __nv_bfloat16* logits_ = nullptr;
  float *embed_mean_ = nullptr, *embed_rstd_ = nullptr, *final_mean_ = nullptr,
        *final_rstd_ = nullptr, *loss_n_ = nullptr;
  float *rope_cos_ = nullptr, *rope_sin_ = nullptr, *alibi_ = nullptr;
  float *zero_bias_ = nullptr, *discard_dbias_ = nullptr;  // bias-less LayerNorm
  int32_t *inputs_ = nullptr, *targets_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  std::vector<int32_t> host_inputs_, host_targets_;
  std::vector<float> host_loss_;
};

// The data-parallel side of CudaTrainer: sums over the data-parallel ranks (one GPU each).
// trainer/cuda_data_parallel.h implements it over NCCL; nullptr in CudaTrainer: one GPU.
class GradReducer {
 public:
  virtual ~GradReducer() = default;
  virtual int size() const = 0;
  // Starts summing `count` floats at `data` (device, in place) once `stream` reaches this point;
  // returns without waiting for the sum.
  virtual core::Status start(float* data, int64_t count, cudaStream_t stream) = 0;
  // `stream` waits on the GPU for every started sum, and the host for their completion under the
  // communicator's timeout (the watchdog).
  virtual core::Status finish(cudaStream_t stream) = 0;
  // The sum of `value` over the ranks (every rank gets the same bits).
  virtual core::Result<double> sum(double value) = 0;
};

// One training iteration on the GPU, as Trainer::train_iteration does it on the CPU: zero the
// gradients, forward/backward each micro-batch with grad_scale = 1 / (gbs * seq), the global
// gradient norm, Megatron's clip coefficient and AdamW (no decay on norms and biases) over the
// flat buffers, writing the bf16 weight copy in the same pass.
class CudaTrainer {
 public:
  // Initial fp32 parameters from the host (e.g. the CPU trainer's initialisation).
  CudaTrainer(std::unique_ptr<CudaTransformer> model, const OptimizerConfig& optimizer,
              const std::vector<float>& params);
  // Initial weights drawn on the device (kernels/cuda/fill.h), as the CPU trainer distributes
  // them: N(0, init_std), projections into the residual stream N(0, init_std / sqrt(2 L)),
  // norm weights 1, biases 0.
  CudaTrainer(std::unique_ptr<CudaTransformer> model, const OptimizerConfig& optimizer,
              uint64_t seed, double init_std);
  ~CudaTrainer();

  struct Step {
    double loss = 0;       // mean token loss of the iteration
    double grad_norm = 0;  // before clipping
    double compute_s = 0;  // device time of the micro-batches' forward and backward, and the norm
    CudaTransformer::PhaseTimes phases;  // device time of attention and of the LM head + loss
  };
  // micro_batches: each [mbs, seq + 1] tokens on the host; lr of this iteration.
  Step train_step(const std::vector<std::vector<int32_t>>& micro_batches, int64_t mbs,
                  int64_t seq, double lr);
  // train_step in two halves, so that the spike guard can judge the loss and gradient norm
  // before the update: the gradients of the global batch (left on the device), then AdamW with
  // Megatron's clip coefficient of grad_norm, the applied gradients scaled by gradient_scale (a
  // fault injection's factor; 1 otherwise). Skipping apply_step skips the update.
  // With a GradReducer (set_reducer), micro_batches are this rank's share of the global batch:
  // the gradients are scaled by 1 / (global tokens), each unit's sum over the ranks starts as
  // the last micro-batch's backward completes it (overlapping the rest of the backward, PyTorch
  // DDP's and Megatron's overlap_grad_reduce), and the loss is the global batch's.
  Step compute_step(const std::vector<std::vector<int32_t>>& micro_batches, int64_t mbs,
                    int64_t seq);
  void set_reducer(GradReducer* reducer) { reducer_ = reducer; }
  void apply_step(double lr, double grad_norm, double gradient_scale = 1.0);
  // Device time of the last apply_step (the clip coefficient's upload and AdamW).
  double last_optimizer_s() const { return last_optimizer_s_; }
  double eval_loss(const std::vector<int32_t>& tokens, int64_t rows, int64_t seq);

  // Replaces the parameters (fp32 and the bf16 copy), the Adam moments and the update count:
  // what a checkpoint restores.
  void restore(const std::vector<float>& params, const std::vector<float>& exp_avg,
               const std::vector<float>& exp_avg_sq, int64_t updates);

  std::vector<float> params() const;
  std::vector<float> exp_avg() const;
  std::vector<float> exp_avg_sq() const;
  int64_t updates() const { return updates_; }
  // Device bytes of the parameters, gradients, Adam moments and bf16 copy (18 per parameter),
  // and of the model's activations and scratch.
  int64_t state_bytes() const { return count_ * (4 * 4 + 2); }
  int64_t activation_bytes() const { return model_->activation_bytes(); }
  const CudaTransformer& model() const { return *model_; }

 private:
  void allocate();
  std::unique_ptr<CudaTransformer> model_;
  OptimizerConfig cfg_;
  std::vector<DecayRange> ranges_;
  int64_t count_ = 0, updates_ = 0;
  cudaStream_t stream_ = nullptr;
  kernels::cuda::DeviceBuffer<float> params_, grads_, m_, v_;
  kernels::cuda::DeviceBuffer<__nv_bfloat16> params_bf16_;
  kernels::cuda::DeviceBuffer<double> partials_, norm_;
  kernels::cuda::DeviceBuffer<float> coef_;
  float host_coef_ = 1.f;
  GradReducer* reducer_ = nullptr;
  cudaEvent_t events_[4] = {};  // compute start / end, optimizer start / end
  double last_optimizer_s_ = 0;
};

}  // namespace loom::train
