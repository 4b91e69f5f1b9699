//===- VTrace.cpp - V-trace off-policy targets ----------------------------===//
#include "fwp/rl/VTrace.h"

#include "fwp/runtime/Layer.h" // fwp::Error

namespace fwp::rl {

namespace {
void checkTimeMajor(const torch::Tensor &t, const char *name, const torch::Tensor &like) {
  if (t.dim() != 2 || t.sizes() != like.sizes())
    throw Error(std::string("vtrace: '") + name + "' must be [T, B] = " +
                c10::str(like.sizes()) + ", got " + c10::str(t.sizes()));
}
} // namespace

VTraceReturns vtraceFromImportanceWeights(const torch::Tensor &logRhos,
                                          const torch::Tensor &discounts,
                                          const torch::Tensor &rewards,
                                          const torch::Tensor &values,
                                          const torch::Tensor &bootstrapValue,
                                          const VTraceClipping &clipping) {
  checkTimeMajor(values, "values", values);
  checkTimeMajor(logRhos, "log_rhos", values);
  checkTimeMajor(discounts, "discounts", values);
  checkTimeMajor(rewards, "rewards", values);
  if (bootstrapValue.dim() != 1 || bootstrapValue.size(0) != values.size(1))
    throw Error("vtrace: 'bootstrap_value' must be [B] = [" + std::to_string(values.size(1)) +
                "], got " + c10::str(bootstrapValue.sizes()));

  torch::NoGradGuard noGrad;
  const torch::Tensor rhos = logRhos.exp();
  const torch::Tensor clippedRhos = rhos.clamp_max(clipping.rho);
  const torch::Tensor cs = rhos.clamp_max(clipping.c);
  const torch::Tensor nextValues =
      torch::cat({values.slice(0, 1), bootstrapValue.unsqueeze(0)}, 0);
  const torch::Tensor deltas = clippedRhos * (rewards + discounts * nextValues - values);

  // v_t - V(x_t), accumulated backwards in time.
  const int64_t steps = values.size(0);
  std::vector<torch::Tensor> corrections(steps);
  torch::Tensor carry = torch::zeros_like(bootstrapValue);
  for (int64_t t = steps - 1; t >= 0; --t) {
    carry = deltas[t] + discounts[t] * cs[t] * carry;
    corrections[t] = carry;
  }
  const torch::Tensor vs = torch::stack(corrections, 0) + values;
  const torch::Tensor nextVs = torch::cat({vs.slice(0, 1), bootstrapValue.unsqueeze(0)}, 0);
  const torch::Tensor pgRhos = rhos.clamp_max(clipping.pgRho);
  const torch::Tensor pgAdvantages = pgRhos * (rewards + discounts * nextVs - values);
  return {vs, pgAdvantages};
}

torch::Tensor actionLogProbs(const torch::Tensor &logits, const torch::Tensor &actions) {
  return torch::log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1);
}

VTraceReturns vtraceFromLogits(const torch::Tensor &behaviourLogits,
                               const torch::Tensor &targetLogits, const torch::Tensor &actions,
                               const torch::Tensor &discounts, const torch::Tensor &rewards,
                               const torch::Tensor &values, const torch::Tensor &bootstrapValue,
                               const VTraceClipping &clipping) {
  if (behaviourLogits.sizes() != targetLogits.sizes() || behaviourLogits.dim() != 3)
    throw Error("vtrace: behaviour and target logits must both be [T, B, A], got " +
                c10::str(behaviourLogits.sizes()) + " and " + c10::str(targetLogits.sizes()));
  torch::NoGradGuard noGrad;
  const torch::Tensor logRhos =
      actionLogProbs(targetLogits, actions) - actionLogProbs(behaviourLogits, actions);
  return vtraceFromImportanceWeights(logRhos, discounts, rewards, values, bootstrapValue,
                                     clipping);
}

} // namespace fwp::rl
