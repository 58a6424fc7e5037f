// ZeRO-2 / ZeRO-3 shares of each unit's weights, gradients and moments: see zero_shards.h.
#include "trainer/zero_shards.h"

#include <algorithm>

#include <fmt/format.h>

namespace loom::train {

ZeroShards::ZeroShards(const Transformer<float>& model, const OptimizerConfig& cfg,
                       comm::Communicator* dp, int stage)
    : dp_(dp), stage_(stage) {
  const int64_t n = dp->size(), r = dp->rank();
  int64_t largest = 0;
  for (int u = 0; u < model.num_units(); ++u) {
    Unit unit;
    unit.begin = model.unit_begin(u);
    unit.end = model.unit_end(u);
    unit.per = (unit.end - unit.begin + n - 1) / n;
    if (stage == 3) {
      unit.params.assign(unit.per, 0.f);
    } else {
      unit.full.assign(unit.per * n, 0.f);
    }
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

float* ZeroShards::share_params(Unit& unit) {
  return stage_ == 3 ? unit.params.data() : unit.full.data() + dp_->rank() * unit.per;
}

core::Result<const float*> ZeroShards::acquire(int u) {
  Unit& unit = units_[u];
  if (unit.refs++ == 0 && stage_ == 3) {
    unit.full.assign(unit.per * dp_->size(), 0.f);
    LOOM_RETURN_IF_ERROR(dp_->all_gather(unit.params.data(), unit.full.data(), unit.per)
                             .with_context(fmt::format("ZeRO-3 gather of unit {}", u)));
    track_gathered();
  }
  return static_cast<const float*>(unit.full.data());
}

core::Result<float*> ZeroShards::grads(int u) {
  Unit& unit = units_[u];
  if (unit.refs == 0) {
    return core::error(core::ErrorCode::kInternal, "ZeRO-{}: gradients of unit {} asked for while it is not acquired", stage_, u);
  }
  if (unit.full_grads.empty()) {
    unit.full_grads.assign(unit.per * dp_->size(), 0.f);
    track_gathered();
  }
  return unit.full_grads.data();
}

core::Status ZeroShards::release(int u) {
  Unit& unit = units_[u];
  if (unit.refs <= 0) {
    return core::error(core::ErrorCode::kInternal, "ZeRO-{}: unit {} released more often than acquired", stage_, u);
  }
  if (--unit.refs > 0) return core::ok_status();
  if (!unit.full_grads.empty()) {  // this backward's gradients into the shares, at once
    LOOM_RETURN_IF_ERROR(dp_->reduce_scatter(unit.full_grads.data(), staging_.data(), unit.per)
                             .with_context(fmt::format("ZeRO-{} reduce-scatter of unit {}", stage_, u)));
    for (int64_t i = 0; i < unit.per; ++i) unit.grads[i] += staging_[i];
    std::vector<float>().swap(unit.full_grads);  // freed, not just cleared
  }
  if (stage_ == 3) std::vector<float>().swap(unit.full);
  return core::ok_status();
}

void ZeroShards::zero_grads() {
  for (Unit& unit : units_) std::fill(unit.grads.begin(), unit.grads.end(), 0.f);
}

double ZeroShards::grad_sum_of_squares(const std::vector<std::pair<int64_t, int64_t>>& ranges) const {
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

core::Status ZeroShards::update(double lr, double coefficient) {
  for (size_t u = 0; u < units_.size(); ++u) {
    Unit& unit = units_[u];
    unit.optim->update(share_params(unit), unit.grads.data(), lr, coefficient);
    if (stage_ == 2) {  // in place: this rank's share is already where it belongs in `full`
      LOOM_RETURN_IF_ERROR(dp_->all_gather(share_params(unit), unit.full.data(), unit.per)
                               .with_context(fmt::format("ZeRO-2 weight gather of unit {}", u)));
    }
  }
  return core::ok_status();
}

core::Status ZeroShards::gather(What what, std::vector<float>* flat) {
  flat->assign(units_.empty() ? 0 : static_cast<size_t>(units_.back().end), 0.f);
  for (Unit& unit : units_) {
    const float* share = what == What::kParams   ? share_params(unit)
                         : what == What::kExpAvg ? unit.optim->exp_avg().data()
                                                 : unit.optim->exp_avg_sq().data();
    std::vector<float> full(unit.per * dp_->size());
    LOOM_RETURN_IF_ERROR(dp_->all_gather(share, full.data(), unit.per));
    std::copy(full.begin(), full.begin() + (unit.end - unit.begin), flat->begin() + unit.begin);
  }
  return core::ok_status();
}

void ZeroShards::scatter(const float* params, const float* exp_avg, const float* exp_avg_sq) {
  for (Unit& unit : units_) {
    const int64_t first = unit.begin + dp_->rank() * unit.per;
    for (auto [from, to] : {std::pair{params, share_params(unit)},
                            {exp_avg, unit.optim->exp_avg().data()},
                            {exp_avg_sq, unit.optim->exp_avg_sq().data()}}) {
      for (int64_t i = 0; i < unit.per; ++i) to[i] = first + i < unit.end ? from[first + i] : 0.f;
    }
    if (stage_ == 2) {  // the whole weights, as every rank holds them
      std::fill(unit.full.begin(), unit.full.end(), 0.f);
      std::copy(params + unit.begin, params + unit.end, unit.full.begin());
    }
  }
}

void ZeroShards::set_updates(int64_t n) {
  for (Unit& unit : units_) unit.optim->set_updates(n);
}

int64_t ZeroShards::state_bytes() const {
  int64_t elements = static_cast<int64_t>(staging_.size());
  for (const Unit& unit : units_) {  // gradients and two moments of the share, and the weights
    elements += 3 * unit.per + (stage_ == 3 ? unit.per : static_cast<int64_t>(unit.full.size()));
  }
  return elements * static_cast<int64_t>(sizeof(float));
}

void ZeroShards::track_gathered() {
  int64_t bytes = 0;
  for (const Unit& unit : units_) {
    const size_t gathered = stage_ == 3 ? unit.full.capacity() : 0;  // ZeRO-2: state
    bytes += static_cast<int64_t>((gathered + unit.full_grads.capacity()) * sizeof(float));
  }
  gathered_high_water_bytes_ = std::max(gathered_high_water_bytes_, bytes);
}

}  // namespace loom::train
