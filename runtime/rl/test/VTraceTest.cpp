// V-trace against a hand-computed example and, on-policy, against n-step
// bootstrapped returns computed by a direct double loop.
#include "fwp/rl/VTrace.h"
#include "fwp/runtime/Layer.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace fwp::rl;

namespace {
torch::Tensor column(std::vector<double> values) {
  return torch::tensor(values, torch::kDouble).unsqueeze(1); // [T, 1]
}
} // namespace

TEST(VTrace, HandComputedExample) {
  // Column 0 (worked by hand):
  //   V = [1, 2, 3], bootstrap 4, r = [1, 0, 2], gamma = [.5, .5, 0] (the
  //   episode ends after t = 2), rho = [2, .5, 1] -> clipped rho = c = [1, .5, 1].
  //   delta = rho (r + gamma V_next - V) = [1(1+1-1), .5(0+1.5-2), 1(2+0-3)]
  //         = [1, -.25, -1]
  //   v - V: t2 = -1; t1 = -.25 + .5*.5*(-1) = -.5; t0 = 1 + .5*1*(-.5) = .75
  //   vs = [1.75, 1.5, 2]
  //   pg_adv = rho (r + gamma vs_next - V) = [1(1+.75-1), .5(0+1-2), 1(2+0-3)]
  //          = [.75, -.5, -1]
  // Column 1: V = 0, bootstrap 10, r = 0, gamma = 1, rho = 1:
  //   vs = [10, 10, 10], pg_adv = [10, 10, 10].
  const torch::Tensor values = torch::cat({column({1, 2, 3}), column({0, 0, 0})}, 1);
  const torch::Tensor bootstrap = torch::tensor({4.0, 10.0}, torch::kDouble);
  const torch::Tensor rewards = torch::cat({column({1, 0, 2}), column({0, 0, 0})}, 1);
  const torch::Tensor discounts = torch::cat({column({.5, .5, 0}), column({1, 1, 1})}, 1);
  const torch::Tensor logRhos =
      torch::cat({column({std::log(2.0), std::log(0.5), 0}), column({0, 0, 0})}, 1);

  const VTraceReturns r =
      vtraceFromImportanceWeights(logRhos, discounts, rewards, values, bootstrap);
  const double vs[3][2] = {{1.75, 10}, {1.5, 10}, {2, 10}};
  const double adv[3][2] = {{0.75, 10}, {-0.5, 10}, {-1, 10}};
  for (int t = 0; t < 3; ++t)
    for (int b = 0; b < 2; ++b) {
      EXPECT_NEAR(r.vs[t][b].item<double>(), vs[t][b], 1e-12) << "t=" << t << " b=" << b;
      EXPECT_NEAR(r.pgAdvantages[t][b].item<double>(), adv[t][b], 1e-12)
          << "t=" << t << " b=" << b;
    }
}

TEST(VTrace, OnPolicyTargetsAreNStepReturns) {
  // With pi = mu every rho and c is 1, and v_t is the bootstrapped return
  //   v_t = sum_{k>=t} (prod_{t<=j<k} gamma_j) r_k + (prod_{j>=t} gamma_j) V_boot.
  torch::manual_seed(3);
  const int64_t steps = 7, batch = 3;
  const torch::Tensor values = torch::randn({steps, batch}, torch::kDouble);
  const torch::Tensor rewards = torch::randn({steps, batch}, torch::kDouble);
  torch::Tensor discounts = torch::full({steps, batch}, 0.9, torch::kDouble);
  discounts[2][0] = 0; // episode ends inside the unroll
  discounts[5][1] = 0;
  const torch::Tensor bootstrap = torch::randn({batch}, torch::kDouble);
  const VTraceReturns r = vtraceFromImportanceWeights(torch::zeros({steps, batch}, torch::kDouble),
                                                      discounts, rewards, values, bootstrap);
  auto V = values.accessor<double, 2>();
  auto R = rewards.accessor<double, 2>();
  auto G = discounts.accessor<double, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<double> target(steps + 1);
    target[steps] = bootstrap[b].item<double>();
    for (int64_t t = 0; t < steps; ++t) {
      double total = 0, weight = 1;
      for (int64_t k = t; k < steps; ++k) {
        total += weight * R[k][b];
        weight *= G[k][b];
      }
      total += weight * bootstrap[b].item<double>();
      target[t] = total;
      EXPECT_NEAR(r.vs[t][b].item<double>(), total, 1e-10) << "t=" << t << " b=" << b;
    }
    for (int64_t t = 0; t < steps; ++t)
      EXPECT_NEAR(r.pgAdvantages[t][b].item<double>(),
                  R[t][b] + G[t][b] * target[t + 1] - V[t][b], 1e-10);
  }
}

TEST(VTrace, FromLogitsUsesTheTakenActionsRatio) {
  // logits [0, ln 3] -> pi = [.25, .75]: log pi(1) = ln .75.
  const torch::Tensor logits = torch::tensor({0.0, std::log(3.0)}, torch::kDouble).view({1, 1, 2});
  const torch::Tensor action = torch::ones({1, 1}, torch::kLong);
  EXPECT_NEAR(actionLogProbs(logits, action).item<double>(), std::log(0.75), 1e-12);

  // Behaviour uniform, target [.25, .75]: rho(a=1) = .75 / .5 = 1.5 -> clipped
  // to 1 in the value target, while rho(a=0) = .5 stays.
  const torch::Tensor behaviour = torch::zeros({1, 2, 2}, torch::kDouble);
  const torch::Tensor target = torch::cat({logits, logits}, 1);
  const torch::Tensor actions = torch::tensor({1L, 0L}).view({1, 2});
  const torch::Tensor zeros = torch::zeros({1, 2}, torch::kDouble);
  const torch::Tensor rewards = torch::ones({1, 2}, torch::kDouble);
  const VTraceReturns r = vtraceFromLogits(behaviour, target, actions, zeros, rewards, zeros,
                                           torch::zeros({2}, torch::kDouble));
  // gamma = 0, V = 0: vs = V + rho_clipped * r.
  EXPECT_NEAR(r.vs[0][0].item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(r.vs[0][1].item<double>(), 0.5, 1e-12);
  EXPECT_NEAR(r.pgAdvantages[0][1].item<double>(), 0.5, 1e-12);
}

TEST(VTrace, RejectsMismatchedShapes) {
  const torch::Tensor v = torch::zeros({4, 2});
  EXPECT_THROW(vtraceFromImportanceWeights(torch::zeros({3, 2}), v, v, v, torch::zeros({2})),
               fwp::Error);
  EXPECT_THROW(vtraceFromImportanceWeights(v, v, v, v, torch::zeros({3})), fwp::Error);
}
