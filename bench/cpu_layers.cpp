//===- cpu_layers.cpp - Compiled CPU layers against the eager reference ----===//
//
//   fwp-bench-cpu --artifacts DIR [--repeats N] [--out results.json]
//
// For every model and shape, times forward + backward of the compiled layer
// (DIR/<model>_d<d>.fwpk) and of the eager reference in the same process, and
// prints JSON with both times and their ratio. Not a test: no thresholds.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <iostream>

namespace {

fwp::TensorMap makeInputs(const fwp::FastWeightLayer &layer, int64_t B, int64_t H,
                          int64_t T) {
  torch::manual_seed(0);
  fwp::TensorMap inputs;
  for (const auto &spec : layer.signature().seq) {
    std::vector<int64_t> shape{B, H, T};
    for (int64_t size : fwp::resolveShape(spec, layer.dims()))
      shape.push_back(size);
    inputs[spec.name] = torch::randn(shape).requires_grad_(true);
  }
  for (const auto &spec : layer.signature().params) {
    std::vector<int64_t> shape{H};
    for (int64_t size : fwp::resolveShape(spec, layer.dims()))
      shape.push_back(size);
    inputs[spec.name] = (0.1 * torch::randn(shape)).requires_grad_(true);
  }
  return inputs;
}

/// Median seconds of forward + backward over `repeats` runs (after a warm-up).
double timeForwardBackward(const fwp::FastWeightLayer &layer, const fwp::TensorMap &inputs,
                           int repeats) {
  std::vector<double> times;
  for (int i = 0; i <= repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    fwp::TensorMap out = layer.forward(inputs);
    torch::Tensor loss = out.at("y").sum();
    loss.backward();
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i > 0)
      times.push_back(seconds);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"Compiled CPU layers vs the eager reference (forward + backward)"};
  std::string artifacts, out;
  int repeats = 3;
  std::vector<std::string> models = {"linear_transformer", "delta_net", "delta_mlp",
                                     "delta_rnn",          "delta_lstm", "rdn"};
  app.add_option("--artifacts", artifacts, "folder with <model>_d<d>.fwpk")->required();
  app.add_option("--repeats", repeats, "timed runs per measurement (median)");
  app.add_option("--models", models, "models to run");
  app.add_option("--out", out, "also write the JSON here");
  CLI11_PARSE(app, argc, argv);

  struct Shape {
    int64_t B, H, T, d;
  };
  const std::vector<Shape> shapes = {{8, 8, 256, 16}, {4, 8, 512, 32}};
  nlohmann::json results = nlohmann::json::array();
  try {
    for (const std::string &model : models)
      for (const Shape &shape : shapes) {
        std::string path = artifacts + "/" + model + "_d" + std::to_string(shape.d) + ".fwpk";
        fwp::CompiledLayer compiled(fwp::Artifact::load(path));
        auto reference = fwp::makeReferenceLayer(model, compiled.dims());
        fwp::TensorMap inputs = makeInputs(compiled, shape.B, shape.H, shape.T);
        double compiledSeconds = timeForwardBackward(compiled, inputs, repeats);
        double referenceSeconds = timeForwardBackward(*reference, inputs, std::max(1, repeats / 2));
        nlohmann::json row = {{"model", model},
                              {"B", shape.B},
                              {"H", shape.H},
                              {"T", shape.T},
                              {"d", shape.d},
                              {"threads", at::get_num_threads()},
                              {"compiled_ms", compiledSeconds * 1e3},
                              {"eager_ms", referenceSeconds * 1e3},
                              {"speedup", referenceSeconds / compiledSeconds}};
        std::cerr << row.dump() << std::endl;
        results.push_back(row);
      }
  } catch (const fwp::Error &error) {
    std::cerr << "error: " << error.what() << "\n";
    return 2;
  }
  std::cout << results.dump(2) << std::endl;
  if (!out.empty())
    std::ofstream(out) << results.dump(2) << "\n";
  return 0;
}
