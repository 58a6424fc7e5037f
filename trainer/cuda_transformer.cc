// CudaTransformer: see cuda_transformer.h (CudaTrainer is in cuda_trainer.cc). Shapes: N = b * s tokens, h hidden,
// f FFN width, q = heads * head_dim, kv = kv_heads * head_dim; activations row-major [N, width].
#include "trainer/cuda_transformer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/bias.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/swiglu.h"

namespace loom::train {

namespace cu = loom::kernels::cuda;
using bf16 = __nv_bfloat16;

namespace {

// Rows of logits made at once by the loss (as the CPU model): at most 2^24 logits alive.
constexpr int64_t kLogitsChunkElements = int64_t{1} << 24;

// Carves typed arrays out of one allocation, each 256-byte aligned (cuBLASLt and the
// vectorised kernels want 16).
class Carver {
 public:
  explicit Carver(char* base) : base_(base) {}
  template <typename T>
  T* take(int64_t count) {
    T* p = base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + used_);
    used_ += (static_cast<std::size_t>(count) * sizeof(T) + 255) / 256 * 256;
    return p;
  }
  std::size_t used() const { return used_; }

 private:
  char* base_;
  std::size_t used_ = 0;
};

}  // namespace

// ---- phase timing ------------------------------------------------------------------------------

enum Phase { kAttentionPhase = 0, kLossPhase = 1 };

CudaTransformer::PhaseTimer::~PhaseTimer() {
  for (Pair& p : pairs_) {
    cudaEventDestroy(p.start);
    cudaEventDestroy(p.stop);
  }
}

void CudaTransformer::PhaseTimer::start(int phase, cudaStream_t st) {
  if (used_ == pairs_.size()) {
    Pair p{};
    LOOM_CUDA_CHECK(cudaEventCreate(&p.start));
    LOOM_CUDA_CHECK(cudaEventCreate(&p.stop));
    pairs_.push_back(p);
  }
  pairs_[used_].phase = phase;
  LOOM_CUDA_CHECK(cudaEventRecord(pairs_[used_].start, st));
}

void CudaTransformer::PhaseTimer::stop(cudaStream_t st) {
  LOOM_CUDA_CHECK(cudaEventRecord(pairs_[used_].stop, st));
  ++used_;
}

void CudaTransformer::PhaseTimer::collect(double* seconds) {
  for (size_t i = 0; i < used_; ++i) {
    float ms = 0;
    LOOM_CUDA_CHECK(cudaEventElapsedTime(&ms, pairs_[i].start, pairs_[i].stop));
    seconds[pairs_[i].phase] += 1e-3 * ms;
  }
  used_ = 0;
}

CudaTransformer::PhaseTimes CudaTransformer::take_phase_times() {
  PhaseTimes t{phase_s_[kAttentionPhase], phase_s_[kLossPhase]};
  phase_s_[0] = phase_s_[1] = 0;
  return t;
}

core::Result<std::unique_ptr<CudaTransformer>> CudaTransformer::create(const core::ModelSpec& spec,
                                                                       core::Recompute recompute,
                                                                       Attention attention) {
  const int64_t d = spec.head_dim_or_default();
  if (d > cu::kAttentionMaxHeadDim) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "model '{}': head dimension {} exceeds the CUDA attention's {}", spec.name, d,
                       cu::kAttentionMaxHeadDim);
  }
  if (attention == Attention::kAuto)
    attention = cu::attention_fused_supported(d) ? Attention::kFused : Attention::kGemm;
  if (attention == Attention::kCudnn) {
    if (spec.position == core::PositionKind::kAlibi) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--attention cudnn: model '{}' uses ALiBi; Loom's cuDNN graphs take the "
                         "causal mask only (use fused or gemm)",
                         spec.name);
    }
    std::string why;
    // The batch and sequence are not known yet; the head layout is checked now (t = 2 stands in).
    const ModelDims dims(spec);
    if (!cu::attention_cudnn_shape_supported({1, 2, dims.heads, dims.kv_heads, d}, &why)) {
      return core::error(core::ErrorCode::kInvalidArgument, "--attention cudnn: model '{}': {}",
                         spec.name, why);
    }
  }
  if (attention == Attention::kFused && !cu::attention_fused_supported(d)) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--attention fused: model '{}' has head dimension {}; the fused kernels take "
                       "16, 32, 64 or 128 (use gemm or flash)",
                       spec.name, d);
  }
  return std::unique_ptr<CudaTransformer>(new CudaTransformer(spec, recompute, attention));
}

core::Result<CudaTransformer::Attention> CudaTransformer::parse_attention(const std::string& name) {
  for (const Attention a : {Attention::kAuto, Attention::kFused, Attention::kGemm, Attention::kFlash,
                            Attention::kCudnn})
    if (name == attention_name(a)) return a;
  return core::error(core::ErrorCode::kInvalidArgument,
                     "--attention '{}': expected auto, fused, gemm, flash or cudnn", name);
}

const char* CudaTransformer::attention_name(Attention a) {
  switch (a) {
    case Attention::kAuto: return "auto";
    case Attention::kFused: return "fused";
    case Attention::kGemm: return "gemm";
    case Attention::kFlash: return "flash";
    case Attention::kCudnn: return "cudnn";
  }
  return "?";
}

CudaTransformer::CudaTransformer(const core::ModelSpec& spec, core::Recompute recompute,
                                 Attention attention)
    : spec_(spec), layout_(spec), recompute_(recompute), attention_(attention), d_(spec) {}

CudaTransformer::~CudaTransformer() = default;

std::string CudaTransformer::attention_detail() const {
  return cudnn_ ? cudnn_->describe() : std::string();
}

void CudaTransformer::prepare(int64_t b, int64_t s) {
  if (b == b_ && s == s_) return;
  b_ = b;
  s_ = s;
  n_ = b * s;
  chunk_rows_ = std::clamp<int64_t>(kLogitsChunkElements / d_.vp, 1, n_);
  const bool swiglu = spec_.mlp == core::MlpKind::kSwiGlu;
  const int64_t layers = spec_.num_layers;
  // Two passes over the same carving: the first sizes, the second hands out pointers.
  const bool full = recompute_ == core::Recompute::kFull;
  const bool selective = recompute_ == core::Recompute::kSelective;
  auto carve = [&](Carver& c) {
    blocks_.assign(layers, Block{});
    for (size_t l = 0; l < blocks_.size(); ++l) {
      Block& k = blocks_[l];
      // Full recompute keeps each block's input; the rest is one set that every block's
      // forward (and its rerun before its backward) writes over.
      if (full && l > 0) {
        k = blocks_[0];
        k.r = c.take<bf16>(n_ * d_.h);
        continue;
      }
      k.r = c.take<bf16>(n_ * d_.h);
      k.xn1 = c.take<bf16>(n_ * d_.h);
      k.q = c.take<bf16>(n_ * d_.q_dim);
      k.k = c.take<bf16>(n_ * d_.kv_dim);
      k.v = c.take<bf16>(n_ * d_.kv_dim);
      // Selective recompute: the attention output and log-sum-exp are one set for all blocks,
      // rerun from the kept q, k, v before each block's backward.
      const bool shared_attention = selective && l > 0;
      k.o = shared_attention ? blocks_[0].o : c.take<bf16>(n_ * d_.q_dim);
      k.x_mid = c.take<bf16>(n_ * d_.h);
      k.xn2 = c.take<bf16>(n_ * d_.h);
      k.g = swiglu ? c.take<bf16>(n_ * d_.ffn) : nullptr;
      k.u = c.take<bf16>(n_ * d_.ffn);
      k.act = c.take<bf16>(n_ * d_.ffn);
      k.mean1 = c.take<float>(n_);
      k.rstd1 = c.take<float>(n_);
      k.mean2 = c.take<float>(n_);
      k.rstd2 = c.take<float>(n_);
      k.lse = shared_attention ? blocks_[0].lse : c.take<float>(b_ * d_.heads * s_);
    }
    embed_pre_ = spec_.embedding_norm ? c.take<bf16>(n_ * d_.h) : nullptr;
    embed_mean_ = c.take<float>(n_);
    embed_rstd_ = c.take<float>(n_);
    r_final_ = c.take<bf16>(n_ * d_.h);
    xf_ = c.take<bf16>(n_ * d_.h);
    mlp_out_ = c.take<bf16>(n_ * d_.h);
    final_mean_ = c.take<float>(n_);
    final_rstd_ = c.take<float>(n_);
    dr_ = c.take<bf16>(n_ * d_.h);
    dxn_ = c.take<bf16>(n_ * d_.h);
    dact_ = c.take<bf16>(n_ * d_.ffn);
    dg_ = swiglu ? c.take<bf16>(n_ * d_.ffn) : nullptr;
    du_ = c.take<bf16>(n_ * d_.ffn);
    dattn_ = c.take<bf16>(n_ * d_.q_dim);
    dq_ = c.take<bf16>(n_ * d_.q_dim);
    dk_ = c.take<bf16>(n_ * d_.kv_dim);
    dv_ = c.take<bf16>(n_ * d_.kv_dim);
    logits_ = c.take<bf16>(chunk_rows_ * d_.vp);
    loss_n_ = c.take<float>(n_);
    inputs_ = c.take<int32_t>(n_);
    targets_ = c.take<int32_t>(n_);
    rope_cos_ = c.take<float>(s_ * std::max<int64_t>(d_.rot_dim / 2, 1));
    rope_sin_ = c.take<float>(s_ * std::max<int64_t>(d_.rot_dim / 2, 1));
    alibi_ = c.take<float>(d_.heads);
    zero_bias_ = c.take<float>(d_.h);
    discard_dbias_ = c.take<float>(d_.h);
  };
  Carver sizer(nullptr);
  carve(sizer);
  acts_mem_ = cu::DeviceBytes(sizer.used());
  Carver real(static_cast<char*>(acts_mem_.get()));
  carve(real);

  if (attention_ == Attention::kCudnn) {
    // One plan per batch shape, kept: evaluation batches alternate with training ones, and
    // planning compiles cuDNN's runtime-fusion kernels (seconds).
    auto& plan = cudnn_plans_[{b_, s_}];
    if (!plan) {
      std::string why;
      plan = cu::CudnnAttention::create({b_, s_, d_.heads, d_.kv_heads, d_.head_dim}, &why);
      if (!plan) throw cu::CudaError("--attention cudnn: " + why);
    }
    cudnn_ = plan.get();
  }
  // Scratch of the backward: the largest any kernel asks for.
  const int64_t widest = std::max({d_.h, d_.q_dim, d_.kv_dim, d_.ffn});
  workspace_bytes_ = std::max({cu::rmsnorm_bwd_workspace_bytes(n_, d_.h),
                               cu::layernorm_bwd_workspace_bytes(n_, d_.h),
                               cu::bias_bwd_workspace_bytes(n_, widest),
                               cu::bias_bwd_workspace_bytes(b_, s_ * d_.h),
                               cu::attention_bwd_workspace_bytes(b_, s_, d_.heads),
                               attention_ == Attention::kGemm
                                   ? cu::attention_gemm_workspace_bytes(b_, s_, d_.heads, d_.kv_heads)
                                   : std::size_t{0},
                               cu::embedding_bwd_workspace_bytes(n_),
                               cudnn_ ? cudnn_->workspace_bytes() : std::size_t{0}});
  scratch_mem_ = cu::DeviceBytes(workspace_bytes_);
  workspace_ = scratch_mem_.get();

  // Tables: RoPE (as the CPU model computes them), ALiBi slopes, zeros.
  if (d_.rot_dim > 0) {
    std::vector<float> cos(s_ * d_.rot_dim / 2), sin(s_ * d_.rot_dim / 2);
    kernels::cpu::rope_tables(s_, d_.rot_dim, spec_.rope_theta, cos.data(), sin.data());
    LOOM_CUDA_CHECK(cudaMemcpy(rope_cos_, cos.data(), cos.size() * 4, cudaMemcpyHostToDevice));
    LOOM_CUDA_CHECK(cudaMemcpy(rope_sin_, sin.data(), sin.size() * 4, cudaMemcpyHostToDevice));
  }
  if (spec_.position == core::PositionKind::kAlibi) {
    std::vector<float> slopes(d_.heads);
    kernels::cpu::alibi_slopes(d_.heads, slopes.data());
    LOOM_CUDA_CHECK(cudaMemcpy(alibi_, slopes.data(), slopes.size() * 4, cudaMemcpyHostToDevice));
  }
  LOOM_CUDA_CHECK(cudaMemset(zero_bias_, 0, d_.h * sizeof(float)));
  host_inputs_.assign(n_, 0);
  host_targets_.assign(n_, 0);
  host_loss_.assign(n_, 0.f);
}

int64_t CudaTransformer::activation_bytes() const {
  return static_cast<int64_t>(acts_mem_.bytes() + scratch_mem_.bytes());
}

void CudaTransformer::norm_fwd(const bf16* x, const bf16* residual, int64_t w, int64_t bias,
                               const float* p, bf16* sum, bf16* y, float* mean, float* rstd,
                               cudaStream_t st) {
  if (spec_.norm == core::NormKind::kRmsNorm) {
    cu::rmsnorm_fwd(n_, d_.h, x, residual, p + w, spec_.norm_eps, sum, y, rstd, st);
    return;
  }
  cu::layernorm_fwd(n_, d_.h, x, residual, p + w, bias >= 0 ? p + bias : zero_bias_, spec_.norm_eps,
                    sum, y, mean, rstd, st);
}

void CudaTransformer::norm_bwd(const bf16* dy, const bf16* x, int64_t w, int64_t bias,
                               const float* p, float* gr, const float* mean, const float* rstd,
                               const bf16* dresidual, bf16* dx, cudaStream_t st) {
  if (spec_.norm == core::NormKind::kRmsNorm) {
    cu::rmsnorm_bwd(n_, d_.h, dy, x, p + w, rstd, dresidual, dx, gr + w, workspace_, st);
    return;
  }
  cu::layernorm_bwd(n_, d_.h, dy, x, p + w, mean, rstd, dresidual, dx, gr + w,
                    bias >= 0 ? gr + bias : discard_dbias_, workspace_, st);
}

void CudaTransformer::linear_fwd(const bf16* x, const float* p, const bf16* pb, int64_t w,
                                 int64_t bias, int64_t out, int64_t in, bf16* y, cudaStream_t st) {
  gemm_.matmul_nt(n_, out, in, x, pb + w, y, 0.f, st);
  if (bias >= 0) cu::bias_add(n_, out, p + bias, y, st);
}

void CudaTransformer::linear_bwd(const bf16* dy, const bf16* x, const bf16* pb, float* gr,
                                 int64_t w, int64_t bias, int64_t out, int64_t in, bf16* dx,
                                 bool accumulate_dx, cudaStream_t st) {
  gemm_.matmul_tn(out, in, n_, dy, x, gr + w, 1.f, st);  // dW += dy^T x (fp32, in place)
  if (bias >= 0) cu::bias_bwd(n_, out, dy, gr + bias, workspace_, st);
  if (dx != nullptr) gemm_.matmul_nn(n_, in, out, dy, pb + w, dx, accumulate_dx ? 1.f : 0.f, st);
}

void CudaTransformer::forward(const float* p, const bf16* pb, cudaStream_t st) {
  const ParamLayout& L = layout_;
  bf16* first = blocks_.front().r;
  bf16* emb = spec_.embedding_norm ? embed_pre_ : first;
  cu::embedding_fwd(n_, d_.h, inputs_, pb + L.embed, emb, st);
  if (L.pos_embed >= 0) cu::bias_add(b_, s_ * d_.h, p + L.pos_embed, emb, st);
  if (spec_.embedding_norm) {
    norm_fwd(embed_pre_, nullptr, L.embed_norm_w, L.embed_norm_b, p, nullptr, first, embed_mean_,
             embed_rstd_, st);
  }
  for (size_t l = 0; l < blocks_.size(); ++l) {
    Block& k = blocks_[l];
    const BlockOffsets& o = L.blocks[l];
    // Block l's input r = previous x_mid + previous MLP output, fused into its first norm.
    if (l == 0) {
      norm_fwd(k.r, nullptr, o.attn_norm_w, o.attn_norm_b, p, nullptr, k.xn1, k.mean1, k.rstd1, st);
    } else {
      norm_fwd(mlp_out_, blocks_[l - 1].x_mid, o.attn_norm_w, o.attn_norm_b, p, k.r, k.xn1,
               k.mean1, k.rstd1, st);
    }
    block_fwd(k, o, p, pb, st);
  }
  norm_fwd(mlp_out_, blocks_.back().x_mid, L.final_norm_w, L.final_norm_b, p, r_final_, xf_,
           final_mean_, final_rstd_, st);
}

// Block k's forward from its normalised input xn1 to the MLP output (in mlp_out_).
void CudaTransformer::block_fwd(Block& k, const BlockOffsets& o, const float* p, const bf16* pb,
                                cudaStream_t st) {
  linear_fwd(k.xn1, p, pb, o.wq, o.bq, d_.q_dim, d_.h, k.q, st);
  linear_fwd(k.xn1, p, pb, o.wk, o.bk, d_.kv_dim, d_.h, k.k, st);
  linear_fwd(k.xn1, p, pb, o.wv, o.bv, d_.kv_dim, d_.h, k.v, st);
  if (d_.rot_dim > 0) {
    cu::rope_fwd(b_, s_, d_.heads, d_.head_dim, d_.rot_dim, rope_cos_, rope_sin_, k.q, st);
    cu::rope_fwd(b_, s_, d_.kv_heads, d_.head_dim, d_.rot_dim, rope_cos_, rope_sin_, k.k, st);
  }
  attention_fwd(k, st);
  // The attention output projection goes to mlp_out_ (free again: its sum is in k.r).
  linear_fwd(k.o, p, pb, o.wo, o.bo, d_.h, d_.q_dim, mlp_out_, st);
  norm_fwd(mlp_out_, k.r, o.mlp_norm_w, o.mlp_norm_b, p, k.x_mid, k.xn2, k.mean2, k.rstd2, st);
  if (spec_.mlp == core::MlpKind::kSwiGlu) {
    linear_fwd(k.xn2, p, pb, o.w_gate, -1, d_.ffn, d_.h, k.g, st);
    linear_fwd(k.xn2, p, pb, o.w_up, -1, d_.ffn, d_.h, k.u, st);
    cu::swiglu_fwd(n_ * d_.ffn, k.g, k.u, k.act, st);
  } else {
    linear_fwd(k.xn2, p, pb, o.w_up, o.b_up, d_.ffn, d_.h, k.u, st);
    cu::gelu_fwd(n_ * d_.ffn, k.u, k.act, st);
  }
  linear_fwd(k.act, p, pb, o.w_down, o.b_down, d_.h, d_.ffn, mlp_out_, st);
}

// Block k's attention output and log-sum-exp from its q, k, v.
void CudaTransformer::attention_fwd(Block& k, cudaStream_t st) {
  const float* slopes = spec_.position == core::PositionKind::kAlibi ? alibi_ : nullptr;
  timer_.start(kAttentionPhase, st);
  if (attention_ == Attention::kCudnn) {
    cudnn_->forward(k.q, k.k, k.v, k.o, k.lse, workspace_, st);
  } else if (attention_ == Attention::kFused) {
    cu::attention_fwd_fused(b_, s_, d_.heads, d_.kv_heads, d_.head_dim, k.q, k.k, k.v, slopes, k.o,
                            k.lse, st);
  } else if (attention_ == Attention::kGemm) {
    cu::attention_fwd_gemm(gemm_, b_, s_, d_.heads, d_.kv_heads, d_.head_dim, k.q, k.k, k.v, slopes,
                           k.o, k.lse, workspace_, st);
  } else {
    cu::attention_fwd(b_, s_, d_.heads, d_.kv_heads, d_.head_dim, k.q, k.k, k.v, slopes, k.o, k.lse, st);
  }
  timer_.stop(st);
}

double CudaTransformer::loss(const bf16* pb, float* gr, float grad_scale, bool backward,
                             cudaStream_t st) {
  const bf16* w = pb + layout_.lm_head;
  double total = 0.0;
  for (int64_t r0 = 0; r0 < n_; r0 += chunk_rows_) {
    const int64_t r = std::min(chunk_rows_, n_ - r0);
    const bf16* x = xf_ + r0 * d_.h;
    timer_.start(kLossPhase, st);
    gemm_.matmul_nt(r, d_.vp, d_.h, x, w, logits_, 0.f, st);
    if (backward) {
      cu::cross_entropy_fwd_bwd(r, d_.vp, spec_.vocab_size, targets_ + r0, logits_, grad_scale,
                                loss_n_ + r0, st);
      gemm_.matmul_tn(d_.vp, d_.h, r, logits_, x, gr + layout_.lm_head, 1.f, st);
      gemm_.matmul_nn(r, d_.h, d_.vp, logits_, w, dxn_ + r0 * d_.h, 0.f, st);  // d xf
    } else {
      cu::cross_entropy_fwd(r, d_.vp, spec_.vocab_size, targets_ + r0, logits_, loss_n_ + r0, st);
    }
    timer_.stop(st);
  }
  // One copy and one synchronisation for all chunks; the rows are summed in order on the host.
  LOOM_CUDA_CHECK(cudaMemcpyAsync(host_loss_.data(), loss_n_, n_ * sizeof(float),
                                  cudaMemcpyDeviceToHost, st));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(st));
  timer_.collect(phase_s_);  // everything recorded so far has completed
  for (int64_t i = 0; i < n_; ++i) total += host_loss_[i];
  return total;
}

void CudaTransformer::backward(const float* p, const bf16* pb, float* gr, cudaStream_t st) {
  const ParamLayout& L = layout_;
  // loss() left d xf in dxn_.
  norm_bwd(dxn_, r_final_, L.final_norm_w, L.final_norm_b, p, gr, final_mean_, final_rstd_,
           nullptr, dr_, st);
  const int head_unit = num_units() - 1;
  if (grads_ready_) grads_ready_(head_unit, st);  // the final norm's (and an untied head's)
  const float* slopes = spec_.position == core::PositionKind::kAlibi ? alibi_ : nullptr;
  for (int64_t l = static_cast<int64_t>(blocks_.size()) - 1; l >= 0; --l) {
    Block& k = blocks_[l];
    const BlockOffsets& o = L.blocks[l];
    if (recompute_ == core::Recompute::kFull) {
      // Rerun the block from its kept input, as Megatron's full recompute does (its output, in
      // mlp_out_, is not needed); the norm of the stored sum gives the forward's bits.
      norm_fwd(k.r, nullptr, o.attn_norm_w, o.attn_norm_b, p, nullptr, k.xn1, k.mean1, k.rstd1, st);
      block_fwd(k, o, p, pb, st);
    } else if (recompute_ == core::Recompute::kSelective) {
      attention_fwd(k, st);  // the attention output and log-sum-exp, from the kept q, k, v
    }
    // dr_ holds d(block output) = d(x_mid + MLP output).
    linear_bwd(dr_, k.act, pb, gr, o.w_down, o.b_down, d_.h, d_.ffn, dact_, false, st);
    if (spec_.mlp == core::MlpKind::kSwiGlu) {
      cu::swiglu_bwd(n_ * d_.ffn, dact_, k.g, k.u, dg_, du_, st);
      linear_bwd(dg_, k.xn2, pb, gr, o.w_gate, -1, d_.ffn, d_.h, dxn_, false, st);
      linear_bwd(du_, k.xn2, pb, gr, o.w_up, -1, d_.ffn, d_.h, dxn_, true, st);
    } else {
      cu::gelu_bwd(n_ * d_.ffn, dact_, k.u, du_, st);
      linear_bwd(du_, k.xn2, pb, gr, o.w_up, o.b_up, d_.ffn, d_.h, dxn_, false, st);
    }
    // d x_mid = norm2'(d xn2) + d(block output), in place in dr_.
    norm_bwd(dxn_, k.x_mid, o.mlp_norm_w, o.mlp_norm_b, p, gr, k.mean2, k.rstd2, dr_, dr_, st);
    linear_bwd(dr_, k.o, pb, gr, o.wo, o.bo, d_.h, d_.q_dim, dattn_, false, st);
    timer_.start(kAttentionPhase, st);
    if (attention_ == Attention::kCudnn) {
      cudnn_->backward(k.q, k.k, k.v, k.o, k.lse, dattn_, dq_, dk_, dv_, workspace_, st);
    } else if (attention_ == Attention::kFused) {
      cu::attention_bwd_fused(b_, s_, d_.heads, d_.kv_heads, d_.head_dim, k.q, k.k, k.v, slopes, k.o,
                              k.lse, dattn_, dq_, dk_, dv_, workspace_, st);
    } else if (attention_ == Attention::kGemm) {
      cu::attention_bwd_gemm(gemm_, b_, s_, d_.heads, d_.kv_heads, d_.head_dim, k.q, k.k, k.v, slopes,
                             k.o, k.lse, dattn_, dq_, dk_, dv_, workspace_, st);
    } else {
      cu::attention_bwd(b_, s_, d_.heads, d_.kv_heads, d_.head_dim, k.q, k.k, k.v, slopes, k.o, k.lse,
                        dattn_, dq_, dk_, dv_, workspace_, st);
    }
    timer_.stop(st);
    if (d_.rot_dim > 0) {
      cu::rope_bwd(b_, s_, d_.heads, d_.head_dim, d_.rot_dim, rope_cos_, rope_sin_, dq_, st);
      cu::rope_bwd(b_, s_, d_.kv_heads, d_.head_dim, d_.rot_dim, rope_cos_, rope_sin_, dk_, st);
    }
    linear_bwd(dq_, k.xn1, pb, gr, o.wq, o.bq, d_.q_dim, d_.h, dxn_, false, st);
    linear_bwd(dk_, k.xn1, pb, gr, o.wk, o.bk, d_.kv_dim, d_.h, dxn_, true, st);
    linear_bwd(dv_, k.xn1, pb, gr, o.wv, o.bv, d_.kv_dim, d_.h, dxn_, true, st);
    // d r = norm1'(d xn1) + d x_mid, in place in dr_.
    norm_bwd(dxn_, k.r, o.attn_norm_w, o.attn_norm_b, p, gr, k.mean1, k.rstd1, dr_, dr_, st);
    if (grads_ready_) grads_ready_(static_cast<int>(l) + 1, st);
  }
  const bf16* de = dr_;
  if (spec_.embedding_norm) {
    norm_bwd(dr_, embed_pre_, L.embed_norm_w, L.embed_norm_b, p, gr, embed_mean_, embed_rstd_,
             nullptr, dxn_, st);
    de = dxn_;
  }
  cu::embedding_bwd(n_, d_.h, inputs_, de, gr + L.embed, workspace_, workspace_bytes_, st);
  if (L.pos_embed >= 0) cu::bias_bwd(b_, s_ * d_.h, de, gr + L.pos_embed, workspace_, st);
  if (grads_ready_) grads_ready_(0, st);  // the embedding's (and a tied head's)
}

int64_t CudaTransformer::unit_begin(int unit) const {
  if (unit == 0) return 0;
  if (unit <= static_cast<int>(layout_.blocks.size())) return layout_.blocks[unit - 1].attn_norm_w;
  return unit == num_units() - 1 ? layout_.final_norm_w : layout_.total();
}

namespace {
void split_tokens(const int32_t* tokens, int64_t b, int64_t s, int32_t* inputs, int32_t* targets) {
  for (int64_t i = 0; i < b; ++i) {
    std::copy(tokens + i * (s + 1), tokens + i * (s + 1) + s, inputs + i * s);
    std::copy(tokens + i * (s + 1) + 1, tokens + (i + 1) * (s + 1), targets + i * s);
  }
}
}  // namespace

double CudaTransformer::forward_backward(const float* params, const bf16* params_bf16,
                                         float* grads, const int32_t* tokens, int64_t b,
                                         int64_t s, float grad_scale, cudaStream_t stream) {
  prepare(b, s);
  split_tokens(tokens, b, s, host_inputs_.data(), host_targets_.data());
  LOOM_CUDA_CHECK(cudaMemcpyAsync(inputs_, host_inputs_.data(), n_ * 4, cudaMemcpyHostToDevice, stream));
  LOOM_CUDA_CHECK(cudaMemcpyAsync(targets_, host_targets_.data(), n_ * 4, cudaMemcpyHostToDevice, stream));
  forward(params, params_bf16, stream);
  const double total = loss(params_bf16, grads, grad_scale, true, stream);
  backward(params, params_bf16, grads, stream);
  LOOM_CUDA_CHECK(cudaStreamSynchronize(stream));  // host token buffers are reused next call
  timer_.collect(phase_s_);
  return total;
}

double CudaTransformer::forward_loss(const float* params, const bf16* params_bf16,
                                     const int32_t* tokens, int64_t b, int64_t s,
                                     cudaStream_t stream) {
  prepare(b, s);
  split_tokens(tokens, b, s, host_inputs_.data(), host_targets_.data());
  LOOM_CUDA_CHECK(cudaMemcpyAsync(inputs_, host_inputs_.data(), n_ * 4, cudaMemcpyHostToDevice, stream));
  LOOM_CUDA_CHECK(cudaMemcpyAsync(targets_, host_targets_.data(), n_ * 4, cudaMemcpyHostToDevice, stream));
  forward(params, params_bf16, stream);
  return loss(params_bf16, nullptr, 0.f, false, stream);
}

}  // namespace loom::train
