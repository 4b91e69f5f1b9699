//===- CompiledLayerTest.cpp - Compiled layers against the references -----===//
//
// Every layer compiled by fwp-compile (CPU kernels, forward and backward) must
// match the eager reference layers, which are written independently from
// shared/MODELS.md: outputs, final states and every gradient, over several
// shapes (T = 1, T not a multiple of anything, d_key != d_value, odd d) and
// with and without initial states.
//
// The same artifacts' CUDA kernels are checked the same way on a GPU (the
// reference then runs in float64 on the CPU); without one those tests skip.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"
#include "fwp/runtime/ArtifactContainer.h"
#include "fwp/runtime/HostBufferCache.h"
#include "fwp/runtime/Safetensors.h"

#include "ArtifactTestSupport.h"
#include "TestSupport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <cstdlib>
#include <sys/wait.h>
#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;
using fwp::test::artifactPath;
using fwp::test::relativeError;


bool haveArtifacts() { return fs::exists(artifactPath("delta_net")); }

// Skips, or fails under FWP_REQUIRE_GPU=1 (TestSupport.h): a GPU run must
// test the artifacts on the device.
#define REQUIRE_ARTIFACTS()                                                    \
  if (!haveArtifacts())                                                        \
  FWP_GPU_SKIP("no artifacts in " FWP_TEST_ARTIFACTS                           \
               " (the build has no compiler: FWP_ENABLE_COMPILER=OFF)")

#define REQUIRE_CUDA()                                                         \
  if (!torch::cuda::is_available())                                            \
  FWP_GPU_SKIP("no CUDA device (LibTorch sees no GPU)")

/// Inputs of one call: every seq input and param, and optionally every
/// initial state, drawn from a fixed seed.
fwp::TensorMap makeInputs(const fwp::FastWeightLayer &layer, int64_t batch,
                          int64_t heads, int64_t steps, bool withInit,
                          torch::ScalarType dtype, uint64_t seed) {
  torch::manual_seed(seed);
  auto options = torch::TensorOptions().dtype(dtype);
  fwp::TensorMap inputs;
  const fwp::LayerSignature &signature = layer.signature();
  for (const auto &spec : signature.seq) {
    std::vector<int64_t> shape =
        fwp::test::shapeWithPrefix({batch, heads, steps}, spec, layer.dims());
    inputs[spec.name] = torch::randn(shape, options);
  }
  for (const auto &spec : signature.params) {
    std::vector<int64_t> shape =
        fwp::test::shapeWithPrefix({heads}, spec, layer.dims());
    torch::Tensor value = 0.5 * torch::randn(shape, options);
    if (spec.name == "ln_weight")
      value = value + 1.0;
    inputs[spec.name] = value;
  }
  if (withInit)
    for (const auto &spec : signature.states) {
      std::vector<int64_t> shape =
          fwp::test::shapeWithPrefix({batch, heads}, spec, layer.dims());
      inputs[fwp::initName(spec.name)] = 0.3 * torch::randn(shape, options);
    }
  return inputs;
}


struct Case {
  std::string artifact;
  int64_t batch, heads, steps;
  bool withInit;
};

void PrintTo(const Case &c, std::ostream *os) {
  *os << c.artifact << " B=" << c.batch << " H=" << c.heads << " T=" << c.steps
      << (c.withInit ? " with initial states" : "");
}

std::string caseName(const testing::TestParamInfo<Case> &info) {
  const Case &c = info.param;
  return c.artifact + "_B" + std::to_string(c.batch) + "H" + std::to_string(c.heads) +
         "T" + std::to_string(c.steps) + (c.withInit ? "_init" : "_zero");
}

class CompiledMatchesReference : public testing::TestWithParam<Case> {};

/// The artifact's outputs, final states and gradients against the eager
/// reference layer (MODELS.md) on the inputs of `c`.
void expectMatchesReference(const std::shared_ptr<const fwp::Artifact> &artifact,
                            const Case &c) {
  fwp::CompiledLayer compiled(artifact);
  auto reference = fwp::makeReferenceLayer(artifact->signature().layer, artifact->dims());
  torch::ScalarType dtype = artifact->dtype();
  double tolerance = dtype == torch::kDouble ? 1e-10 : 1e-4;

  fwp::TensorMap inputs =
      makeInputs(compiled, c.batch, c.heads, c.steps, c.withInit, dtype, 1234);
  std::vector<std::string> names;
  std::vector<torch::Tensor> leavesCompiled, leavesReference;
  fwp::TensorMap compiledInputs, referenceInputs;
  for (const auto &[name, value] : inputs) {
    names.push_back(name);
    leavesCompiled.push_back(value.clone().requires_grad_(true));
    leavesReference.push_back(value.clone().requires_grad_(true));
    compiledInputs[name] = leavesCompiled.back();
    referenceInputs[name] = leavesReference.back();
  }
  fwp::TensorMap got = compiled.forward(compiledInputs);
  fwp::TensorMap want = reference->forward(referenceInputs);
  ASSERT_EQ(got.size(), want.size());

  // A random cotangent for every output; the loss is their inner product.
  torch::manual_seed(99);
  torch::Tensor lossCompiled = torch::zeros({}, torch::TensorOptions().dtype(dtype));
  torch::Tensor lossReference = lossCompiled.clone();
  for (const auto &[name, value] : want) {
    ASSERT_TRUE(got.count(name)) << "compiled layer lacks output " << name;
    ASSERT_EQ(got[name].sizes(), value.sizes()) << name;
    EXPECT_LE(relativeError(got[name].detach(), value.detach()), tolerance)
        << "output " << name;
    torch::Tensor cotangent = torch::randn(value.sizes(), value.options());
    lossCompiled = lossCompiled + (got[name] * cotangent).sum();
    lossReference = lossReference + (value * cotangent).sum();
  }
  auto gradsCompiled = torch::autograd::grad({lossCompiled}, leavesCompiled);
  auto gradsReference = torch::autograd::grad({lossReference}, leavesReference);
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(gradsCompiled[i].defined()) << "no gradient for " << names[i];
    EXPECT_LE(relativeError(gradsCompiled[i], gradsReference[i]), tolerance)
        << "gradient of " << names[i];
  }
}

TEST_P(CompiledMatchesReference, OutputsFinalStatesAndGradients) {
  REQUIRE_ARTIFACTS();
  expectMatchesReference(fwp::Artifact::load(artifactPath(GetParam().artifact)), GetParam());
}

/// Sets an environment variable for one scope.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const std::string &value) : name_(name) {
    if (const char *old = std::getenv(name))
      old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

private:
  const char *name_;
  std::optional<std::string> old_;
};

TEST(CompiledLayer, ReadsFormat2ArtifactsWithOneCpuImage) {
  // Made by the fwp-compile of format 2 (one image, section "cpu", the
  // manifest's single "target": x86-64-v3): fwp-compile
  // models/linear_transformer.mlir --dim d=2 --dtype=f64 --cuda=off.
  const std::string path = std::string(FWP_TEST_INPUTS) + "/linear_transformer_d2_f64_format2.fwpk";
  ASSERT_EQ(fwp::readArtifactContainer(path).manifest["version"], 2);
  auto artifact = fwp::Artifact::load(path);
  EXPECT_EQ(artifact->cpuSection(), "cpu");
  expectMatchesReference(artifact, {"linear_transformer_d2_f64_format2", 2, 3, 7, true});
  ScopedEnv env("FWP_HIDE_CPU_FEATURES", "fma");
  try {
    fwp::Artifact::load(path);
    ADD_FAILURE() << "loaded on a host without fma";
  } catch (const fwp::Error &error) {
    EXPECT_NE(std::string(error.what()).find("'cpu' (processor x86-64-v3) needs fma"),
              std::string::npos)
        << error.what();
  }
}

TEST(CompiledLayer, EveryCpuImageRunsAndMatchesTheReference) {
  REQUIRE_ARTIFACTS();
  // The default --cpu=native,x86-64-v3: this machine's processor first,
  // then a portable one. A host lacking a feature of the first (made so by
  // FWP_HIDE_CPU_FEATURES) falls back to the second; one lacking a feature
  // of both runs neither, and the error names each image's missing features.
  for (const char *name : {"delta_net", "rdn_f64"}) {
    SCOPED_TRACE(name);
    const std::string path = artifactPath(name);
    const nlohmann::json targets = fwp::readArtifactContainer(path).manifest["targets"];
    ASSERT_EQ(targets.size(), 2u) << targets.dump();
    EXPECT_EQ(targets[1]["cpu"], "x86-64-v3");
    auto preferred = fwp::Artifact::load(path);
    expectMatchesReference(preferred, {name, 2, 2, 9, true});
    if (preferred->cpuSection() != targets[0]["section"]) {
      // Artifacts compiled on another machine (FWP_PREBUILT_ARTIFACTS),
      // whose processor this one is not: it already fell back.
      EXPECT_EQ(preferred->cpuSection(), targets[1]["section"]);
      continue;
    }

    std::vector<std::string> portable = targets[1]["features"];
    std::string hidden;
    for (const std::string &feature : targets[0]["features"])
      if (std::find(portable.begin(), portable.end(), feature) == portable.end())
        hidden += (hidden.empty() ? "" : ",") + feature;
    ASSERT_FALSE(hidden.empty()) << "native has no feature beyond x86-64-v3 here";
    {
      ScopedEnv env("FWP_HIDE_CPU_FEATURES", hidden);
      auto fallback = fwp::Artifact::load(path);
      EXPECT_EQ(fallback->cpuSection(), targets[1]["section"]);
      EXPECT_NE(fallback->forward().entry, preferred->forward().entry);
      expectMatchesReference(fallback, {name, 2, 2, 9, true});
    }
    ScopedEnv env("FWP_HIDE_CPU_FEATURES", "avx2");
    try {
      fwp::Artifact::load(path);
      ADD_FAILURE() << "loaded on a host without avx2";
    } catch (const fwp::Error &error) {
      std::string message = error.what();
      for (std::string part : {path + ": none of its CPU images runs on this machine",
                               "'" + targets[0]["section"].get<std::string>() + "' (processor " +
                                   targets[0]["cpu"].get<std::string>() + ") needs avx2;",
                               "'" + targets[1]["section"].get<std::string>() +
                                   "' (processor x86-64-v3) needs avx2 ("})
        EXPECT_NE(message.find(part), std::string::npos) << part << "\n" << message;
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const char *model : {"linear_transformer", "delta_net", "delta_mlp", "delta_rnn",
                            "delta_lstm", "rdn"}) {
    out.push_back({model, 1, 1, 1, false});
    out.push_back({model, 2, 3, 7, true});
    out.push_back({model, 2, 2, 33, false});
  }
  for (const char *model : {"delta_net_d5", "delta_mlp_d6_ff10", "rdn_d7", "delta_lstm_d3"})
    out.push_back({model, 2, 2, 19, true});
  out.push_back({"delta_net_d128", 1, 2, 9, true});
  out.push_back({"delta_net_d96", 1, 2, 9, true});
  out.push_back({"delta_lstm_d32", 2, 2, 21, true});
  out.push_back({"delta_rnn_d128", 1, 2, 19, true});
  out.push_back({"delta_lstm_f64_d24", 2, 2, 13, true});
  out.push_back({"delta_rnn_f64_d48", 2, 2, 11, true});
  for (const char *model : {"linear_transformer_f64", "delta_net_f64", "delta_mlp_f64",
                            "delta_rnn_f64", "delta_lstm_f64", "rdn_f64",
                            // other backward strategies than invert
                            "delta_net_f64_store", "delta_net_f64_ckpt5",
                            "delta_lstm_f64_ckpt4"}) {
    out.push_back({model, 2, 2, 9, true});
    out.push_back({model, 1, 2, 1, false});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllModels, CompiledMatchesReference, testing::ValuesIn(cases()),
                         caseName);

/// The CUDA kernels of the f32 artifacts against the reference layer run in
/// float64 on the CPU: outputs, final states and every gradient.
class CompiledCudaMatchesReference : public testing::TestWithParam<Case> {};

TEST_P(CompiledCudaMatchesReference, OutputsFinalStatesAndGradients) {
  REQUIRE_ARTIFACTS();
  REQUIRE_CUDA();
  const Case &c = GetParam();
  auto artifact = fwp::Artifact::load(artifactPath(c.artifact));
  ASSERT_TRUE(artifact->hasCuda()) << c.artifact << " has no CUDA kernels";
  fwp::CompiledLayer compiled(artifact);
  auto reference = fwp::makeReferenceLayer(artifact->signature().layer, artifact->dims());
  fwp::TensorMap inputs =
      makeInputs(compiled, c.batch, c.heads, c.steps, c.withInit, torch::kFloat, 4321);
  std::vector<std::string> names;
  std::vector<torch::Tensor> leavesCuda, leavesReference;
  fwp::TensorMap cudaInputs, referenceInputs;
  for (const auto &[name, value] : inputs) {
    names.push_back(name);
    leavesCuda.push_back(value.to(torch::kCUDA).requires_grad_(true));
    leavesReference.push_back(value.to(torch::kDouble).requires_grad_(true));
    cudaInputs[name] = leavesCuda.back();
    referenceInputs[name] = leavesReference.back();
  }
  fwp::TensorMap got = compiled.forward(cudaInputs);
  fwp::TensorMap want = reference->forward(referenceInputs);
  ASSERT_EQ(got.size(), want.size());
  torch::manual_seed(77);
  torch::Tensor lossCuda = torch::zeros({}, torch::TensorOptions().device(torch::kCUDA));
  torch::Tensor lossReference = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble));
  for (const auto &[name, value] : want) {
    ASSERT_TRUE(got.count(name)) << "compiled layer lacks output " << name;
    ASSERT_TRUE(got[name].is_cuda()) << name << " is not on the GPU";
    ASSERT_EQ(got[name].sizes(), value.sizes()) << name;
    EXPECT_LE(relativeError(got[name].detach().cpu().to(torch::kDouble), value.detach()), 1e-4)
        << "output " << name;
    torch::Tensor cotangent = torch::randn(value.sizes(), torch::TensorOptions().dtype(torch::kDouble));
    lossCuda = lossCuda + (got[name] * cotangent.to(torch::kFloat).to(torch::kCUDA)).sum();
    lossReference = lossReference + (value * cotangent).sum();
  }
  auto gradsCuda = torch::autograd::grad({lossCuda}, leavesCuda);
  auto gradsReference = torch::autograd::grad({lossReference}, leavesReference);
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(gradsCuda[i].defined()) << "no gradient for " << names[i];
    EXPECT_LE(relativeError(gradsCuda[i].cpu().to(torch::kDouble), gradsReference[i]), 1e-4)
        << "gradient of " << names[i];
  }
}

std::vector<Case> cudaCases() {
  std::vector<Case> out;
  for (const Case &c : cases())
    if (c.artifact.find("_f64") == std::string::npos &&
        c.artifact != "delta_net_d96" && c.artifact != "delta_lstm_d32" &&
        c.artifact != "delta_rnn_d128") // compiled with --cuda=off
      out.push_back(c);
  for (const char *model : {"delta_net", "rdn", "delta_net_store", "delta_net_ckpt16"})
    out.push_back({model, 3, 5, 300, true}); // longer than a block's step tile
  out.push_back({"delta_net_d128", 2, 3, 40, true});
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllModels, CompiledCudaMatchesReference,
                         testing::ValuesIn(cudaCases()), caseName);

/// What a CPU-only machine can check of the CUDA half: f32 artifacts carry
/// PTX (and cubins when ptxas was found) for all three kernels, the runtime
/// picks the cubin only for its chip, and f64 artifacts are CPU-only.
TEST(CompiledLayer, CarriesCudaKernelsForF32Layers) {
  REQUIRE_ARTIFACTS();
  for (const char *model : {"linear_transformer", "delta_net", "delta_mlp", "delta_rnn",
                            "delta_lstm", "rdn", "delta_net_d128"}) {
    auto artifact = fwp::Artifact::load(artifactPath(model));
    ASSERT_TRUE(artifact->hasCuda()) << model;
    const fwp::cuda::KernelBundle &ptx = artifact->cudaKernels("sm_00");
    for (const fwp::cuda::KernelSpec *spec : {&ptx.forward, &ptx.forwardTrain, &ptx.backward}) {
      const std::string &image = ptx.image(*spec);
      EXPECT_NE(image.find(".entry " + spec->kernel), std::string::npos) << spec->kernel;
      EXPECT_NE(image.find(".target sm_90"), std::string::npos) << spec->kernel;
      EXPECT_EQ(spec->dtype, torch::kFloat);
      EXPECT_GE(spec->blockSize, 32);
    }
    EXPECT_EQ(ptx.forwardTrain.scan, ptx.forward.scan + "_train");
    EXPECT_EQ(ptx.backward.scan, ptx.forward.scan + "_grad");
    const fwp::cuda::KernelBundle &native = artifact->cudaKernels("sm_90");
    const std::string &image = native.image(native.backward);
    if (&native != &ptx)
      EXPECT_EQ(image.compare(0, 4, "\x7f" "ELF"), 0) << model << ": the sm_90 image is no cubin";
  }
  for (const char *model : {"delta_net_f64", "rdn_f64"}) {
    auto artifact = fwp::Artifact::load(artifactPath(model));
    EXPECT_FALSE(artifact->hasCuda()) << model;
    try {
      artifact->cudaKernels("sm_90");
      ADD_FAILURE() << model << ": cudaKernels did not throw";
    } catch (const fwp::Error &error) {
      EXPECT_NE(std::string(error.what()).find("CPU kernels only"), std::string::npos)
          << error.what();
    }
  }
}

// Outputs, tapes and gradients of the sequences reuse the memory of the
// previous call's (fwp/runtime/HostBufferCache.h): a kernel must not depend
// on what a fresh block holds. The second and third calls run in the first
// calls' blocks, and still match the reference.
TEST(CompiledLayer, CallsInReusedMemoryMatchTheReference) {
  REQUIRE_ARTIFACTS();
  auto artifact = fwp::Artifact::load(artifactPath("delta_net"));
  // [B, H, T, d] of 2 x 4 x 600 x 16 floats: 300 KiB, above the cache's
  // minimum.
  Case c{"delta_net", 2, 4, 600, true};
  expectMatchesReference(artifact, c);
  int64_t reusesBefore = fwp::hostCacheStatistics().reuses;
  expectMatchesReference(artifact, c);
  expectMatchesReference(artifact, c);
  EXPECT_GE(fwp::hostCacheStatistics().reuses, reusesBefore + 8);
}

TEST(CompiledLayer, InferenceForwardMatchesTrainingForward) {
  REQUIRE_ARTIFACTS();
  fwp::CompiledLayer layer(fwp::Artifact::load(artifactPath("delta_rnn")));
  fwp::TensorMap inputs = makeInputs(layer, 2, 2, 12, true, torch::kFloat, 7);
  fwp::TensorMap inference = layer.forward(inputs); // no grad: forward kernel
  fwp::TensorMap training;
  for (auto &[name, value] : inputs)
    training[name] = value.clone().requires_grad_(true);
  fwp::TensorMap trained = layer.forward(training); // forward_train kernel
  for (const auto &[name, value] : inference)
    EXPECT_TRUE(torch::allclose(value, trained[name].detach(), 0, 0)) << name;
}

TEST(CompiledLayer, CarriedStatesEqualOneLongCall) {
  REQUIRE_ARTIFACTS();
  fwp::CompiledLayer layer(fwp::Artifact::load(artifactPath("rdn")));
  fwp::TensorMap inputs = makeInputs(layer, 2, 2, 20, false, torch::kFloat, 11);
  fwp::TensorMap whole = layer.forward(inputs);
  fwp::TensorMap first, second;
  for (const auto &[name, value] : inputs) {
    bool perStep = value.dim() >= 3 && value.size(2) == 20 && name != "R_q" &&
                   name != "R_k" && name != "R_v";
    first[name] = perStep ? value.slice(2, 0, 8) : value;
    second[name] = perStep ? value.slice(2, 8, 20) : value;
  }
  fwp::TensorMap a = layer.forward(first);
  for (const auto &spec : layer.signature().states)
    second[fwp::initName(spec.name)] = a[fwp::finalName(spec.name)];
  fwp::TensorMap b = layer.forward(second);
  EXPECT_LE(relativeError(torch::cat({a["y"], b["y"]}, 2), whole["y"]), 1e-5);
  for (const auto &spec : layer.signature().states)
    EXPECT_LE(relativeError(b[fwp::finalName(spec.name)],
                            whole[fwp::finalName(spec.name)]),
              1e-5);
}

/// bfloat16 inputs run through the f32 kernels: the result equals the f32
/// layer on the same (rounded) inputs, rounded to bfloat16, and gradients
/// come back in bfloat16.
TEST(CompiledLayer, TakesBfloat16InputsThroughTheF32Kernels) {
  REQUIRE_ARTIFACTS();
  fwp::CompiledLayer layer(fwp::Artifact::load(artifactPath("delta_rnn")));
  fwp::TensorMap inputs = makeInputs(layer, 2, 2, 6, true, torch::kFloat, 17);
  fwp::TensorMap half, rounded;
  std::vector<torch::Tensor> leaves;
  for (const auto &[name, value] : inputs) {
    leaves.push_back(value.to(torch::kBFloat16).requires_grad_(true));
    half[name] = leaves.back();
    rounded[name] = value.to(torch::kBFloat16).to(torch::kFloat);
  }
  fwp::TensorMap got = layer.forward(half);
  fwp::TensorMap want = layer.forward(rounded);
  torch::Tensor loss = torch::zeros({}, torch::kFloat);
  for (const auto &[name, value] : want) {
    ASSERT_EQ(got[name].scalar_type(), torch::kBFloat16) << name;
    EXPECT_TRUE(torch::equal(got[name].detach(), value.to(torch::kBFloat16))) << name;
    loss = loss + got[name].to(torch::kFloat).sum();
  }
  auto grads = torch::autograd::grad({loss}, leaves);
  for (const torch::Tensor &grad : grads) {
    ASSERT_TRUE(grad.defined());
    EXPECT_EQ(grad.scalar_type(), torch::kBFloat16);
    EXPECT_GT(grad.abs().sum().item<double>(), 0);
  }
}

TEST(CompiledLayer, RejectsMismatchedTensors) {
  REQUIRE_ARTIFACTS();
  fwp::CompiledLayer layer(fwp::Artifact::load(artifactPath("delta_net")));
  fwp::TensorMap inputs = makeInputs(layer, 1, 2, 3, false, torch::kFloat, 3);
  fwp::TensorMap wrongSize = inputs;
  wrongSize["q"] = torch::randn({1, 2, 3, 8});
  EXPECT_THROW(layer.forward(wrongSize), fwp::Error);
  fwp::TensorMap wrongType;
  for (const auto &[name, value] : inputs)
    wrongType[name] = value.to(torch::kDouble);
  try {
    layer.forward(wrongType);
    FAIL() << "float64 tensors were accepted by a float32 artifact";
  } catch (const fwp::Error &error) {
    EXPECT_NE(std::string(error.what()).find("compiled for float32"), std::string::npos)
        << error.what();
  }
  fwp::TensorMap missing = inputs;
  missing.erase("beta");
  EXPECT_THROW(layer.forward(missing), fwp::Error);
}

} // namespace

namespace {

/// fwp-run --artifact X.fwpk [--device cuda] and fwp-run --layer <its layer>
/// agree on a forward + backward round trip through safetensors files, for
/// every reference layer (each has an artifact of its name at the default d).
void expectFwpRunMatchesReference(const std::string &device) {
  std::string dir = fs::temp_directory_path().string();
  for (const std::string &model : fwp::referenceLayerNames()) {
    fwp::CompiledLayer layer(fwp::Artifact::load(artifactPath(model)));
    fwp::TensorMap tensors = makeInputs(layer, 2, 2, 5, true, torch::kFloat, 21);
    torch::manual_seed(5);
    for (const auto &[name, value] : fwp::makeReferenceLayer(model, layer.dims())->forward(tensors))
      tensors["grad." + name] = torch::randn(value.sizes());
    std::string tag = model + "-" + device;
    std::string in = dir + "/fwp-run-in-" + tag + ".safetensors";
    std::string outReference = dir + "/fwp-run-ref-" + tag + ".safetensors";
    std::string outCompiled = dir + "/fwp-run-fwpk-" + tag + ".safetensors";
    fwp::writeSafetensors(in, tensors);
    std::string common = " --inputs " + in + " --backward > /dev/null";
    ASSERT_EQ(std::system((std::string(FWP_RUN_PATH) + " --layer " + model + " --out " +
                           outReference + common)
                              .c_str()),
              0);
    ASSERT_EQ(std::system((std::string(FWP_RUN_PATH) + " --artifact " + artifactPath(model) +
                           " --device " + device + " --out " + outCompiled + common)
                              .c_str()),
              0);
    fwp::TensorMap want = fwp::readSafetensors(outReference).tensors;
    fwp::TensorMap got = fwp::readSafetensors(outCompiled).tensors;
    EXPECT_EQ(got.size(), want.size()) << model;
    for (const auto &[name, value] : want) {
      ASSERT_TRUE(got.count(name)) << model << ": fwp-run --artifact lacks " << name;
      EXPECT_LE(relativeError(got[name], value), 1e-4) << model << ": " << name;
    }
    for (const std::string &path : {in, outReference, outCompiled})
      std::remove(path.c_str());
  }
}

TEST(FwpRunArtifact, MatchesTheReferenceLayer) {
  REQUIRE_ARTIFACTS();
  expectFwpRunMatchesReference("cpu");
}

TEST(FwpRunArtifact, CudaMatchesTheReferenceLayer) {
  REQUIRE_ARTIFACTS();
  REQUIRE_CUDA();
  expectFwpRunMatchesReference("cuda");
}

// FWP_REQUIRE_GPU=1 turns the skip of a compiled layer's GPU test into a
// failure (docs/gpu.md); checked by running it in a child.
TEST(RequireGpu, TurnsTheGpuTestsSkipIntoAFailure) {
  fwp::test::expectRequireGpuTurnsSkipIntoFailure(
      "FwpRunArtifact.CudaMatchesTheReferenceLayer",
      torch::cuda::is_available() && haveArtifacts());
}

/// Runs `command` (stderr too); returns the exit status and the output.
std::pair<int, std::string> runCommand(const std::string &command) {
  std::string output;
  FILE *pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr)
    return {-1, "popen failed"};
  char buffer[512];
  while (fgets(buffer, sizeof buffer, pipe))
    output += buffer;
  int status = pclose(pipe);
  return {WEXITSTATUS(status), output};
}

/// Writes inputs of the test artifact delta_net (B = H = 1, T = 2) to a
/// temporary file named after `name`; returns it and an output path next to it.
std::pair<std::string, std::string> smallDeltaNetFiles(const std::string &name) {
  std::string in = fs::temp_directory_path().string() + "/" + name + "-in.safetensors";
  std::string out = fs::temp_directory_path().string() + "/" + name + ".safetensors";
  fwp::CompiledLayer layer(fwp::Artifact::load(artifactPath("delta_net")));
  fwp::writeSafetensors(in, makeInputs(layer, 1, 1, 2, false, torch::kFloat, 1));
  return {in, out};
}

TEST(FwpRunArtifact, RejectsABadHostCacheLimit) {
  REQUIRE_ARTIFACTS();
  auto [in, out] = smallDeltaNetFiles("fwp-run-cache");
  std::string run = std::string(FWP_RUN_PATH) + " --artifact " + artifactPath("delta_net") +
                    " --inputs " + in + " --out " + out;
  for (const char *bad : {"lots", "-5", "12MiB"}) {
    auto [status, output] = runCommand("FWP_HOST_CACHE_MIB=" + std::string(bad) + " " + run);
    EXPECT_NE(status, 0) << bad << ": " << output;
    EXPECT_NE(output.find("FWP_HOST_CACHE_MIB: expected a whole number of MiB"),
              std::string::npos)
        << output;
    EXPECT_FALSE(fs::exists(out)) << bad;
  }
  // 0 (no reuse) and a number run.
  for (const char *good : {"0", "64"}) {
    auto [status, output] = runCommand("FWP_HOST_CACHE_MIB=" + std::string(good) + " " + run);
    EXPECT_EQ(status, 0) << good << ": " << output;
    EXPECT_TRUE(fs::exists(out)) << good;
    std::remove(out.c_str());
  }
  std::remove(in.c_str());
}

TEST(FwpRunArtifact, RejectsDimsTheArtifactWasNotCompiledWith) {
  REQUIRE_ARTIFACTS();
  auto [in, out] = smallDeltaNetFiles("fwp-run-dims");
  auto [status, output] =
      runCommand(std::string(FWP_RUN_PATH) + " --artifact " + artifactPath("delta_net") +
                 " --dim d=32 --inputs " + in + " --out " + out);
  EXPECT_EQ(status, 2) << output;
  EXPECT_NE(output.find("was compiled with d=16"), std::string::npos) << output;
  EXPECT_FALSE(fs::exists(out));
  std::remove(in.c_str());
}

} // namespace
