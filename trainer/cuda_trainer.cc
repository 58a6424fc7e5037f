// CudaTrainer: see cuda_transformer.h. One iteration on the device: the micro-batches' forward
// and backward (CudaTransformer), the data-parallel sums when a GradReducer is set, the global
// gradient norm, Megatron's clip coefficient and AdamW over the flat buffers.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/adamw.h"
#include "kernels/cuda/bias.h"
#include "kernels/cuda/fill.h"
#include "trainer/cuda_transformer.h"

namespace loom::train {

namespace cu = loom::kernels::cuda;
using bf16 = __nv_bfloat16;

void CudaTrainer::allocate() {
  count_ = model_->layout().total();
  ranges_ = decay_ranges(model_->layout());
  LOOM_CUDA_CHECK(cudaStreamCreate(&stream_));
  params_ = cu::DeviceBuffer<float>(count_);
  grads_ = cu::DeviceBuffer<float>(count_);
  m_ = cu::DeviceBuffer<float>(count_);
  v_ = cu::DeviceBuffer<float>(count_);
  params_bf16_ = cu::DeviceBuffer<bf16>(count_);
  partials_ = cu::DeviceBuffer<double>(cu::kGradNormBlocks);
  norm_ = cu::DeviceBuffer<double>(1);
  coef_ = cu::DeviceBuffer<float>(1);
  for (cudaEvent_t& e : events_) LOOM_CUDA_CHECK(cudaEventCreate(&e));
  LOOM_CUDA_CHECK(cudaMemset(m_.get(), 0, count_ * 4));
  LOOM_CUDA_CHECK(cudaMemset(v_.get(), 0, count_ * 4));
}

CudaTrainer::CudaTrainer(std::unique_ptr<CudaTransformer> model, const OptimizerConfig& optimizer,
                         const std::vector<float>& params)
    : model_(std::move(model)), cfg_(optimizer) {
  if (static_cast<int64_t>(params.size()) != model_->layout().total()) {
    throw std::invalid_argument("CudaTrainer: " + std::to_string(params.size()) +
                                " initial parameters for a model of " +
                                std::to_string(model_->layout().total()));
  }
  allocate();
  LOOM_CUDA_CHECK(cudaMemcpy(params_.get(), params.data(), count_ * 4, cudaMemcpyHostToDevice));
  cu::convert_to_bf16(count_, params_.get(), params_bf16_.get(), stream_);
  LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaTrainer::CudaTrainer(std::unique_ptr<CudaTransformer> model, const OptimizerConfig& optimizer,
                         uint64_t seed, double init_std)
    : model_(std::move(model)), cfg_(optimizer) {
  allocate();
  const int64_t layers = static_cast<int64_t>(model_->layout().blocks.size());
  const double residual_std = init_std / std::sqrt(2.0 * std::max<int64_t>(1, layers));
  for (const ParamInfo& p : model_->layout().params()) {
    float* w = params_.get() + p.offset;
    switch (p.init) {
      case InitKind::kNormal:
        cu::fill_normal(p.size, seed, p.offset, static_cast<float>(init_std), w, stream_);
        break;
      case InitKind::kNormalResidual:
        cu::fill_normal(p.size, seed, p.offset, static_cast<float>(residual_std), w, stream_);
        break;
      case InitKind::kOnes: cu::fill_value(p.size, 1.f, w, stream_); break;
      case InitKind::kZeros: cu::fill_value(p.size, 0.f, w, stream_); break;
    }
  }
  cu::convert_to_bf16(count_, params_.get(), params_bf16_.get(), stream_);
  LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaTrainer::~CudaTrainer() {
  for (cudaEvent_t e : events_)
    if (e != nullptr) cudaEventDestroy(e);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

CudaTrainer::Step CudaTrainer::compute_step(const std::vector<std::vector<int32_t>>& micro_batches,
                                            int64_t mbs, int64_t seq) {
  LOOM_CUDA_CHECK(cudaEventRecord(events_[0], stream_));
  LOOM_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, count_ * 4, stream_));
  const int ranks = reducer_ != nullptr ? reducer_->size() : 1;
  const double tokens = static_cast<double>(micro_batches.size()) * mbs * seq * ranks;
  const float scale = static_cast<float>(1.0 / tokens);  // mean over the global batch
  double loss_sum = 0.0;
  core::Status reduce_status = core::ok_status();
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    if (reducer_ != nullptr && i + 1 == micro_batches.size()) {
      model_->set_grads_ready_hook([&](int unit, cudaStream_t st) {
        const int64_t begin = model_->unit_begin(unit), end = model_->unit_begin(unit + 1);
        if (reduce_status.ok()) reduce_status = reducer_->start(grads_.get() + begin, end - begin, st);
      });
    }
    loss_sum += model_->forward_backward(params_.get(), params_bf16_.get(), grads_.get(),
                                         micro_batches[i].data(), mbs, seq, scale, stream_);
  }
  if (reducer_ != nullptr) {
    model_->set_grads_ready_hook({});
    if (reduce_status.ok()) reduce_status = reducer_->finish(stream_);
    if (!reduce_status.ok()) throw cu::CudaError(reduce_status.message());
    auto total = reducer_->sum(loss_sum);
    if (!total.ok()) throw cu::CudaError(total.status().message());
    loss_sum = *total;
  }
  cu::grad_norm(grads_.get(), count_, partials_.get(), norm_.get(), stream_);
  LOOM_CUDA_CHECK(cudaEventRecord(events_[1], stream_));
  Step out;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(&out.grad_norm, norm_.get(), sizeof(double),
                                  cudaMemcpyDeviceToHost, stream_));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  float ms = 0;
  LOOM_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[0], events_[1]));
  out.compute_s = 1e-3 * ms;
  out.loss = loss_sum / tokens;
  out.phases = model_->take_phase_times();
  return out;
}

void CudaTrainer::apply_step(double lr, double grad_norm, double gradient_scale) {
  // trainer.cc: clip > 0 && gnorm > clip ? clip / (gnorm + 1e-6) : 1 (Megatron-LM's epsilon),
  // in double and rounded to float as cu::clip_coefficient forms it; times the injected scale.
  const double clip = cfg_.clip_grad;
  host_coef_ = static_cast<float>(clip > 0.0 && grad_norm > clip ? clip / (grad_norm + 1e-6) : 1.0) *
               static_cast<float>(gradient_scale);
  LOOM_CUDA_CHECK(cudaEventRecord(events_[2], stream_));
  LOOM_CUDA_CHECK(cudaMemcpyAsync(coef_.get(), &host_coef_, sizeof(float), cudaMemcpyHostToDevice,
                                  stream_));
  ++updates_;
  kernels::AdamWStep st = adamw_step(cfg_, lr, updates_);
  for (const DecayRange& r : ranges_) {
    st.weight_decay = r.decay ? static_cast<float>(cfg_.weight_decay) : 0.f;
    cu::adamw_update(r.end - r.begin, params_.get() + r.begin, m_.get() + r.begin,
                     v_.get() + r.begin, grads_.get() + r.begin, coef_.get(), st,
                     params_bf16_.get() + r.begin, stream_);
  }
  LOOM_CUDA_CHECK(cudaEventRecord(events_[3], stream_));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_));  // host_coef_ is rewritten next iteration
  float ms = 0;
  LOOM_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[2], events_[3]));
  last_optimizer_s_ = 1e-3 * ms;
}

CudaTrainer::Step CudaTrainer::train_step(const std::vector<std::vector<int32_t>>& micro_batches,
                                          int64_t mbs, int64_t seq, double lr) {
  const Step s = compute_step(micro_batches, mbs, seq);
  apply_step(lr, s.grad_norm, 1.0);
  return s;
}

double CudaTrainer::eval_loss(const std::vector<int32_t>& tokens, int64_t rows, int64_t seq) {
  return model_->forward_loss(params_.get(), params_bf16_.get(), tokens.data(), rows, seq, stream_) /
         static_cast<double>(rows * seq);
}

namespace {
std::vector<float> fetch(const cu::DeviceBuffer<float>& d) {
  std::vector<float> h(d.size());
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
  LOOM_CUDA_CHECK(cudaMemcpy(h.data(), d.get(), h.size() * 4, cudaMemcpyDeviceToHost));
  return h;
}
}  // namespace

void CudaTrainer::restore(const std::vector<float>& params, const std::vector<float>& exp_avg,
                          const std::vector<float>& exp_avg_sq, int64_t updates) {
  for (const auto* v : {&params, &exp_avg, &exp_avg_sq}) {
    if (static_cast<int64_t>(v->size()) != count_)
      throw std::invalid_argument("CudaTrainer::restore: " + std::to_string(v->size()) +
                                  " values for a model of " + std::to_string(count_));
  }
  LOOM_CUDA_CHECK(cudaMemcpy(params_.get(), params.data(), count_ * 4, cudaMemcpyHostToDevice));
  LOOM_CUDA_CHECK(cudaMemcpy(m_.get(), exp_avg.data(), count_ * 4, cudaMemcpyHostToDevice));
  LOOM_CUDA_CHECK(cudaMemcpy(v_.get(), exp_avg_sq.data(), count_ * 4, cudaMemcpyHostToDevice));
  cu::convert_to_bf16(count_, params_.get(), params_bf16_.get(), stream_);
  LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  updates_ = updates;
}

std::vector<float> CudaTrainer::params() const { return fetch(params_); }
std::vector<float> CudaTrainer::exp_avg() const { return fetch(m_); }
std::vector<float> CudaTrainer::exp_avg_sq() const { return fetch(v_); }

}  // namespace loom::train
