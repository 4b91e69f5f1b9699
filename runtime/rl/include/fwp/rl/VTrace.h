//===- VTrace.h - V-trace off-policy targets (Espeholt et al. 2018) -*- C++ -*-===//
//
// As torchbeast's core/vtrace.py: time-major [T, B] tensors, computed without
// gradient; rho_bar = c_bar = 1 (and the policy-gradient rho clipped at 1)
// unless given otherwise.
//
//   rho_t = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t)),  c_t = min(c_bar, ...)
//   delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t))
//   v_t - V(x_t) = delta_t + gamma_t c_t (v_{t+1} - V(x_{t+1}))
//   pg_advantage_t = min(rho_pg, ...) (r_t + gamma_t v_{t+1} - V(x_t))
// with V(x_T) = v_T = the bootstrap value and gamma_t = 0 where the episode
// ended after step t.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <torch/torch.h>

namespace fwp::rl {

struct VTraceReturns {
  torch::Tensor vs;           ///< [T, B] value targets
  torch::Tensor pgAdvantages; ///< [T, B]
};

struct VTraceClipping {
  double rho = 1.0;   ///< rho_bar
  double c = 1.0;     ///< c_bar
  double pgRho = 1.0; ///< clip of rho in the policy-gradient advantage
};

/// logRhos, discounts, rewards, values: [T, B]; bootstrapValue: [B].
VTraceReturns vtraceFromImportanceWeights(const torch::Tensor &logRhos,
                                          const torch::Tensor &discounts,
                                          const torch::Tensor &rewards,
                                          const torch::Tensor &values,
                                          const torch::Tensor &bootstrapValue,
                                          const VTraceClipping &clipping = {});

/// log pi(a_t|x_t) of the taken actions: logits [T, B, A], actions [T, B].
torch::Tensor actionLogProbs(const torch::Tensor &logits, const torch::Tensor &actions);

/// V-trace from the behaviour (actor) and target (learner) policy logits.
VTraceReturns vtraceFromLogits(const torch::Tensor &behaviourLogits,
                               const torch::Tensor &targetLogits, const torch::Tensor &actions,
                               const torch::Tensor &discounts, const torch::Tensor &rewards,
                               const torch::Tensor &values, const torch::Tensor &bootstrapValue,
                               const VTraceClipping &clipping = {});

} // namespace fwp::rl
