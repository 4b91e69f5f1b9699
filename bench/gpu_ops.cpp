//===- gpu_ops.cpp - fwp layers as torch.ops for the GPU benchmark --------===//
//
// A small operator library (libfwp_bench_ops.so) that bench/gpu_bench.py
// loads with torch.ops.load_library, so that fwp's compiled layers, the eager
// reference layers and fla's kernels are timed in one Python process on
// identical tensors with the same CUDA events (docs/gpu.md). Benchmark-only:
// the user-facing operator library is a separate project (docs/python.md).
//
//   torch.ops.fwp_bench.load(path) -> handle       a .fwpk (CompiledLayer)
//   torch.ops.fwp_bench.reference(layer, d) -> handle   the eager reference
//   torch.ops.fwp_bench.signature(handle) -> str   JSON: seq/params with shapes
//   torch.ops.fwp_bench.forward(handle, names, inputs) -> y
//   torch.ops.fwp_bench.forward_backward(handle, names, inputs, grad_y)
//       -> [y, grad of inputs[0], ...]           (autograd through the layer)
//
// `names` is a comma-separated list naming `inputs` (seq inputs and params,
// the runtime's tensor contract, shared/MODELS.md).
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"

#include <nlohmann/json.hpp>
#include <torch/library.h>

#include <memory>
#include <mutex>
#include <sstream>

namespace {

std::mutex layersMutex;
std::vector<std::unique_ptr<fwp::FastWeightLayer>> &layers() {
  static std::vector<std::unique_ptr<fwp::FastWeightLayer>> all;
  return all;
}

int64_t keep(std::unique_ptr<fwp::FastWeightLayer> layer) {
  std::lock_guard<std::mutex> lock(layersMutex);
  layers().push_back(std::move(layer));
  return static_cast<int64_t>(layers().size()) - 1;
}

const fwp::FastWeightLayer &layerAt(int64_t handle) {
  std::lock_guard<std::mutex> lock(layersMutex);
  if (handle < 0 || handle >= static_cast<int64_t>(layers().size()))
    throw fwp::Error("fwp_bench: unknown layer handle " + std::to_string(handle));
  return *layers()[handle];
}

int64_t load(std::string path) { return keep(fwp::loadCompiledLayer(path)); }

int64_t reference(std::string layer, int64_t d) {
  return keep(fwp::makeReferenceLayer(layer, {{"d", d}}));
}

std::string signature(int64_t handle) {
  const fwp::FastWeightLayer &layer = layerAt(handle);
  auto specs = [&](const std::vector<fwp::TensorSpec> &list) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto &spec : list)
      out.push_back({{"name", spec.name}, {"shape", fwp::resolveShape(spec, layer.dims())}});
    return out;
  };
  return nlohmann::json{{"layer", layer.signature().layer},
                        {"dims", layer.dims()},
                        {"seq", specs(layer.signature().seq)},
                        {"params", specs(layer.signature().params)}}
      .dump();
}

std::vector<std::string> splitNames(const std::string &names, size_t count) {
  std::vector<std::string> out;
  std::stringstream stream(names);
  for (std::string name; std::getline(stream, name, ',');)
    out.push_back(name);
  if (out.size() != count)
    throw fwp::Error("fwp_bench: " + std::to_string(out.size()) + " names ('" + names +
                     "') for " + std::to_string(count) + " tensors");
  return out;
}

at::Tensor forward(int64_t handle, std::string names, std::vector<at::Tensor> inputs) {
  const std::vector<std::string> keys = splitNames(names, inputs.size());
  fwp::TensorMap map;
  for (size_t i = 0; i < keys.size(); ++i)
    map[keys[i]] = inputs[i];
  torch::NoGradGuard noGrad;
  return layerAt(handle).forward(map).at("y");
}

std::vector<at::Tensor> forwardBackward(int64_t handle, std::string names,
                                        std::vector<at::Tensor> inputs, at::Tensor gradY) {
  const std::vector<std::string> keys = splitNames(names, inputs.size());
  fwp::TensorMap map;
  std::vector<at::Tensor> leaves;
  for (size_t i = 0; i < keys.size(); ++i) {
    leaves.push_back(inputs[i].detach().requires_grad_(true));
    map[keys[i]] = leaves.back();
  }
  torch::AutoGradMode gradMode(true);
  at::Tensor y = layerAt(handle).forward(map).at("y");
  torch::autograd::backward({y}, {gradY});
  std::vector<at::Tensor> out{y.detach()};
  for (const at::Tensor &leaf : leaves)
    out.push_back(leaf.grad().defined() ? leaf.grad() : at::zeros_like(leaf));
  return out;
}

} // namespace

// Catch-all kernels (CompositeImplicitAutograd): autograd stays on inside.
TORCH_LIBRARY(fwp_bench, m) {
  m.def("load(str path) -> int", &load);
  m.def("reference(str layer, int d) -> int", &reference);
  m.def("signature(int handle) -> str", &signature);
  m.def("forward(int handle, str names, Tensor[] inputs) -> Tensor", &forward);
  m.def("forward_backward(int handle, str names, Tensor[] inputs, Tensor grad_y) -> Tensor[]",
        &forwardBackward);
}
