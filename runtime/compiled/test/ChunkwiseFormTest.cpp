//===- ChunkwiseFormTest.cpp - The chunkwise form against the recurrent one ===//
//
// fwp-compile --chunk=N compiles the forward scans of the linear layers
// (linear_transformer, delta_net and the three decaying layers) in the
// chunkwise form (docs/compiler.md, "The chunkwise form"); --chunk=off in
// the recurrent form. Both artifacts of a layer run on the same inputs:
// outputs and final states of the forward and of the training forward, and
// every gradient (the training forward is chunkwise too where it records
// only vectors), must agree to 1e-10 in f64 and 1e-4 in f32, over lengths
// that are not multiples of the chunk, shorter than a chunk, a single step,
// initial states or none and decays near 0 and 1.
//
// The test-only layers of layers/ take the chunkwise form's building blocks
// for the backward scans: scans backwards in time (`reverse`), transposed
// reads (W x) of the weight before and after the write, with K != V, and
// several writes per step on one fast weight (micro-steps; delta_product
// too). A scan backwards in time has a backward that runs forwards in
// time; its gradients are checked against finite differences below.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"

#include "ArtifactTestSupport.h"

#include <gtest/gtest.h>

#include <tuple>

namespace {

using fwp::TensorMap;
using fwp::test::artifactPath;
using fwp::test::relativeError;
using torch::Tensor;

struct Case {
  std::string layer;  // artifacts <layer>_chunk and <layer>_recurrent
  int64_t steps;
  bool withInit;
  double decayShift;  // centre of the decay gates' logits
};

void PrintTo(const Case &c, std::ostream *os) {
  *os << c.layer << " T=" << c.steps << " decay logits ~ " << c.decayShift
      << (c.withInit ? " with initial states" : "");
}

std::string caseName(const testing::TestParamInfo<Case> &info) {
  const Case &c = info.param;
  std::string shift = c.decayShift < 0 ? "m" + std::to_string(int(-c.decayShift))
                                       : std::to_string(int(c.decayShift));
  return c.layer + "_T" + std::to_string(c.steps) + "_decay" + shift +
         (c.withInit ? "_init" : "_zero");
}

/// Outputs and final states of the forward (no gradient) and of the
/// training forward, and the gradients of a random linear loss of one
/// compiled layer.
struct Results {
  TensorMap inference, outputs;
  std::map<std::string, Tensor> gradients;
};

/// Copies of `inputs` that require gradients: their names, the tensors, and
/// the same tensors by name (the layer's inputs).
struct Leaves {
  std::vector<std::string> names;
  std::vector<Tensor> tensors;
  TensorMap byName;
};

Leaves leavesOf(const TensorMap &inputs) {
  Leaves out;
  for (const auto &[name, value] : inputs) {
    out.names.push_back(name);
    out.tensors.push_back(value.clone().requires_grad_(true));
    out.byName[name] = out.tensors.back();
  }
  return out;
}

Results run(const std::string &artifactName, const TensorMap &inputs) {
  auto artifact = fwp::Artifact::load(artifactPath(artifactName));
  fwp::CompiledLayer layer(artifact);
  Leaves leaves = leavesOf(inputs);
  Results result;
  {
    torch::NoGradGuard noGrad;
    result.inference = layer.forward(inputs);
  }
  result.outputs = layer.forward(leaves.byName);
  torch::manual_seed(99);
  Tensor loss = torch::zeros({}, torch::TensorOptions().dtype(artifact->dtype()));
  for (const auto &[name, value] : result.outputs)
    loss = loss + (value * torch::randn(value.sizes(), value.options())).sum();
  std::vector<Tensor> grads = torch::autograd::grad({loss}, leaves.tensors);
  for (size_t i = 0; i < leaves.names.size(); ++i)
    result.gradients[leaves.names[i]] = grads[i];
  return result;
}

class ChunkwiseMatchesRecurrent : public testing::TestWithParam<Case> {};

TEST_P(ChunkwiseMatchesRecurrent, OutputsFinalStatesAndGradients) {
  const Case &c = GetParam();
  std::string chunked = c.layer + "_chunk", recurrent = c.layer + "_recurrent";
  REQUIRE_ARTIFACT(chunked);
  REQUIRE_ARTIFACT(recurrent);
  auto artifact = fwp::Artifact::load(artifactPath(chunked));
  double tolerance = artifact->dtype() == torch::kDouble ? 1e-10 : 1e-4;
  TensorMap inputs =
      fwp::test::decayLayerInputs(*artifact, 2, 2, c.steps, c.withInit, c.decayShift, 17);
  Results got = run(chunked, inputs), want = run(recurrent, inputs);
  for (auto [gotMap, wantMap, kind] :
       {std::tuple{&got.inference, &want.inference, "forward"},
        std::tuple{&got.outputs, &want.outputs, "training forward"}}) {
    ASSERT_EQ(gotMap->size(), wantMap->size()) << kind;
    ASSERT_GE(wantMap->size(), 2u) << kind << ": no final state";
    for (const auto &[name, value] : *wantMap) {
      ASSERT_TRUE(gotMap->count(name)) << kind << ": chunkwise form lacks output " << name;
      EXPECT_LE(relativeError(gotMap->at(name).detach(), value.detach()), tolerance)
          << kind << " output " << name;
    }
  }
  for (const auto &[name, value] : want.gradients) {
    ASSERT_TRUE(got.gradients.at(name).defined()) << "no gradient for " << name;
    EXPECT_LE(relativeError(got.gradients.at(name), value), tolerance)
        << "gradient of " << name;
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  // The models' linear layers and the test-only layers; f64 with chunks of
  // 4 (d = 5, e = 3) and f32 with chunks of 16 (d = 32, e = 16): T = 3 is
  // shorter than either chunk, 37 and 130 no multiple of it.
  for (std::string layer : {"linear_transformer", "delta_net", "gated_delta_net", "retnet",
                            "gla", "reverse_sum", "reverse_decay_sum", "reverse_delta",
                            "gated_delta_transposed", "two_writes", "decay_two_writes",
                            "reverse_decay_two_writes", "decay_after_writes", "delta_product"})
    for (std::string suffix : {"_f64", ""}) {
      std::string name = layer + suffix;
      out.push_back({name, 1, false, 0.0});
      out.push_back({name, 3, true, 0.0});
      out.push_back({name, 37, true, 0.0});
      out.push_back({name, 130, false, 6.0});
      out.push_back({name, 130, true, -6.0});
    }
  // f64 in whole tiles of 8 (d = 16, e = 8, chunks of 8): the transposed
  // copies in registers, with and without a decay, one and two writes.
  for (std::string layer : {"delta_net", "two_writes", "reverse_decay_two_writes"}) {
    std::string name = layer + "_f64_tiles";
    out.push_back({name, 3, true, 0.0});
    out.push_back({name, 37, true, 0.0});
    out.push_back({name, 130, false, -6.0});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(LinearLayers, ChunkwiseMatchesRecurrent, testing::ValuesIn(cases()),
                         caseName);

/// The manifest says which form each CPU kernel took: the forward and
/// training forward of the --chunk artifacts are chunkwise (except where the
/// training forward records the matrix itself, as under store), so are the
/// backward scans of delta_net (in passes, below) and of the decaying
/// layers of the energy form (their adjoint chain writes, then decays),
/// and every --chunk=off kernel is recurrent. Were both artifacts of a layer compiled alike,
/// the comparisons above would pass vacuously.
TEST(ChunkwiseForm, ManifestSaysWhichKernelsAreChunkwise) {
  for (std::string layer : {"delta_net_f64", "gla_f64", "delta_net", "retnet"}) {
    REQUIRE_ARTIFACT(layer + "_chunk");
    auto chunked = fwp::Artifact::load(artifactPath(layer + "_chunk"));
    auto recurrent = fwp::Artifact::load(artifactPath(layer + "_recurrent"));
    int64_t expected = chunked->dtype() == torch::kDouble ? 4 : 16;
    EXPECT_EQ(chunked->forward().chunk, expected) << layer;
    EXPECT_EQ(chunked->backward().chunk, expected) << layer;
    EXPECT_EQ(recurrent->backward().chunk, 0) << layer;
    EXPECT_EQ(recurrent->forward().chunk, 0) << layer;
    EXPECT_EQ(recurrent->forwardTrain().chunk, 0) << layer;
  }
  // delta_net's training forward records vectors (invert): chunkwise; so
  // does gla's (checkpoint, energy form: the reads W g of the output
  // gradients, no matrix).
  auto deltaNet = fwp::Artifact::load(artifactPath("delta_net_f64_chunk"));
  EXPECT_EQ(deltaNet->forwardTrain().chunk, 4);
  auto gla = fwp::Artifact::load(artifactPath("gla_f64_chunk"));
  EXPECT_EQ(gla->forwardTrain().chunk, 4);
  // The f64 whole-tile artifacts: chunks of 8, the backward of delta_net
  // and two_writes (inverted writes) in chunkwise passes too.
  for (std::string layer : {"delta_net", "two_writes", "reverse_decay_two_writes"}) {
    std::string name = layer + "_f64_tiles";
    REQUIRE_ARTIFACT(name + "_chunk");
    auto tiles = fwp::Artifact::load(artifactPath(name + "_chunk"));
    EXPECT_EQ(tiles->forward().chunk, 8) << name;
    EXPECT_EQ(fwp::Artifact::load(artifactPath(name + "_recurrent"))->forward().chunk, 0)
        << name;
  }
  auto deltaNetTiles = fwp::Artifact::load(artifactPath("delta_net_f64_tiles_chunk"));
  EXPECT_EQ(deltaNetTiles->backward().chunk, 8);
}

/// The test-only layers' forward scans (backwards in time, transposed reads,
/// several writes per step, a decay after the write) and delta_product's (two writes per step) are
/// chunkwise under --chunk and recurrent under --chunk=off; the training
/// forwards that record only vectors too.
TEST(ChunkwiseForm, ReverseScansTransposedReadsAndMicroStepsAreChunkwise) {
  for (std::string layer : {"reverse_sum", "reverse_decay_sum", "reverse_delta",
                            "gated_delta_transposed", "two_writes", "decay_two_writes",
                            "reverse_decay_two_writes", "decay_after_writes", "delta_product"})
    for (std::string suffix : {"_f64", ""}) {
      std::string name = layer + suffix;
      REQUIRE_ARTIFACT(name + "_chunk");
      auto chunked = fwp::Artifact::load(artifactPath(name + "_chunk"));
      auto recurrent = fwp::Artifact::load(artifactPath(name + "_recurrent"));
      int64_t expected = suffix == "_f64" ? 4 : 16;
      EXPECT_EQ(chunked->forward().chunk, expected) << name;
      EXPECT_EQ(recurrent->forward().chunk, 0) << name;
      EXPECT_EQ(recurrent->forwardTrain().chunk, 0) << name;
      // Without a decay the write inverts (the tape is vectors).
      bool recordsVectors = layer == "reverse_sum" || layer == "reverse_delta" ||
                            layer == "two_writes" || layer == "delta_product";
      EXPECT_EQ(chunked->forwardTrain().chunk, recordsVectors ? expected : 0) << name;
    }
}

/// The backward of a scan that runs backwards in time runs forwards in time
/// (fwp-differentiate): every gradient of the reverse test layers (recurrent
/// and chunkwise forms, f64) against central differences of the loss, at a
/// few entries of every input, the initial state included. Invert (sum and
/// delta rule) and store (the decay) backwards both.
TEST(ChunkwiseForm, ReverseLayersGradientsMatchFiniteDifferences) {
  for (std::string layer : {"reverse_sum", "reverse_decay_sum", "reverse_delta"})
    for (std::string form : {"_f64_recurrent", "_f64_chunk"}) {
      std::string name = layer + form;
      REQUIRE_ARTIFACT(name);
      auto artifact = fwp::Artifact::load(artifactPath(name));
      fwp::CompiledLayer compiled(artifact);
      TensorMap inputs = fwp::test::decayLayerInputs(*artifact, 1, 2, 6, true, 0.0, 23);
      torch::manual_seed(31);
      Tensor cotangent;
      auto loss = [&](const TensorMap &in) {
        TensorMap out = compiled.forward(in);
        if (!cotangent.defined())
          cotangent = torch::randn(out.at("y").sizes(), out.at("y").options());
        Tensor total = (out.at("y") * cotangent).sum();
        for (const auto &[key, value] : out)
          if (key != "y")
            total = total + value.sum(); // the final state
        return total;
      };
      Leaves leaves = leavesOf(inputs);
      const std::vector<std::string> &names = leaves.names;
      std::vector<Tensor> grads =
          torch::autograd::grad({loss(leaves.byName)}, leaves.tensors);
      const double h = 1e-6;
      for (size_t i = 0; i < names.size(); ++i) {
        Tensor flat = inputs.at(names[i]).reshape(-1);
        for (int64_t entry : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
          TensorMap plus = inputs, minus = inputs;
          plus[names[i]] = inputs.at(names[i]).clone();
          minus[names[i]] = inputs.at(names[i]).clone();
          plus[names[i]].view(-1)[entry] += h;
          minus[names[i]].view(-1)[entry] -= h;
          torch::NoGradGuard noGrad;
          double numeric = (loss(plus).item<double>() - loss(minus).item<double>()) / (2 * h);
          double analytic = grads[i].reshape(-1)[entry].item<double>();
          EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
              << name << ": d loss / d " << names[i] << "[" << entry << "]";
        }
      }
    }
}

/// A backward scan of two fast weights (the weight rebuilt backwards and
/// its adjoint) whose updates take no coefficient from each other's reads
/// runs as passes over time of one weight each, every pass chunkwise
/// (StagedScan.cpp): linear_transformer's and reverse_sum's W, then the
/// adjoint; delta_net's, delta_product's and reverse_delta's adjoint first
/// (a sum write and delta writes of value 0 per step; the residuals v - vbar
/// come off the tape), then W with all its reads, those whose queries come
/// from the adjoint's among them (two passes, W rebuilt once). The gradients
/// of these kernels are the ones compared with the recurrent form's above.
TEST(ChunkwiseForm, BackwardOfTwoWeightsRunsInChunkwisePasses) {
  for (auto [layer, stages] :
       {std::pair{"linear_transformer", 2}, std::pair{"reverse_sum", 2},
        std::pair{"delta_net", 2}, std::pair{"delta_product", 2},
        std::pair{"reverse_delta", 2}}) {
    for (std::string suffix : {"_f64", ""}) {
      std::string name = layer + suffix;
      REQUIRE_ARTIFACT(name + "_chunk");
      auto chunked = fwp::Artifact::load(artifactPath(name + "_chunk"));
      auto recurrent = fwp::Artifact::load(artifactPath(name + "_recurrent"));
      EXPECT_EQ(chunked->backward().chunk, suffix == "_f64" ? 4 : 16) << name;
      EXPECT_EQ(chunked->backward().stages, stages) << name;
      EXPECT_EQ(recurrent->backward().chunk, 0) << name;
      EXPECT_EQ(recurrent->backward().stages, 1) << name;
    }
  }
}

} // namespace
