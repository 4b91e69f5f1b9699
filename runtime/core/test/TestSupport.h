//===- TestSupport.h - Shared helpers of the core tests ---------*- C++ -*-===//
#pragma once

#include "fwp/runtime/Layer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace fwp::test {

/// FWP_REQUIRE_GPU set (and not "0"): a GPU run, where a GPU test that
/// would skip (no device, no driver, no kernel bundle, no artifact) must
/// fail instead, so that a run that tested nothing cannot pass (docs/gpu.md).
inline bool gpuRequired() {
  const char *value = std::getenv("FWP_REQUIRE_GPU");
  return value != nullptr && *value != '\0' && std::string(value) != "0";
}

/// Skips the current GPU test with the streamed `reason`, or fails it when
/// FWP_REQUIRE_GPU is set. Use instead of GTEST_SKIP in every test that needs
/// a GPU or what a GPU run needs (bundles, artifacts).
#define FWP_GPU_SKIP(reason)                                                   \
  do {                                                                         \
    std::ostringstream fwpGpuSkipReason_;                                      \
    fwpGpuSkipReason_ << reason;                                               \
    if (::fwp::test::gpuRequired())                                            \
      GTEST_FAIL() << "FWP_REQUIRE_GPU is set, but this GPU test would skip: " \
                   << fwpGpuSkipReason_.str();                                 \
    GTEST_SKIP() << fwpGpuSkipReason_.str();                                   \
  } while (false)

/// Deletes `path` and everything below it. Not std::filesystem::remove_all:
/// the LibTorch wheel's libtorch.so exports its own copy of it, which calls a
/// null weak symbol and crashes on any non-empty folder.
inline void removeTree(const std::filesystem::path &path) {
  std::error_code error;
  if (std::filesystem::is_directory(std::filesystem::symlink_status(path, error)))
    for (const auto &entry : std::filesystem::directory_iterator(path))
      removeTree(entry.path());
  std::remove(path.c_str());
}

/// Runs the GPU test `filter` of this very test binary in a child process,
/// without and with FWP_REQUIRE_GPU=1, and checks the switch: with no GPU
/// (`haveGpu` false) the plain run skips and exits 0, the FWP_REQUIRE_GPU=1
/// run fails and says why; with a GPU both runs pass. `filter` must name
/// exactly one test.
inline void expectRequireGpuTurnsSkipIntoFailure(const std::string &filter, bool haveGpu) {
  const std::string log = std::filesystem::temp_directory_path().string() +
                          "/fwp-require-gpu-" + std::to_string(::getpid()) + ".log";
  char self[4096] = {};
  ASSERT_GT(::readlink("/proc/self/exe", self, sizeof self - 1), 0) << "cannot read /proc/self/exe";
  auto run = [&](const std::string &env, std::string &output) {
    const std::string command = env + " '" + self + "' --gtest_filter='" + filter + "' > " +
                                log + " 2>&1";
    const int status = std::system(command.c_str());
    std::ifstream file(log);
    output.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    std::remove(log.c_str());
    return status;
  };
  std::string plain, required;
  const int plainStatus = run("env -u FWP_REQUIRE_GPU", plain);
  const int requiredStatus = run("env FWP_REQUIRE_GPU=1", required);
  ASSERT_NE(plain.find("1 test from 1 test suite ran"), std::string::npos)
      << "the filter must select exactly one test:\n" << plain;
  if (haveGpu) {
    EXPECT_EQ(plainStatus, 0) << plain;
    EXPECT_EQ(requiredStatus, 0) << required;
    EXPECT_NE(required.find("[  PASSED  ] 1 test."), std::string::npos) << required;
    return;
  }
  EXPECT_EQ(plainStatus, 0) << plain;
  EXPECT_NE(plain.find("[  SKIPPED ] 1 test"), std::string::npos) << plain;
  EXPECT_NE(requiredStatus, 0) << "FWP_REQUIRE_GPU=1 without a GPU passed:\n" << required;
  EXPECT_NE(required.find("FWP_REQUIRE_GPU is set, but this GPU test would skip"),
            std::string::npos)
      << required;
}

/// [B, H, T, ...] / [H, ...] / [B, H, ...] shape of a spec at the layer's dims.
inline std::vector<int64_t> withLeading(std::vector<int64_t> leading, const TensorSpec &spec,
                                        const Dims &dims) {
  for (int64_t size : resolveShape(spec, dims))
    leading.push_back(size);
  return leading;
}

/// Dims for layer `name`: {d}, plus d_ff for the one layer that has it.
inline Dims dimsFor(const std::string &name, int64_t d, int64_t dFF) {
  if (name == "delta_mlp")
    return {{"d", d}, {"d_ff", dFF}};
  return {{"d", d}};
}

/// Random inputs of `layer`: every seq input and param, plus every initial
/// state when `withInitStates`. Scaled by 0.5 to stay in the smooth regime.
inline TensorMap randomInputs(const FastWeightLayer &layer, int64_t batch, int64_t heads,
                              int64_t steps, torch::ScalarType dtype, uint64_t seed,
                              bool withInitStates) {
  torch::manual_seed(seed);
  const auto options = torch::TensorOptions().dtype(dtype);
  const LayerSignature &sig = layer.signature();
  TensorMap inputs;
  for (const auto &spec : sig.seq)
    inputs[spec.name] = 0.5 * torch::randn(withLeading({batch, heads, steps}, spec, layer.dims()), options);
  for (const auto &spec : sig.params)
    inputs[spec.name] = 0.5 * torch::randn(withLeading({heads}, spec, layer.dims()), options);
  if (withInitStates)
    for (const auto &spec : sig.states)
      inputs[initName(spec.name)] =
          0.5 * torch::randn(withLeading({batch, heads}, spec, layer.dims()), options);
  return inputs;
}

/// Largest absolute difference, for messages.
inline double maxAbsDiff(const torch::Tensor &a, const torch::Tensor &b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

/// Checks same shape and every entry within `tolerance`.
inline ::testing::AssertionResult tensorsNear(const torch::Tensor &actual,
                                              const torch::Tensor &expected, double tolerance) {
  if (!actual.sizes().equals(expected.sizes()))
    return ::testing::AssertionFailure()
           << "shape " << actual.sizes() << " != expected " << expected.sizes();
  if (actual.numel() == 0)
    return ::testing::AssertionSuccess();
  const double diff = maxAbsDiff(actual, expected);
  if (diff > tolerance)
    return ::testing::AssertionFailure() << "max |diff| " << diff << " > " << tolerance
                                         << "\nactual:\n" << actual << "\nexpected:\n" << expected;
  return ::testing::AssertionSuccess();
}

/// Runs `fn` and checks that it throws fwp::Error whose message contains
/// every string of `needles`.
template <typename Fn>
::testing::AssertionResult throwsErrorMentioning(Fn &&fn, const std::vector<std::string> &needles) {
  try {
    fn();
  } catch (const Error &e) {
    const std::string message = e.what();
    for (const auto &needle : needles)
      if (message.find(needle) == std::string::npos)
        return ::testing::AssertionFailure()
               << "message \"" << message << "\" does not mention \"" << needle << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception &e) {
    return ::testing::AssertionFailure() << "threw a non-fwp exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

} // namespace fwp::test
