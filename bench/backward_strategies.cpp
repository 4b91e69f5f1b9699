//===- backward_strategies.cpp - Time and memory of the backward strategies -===//
//
//   fwp-bench-strategies --artifact A.fwpk [--artifact B.fwpk ...]
//                        --shape B,H,T [--repeats N] [--forward-only]
//
// Times forward + backward (`y.sum().backward()`, median after a warm-up) of
// compiled layers at one shape, or the inference forward alone
// (--forward-only: the chunkwise against the recurrent form, say). With several artifacts (the same layer under
// different backward strategies) the runs are interleaved in this process and
// every time is also given as a ratio to the first artifact's. The peak
// resident memory (ru_maxrss) and its rise over the memory before the first
// forward are reported per process, so run one artifact per process to
// compare strategies' memory. Prints one JSON object per artifact. Not a
// test: no thresholds. See docs/benchmarks.md and bench/backward_strategies.py.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <iostream>

namespace {

double peakResidentMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

std::string strategyOf(const fwp::Artifact &artifact) {
  if (artifact.checkpointEvery() > 0)
    return "checkpoint:" + std::to_string(artifact.checkpointEvery());
  std::string strategy = "invert";
  for (const auto &[state, perState] : artifact.backwardStrategies())
    if (perState != "invert")
      strategy = perState;
  return strategy;
}

struct Run {
  std::string path;
  std::shared_ptr<const fwp::Artifact> artifact;
  std::unique_ptr<fwp::CompiledLayer> layer;
  fwp::TensorMap inputs;
  std::vector<double> seconds;
};

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"Forward + backward time and peak memory of compiled layers"};
  std::vector<std::string> artifactPaths;
  std::vector<int64_t> shape;
  int repeats = 3;
  app.add_option("--artifact", artifactPaths, "a .fwpk (repeat for several)")
      ->required();
  app.add_option("--shape", shape, "B,H,T")->delimiter(',')->expected(3)->required();
  app.add_option("--repeats", repeats, "timed runs (median)");
  bool forwardOnly = false;
  app.add_flag("--forward-only", forwardOnly,
               "time the inference forward alone (no gradients): \"fwd_ms\"");
  CLI11_PARSE(app, argc, argv);
  try {
    const int64_t B = shape[0], H = shape[1], T = shape[2];
    std::vector<Run> runs;
    for (const std::string &path : artifactPaths) {
      Run run;
      run.path = path;
      run.artifact = fwp::Artifact::load(path);
      run.layer = std::make_unique<fwp::CompiledLayer>(run.artifact);
      torch::manual_seed(0); // the same inputs for every artifact
      for (const auto &spec : run.layer->signature().seq) {
        std::vector<int64_t> size{B, H, T};
        for (int64_t n : fwp::resolveShape(spec, run.layer->dims()))
          size.push_back(n);
        run.inputs[spec.name] = torch::randn(size).requires_grad_(true);
      }
      for (const auto &spec : run.layer->signature().params) {
        std::vector<int64_t> size{H};
        for (int64_t n : fwp::resolveShape(spec, run.layer->dims()))
          size.push_back(n);
        run.inputs[spec.name] = (0.1 * torch::randn(size)).requires_grad_(true);
      }
      runs.push_back(std::move(run));
    }
    const double residentBefore = peakResidentMiB();
    // Round-robin, so that a noisy moment slows every artifact alike.
    for (int i = 0; i <= repeats; ++i)
      for (Run &run : runs) {
        for (auto &[name, input] : run.inputs)
          input.mutable_grad() = torch::Tensor();
        auto start = std::chrono::steady_clock::now();
        if (forwardOnly) {
          torch::NoGradGuard noGrad;
          run.layer->forward(run.inputs);
        } else {
          fwp::TensorMap out = run.layer->forward(run.inputs);
          out.at("y").sum().backward();
        }
        double seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - start)
                             .count();
        if (i > 0)
          run.seconds.push_back(seconds);
      }
    const double residentPeak = peakResidentMiB();
    double firstMs = 0;
    for (Run &run : runs) {
      std::sort(run.seconds.begin(), run.seconds.end());
      double ms = run.seconds[run.seconds.size() / 2] * 1e3;
      if (firstMs == 0)
        firstMs = ms;
      nlohmann::json row = {{"artifact", run.path},
                            {"layer", run.layer->signature().layer},
                            {"strategy", strategyOf(*run.artifact)},
                            {"B", B},
                            {"H", H},
                            {"T", T},
                            {"d", run.layer->dims().at("d")},
                            {"threads", at::get_num_threads()},
                            {"repeats", repeats},
                            {forwardOnly ? "fwd_ms" : "fwd_bwd_ms", ms},
                            {"ratio_to_first", ms / firstMs}};
      if (runs.size() == 1) {
        row["peak_rss_mib"] = residentPeak;
        row["rss_rise_mib"] = residentPeak - residentBefore;
      }
      std::cout << row.dump() << std::endl;
    }
  } catch (const fwp::Error &error) {
    std::cerr << "error: " << error.what() << "\n";
    return 2;
  }
  return 0;
}
