//===- CudaLauncherTest.cpp - The GPU kernel launcher ---------------------===//
//
// Without a GPU: manifest entries are parsed strictly, launches that no
// device can run are rejected with errors naming the limit, tensors that do
// not fit the kernel are rejected before any driver call, and the kernel
// bundles the compiler writes agree with the reference layers' signatures.
// With a GPU: every kernel of the six models (forward, forward_train,
// backward) against the eager reference layer and its autograd gradients.
//
//===----------------------------------------------------------------------===//
#include "TestSupport.h"

#include "fwp/runtime/CudaScan.h"

#include <cstdlib>
#include <filesystem>

namespace fwp::test {
namespace {

using nlohmann::json;
using namespace fwp::cuda;

/// A valid entry: a forward kernel with one seq vector, a matrix state and
/// an output, as the compiler writes it.
json sampleEntry() {
  return json::parse(R"({
    "kernel": "toy_kernel", "scan": "toy", "dtype": "f32",
    "ptx_symbol": "fwp_ptx_toy_kernel", "chip": "sm_90",
    "block": [64, 1, 1], "grid": ["B*H", 1, 1], "shared_bytes": 256,
    "scalar_args": ["B", "H", "T"],
    "args": [
      {"role": "seq", "name": "k", "shape": ["B", "H", -1, 4]},
      {"role": "seq", "name": "beta", "shape": ["B", "H", -1]},
      {"role": "param", "name": "w", "shape": ["H", 4]},
      {"role": "state", "name": "W", "shape": ["B", "H", 4, 8]},
      {"role": "output", "name": "y", "shape": ["B", "H", -1, 8]}
    ]})");
}

/// Runs `body`, expecting an fwp::Error whose message contains `needle`.
template <typename F>
::testing::AssertionResult throwsWith(F body, const std::string &needle) {
  try {
    body();
  } catch (const Error &error) {
    if (std::string(error.what()).find(needle) != std::string::npos)
      return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "error '" << error.what() << "' lacks '" << needle << "'";
  }
  return ::testing::AssertionFailure() << "no fwp::Error";
}

TEST(CudaKernelSpec, ParsesTheCompilersEntry) {
  KernelSpec spec = KernelSpec::fromJson(sampleEntry(), "toy.fwpk: kernels.cuda.forward");
  EXPECT_EQ(spec.kernel, "toy_kernel");
  EXPECT_EQ(spec.dtype, torch::kFloat);
  EXPECT_EQ(spec.blockSize, 64);
  EXPECT_EQ(spec.sharedBytes, 256);
  ASSERT_EQ(spec.args.size(), 5u);
  EXPECT_EQ(spec.args[1].shape, (std::vector<int64_t>{kBatch, kHeads, kSteps}));
  EXPECT_EQ(spec.args[2].shape, (std::vector<int64_t>{kHeads, 4}));
  // Elements at B=2, H=3, T=5: hand-counted.
  EXPECT_EQ(argElements(spec.args[0], 2, 3, 5), 2 * 3 * 5 * 4);
  EXPECT_EQ(argElements(spec.args[1], 2, 3, 5), 2 * 3 * 5);
  EXPECT_EQ(argElements(spec.args[2], 2, 3, 5), 3 * 4);
  EXPECT_EQ(argElements(spec.args[3], 2, 3, 5), 2 * 3 * 4 * 8);
}

TEST(CudaKernelSpec, RejectsMalformedEntriesNamingTheField) {
  const std::string where = "toy.fwpk: kernels.cuda.forward";
  auto parse = [&](json entry) { KernelSpec::fromJson(entry, where); };
  json e = sampleEntry();
  e.erase("block");
  EXPECT_TRUE(throwsWith([&] { parse(e); }, where + ".block is missing"));
  e = sampleEntry();
  e["block"] = json::array({64, 2, 1});
  EXPECT_TRUE(throwsWith([&] { parse(e); }, where + ".block must be [threads, 1, 1]"));
  e = sampleEntry();
  e["grid"] = json::array({"B", "H", 1});
  EXPECT_TRUE(throwsWith([&] { parse(e); }, where + ".grid is"));
  e = sampleEntry();
  e["dtype"] = "bf16";
  EXPECT_TRUE(throwsWith([&] { parse(e); }, where + ".dtype is 'bf16'"));
  e = sampleEntry();
  e["args"][3]["role"] = "weights";
  EXPECT_TRUE(throwsWith([&] { parse(e); }, where + ".args[3].role is \"weights\""));
  e = sampleEntry();
  e["args"][0]["shape"] = json::array({"B", "H", -1, 0});
  EXPECT_TRUE(throwsWith([&] { parse(e); }, where + ".args[0].shape holds 0"));
  e = sampleEntry();
  e["args"][2]["shape"] = json::array({"B", "H", 4});
  EXPECT_TRUE(throwsWith([&] { parse(e); }, where + ".args[2].shape must start with [\"H\"]"));
  e = sampleEntry();
  e["scalar_args"] = json::array({"T"});
  EXPECT_TRUE(throwsWith([&] { parse(e); }, where + ".scalar_args is"));
  EXPECT_TRUE(throwsWith([&] { parse(json::array()); }, where + " must be an object"));
}

TEST(CudaLaunch, AcceptsWhatFitsTheDevice) {
  KernelSpec spec = KernelSpec::fromJson(sampleEntry(), "toy");
  DeviceLimits h100{"cuda:0 (sm_90)", 1024, 232448, 2147483647, 1024};
  EXPECT_NO_THROW(validateLaunch(spec, 96, 8, 256, h100));
  EXPECT_NO_THROW(validateLaunch(spec, 0, 8, 0, h100)); // an empty batch
}

TEST(CudaLaunch, RejectsConfigurationsTheDeviceCannotRun) {
  KernelSpec spec = KernelSpec::fromJson(sampleEntry(), "toy");
  DeviceLimits device{"cuda:0 (sm_80)", 1024, 166912, 65535, 0};

  spec.blockSize = 2048;
  EXPECT_TRUE(throwsWith([&] { validateLaunch(spec, 2, 2, 3, device); },
                         "a block of 2048 threads exceeds the 1024 threads per "
                         "block of cuda:0 (sm_80)"));
  spec.blockSize = 512;
  DeviceLimits registers = device;
  registers.kernelMaxThreadsPerBlock = 256; // what the kernel's registers allow
  EXPECT_TRUE(throwsWith([&] { validateLaunch(spec, 2, 2, 3, registers); },
                         "the kernel allows at most 256 threads per block"));
  spec.sharedBytes = 200000;
  EXPECT_TRUE(throwsWith([&] { validateLaunch(spec, 2, 2, 3, device); },
                         "needs 200000 bytes of shared memory per block; "
                         "cuda:0 (sm_80) allows 166912"));
  spec.sharedBytes = 256;
  EXPECT_TRUE(throwsWith([&] { validateLaunch(spec, 65536, 2, 3, device); },
                         "a grid of B * H = 65536 * 2 blocks exceeds the 65535"));
  EXPECT_TRUE(throwsWith([&] { validateLaunch(spec, 2, 2, -1, device); },
                         "must not be negative"));
}

TEST(CudaLaunch, RejectsTensorsThatDoNotFitBeforeTouchingTheDriver) {
  KernelSpec spec = KernelSpec::fromJson(sampleEntry(), "toy");
  const int64_t B = 2, H = 3, T = 5;
  std::vector<torch::Tensor> args = {
      torch::zeros({B, H, T, 4}), torch::zeros({B, H, T, 1}), torch::zeros({H, 4}),
      torch::zeros({B, H, 4, 8}), torch::zeros({B, H, T, 8})};
  EXPECT_TRUE(throwsWith([&] { checkArguments(spec, {args[0]}, B, H, T); },
                         "CUDA kernel toy_kernel takes 5 tensors, got 1"));
  EXPECT_TRUE(throwsWith([&] { checkArguments(spec, args, B, H, T); },
                         "argument 0 (seq 'k', [B, H, T, 4]) must be a CUDA "
                         "tensor, not one on cpu"));
  // runKernel checks the same before it needs a driver or a device.
  EXPECT_TRUE(throwsWith([&] { runKernel(sampleEntry(), "ptx", args, B, H, T); },
                         "must be a CUDA tensor"));
  std::map<std::string, torch::Tensor> byKey{{"seq:k", args[0]}};
  EXPECT_TRUE(throwsWith([&] { runKernel(sampleEntry(), "ptx", byKey, B, H, T); },
                         "no tensor for argument 'seq:beta'"));
}

TEST(CudaDriver, MissingDriverIsAClearErrorNotACrash) {
  std::string why;
  if (driverAvailable(&why)) {
    DeviceLimits limits = deviceLimits(0);
    EXPECT_GE(limits.maxThreadsPerBlock, 1024);
    EXPECT_GE(limits.maxSharedBytesPerBlock, 48 * 1024);
    GTEST_SKIP() << "a CUDA driver is present (" << limits.device << ")";
  }
  EXPECT_FALSE(why.empty());
  EXPECT_TRUE(throwsWith([] { deviceLimits(0); }, "CUDA device limits: "));
}

//===----------------------------------------------------------------------===//
// Kernel bundles from the compiler
//===----------------------------------------------------------------------===//

std::string kernelsDir() {
  if (const char *env = std::getenv("FWP_CUDA_KERNELS"))
    return env;
  return FWP_CUDA_KERNELS;
}

bool haveBundle(const std::string &name) {
  return std::filesystem::exists(kernelsDir() + "/" + name + "/kernels.json");
}

#define REQUIRE_BUNDLE(name)                                                   \
  if (!haveBundle(name))                                                       \
  FWP_GPU_SKIP("no kernel bundle " << kernelsDir() << "/" << name             \
               << " (build with the compiler, or set FWP_CUDA_KERNELS)")

struct ModelCase {
  std::string bundle, layer;
  Dims dims;
};

std::vector<ModelCase> modelCases() {
  return {{"linear_transformer", "linear_transformer", {{"d", 16}}},
          {"delta_net", "delta_net", {{"d", 16}}},
          {"delta_mlp", "delta_mlp", {{"d", 16}, {"d_ff", 64}}},
          {"delta_rnn", "delta_rnn", {{"d", 16}}},
          {"delta_lstm", "delta_lstm", {{"d", 16}}},
          {"rdn", "rdn", {{"d", 16}}},
          {"delta_net_d5", "delta_net", {{"d", 5}}},
          {"delta_mlp_d6_ff10", "delta_mlp", {{"d", 6}, {"d_ff", 10}}},
          {"rdn_d7", "rdn", {{"d", 7}}}};
}

void PrintTo(const ModelCase &c, std::ostream *os) { *os << c.bundle; }

std::string modelCaseName(const testing::TestParamInfo<ModelCase> &info) {
  return info.param.bundle;
}

class CudaBundle : public testing::TestWithParam<ModelCase> {};

// The compiler's kernels take exactly the reference layer's tensors: every
// seq input, param and state by name and per-step size.
TEST_P(CudaBundle, MatchesTheReferenceSignature) {
  const ModelCase &c = GetParam();
  REQUIRE_BUNDLE(c.bundle);
  KernelBundle bundle = KernelBundle::load(kernelsDir() + "/" + c.bundle);
  EXPECT_EQ(bundle.layer, c.layer);
  EXPECT_EQ(bundle.dims, c.dims);
  auto reference = makeReferenceLayer(c.layer, c.dims);
  const LayerSignature &signature = reference->signature();
  auto expectArgs = [&](const KernelSpec &spec, const std::string &role,
                        const std::vector<TensorSpec> &specs, std::vector<int64_t> lead) {
    std::vector<const ArgSpec *> found;
    for (const ArgSpec &arg : spec.args)
      if (arg.role == role)
        found.push_back(&arg);
    ASSERT_EQ(found.size(), specs.size()) << spec.kernel << " " << role;
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(found[i]->name, specs[i].name);
      std::vector<int64_t> shape = lead;
      std::vector<int64_t> sizes = resolveShape(specs[i], c.dims);
      if (!(sizes.size() == 1 && sizes[0] == 1 && role == "seq"))
        shape.insert(shape.end(), sizes.begin(), sizes.end());
      EXPECT_EQ(found[i]->shape, shape) << spec.kernel << " " << specs[i].name;
    }
  };
  for (const KernelSpec *spec : {&bundle.forward, &bundle.forwardTrain, &bundle.backward}) {
    expectArgs(*spec, "seq", signature.seq, {kBatch, kHeads, kSteps});
    expectArgs(*spec, "param", signature.params, {kHeads});
    EXPECT_FALSE(bundle.image(*spec).empty());
    EXPECT_NE(bundle.image(*spec).find(".entry " + spec->kernel), std::string::npos);
  }
  expectArgs(bundle.forward, "state", signature.states, {kBatch, kHeads});
  expectArgs(bundle.backward, "grad_state", signature.states, {kBatch, kHeads});
}

// On a GPU: outputs, final states and every gradient against the reference
// layer (eager LibTorch, autograd), with and without initial states.
TEST_P(CudaBundle, KernelsMatchTheReferenceLayerOnTheGpu) {
  const ModelCase &c = GetParam();
  REQUIRE_BUNDLE(c.bundle);
  if (!torch::cuda::is_available())
    FWP_GPU_SKIP("no CUDA device");
  std::string why;
  if (!driverAvailable(&why))
    FWP_GPU_SKIP("no CUDA driver: " << why);
  KernelBundle bundle = KernelBundle::load(kernelsDir() + "/" + c.bundle);
  auto reference = makeReferenceLayer(c.layer, c.dims);
  torch::Device gpu(torch::kCUDA, 0);
  for (bool withInit : {false, true}) {
    SCOPED_TRACE(withInit ? "with initial states" : "zero initial states");
    TensorMap inputs = randomInputs(*reference, 3, 2, 37, torch::kFloat, 5, withInit);
    if (inputs.count("ln_weight"))
      inputs["ln_weight"] = inputs["ln_weight"] + 1.0;

    // The reference and its gradients for L = sum(y g_y) + sum(final g_f).
    std::vector<std::string> names;
    std::vector<torch::Tensor> leaves;
    for (auto &[name, tensor] : inputs) {
      tensor.requires_grad_(true);
      names.push_back(name);
      leaves.push_back(tensor);
    }
    TensorMap expected = reference->forward(inputs);
    TensorMap outputGrads;
    torch::manual_seed(9);
    std::vector<torch::Tensor> roots, rootGrads;
    for (const auto &[name, tensor] : expected) {
      outputGrads["grad." + name] = torch::randn_like(tensor);
      roots.push_back(tensor);
      rootGrads.push_back(outputGrads["grad." + name]);
    }
    std::vector<torch::Tensor> grads =
        torch::autograd::grad(roots, leaves, rootGrads, false, false, true);

    torch::NoGradGuard noGrad;
    TensorMap onGpu, gradsOnGpu;
    for (const auto &[name, tensor] : inputs)
      onGpu[name] = tensor.detach().to(gpu);
    for (const auto &[name, tensor] : outputGrads)
      gradsOnGpu[name] = tensor.to(gpu);

    TensorMap inference = runForward(bundle, onGpu, /*train=*/false);
    TensorMap train = runForward(bundle, onGpu, /*train=*/true);
    for (const auto &[name, tensor] : expected) {
      SCOPED_TRACE(name);
      EXPECT_TRUE(tensorsNear(inference.at(name).cpu().view(tensor.sizes()),
                              tensor.detach(), 2e-4));
      EXPECT_TRUE(tensorsNear(train.at(name).cpu().view(tensor.sizes()),
                              tensor.detach(), 2e-4));
    }
    TensorMap gradients = runBackward(bundle, onGpu, train, gradsOnGpu);
    for (size_t i = 0; i < names.size(); ++i) {
      SCOPED_TRACE(names[i]);
      ASSERT_TRUE(gradients.count("grad." + names[i]));
      torch::Tensor got = gradients.at("grad." + names[i]).cpu();
      double scale = std::max(1.0, grads[i].abs().max().item<double>());
      EXPECT_TRUE(tensorsNear(got.view(grads[i].sizes()) / scale, grads[i] / scale, 5e-4));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, CudaBundle, testing::ValuesIn(modelCases()),
                         modelCaseName);

// FWP_REQUIRE_GPU=1 turns this GPU test's skip into a failure (docs/gpu.md):
// checked here, on a machine without a GPU, by running it in a child.
TEST(RequireGpu, TurnsTheGpuTestsSkipIntoAFailure) {
  std::string why;
  fwp::test::expectRequireGpuTurnsSkipIntoFailure(
      "Models/CudaBundle.KernelsMatchTheReferenceLayerOnTheGpu/delta_net",
      torch::cuda::is_available() && driverAvailable(&why) && haveBundle("delta_net"));
}

TEST(CudaBundleFile, MissingOrBrokenBundlesAreClearErrors) {
  EXPECT_TRUE(throwsWith([] { KernelBundle::load("/nonexistent/bundle"); },
                         "/nonexistent/bundle/kernels.json: cannot open"));
  json cuda{{"forward", sampleEntry()}, {"forward_train", sampleEntry()}};
  EXPECT_TRUE(throwsWith(
      [&] { KernelBundle::fromManifest(cuda, {{"toy_kernel", "ptx"}}, "toy.fwpk"); },
      "toy.fwpk: kernels.cuda.backward is missing"));
  cuda["backward"] = sampleEntry();
  EXPECT_TRUE(throwsWith([&] { KernelBundle::fromManifest(cuda, {}, "toy.fwpk"); },
                         "toy.fwpk: no image for kernel toy_kernel"));
  KernelBundle bundle =
      KernelBundle::fromManifest(cuda, {{"toy_kernel", "ptx"}}, "toy.fwpk");
  EXPECT_EQ(bundle.layer, "toy");
  EXPECT_EQ(bundle.image(bundle.backward), "ptx");
}

} // namespace
} // namespace fwp::test
