// ZeRO-3 parameter, gradient and optimizer shares: see zero3.h.
#include "trainer/zero3.h"

#include <algorithm>

#include <fmt/format.h>

namespace loom::train {

Zero3Shards::Zero3Shards(const Transformer<float>& model, const OptimizerConfig& cfg,
                         comm::Communicator* dp)
    : dp_(dp) {
  const int64_t n = dp->size(), r = dp->rank();
  int64_t largest = 0;
  for (int u = 0; u < model.num_units(); ++u) {
    Unit unit;
    unit.begin = model.unit_begin(u);
    unit.end = model.unit_end(u);
    unit.per = (unit.end - unit.begin + n - 1) / n;
    unit.params.assign(unit.per, 0.f);
    unit.grads.assign(unit.per, 0.f);
    const int64_t first = unit.begin + r * unit.per;
    // Elements of the share past the unit's end are padding: zero weights with zero gradients,
    // which AdamW leaves at zero whatever decay flag the range it lands on carries.
    unit.optim = std::make_unique<AdamW>(model.layout(), cfg, first, first + unit.per);
    largest = std::max(largest, unit.per);
    units_.push_back(std::move(unit));
  }
  staging_.assign(largest, 0.f);
}

core::Result<const float*> Zero3Shards::acquire(int u) {
  Unit& unit = units_[u];
  if (unit.refs++ == 0) {
    unit.full.assign(unit.per * dp_->size(), 0.f);
    LOOM_RETURN_IF_ERROR(dp_->all_gather(unit.params.data(), unit.full.data(), unit.per)
                             .with_context(fmt::format("ZeRO-3 gather of unit {}", u)));
    track_gathered();
  }
  return static_cast<const float*>(unit.full.data());
}

core::Result<float*> Zero3Shards::grads(int u) {
  Unit& unit = units_[u];
  if (unit.refs == 0) {
    return core::error(core::ErrorCode::kInternal, "ZeRO-3: gradients of unit {} asked for while it is not gathered", u);
  }
  if (unit.full_grads.empty()) {
    unit.full_grads.assign(unit.per * dp_->size(), 0.f);
    track_gathered();
  }
  return unit.full_grads.data();
}

core::Status Zero3Shards::release(int u) {
  Unit& unit = units_[u];
  if (unit.refs <= 0) {
    return core::error(core::ErrorCode::kInternal, "ZeRO-3: unit {} released more often than gathered", u);
  }
  if (--unit.refs > 0) return core::ok_status();
  if (!unit.full_grads.empty()) {  // this backward's gradients into the shares, at once
    LOOM_RETURN_IF_ERROR(dp_->reduce_scatter(unit.full_grads.data(), staging_.data(), unit.per)
                             .with_context(fmt::format("ZeRO-3 reduce-scatter of unit {}", u)));
    for (int64_t i = 0; i < unit.per; ++i) unit.grads[i] += staging_[i];
    std::vector<float>().swap(unit.full_grads);  // freed, not just cleared
  }
  std::vector<float>().swap(unit.full);
  return core::ok_status();
}

void Zero3Shards::zero_grads() {
  for (Unit& unit : units_) std::fill(unit.grads.begin(), unit.grads.end(), 0.f);
}

double Zero3Shards::grad_sum_of_squares(const std::vector<std::pair<int64_t, int64_t>>& ranges) const {
  double squares = 0;
  for (const Unit& unit : units_) {
    const int64_t first = unit.begin + dp_->rank() * unit.per;
    const int64_t last = std::min(first + unit.per, unit.end);  // padding is not counted
    for (const auto& [begin, end] : ranges) {
      const int64_t b = std::max(begin, first), e = std::min(end, last);
      if (b < e) squares += AdamW::grad_sum_of_squares(unit.grads.data() + (b - first), e - b);
    }
  }
  return squares;
}

void Zero3Shards::update(double lr, double coefficient) {
  for (Unit& unit : units_) unit.optim->update(unit.params.data(), unit.grads.data(), lr, coefficient);
}

core::Status Zero3Shards::gather(What what, std::vector<float>* flat) {
  flat->assign(units_.empty() ? 0 : static_cast<size_t>(units_.back().end), 0.f);
  for (Unit& unit : units_) {
    const std::vector<float>& share = what == What::kParams   ? unit.params
                                      : what == What::kExpAvg ? unit.optim->exp_avg()
                                                              : unit.optim->exp_avg_sq();
    std::vector<float> full(unit.per * dp_->size());
    LOOM_RETURN_IF_ERROR(dp_->all_gather(share.data(), full.data(), unit.per));
    std::copy(full.begin(), full.begin() + (unit.end - unit.begin), flat->begin() + unit.begin);
  }
  return core::ok_status();
}

void Zero3Shards::scatter(const float* params, const float* exp_avg, const float* exp_avg_sq) {
  for (Unit& unit : units_) {
    const int64_t first = unit.begin + dp_->rank() * unit.per;
    for (auto [from, to] : {std::pair{params, &unit.params}, {exp_avg, &unit.optim->exp_avg()},
                            {exp_avg_sq, &unit.optim->exp_avg_sq()}}) {
      for (int64_t i = 0; i < unit.per; ++i)
        (*to)[i] = first + i < unit.end ? from[first + i] : 0.f;
    }
  }
}

void Zero3Shards::set_updates(int64_t n) {
  for (Unit& unit : units_) unit.optim->set_updates(n);
}

int64_t Zero3Shards::state_bytes() const {
  int64_t elements = static_cast<int64_t>(staging_.size());
  for (const Unit& unit : units_) elements += 4 * unit.per;  // weights, gradients, two moments
  return elements * static_cast<int64_t>(sizeof(float));
}

void Zero3Shards::track_gathered() {
  int64_t bytes = 0;
  for (const Unit& unit : units_)
    bytes += static_cast<int64_t>((unit.full.capacity() + unit.full_grads.capacity()) * sizeof(float));
  gathered_high_water_bytes_ = std::max(gathered_high_water_bytes_, bytes);
}

}  // namespace loom::train
