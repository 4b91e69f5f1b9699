//===- backward_strategies.cpp - Time and memory of the backward strategies -===//
//
//   fwp-bench-strategies --artifact F.fwpk --shape B,H,T [--repeats N]
//
// Times forward + backward (median, after a warm-up) of one compiled layer
// at one shape and reports the process's peak resident memory (ru_maxrss),
// so that one process per (artifact, shape) gives each strategy's peak.
// Prints one JSON object. Not a test: no thresholds. See docs/benchmarks.md.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <chrono>
#include <iostream>

int main(int argc, char **argv) {
  CLI::App app{"Forward + backward time and peak memory of one compiled layer"};
  std::string artifactPath;
  std::vector<int64_t> shape;
  int repeats = 3;
  app.add_option("--artifact", artifactPath, "the .fwpk")->required();
  app.add_option("--shape", shape, "B,H,T")->delimiter(',')->expected(3)->required();
  app.add_option("--repeats", repeats, "timed runs (median)");
  CLI11_PARSE(app, argc, argv);
  try {
    auto artifact = fwp::Artifact::load(artifactPath);
    fwp::CompiledLayer layer(artifact);
    const int64_t B = shape[0], H = shape[1], T = shape[2];
    torch::manual_seed(0);
    fwp::TensorMap inputs;
    for (const auto &spec : layer.signature().seq) {
      std::vector<int64_t> size{B, H, T};
      for (int64_t n : fwp::resolveShape(spec, layer.dims()))
        size.push_back(n);
      inputs[spec.name] = torch::randn(size).requires_grad_(true);
    }
    for (const auto &spec : layer.signature().params) {
      std::vector<int64_t> size{H};
      for (int64_t n : fwp::resolveShape(spec, layer.dims()))
        size.push_back(n);
      inputs[spec.name] = (0.1 * torch::randn(size)).requires_grad_(true);
    }
    std::vector<double> times;
    for (int i = 0; i <= repeats; ++i) {
      auto start = std::chrono::steady_clock::now();
      fwp::TensorMap out = layer.forward(inputs);
      out.at("y").sum().backward();
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (i > 0)
        times.push_back(seconds);
    }
    std::sort(times.begin(), times.end());
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    std::string strategy = artifact->checkpointEvery() > 0
                               ? "checkpoint:" + std::to_string(artifact->checkpointEvery())
                               : (artifact->backwardStrategies().count("W")
                                      ? artifact->backwardStrategies().at("W")
                                      : std::string("invert"));
    nlohmann::json row = {{"layer", layer.signature().layer},
                          {"strategy", strategy},
                          {"B", B},
                          {"H", H},
                          {"T", T},
                          {"d", layer.dims().at("d")},
                          {"threads", at::get_num_threads()},
                          {"fwd_bwd_ms", times[times.size() / 2] * 1e3},
                          {"peak_rss_mib", usage.ru_maxrss / 1024.0}};
    std::cout << row.dump() << std::endl;
  } catch (const fwp::Error &error) {
    std::cerr << "error: " << error.what() << "\n";
    return 2;
  }
  return 0;
}
