//===- ArtifactTestSupport.h - Shared by the compiled-layer tests ---------===//
//
// Where the test artifacts (Artifacts.cmake) lie, the skip when a build has
// none (no compiler), and the error measure the tests compare with.
//
//===----------------------------------------------------------------------===//

#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "fwp/runtime/CompiledLayer.h"
#include "fwp/runtime/Layer.h"

#include <algorithm>
#include <filesystem>
#include <string>

namespace fwp::test {

inline std::string artifactPath(const std::string &name) {
  return std::string(FWP_TEST_ARTIFACTS) + "/" + name + ".fwpk";
}

/// max |a - b| / max(max |b|, 1).
inline double relativeError(const torch::Tensor &a, const torch::Tensor &b) {
  double scale = std::max(b.abs().max().item<double>(), 1.0);
  return (a - b).abs().max().item<double>() / scale;
}

/// `prefix` followed by the per-step sizes of `spec` ([B, H, T] + [n] for a
/// seq input, [H] + [...] for a param, [B, H] + [...] for a state).
inline std::vector<int64_t> shapeWithPrefix(std::vector<int64_t> prefix,
                                            const fwp::TensorSpec &spec,
                                            const fwp::Dims &dims) {
  for (int64_t size : fwp::resolveShape(spec, dims))
    prefix.push_back(size);
  return prefix;
}

/// Random inputs for every seq input, param and (with `withInit`) initial
/// state of `artifact`'s signature, [batch, heads, steps, ...]. The decays'
/// logits (inputs named alpha, decay or g) are centred on `decayShift`:
/// sigmoid(-6) = 0.0025 forgets almost everything each step, sigmoid(6) =
/// 0.9975 almost nothing.
inline fwp::TensorMap decayLayerInputs(const fwp::Artifact &artifact, int64_t batch,
                                       int64_t heads, int64_t steps, bool withInit,
                                       double decayShift, uint64_t seed) {
  torch::manual_seed(seed);
  auto options = torch::TensorOptions().dtype(artifact.dtype());
  const fwp::LayerSignature &signature = artifact.signature();
  auto isDecay = [](const std::string &name) {
    return name == "alpha" || name == "decay" || name == "g";
  };
  fwp::TensorMap inputs;
  for (const auto &spec : signature.seq) {
    torch::Tensor value = torch::randn(
        shapeWithPrefix({batch, heads, steps}, spec, artifact.dims()), options);
    inputs[spec.name] = isDecay(spec.name) ? 0.5 * value + decayShift : value;
  }
  for (const auto &spec : signature.params) {
    torch::Tensor value =
        0.5 * torch::randn(shapeWithPrefix({heads}, spec, artifact.dims()), options);
    inputs[spec.name] = isDecay(spec.name) ? value + decayShift : value;
  }
  if (withInit)
    for (const auto &spec : signature.states)
      inputs[fwp::initName(spec.name)] =
          0.3 * torch::randn(shapeWithPrefix({batch, heads}, spec, artifact.dims()), options);
  return inputs;
}

} // namespace fwp::test

#define REQUIRE_ARTIFACT(name)                                                 \
  if (!std::filesystem::exists(::fwp::test::artifactPath(name)))               \
  GTEST_SKIP() << "no artifact " << ::fwp::test::artifactPath(name)            \
               << " (the build has no compiler: FWP_ENABLE_COMPILER=OFF)"
