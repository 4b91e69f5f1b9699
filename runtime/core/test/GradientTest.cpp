//===- GradientTest.cpp - Autograd of every layer vs finite differences ---===//
//
// For L = Σ y ⊙ g_y + Σ_s final.s ⊙ g_s (random g's), every entry of every
// seq input, param and initial state: autograd's dL/dx against the central
// difference (L(x + h) − L(x − h)) / 2h in float64.
//
//===----------------------------------------------------------------------===//
#include "TestSupport.h"

namespace fwp::test {
namespace {

double weightedLoss(const TensorMap &outputs, const TensorMap &outputGrads) {
  double loss = 0;
  for (const auto &[name, grad] : outputGrads)
    loss += (outputs.at(name) * grad).sum().item<double>();
  return loss;
}

class Gradient : public ::testing::TestWithParam<std::string> {};

TEST_P(Gradient, MatchesCentralDifferences) {
  // Small but not degenerate: d_ff != d catches a transposed W1/W2.
  const auto layer = makeReferenceLayer(GetParam(), dimsFor(GetParam(), 3, 4));
  TensorMap inputs = randomInputs(*layer, 2, 2, 3, torch::kDouble, 31, true);

  TensorMap outputGrads;
  {
    torch::NoGradGuard noGrad;
    torch::manual_seed(37);
    for (const auto &[name, tensor] : layer->forward(inputs))
      outputGrads[name] = torch::randn_like(tensor);
  }

  std::vector<std::string> names;
  std::vector<torch::Tensor> leaves;
  for (auto &[name, tensor] : inputs) {
    tensor.requires_grad_(true);
    names.push_back(name);
    leaves.push_back(tensor);
  }
  const TensorMap outputs = layer->forward(inputs);
  std::vector<torch::Tensor> roots, rootGrads;
  for (const auto &[name, grad] : outputGrads) {
    roots.push_back(outputs.at(name));
    rootGrads.push_back(grad);
  }
  const std::vector<torch::Tensor> grads =
      torch::autograd::grad(roots, leaves, rootGrads, false, false, /*allow_unused=*/true);

  torch::NoGradGuard noGrad;
  const double step = 1e-6;
  size_t checked = 0;
  for (size_t i = 0; i < leaves.size(); ++i) {
    SCOPED_TRACE(names[i]);
    ASSERT_TRUE(grads[i].defined()) << "no gradient reaches " << names[i];
    const torch::Tensor analytic = grads[i].contiguous();
    TensorMap probe;
    for (const auto &[name, tensor] : inputs)
      probe[name] = tensor.detach();
    torch::Tensor perturbed = inputs.at(names[i]).detach().clone().contiguous();
    probe[names[i]] = perturbed;
    double *values = perturbed.data_ptr<double>();
    for (int64_t j = 0; j < perturbed.numel(); ++j) {
      const double original = values[j];
      values[j] = original + step;
      const double plus = weightedLoss(layer->forward(probe), outputGrads);
      values[j] = original - step;
      const double minus = weightedLoss(layer->forward(probe), outputGrads);
      values[j] = original;
      const double numeric = (plus - minus) / (2 * step);
      const double exact = analytic.data_ptr<double>()[j];
      EXPECT_NEAR(exact, numeric, 1e-6 + 1e-6 * std::abs(exact)) << names[i] << " entry " << j;
      ++checked;
    }
    // A gradient that is zero everywhere would pass trivially; none should be.
    EXPECT_GT(analytic.abs().max().item<double>(), 1e-8) << names[i];
  }
  size_t expectedCount = 0;
  for (const auto &leaf : leaves)
    expectedCount += leaf.numel();
  EXPECT_EQ(checked, expectedCount);
}

INSTANTIATE_TEST_SUITE_P(AllLayers, Gradient, ::testing::ValuesIn(referenceLayerNames()),
                         [](const auto &info) { return info.param; });

} // namespace
} // namespace fwp::test
