//===- ArtifactTestSupport.h - Shared by the compiled-layer tests ---------===//
//
// Where the test artifacts (Artifacts.cmake) lie, the skip when a build has
// none (no compiler), and the error measure the tests compare with.
//
//===----------------------------------------------------------------------===//

#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

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

} // namespace fwp::test

#define REQUIRE_ARTIFACT(name)                                                 \
  if (!std::filesystem::exists(::fwp::test::artifactPath(name)))               \
  GTEST_SKIP() << "no artifact " << ::fwp::test::artifactPath(name)            \
               << " (the build has no compiler: FWP_ENABLE_COMPILER=OFF)"
