//===- gpu_layers.cpp - Compiled GPU kernels against the eager reference --===//
//
//   fwp-bench-gpu --kernels DIR [--repeats N] [--out results.json]
//                 [--models delta_net,rdn] [--max-reference-steps T]
//
// For every case (model, B, H, T, d), times on the GPU the compiled kernels
// (forward_train + backward, and the inference forward alone) from the
// kernel bundle DIR/bench_<model>_d<d> (written by fwp-opt, see docs/gpu.md),
// and the eager LibTorch reference layer (forward + autograd backward) in the
// same process; checks that both agree; prints JSON. Not a test: no
// thresholds. The delta_net cases carry the published timings to beat.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CudaScan.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <chrono>
#include <fstream>
#include <iostream>

namespace {

struct Case {
  std::string model;
  int64_t B, H, T, d;
  /// Published forward + backward times on an H100 (ms), or < 0.
  double fastestPeerMs = -1, paperKernelMs = -1;
};

std::vector<Case> allCases() {
  std::vector<Case> cases = {
      // The delta rule: the fastest public kernels on an H100 (fwd + bwd)
      // and the paper's own CUDA kernel.
      {"delta_net", 96, 8, 256, 16, 1.008, 3.14},
      {"delta_net", 32, 8, 512, 32, 1.719, 5.08},
      {"delta_net", 8, 16, 2048, 64, 2.405, 30.0},
      {"delta_net", 8, 16, 4096, 128}};
  for (const char *model : {"delta_rnn", "delta_lstm", "rdn"}) {
    cases.push_back({model, 96, 8, 256, 16});
    cases.push_back({model, 32, 8, 512, 32});
  }
  return cases;
}

fwp::TensorMap makeInputs(const fwp::FastWeightLayer &layer, const Case &c,
                          torch::Device device) {
  torch::manual_seed(0);
  auto options = torch::TensorOptions().device(device);
  fwp::TensorMap inputs;
  for (const auto &spec : layer.signature().seq) {
    std::vector<int64_t> shape{c.B, c.H, c.T};
    for (int64_t size : fwp::resolveShape(spec, layer.dims()))
      shape.push_back(size);
    inputs[spec.name] = torch::randn(shape, options);
  }
  for (const auto &spec : layer.signature().params) {
    std::vector<int64_t> shape{c.H};
    for (int64_t size : fwp::resolveShape(spec, layer.dims()))
      shape.push_back(size);
    inputs[spec.name] = 0.1 * torch::randn(shape, options);
  }
  return inputs;
}

/// Median milliseconds of `run` over `repeats` timed calls after a warm-up,
/// each bracketed by device synchronisations.
template <typename F> double medianMs(int repeats, F run) {
  std::vector<double> times;
  for (int i = 0; i <= repeats; ++i) {
    torch::cuda::synchronize();
    auto start = std::chrono::steady_clock::now();
    run();
    torch::cuda::synchronize();
    double ms = std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - start)
                    .count();
    if (i > 0)
      times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double maxAbsDiff(const torch::Tensor &a, const torch::Tensor &b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

nlohmann::json runCase(const Case &c, const std::string &kernels, int repeats,
                       int64_t maxReferenceSteps) {
  torch::Device gpu(torch::kCUDA, 0);
  fwp::Dims dims{{"d", c.d}};
  auto reference = fwp::makeReferenceLayer(c.model, dims);
  std::string bundleDir = kernels + "/bench_" + c.model + "_d" + std::to_string(c.d);
  auto bundle = fwp::cuda::KernelBundle::load(bundleDir);
  fwp::TensorMap inputs = makeInputs(*reference, c, gpu);
  fwp::TensorMap grads{{"grad.y", torch::randn_like(fwp::cuda::runForward(
                                      bundle, inputs, false).at("y"))}};

  nlohmann::json result{{"model", c.model}, {"B", c.B}, {"H", c.H},
                        {"T", c.T},         {"d", c.d}, {"dtype", "f32"},
                        {"block", bundle.forwardTrain.blockSize},
                        {"block_backward", bundle.backward.blockSize}};
  fwp::TensorMap train, gradients;
  result["compiled_forward_ms"] = medianMs(repeats, [&] {
    fwp::cuda::runForward(bundle, inputs, false);
  });
  result["compiled_forward_backward_ms"] = medianMs(repeats, [&] {
    train = fwp::cuda::runForward(bundle, inputs, true);
    gradients = fwp::cuda::runBackward(bundle, inputs, train, grads);
  });
  if (c.fastestPeerMs > 0) {
    result["target_fastest_peer_h100_ms"] = c.fastestPeerMs;
    result["target_paper_kernel_ms"] = c.paperKernelMs;
  }

  if (c.T > maxReferenceSteps) {
    result["reference"] = "skipped (T > --max-reference-steps)";
    return result;
  }
  fwp::TensorMap leaves;
  for (const auto &[name, tensor] : inputs)
    leaves[name] = tensor.detach().clone().requires_grad_(true);
  fwp::TensorMap expected;
  result["reference_forward_backward_ms"] = medianMs(repeats, [&] {
    for (auto &[name, leaf] : leaves)
      leaf.mutable_grad() = torch::Tensor();
    expected = reference->forward(leaves);
    torch::autograd::backward({expected.at("y")}, {grads.at("grad.y")});
  });
  result["speedup_vs_reference"] =
      result["reference_forward_backward_ms"].get<double>() /
      result["compiled_forward_backward_ms"].get<double>();
  // The kernels must compute what they are timed for.
  double yError = maxAbsDiff(train.at("y").view(expected.at("y").sizes()),
                             expected.at("y").detach());
  double gradError = 0;
  for (const auto &[name, leaf] : leaves)
    gradError = std::max(gradError, maxAbsDiff(gradients.at("grad." + name)
                                                   .view(leaf.sizes()),
                                               leaf.grad()));
  result["max_abs_error_y"] = yError;
  result["max_abs_error_grad"] = gradError;
  return result;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"Compiled GPU kernels vs the eager reference (forward + backward)"};
  std::string kernels, out;
  int repeats = 10;
  int64_t maxReferenceSteps = 4096;
  std::vector<std::string> models;
  app.add_option("--kernels", kernels,
                 "folder of kernel bundles bench_<model>_d<d> (docs/gpu.md)")
      ->required();
  app.add_option("--repeats", repeats, "timed runs per measurement (median)");
  app.add_option("--models", models, "only these models")->delimiter(',');
  app.add_option("--max-reference-steps", maxReferenceSteps,
                 "skip the eager reference above this T (it loops over time)");
  app.add_option("--out", out, "also write the JSON here");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!torch::cuda::is_available())
      throw fwp::Error("no CUDA device: fwp-bench-gpu needs a GPU");
    std::string why;
    if (!fwp::cuda::driverAvailable(&why))
      throw fwp::Error("no CUDA driver: " + why);
    nlohmann::json results = nlohmann::json::array();
    for (const Case &c : allCases()) {
      if (!models.empty() &&
          std::find(models.begin(), models.end(), c.model) == models.end())
        continue;
      std::cerr << "fwp-bench-gpu: " << c.model << " B=" << c.B << " H=" << c.H
                << " T=" << c.T << " d=" << c.d << "\n";
      results.push_back(runCase(c, kernels, repeats, maxReferenceSteps));
    }
    nlohmann::json report{
        {"benchmark", "fwp-bench-gpu"},
        {"device", fwp::cuda::deviceLimits(0).device},
        {"repeats", repeats},
        {"results", results}};
    std::string text = report.dump(2);
    std::cout << text << "\n";
    if (!out.empty()) {
      std::string temp = out + ".tmp";
      {
        std::ofstream file(temp);
        file << text << "\n";
        if (!file)
          throw fwp::Error(out + ": cannot write");
      }
      if (std::rename(temp.c_str(), out.c_str()) != 0)
        throw fwp::Error(out + ": cannot write");
    }
  } catch (const std::exception &error) {
    std::cerr << "error: " << error.what() << "\n";
    return 2;
  }
  return 0;
}
