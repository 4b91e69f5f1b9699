//===- Precision.h - bf16 autocast for the slow parts of a model -*- C++ -*-===//
//
// train.precision = "bf16": LibTorch's autocast runs matrix products
// (projections, FFN, heads, LSTM/attention baselines) in bfloat16 while the
// weights (and Adam's state) stay float32. The fast-weight layer opts out
// (FastWeightBlockImpl::forward): its inputs are cast back to float32 and it
// runs with autocast off, so its state and arithmetic stay float32.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/Layer.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <string>

namespace fwp::train {

/// Checks a train.precision value: "f32" or "bf16".
inline void checkPrecision(const std::string &precision, const std::string &source) {
  if (precision != "f32" && precision != "bf16")
    throw Error(source + ": train.precision must be \"f32\" or \"bf16\", not \"" + precision +
                "\"");
}

/// While alive (and `precision` is "bf16"): autocast to bfloat16 on
/// `device`'s type. Restores the previous setting afterwards.
class AutocastGuard {
public:
  AutocastGuard(const std::string &precision, const torch::Device &device)
      : type_(device.type()), active_(precision == "bf16") {
    if (!active_)
      return;
    wasEnabled_ = at::autocast::is_autocast_enabled(type_);
    previousType_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_)
      return;
    if (at::autocast::decrement_nesting() == 0)
      at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, wasEnabled_);
    at::autocast::set_autocast_dtype(type_, previousType_);
  }
  AutocastGuard(const AutocastGuard &) = delete;
  AutocastGuard &operator=(const AutocastGuard &) = delete;

private:
  c10::DeviceType type_;
  bool active_;
  bool wasEnabled_ = false;
  at::ScalarType previousType_ = at::kFloat;
};

/// While alive: autocast off on `type` (the fast-weight layer's f32 island).
class AutocastOff {
public:
  explicit AutocastOff(c10::DeviceType type)
      : type_(type), wasEnabled_(at::autocast::is_autocast_enabled(type)) {
    at::autocast::set_autocast_enabled(type_, false);
  }
  ~AutocastOff() { at::autocast::set_autocast_enabled(type_, wasEnabled_); }
  AutocastOff(const AutocastOff &) = delete;
  AutocastOff &operator=(const AutocastOff &) = delete;
  bool wasEnabled() const { return wasEnabled_; }

private:
  c10::DeviceType type_;
  bool wasEnabled_;
};

} // namespace fwp::train
