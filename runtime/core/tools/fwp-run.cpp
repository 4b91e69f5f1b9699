//===- fwp-run.cpp - Run one fast-weight layer on a safetensors file ------===//
//
//   fwp-run --layer delta_rnn --inputs in.safetensors --out out.safetensors
//           [--backward] [--device cpu|cuda] [--dim d=32 ...]
//   fwp-run --artifact delta_rnn.fwpk ...   (a layer compiled by fwp-compile)
//
// Writes "y" and "final.<state>"; with --backward also "grad.<name>" for
// every seq input, param and given initial state, from "grad.y" (and the
// optional "grad.final.<state>") of the inputs file. Every failure prints
// "error: ..." to stderr and exits with code 2 before any output is written.
// See docs/fwp-run.md.
//
//===----------------------------------------------------------------------===//
#include "fwp/runtime/CompiledLayer.h"
#include "fwp/runtime/ToolMain.h"
#include "fwp/runtime/Layer.h"
#include "fwp/runtime/Safetensors.h"

#include <CLI/CLI.hpp>

#include <iostream>

namespace {

using fwp::Error;
using fwp::TensorMap;

constexpr int kExitFailure = 2;
const std::string kGradPrefix = "grad.";

struct Options {
  std::string layer;
  std::string artifact;
  std::string inputs;
  std::string out;
  std::string device = "cpu";
  std::vector<std::string> dims;
  bool backward = false;
};

bool startsWith(const std::string &text, const std::string &prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

std::string formatSizes(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i)
    out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

/// "--dim d=32" -> {"d": 32}.
fwp::Dims parseDims(const std::vector<std::string> &specs) {
  fwp::Dims dims;
  for (const auto &spec : specs) {
    const size_t equals = spec.find('=');
    const std::string name = spec.substr(0, equals);
    const std::string value = equals == std::string::npos ? "" : spec.substr(equals + 1);
    size_t parsed = 0;
    long long size = -1;
    try {
      size = std::stoll(value, &parsed);
    } catch (const std::exception &) {
      parsed = 0;
    }
    if (name.empty() || value.empty() || parsed != value.size() || size < 1)
      throw Error("--dim '" + spec + "': expected NAME=SIZE with SIZE >= 1, e.g. --dim d=32");
    if (!dims.emplace(name, size).second)
      throw Error("--dim '" + spec + "': dim '" + name + "' is given twice");
  }
  return dims;
}

torch::Device parseDevice(const std::string &device) {
  if (device == "cpu")
    return torch::kCPU;
  if (!torch::cuda::is_available())
    throw Error("--device cuda: CUDA is not available (no GPU visible, or LibTorch lacks CUDA)");
  return torch::Device(torch::kCUDA, 0);
}

// The single place where the command line becomes a layer: a compiled
// artifact (`--artifact X.fwpk`, CPU or CUDA kernels) or a reference layer;
// everything after this function only uses the FastWeightLayer interface.
std::unique_ptr<fwp::FastWeightLayer> makeLayer(const Options &options,
                                                const TensorMap &layerInputs,
                                                torch::Device /*device*/) {
  const fwp::Dims given = parseDims(options.dims);
  if (!options.artifact.empty()) {
    auto layer = fwp::loadCompiledLayer(options.artifact);
    for (const auto &[name, size] : given) {
      auto it = layer->dims().find(name);
      if (it == layer->dims().end())
        throw Error("--dim " + name + ": the artifact's layer has no dim '" + name + "'");
      if (it->second != size)
        throw Error("--dim " + name + "=" + std::to_string(size) + ": " + options.artifact +
                    " was compiled with " + name + "=" + std::to_string(it->second) +
                    " (recompile with fwp-compile --dim " + name + "=" +
                    std::to_string(size) + ")");
    }
    return layer;
  }
  // The signature does not depend on dims, so a first instance (which also
  // checks the layer and dim names) tells which tensor fixes which dim.
  const auto probe = fwp::makeReferenceLayer(options.layer, given);
  const fwp::Dims dims = fwp::inferDims(probe->signature(), layerInputs, given);
  return fwp::makeReferenceLayer(options.layer, dims);
}

/// Splits the file's tensors into the layer's inputs and the output
/// gradients ("grad.y" -> "y", "grad.final.W" -> "final.W").
void splitInputs(const TensorMap &all, bool backward, TensorMap &layerInputs,
                 TensorMap &outputGrads) {
  for (const auto &[name, tensor] : all) {
    if (!startsWith(name, kGradPrefix))
      layerInputs[name] = tensor;
    else if (backward)
      outputGrads[name.substr(kGradPrefix.size())] = tensor;
    // Without --backward the gradients of a file prepared for both are ignored.
  }
}

/// Runs the backward pass; returns "grad.<name>" for every layer input.
TensorMap backward(const TensorMap &inputs, const TensorMap &outputs, const TensorMap &outputGrads,
                   const std::string &origin) {
  if (!outputGrads.count("y"))
    throw Error(origin + ": missing tensor 'grad.y' (needed by --backward)");
  std::vector<torch::Tensor> roots, rootGrads;
  for (const auto &[name, grad] : outputGrads) {
    auto output = outputs.find(name);
    if (output == outputs.end() || (name != "y" && !startsWith(name, "final."))) {
      std::string expected;
      for (const auto &entry : outputs)
        expected += (expected.empty() ? "" : ", ") + kGradPrefix + entry.first;
      throw Error(origin + ": unexpected tensor 'grad." + name + "' (expected " + expected +
                  "; all but grad.y optional)");
    }
    const torch::Tensor &value = output->second;
    if (!grad.sizes().equals(value.sizes()))
      throw Error(origin + ": tensor 'grad." + name + "' has shape " + formatSizes(grad.sizes()) +
                  " but '" + name + "' has shape " + formatSizes(value.sizes()));
    if (grad.scalar_type() != value.scalar_type())
      throw Error(origin + ": tensor 'grad." + name + "' has dtype " +
                  c10::toString(grad.scalar_type()) + " but '" + name + "' has " +
                  c10::toString(value.scalar_type()));
    if (!value.requires_grad())
      continue; // e.g. the zero final state of an empty sequence
    roots.push_back(value);
    rootGrads.push_back(grad.to(value.device()));
  }

  std::vector<std::string> names;
  std::vector<torch::Tensor> leaves;
  for (const auto &[name, tensor] : inputs) {
    names.push_back(name);
    leaves.push_back(tensor);
  }
  std::vector<torch::Tensor> grads(leaves.size());
  if (!roots.empty())
    grads = torch::autograd::grad(roots, leaves, rootGrads, /*retain_graph=*/false,
                                  /*create_graph=*/false, /*allow_unused=*/true);
  TensorMap result;
  for (size_t i = 0; i < leaves.size(); ++i)
    result[kGradPrefix + names[i]] =
        grads[i].defined() ? grads[i] : torch::zeros_like(leaves[i]).detach();
  return result;
}

int run(const Options &options) {
  const torch::Device device = parseDevice(options.device);
  const fwp::SafetensorsFile file = fwp::readSafetensors(options.inputs);

  TensorMap layerInputs, outputGrads;
  splitInputs(file.tensors, options.backward, layerInputs, outputGrads);
  const auto layer = makeLayer(options, layerInputs, device);
  fwp::validateInputs(layer->signature(), layer->dims(), layerInputs);

  for (auto &[name, tensor] : layerInputs) {
    tensor = tensor.to(device);
    if (options.backward)
      tensor.requires_grad_(true);
  }
  TensorMap results = layer->forward(layerInputs);
  if (options.backward)
    for (auto &[name, grad] : backward(layerInputs, results, outputGrads, options.inputs))
      results[name] = grad;

  fwp::writeSafetensors(options.out, results, {{"layer", layer->signature().layer}});
  std::cout << "wrote " << options.out << ":";
  for (const auto &[name, tensor] : results)
    std::cout << ' ' << name << formatSizes(tensor.sizes());
  std::cout << '\n';
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  Options options;
  // The names, wrapped so that no line of --help is wider than 100 columns.
  std::string layers, line = "Reference layers:";
  for (const auto &name : fwp::referenceLayerNames()) {
    if (line.size() + name.size() + 2 > 96) {
      layers += line + ",\n";
      line = " ";
    } else if (line.back() != ':') {
      line += ",";
    }
    line += " " + name;
  }
  layers += line;

  CLI::App app{"Run one fast-weight layer (forward, optionally backward) on the tensors of a "
               "safetensors file."};
  app.footer("\n" + layers + "\n\nExamples:\n"
             "  fwp-run --layer delta_rnn --inputs in.safetensors --out out.safetensors --backward\n"
             "  fwp-run --artifact rdn.fwpk --device cuda --inputs in.safetensors "
             "--out out.safetensors");
  auto *layerOption = app.add_option("--layer", options.layer, "a reference layer (names below)");
  auto *artifactOption =
      app.add_option("--artifact", options.artifact, "a layer compiled by fwp-compile (.fwpk)");
  layerOption->excludes(artifactOption);
  artifactOption->excludes(layerOption);
  app.add_option("--inputs", options.inputs, "safetensors file with the layer's inputs")
      ->required();
  app.add_option("--out", options.out, "safetensors file to write (atomically)")->required();
  app.add_flag("--backward", options.backward,
               "also write grad.<name> of every input, from grad.y (+ grad.final.*)");
  app.add_option("--device", options.device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--dim", options.dims, "a layer size NAME=SIZE (repeatable); default: inferred")
      ->expected(1) // one NAME=SIZE per --dim; repeat the flag for more
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);

  try {
    app.parse(argc, argv);
    if (options.layer.empty() && options.artifact.empty())
      throw CLI::RequiredError("--layer or --artifact");
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    std::cerr << "error: " << e.what() << "\nRun with --help for usage.\n";
    return kExitFailure;
  }

  return fwp::runReportingErrors([&] { return run(options); });
}
