//===- python_layer_cpp.cpp - The C++ call, timed inside Python -----------===//
//
// The baseline of bench/python_layer.py: one operator,
//   fwp_bench::cpp_layer_ms(str artifact, Tensor[] inputs, Tensor grad_y,
//                           int repeats) -> float[]
// that times forward + backward of fwp::CompiledLayer (the C++ autograd call
// fwp-train makes) `repeats` times, in the calling process, so that the
// Python-called layer and the C++ call run on the same thread settings and
// the same warm caches. `inputs`: the seq inputs, then the params, in the
// manifest's order. Not a test.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"

#include <torch/library.h>

#include <chrono>

namespace {

std::vector<double> cppLayerMs(const std::string &path, at::TensorList inputs,
                               const at::Tensor &gradY, int64_t repeats) {
  std::unique_ptr<fwp::FastWeightLayer> layer = fwp::loadCompiledLayer(path);
  const fwp::LayerSignature &signature = layer->signature();
  fwp::TensorMap named;
  size_t next = 0;
  for (const fwp::TensorSpec &spec : signature.seq)
    named[spec.name] = inputs.at(next++).detach().requires_grad_(true);
  for (const fwp::TensorSpec &spec : signature.params)
    named[spec.name] = inputs.at(next++).detach().requires_grad_(true);
  std::vector<double> times;
  for (int64_t i = 0; i < repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    fwp::TensorMap outputs = layer->forward(named);
    torch::autograd::backward({outputs.at("y")}, {gradY});
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    for (auto &[name, tensor] : named)
      tensor.mutable_grad() = at::Tensor();
  }
  return times;
}

} // namespace

TORCH_LIBRARY(fwp_bench, m) {
  m.def("cpp_layer_ms(str artifact, Tensor[] inputs, Tensor grad_y, int repeats) -> float[]",
        &cppLayerMs);
}
