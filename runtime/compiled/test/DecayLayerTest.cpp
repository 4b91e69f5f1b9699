//===- DecayLayerTest.cpp - The decaying layers against eager references -===//
//
// models/gated_delta_net.mlir, retnet.mlir and gla.mlir (and
// delta_product.mlir, the layer docs/writing-a-layer.md adds), compiled by
// fwp-compile under each backward strategy that applies (their decays
// cannot be inverted: store, checkpoint with a few segment lengths; for
// delta_product invert too), against the runtime's eager LibTorch
// references (fwp::makeReferenceLayer, written from shared/MODELS.md "Beyond
// the paper" and docs/models.md; runtime/core/test checks them by hand,
// against unrolled forms and finite differences):
// outputs, final states and every gradient (autograd through the reference),
// over T = 1 and T = 300, odd d, decays near sigmoid(-6) and sigmoid(6), with
// and without initial states; finite differences for retnet's decay param.
// The CUDA kernels of the f32 artifacts are checked the same way on a GPU.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"

#include "ArtifactTestSupport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

namespace {

namespace fs = std::filesystem;
using fwp::TensorMap;
using torch::Tensor;
using fwp::test::artifactPath;
using fwp::test::relativeError;


struct Case {
  std::string artifact;
  int64_t batch, heads, steps;
  bool withInit;
  double decayShift;
};

void PrintTo(const Case &c, std::ostream *os) {
  *os << c.artifact << " B=" << c.batch << " H=" << c.heads << " T=" << c.steps
      << " decay input ~ " << c.decayShift << (c.withInit ? " with initial states" : "");
}

std::string caseName(const testing::TestParamInfo<Case> &info) {
  const Case &c = info.param;
  std::string shift = c.decayShift < 0 ? "m" + std::to_string(int(-c.decayShift))
                                       : std::to_string(int(c.decayShift));
  return c.artifact + "_B" + std::to_string(c.batch) + "H" + std::to_string(c.heads) + "T" +
         std::to_string(c.steps) + "_decay" + shift + (c.withInit ? "_init" : "_zero");
}

/// Runs the compiled layer (on `device`) and the reference (in the
/// artifact's dtype, f64 for CUDA runs) on the same inputs and compares
/// outputs, final states and the gradients of a random linear loss.
void compareWithReference(const Case &c, torch::Device device, double tolerance) {
  auto artifact = fwp::Artifact::load(artifactPath(c.artifact));
  fwp::CompiledLayer compiled(artifact);
  auto reference = fwp::makeReferenceLayer(artifact->signature().layer, artifact->dims());
  torch::ScalarType referenceType = device.is_cuda() ? torch::kDouble : artifact->dtype();
  TensorMap inputs =
      fwp::test::decayLayerInputs(*artifact, c.batch, c.heads, c.steps, c.withInit, c.decayShift, 2024);
  std::vector<std::string> names;
  std::vector<Tensor> leavesCompiled, leavesReference;
  TensorMap compiledInputs, referenceInputs;
  for (const auto &[name, value] : inputs) {
    names.push_back(name);
    leavesCompiled.push_back(value.to(device).requires_grad_(true));
    leavesReference.push_back(value.to(referenceType).requires_grad_(true));
    compiledInputs[name] = leavesCompiled.back();
    referenceInputs[name] = leavesReference.back();
  }
  TensorMap got = compiled.forward(compiledInputs);
  TensorMap want = reference->forward(referenceInputs);
  ASSERT_EQ(got.size(), want.size());
  torch::manual_seed(99);
  auto referenceOptions = torch::TensorOptions().dtype(referenceType);
  Tensor lossCompiled = torch::zeros({}, torch::TensorOptions().dtype(artifact->dtype()).device(device));
  Tensor lossReference = torch::zeros({}, referenceOptions);
  for (const auto &[name, value] : want) {
    ASSERT_TRUE(got.count(name)) << "compiled layer lacks output " << name;
    ASSERT_EQ(got[name].sizes(), value.sizes()) << name;
    EXPECT_LE(relativeError(got[name].detach().cpu().to(referenceType), value.detach()), tolerance)
        << "output " << name;
    Tensor cotangent = torch::randn(value.sizes(), referenceOptions);
    lossCompiled = lossCompiled +
                   (got[name] * cotangent.to(artifact->dtype()).to(device)).sum();
    lossReference = lossReference + (value * cotangent).sum();
  }
  auto gradsCompiled = torch::autograd::grad({lossCompiled}, leavesCompiled);
  auto gradsReference = torch::autograd::grad({lossReference}, leavesReference);
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(gradsCompiled[i].defined()) << "no gradient for " << names[i];
    EXPECT_LE(relativeError(gradsCompiled[i].cpu().to(referenceType), gradsReference[i]),
              tolerance)
        << "gradient of " << names[i];
  }
}

class DecayLayerMatchesReference : public testing::TestWithParam<Case> {};

TEST_P(DecayLayerMatchesReference, OutputsFinalStatesAndGradients) {
  const Case &c = GetParam();
  REQUIRE_ARTIFACT(c.artifact);
  auto artifact = fwp::Artifact::load(artifactPath(c.artifact));
  compareWithReference(c, torch::kCPU, artifact->dtype() == torch::kDouble ? 1e-10 : 1e-4);
}

/// Every layer under every strategy that applies: the default
/// (checkpoint:64 for the decaying layers, invert for delta_product), store,
/// and checkpoint with a segment length that does not divide T.
std::vector<std::string> variants(const std::string &layer) {
  return {layer + "_f64", layer + "_f64_store", layer + "_f64_ckpt7"};
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const char *layer : {"gated_delta_net", "retnet", "gla", "delta_product"}) {
    for (const std::string &artifact : variants(layer)) {
      out.push_back({artifact, 1, 2, 1, false, 0.0});
      out.push_back({artifact, 2, 2, 300, true, 6.0});
      out.push_back({artifact, 2, 2, 300, false, -6.0});
      out.push_back({artifact, 1, 3, 23, true, 0.0});
    }
    out.push_back({layer, 2, 3, 37, true, 0.0});
    out.push_back({layer, 1, 2, 300, false, 6.0});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(DecayLayers, DecayLayerMatchesReference, testing::ValuesIn(cases()),
                         caseName);

class DecayLayerCudaMatchesReference : public testing::TestWithParam<Case> {};

TEST_P(DecayLayerCudaMatchesReference, OutputsFinalStatesAndGradients) {
  const Case &c = GetParam();
  REQUIRE_ARTIFACT(c.artifact);
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device (LibTorch sees no GPU)";
  compareWithReference(c, torch::kCUDA, 1e-4);
}

std::vector<Case> cudaCases() {
  std::vector<Case> out;
  for (const char *layer : {"gated_delta_net", "retnet", "gla", "delta_product"})
    for (const std::string &artifact : {std::string(layer), std::string(layer) + "_store"}) {
      out.push_back({artifact, 2, 3, 37, true, 0.0});
      out.push_back({artifact, 1, 2, 300, false, 6.0});
      out.push_back({artifact, 1, 2, 1, false, -6.0});
    }
  return out;
}

INSTANTIATE_TEST_SUITE_P(DecayLayers, DecayLayerCudaMatchesReference,
                         testing::ValuesIn(cudaCases()), caseName);

/// The runtime's reference has the compiled layer's signature: the names,
/// order and per-step shapes of seq inputs, params and states, and the
/// params' initial values (fwp.param_init).
TEST(DecayLayer, ReferenceHasTheArtifactsSignature) {
  auto names = [](const std::vector<fwp::TensorSpec> &specs) {
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    for (const auto &spec : specs)
      out.emplace_back(spec.name, spec.shape);
    return out;
  };
  for (const char *layer : {"gated_delta_net", "retnet", "gla", "delta_product"}) {
    SCOPED_TRACE(layer);
    REQUIRE_ARTIFACT(layer);
    auto artifact = fwp::Artifact::load(artifactPath(layer));
    auto reference = fwp::makeReferenceLayer(layer, artifact->dims());
    const fwp::LayerSignature &want = artifact->signature(), &got = reference->signature();
    EXPECT_EQ(got.layer, want.layer);
    EXPECT_EQ(names(got.seq), names(want.seq));
    EXPECT_EQ(names(got.params), names(want.params));
    EXPECT_EQ(names(got.states), names(want.states));
    EXPECT_EQ(got.output.name, want.output.name);
    EXPECT_EQ(got.output.shape, want.output.shape);
    EXPECT_EQ(reference->dims(), artifact->dims());
    EXPECT_EQ(reference->paramInits(), artifact->paramInits());
  }
}

/// The gradient of retnet's decay param against central finite differences
/// of the compiled forward (f64), under each strategy.
TEST(DecayLayer, RetnetDecayGradientMatchesFiniteDifferences) {
  for (const std::string &name : variants("retnet")) {
    REQUIRE_ARTIFACT(name);
    auto artifact = fwp::Artifact::load(artifactPath(name));
    fwp::CompiledLayer compiled(artifact);
    TensorMap inputs = fwp::test::decayLayerInputs(*artifact, 2, 3, 40, true, 2.0, 7);
    torch::manual_seed(5);
    Tensor cotY = torch::randn({2, 3, 40, artifact->dims().at("d")}, torch::kDouble);
    auto loss = [&](const TensorMap &in) {
      return (compiled.forward(in).at("y") * cotY).sum();
    };
    TensorMap withGrad = inputs;
    Tensor decay = inputs.at("decay").clone().requires_grad_(true);
    withGrad["decay"] = decay;
    Tensor grad = torch::autograd::grad({loss(withGrad)}, {decay})[0];
    const double h = 1e-6;
    for (int64_t head = 0; head < 3; ++head) {
      TensorMap plus = inputs, minus = inputs;
      plus["decay"] = inputs.at("decay").clone();
      minus["decay"] = inputs.at("decay").clone();
      plus["decay"][head] += h;
      minus["decay"][head] -= h;
      torch::NoGradGuard noGrad;
      double numeric = (loss(plus).item<double>() - loss(minus).item<double>()) / (2 * h);
      double analytic = grad[head].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
          << name << " head " << head;
    }
  }
}

/// The f32 energy form against an f64 reference where it is hardest: decays
/// near sigmoid(-6) and a gradient of the final state (the last segment's E
/// starts from rowsum(G (.) W_T), of order 1, while a (.) da is of the order
/// of a; the runtime runs the last step as a span of its own, so that the
/// cancellation stays in that step: docs/design.md, "Accuracy"). Relative
/// error of each gradient, in norm; 2e-4 for gated_delta_net's alpha
/// without the split.
TEST(DecayLayer, F32DecayGradientsAtStrongDecaysWithAFinalStateGradient) {
  for (const char *name : {"gated_delta_net", "retnet", "gla"}) {
    SCOPED_TRACE(name);
    REQUIRE_ARTIFACT(name);
    auto artifact = fwp::Artifact::load(artifactPath(name));
    fwp::CompiledLayer compiled(artifact);
    auto reference = fwp::makeReferenceLayer(artifact->signature().layer, artifact->dims());
    TensorMap inputs = fwp::test::decayLayerInputs(*artifact, 2, 2, 300, true, -6.0, 11);
    std::vector<std::string> names;
    std::vector<Tensor> leaves, referenceLeaves;
    TensorMap compiledInputs, referenceInputs;
    for (const auto &[input, value] : inputs) {
      names.push_back(input);
      leaves.push_back(value.clone().requires_grad_(true));
      referenceLeaves.push_back(value.to(torch::kDouble).requires_grad_(true));
      compiledInputs[input] = leaves.back();
      referenceInputs[input] = referenceLeaves.back();
    }
    TensorMap got = compiled.forward(compiledInputs);
    TensorMap want = reference->forward(referenceInputs);
    torch::manual_seed(12);
    Tensor loss = torch::zeros({}, torch::kDouble), referenceLoss = torch::zeros({}, torch::kDouble);
    for (const auto &[output, value] : want) {
      Tensor cotangent = torch::randn(value.sizes(), torch::kDouble);
      loss = loss + (got.at(output).to(torch::kDouble) * cotangent).sum();
      referenceLoss = referenceLoss + (value * cotangent).sum();
    }
    auto gradients = torch::autograd::grad({loss}, leaves);
    auto referenceGradients = torch::autograd::grad({referenceLoss}, referenceLeaves);
    for (size_t i = 0; i < names.size(); ++i) {
      double error = (gradients[i].to(torch::kDouble) - referenceGradients[i]).norm().item<double>() /
                     referenceGradients[i].norm().item<double>();
      EXPECT_LE(error, 5e-5) << "gradient of " << names[i];
    }
  }
}

/// A checkpointed layer's kernels called one by one, as the CUDA backward
/// calls them per segment: forward_train over the whole sequence records the
/// tape and computes no "y" (nothing reads it), and runCompiledBackward,
/// given "grad.y" and the final state's gradient, matches the reference's
/// gradients (the energy form's E starts from the final state, f64).
TEST(DecayLayer, KernelsOneByOneMatchTheReference) {
  for (const char *name : {"gated_delta_net_f64", "retnet_f64", "gla_f64"}) {
    SCOPED_TRACE(name);
    REQUIRE_ARTIFACT(name);
    auto artifact = fwp::Artifact::load(artifactPath(name));
    ASSERT_GT(artifact->checkpointEvery(), 0);
    TensorMap inputs = fwp::test::decayLayerInputs(*artifact, 2, 2, 70, true, 1.0, 31);
    auto reference = fwp::makeReferenceLayer(artifact->signature().layer, artifact->dims());
    std::vector<std::string> names;
    std::vector<Tensor> leaves;
    TensorMap referenceInputs;
    for (const auto &[input, value] : inputs) {
      names.push_back(input);
      leaves.push_back(value.clone().requires_grad_(true));
      referenceInputs[input] = leaves.back();
    }
    TensorMap want = reference->forward(referenceInputs);
    torch::manual_seed(3);
    TensorMap grads;
    Tensor loss = torch::zeros({}, torch::kDouble);
    for (const auto &[output, value] : want) {
      Tensor cotangent = torch::randn(value.sizes(), torch::kDouble);
      grads["grad." + output] = cotangent;
      loss = loss + (value * cotangent).sum();
    }
    auto wantGrads = torch::autograd::grad({loss}, leaves);

    TensorMap trained = fwp::runCompiledForward(*artifact, inputs, /*train=*/true, grads);
    EXPECT_FALSE(trained.count("y"));
    auto shapes = fwp::compiledForwardShapes(*artifact, 2, 2, 70, /*train=*/true);
    ASSERT_EQ(trained.size(), shapes.size());
    for (const auto &[result, shape] : shapes) {
      ASSERT_TRUE(trained.count(result)) << result;
      EXPECT_EQ(trained.at(result).sizes().vec(), shape) << result;
    }
    EXPECT_LE(relativeError(trained.at("final.W"), want.at("final.W")), 1e-10);
    TensorMap got = fwp::runCompiledBackward(*artifact, inputs, trained, grads);
    for (size_t i = 0; i < names.size(); ++i)
      EXPECT_LE(relativeError(got.at("grad." + names[i]), wantGrads[i]), 1e-10)
          << "gradient of " << names[i];
  }
}

/// The CUDA kernels bind their arguments by the same roles and names as the
/// CPU kernels, kernel by kernel (the energy form's grad_output of the
/// training forward, energy of the backward, deferred values and the
/// fourth kernel of gated_delta_net included): one naming for both, so the
/// CUDA runtime, which only a GPU runs, finds what the CPU runtime finds.
TEST(DecayLayer, CudaKernelsBindLikeTheCpuKernels) {
  for (const char *name : {"gated_delta_net", "retnet", "gla", "delta_product", "gla_store"}) {
    SCOPED_TRACE(name);
    REQUIRE_ARTIFACT(name);
    auto artifact = fwp::Artifact::load(artifactPath(name));
    ASSERT_TRUE(artifact->hasCuda());
    const fwp::cuda::KernelBundle &cuda = artifact->cudaKernels("sm_90");
    auto bindings = [](const auto &args) {
      std::vector<std::pair<std::string, std::string>> out;
      for (const auto &arg : args)
        out.emplace_back(arg.role, arg.name);
      return out;
    };
    EXPECT_EQ(bindings(cuda.forward.args), bindings(artifact->forward().args));
    EXPECT_EQ(bindings(cuda.forwardTrain.args), bindings(artifact->forwardTrain().args));
    EXPECT_EQ(bindings(cuda.backward.args), bindings(artifact->backward().args));
    ASSERT_EQ(cuda.backwardDeferred.has_value(), artifact->backwardDeferred() != nullptr);
    if (cuda.backwardDeferred)
      EXPECT_EQ(bindings(cuda.backwardDeferred->args),
                bindings(artifact->backwardDeferred()->args));
  }
  // The energy form's arguments, by name.
  auto gdn = fwp::Artifact::load(artifactPath("gated_delta_net"));
  auto has = [](const auto &args, const std::string &role, const std::string &name) {
    return std::any_of(args.begin(), args.end(),
                       [&](const auto &arg) { return arg.role == role && arg.name == name; });
  };
  const fwp::cuda::KernelBundle &cuda = gdn->cudaKernels("sm_90");
  EXPECT_TRUE(has(cuda.forwardTrain.args, "grad_output", "y"));
  EXPECT_TRUE(has(cuda.backward.args, "energy", "W"));
  EXPECT_TRUE(has(cuda.backward.args, "deferred", "deferred.W.0"));
  ASSERT_TRUE(cuda.backwardDeferred);
  EXPECT_TRUE(has(cuda.backwardDeferred->args, "deferred", "deferred.W.0"));
  EXPECT_TRUE(has(cuda.backwardDeferred->args, "grad_seq", "k"));
}

/// The strategies are visible in the manifest and the runtime reads them:
/// store keeps the tape of W, checkpoint says its segment length.
TEST(DecayLayer, ManifestSaysTheStrategy) {
  REQUIRE_ARTIFACT("gla_f64_ckpt7");
  auto checkpointed = fwp::Artifact::load(artifactPath("gla_f64_ckpt7"));
  EXPECT_EQ(checkpointed->checkpointEvery(), 7);
  EXPECT_EQ(checkpointed->backwardStrategies().at("W"), "checkpoint");
  auto stored = fwp::Artifact::load(artifactPath("gla_f64_store"));
  EXPECT_EQ(stored->checkpointEvery(), 0);
  EXPECT_EQ(stored->backwardStrategies().at("W"), "store");
  ASSERT_EQ(stored->tape().size(), 1u);
  EXPECT_EQ(stored->tape()[0].name, "tape.W.prev");
  auto byDefault = fwp::Artifact::load(artifactPath("gla_f64"));
  EXPECT_EQ(byDefault->checkpointEvery(), 64);
}

/// retnet asks for its decay's initial value in the IR (fwp.param_init);
/// the manifest carries it to the runtime.
TEST(DecayLayer, RetnetDeclaresItsDecayInit) {
  REQUIRE_ARTIFACT("retnet");
  auto artifact = fwp::Artifact::load(artifactPath("retnet"));
  ASSERT_EQ(artifact->paramInits().size(), 1u);
  EXPECT_EQ(artifact->paramInits().at("decay"), "linspace:3.0:7.0");
  Tensor init = fwp::initialParam(artifact->paramInits().at("decay"), 5, {1});
  EXPECT_TRUE(torch::allclose(init.view({5}), torch::tensor({3.0, 4.0, 5.0, 6.0, 7.0}).to(torch::kFloat)));
}

} // namespace
