//===- Ops.cpp - Compiled layers as torch.ops.fwp operators ---------------===//
//
// The operator library of docs/python.md: TORCH_LIBRARY(fwp) registers the
// kernels of a .fwpk (fwp::runCompiledForward, runTrainingForward / Backward, on CPU
// and CUDA tensors) as PyTorch operators, with Meta kernels that compute the
// output shapes from the artifact's manifest, so torch.compile traces them
// with fake tensors. An artifact is named to an operator by its path (a str
// argument); each path is loaded once per process and kept.
//
//   fwp::manifest(str artifact) -> str               the manifest (JSON)
//   fwp::forward(str artifact, Tensor[] inputs) -> Tensor[]        y, finals
//   fwp::forward_train(str artifact, Tensor[] inputs) -> Tensor[]  y, finals, saved
//   fwp::backward(str artifact, Tensor[] inputs, Tensor[] saved,
//                 Tensor?[] grads) -> Tensor[]       a gradient per input
//
// `inputs`: the seq inputs, then the params (both in the manifest's order),
// then optionally every initial state. `saved`: forward_train's outputs after
// y (after the finals: the tape, or a checkpointed layer's checkpoints). `grads`: the gradients of y and of every final state (None: zero).
// The autograd formula (forward_train -> backward) is registered from Python
// (python/fwp/_ops.py).
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"

#include <nlohmann/json.hpp>
#include <torch/library.h>

#include <map>
#include <mutex>

namespace fwp {
namespace {

/// The artifact at `path`, loaded on first use and kept for the process.
std::shared_ptr<const Artifact> artifactAt(const std::string &path) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const Artifact>> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = loaded.find(path);
  if (it != loaded.end())
    return it->second;
  std::shared_ptr<const Artifact> artifact = Artifact::load(path);
  loaded.emplace(path, artifact);
  return artifact;
}

std::string joined(const std::vector<std::string> &names) {
  std::string out;
  for (const std::string &name : names)
    out += (out.empty() ? "" : ", ") + name;
  return out;
}

/// The names of an operator's inputs: seq inputs, params, then
/// "init.<state>" for every state.
std::vector<std::string> inputNames(const Artifact &artifact) {
  const LayerSignature &signature = artifact.signature();
  std::vector<std::string> names;
  for (const TensorSpec &spec : signature.seq)
    names.push_back(spec.name);
  for (const TensorSpec &spec : signature.params)
    names.push_back(spec.name);
  for (const TensorSpec &spec : signature.states)
    names.push_back(initName(spec.name));
  return names;
}

/// Names an operator's `inputs` (the initial states are optional, all or
/// none) and checks that each is a defined, contiguous tensor.
TensorMap nameInputs(const Artifact &artifact, at::TensorList inputs, const char *op) {
  const LayerSignature &signature = artifact.signature();
  std::vector<std::string> names = inputNames(artifact);
  const size_t required = signature.seq.size() + signature.params.size();
  if (inputs.size() != required && inputs.size() != names.size())
    throw Error(artifact.path() + ": fwp::" + op + " takes " + std::to_string(required) +
                " tensors (" + joined(std::vector<std::string>(names.begin(), names.begin() + required)) + ") or " +
                std::to_string(names.size()) + " with every initial state (" +
                joined(names) + "), got " + std::to_string(inputs.size()));
  TensorMap named;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined())
      throw Error(artifact.path() + ": tensor '" + names[i] + "' is undefined");
    if (!inputs[i].is_contiguous())
      throw Error(artifact.path() + ": tensor '" + names[i] +
                  "' is not contiguous (call .contiguous() on it first)");
    named[names[i]] = inputs[i];
  }
  return named;
}

/// Validates a call's inputs without running it (the Meta kernels' check).
CallShape checkCall(const Artifact &artifact, const TensorMap &inputs) {
  CallShape call = validateInputs(artifact.signature(), artifact.dims(), inputs);
  if (call.dtype != artifact.dtype())
    throw Error(artifact.path() + ": the layer was compiled for " +
                c10::toString(artifact.dtype()) + " tensors, got " +
                c10::toString(call.dtype));
  return call;
}

/// What forward (y, finals) or forward_train (y, finals, then what the
/// backward needs: runTrainingForward) returns for a call, in order.
std::vector<std::pair<std::string, std::vector<int64_t>>>
outputShapes(const Artifact &artifact, const CallShape &call, bool train) {
  return train ? trainingForwardShapes(artifact, call.batch, call.heads, call.steps)
               : compiledForwardShapes(artifact, call.batch, call.heads, call.steps, false);
}

std::vector<at::Tensor> forwardOutputs(const std::string &path, at::TensorList inputs,
                                       bool train) {
  std::shared_ptr<const Artifact> artifact = artifactAt(path);
  TensorMap named = nameInputs(*artifact, inputs, train ? "forward_train" : "forward");
  CallShape call = checkCall(*artifact, named);
  TensorMap results = train ? runTrainingForward(*artifact, named)
                            : runCompiledForward(*artifact, named, false);
  std::vector<at::Tensor> outputs;
  for (const auto &[name, shape] : outputShapes(*artifact, call, train))
    outputs.push_back(results.at(name));
  return outputs;
}

std::vector<at::Tensor> forwardMeta(const std::string &path, at::TensorList inputs,
                                    bool train) {
  std::shared_ptr<const Artifact> artifact = artifactAt(path);
  TensorMap named = nameInputs(*artifact, inputs, train ? "forward_train" : "forward");
  CallShape call = checkCall(*artifact, named);
  std::vector<at::Tensor> outputs;
  for (const auto &[name, shape] : outputShapes(*artifact, call, train))
    outputs.push_back(at::empty(shape, inputs[0].options()));
  return outputs;
}

/// One backward call: its inputs, the saved forward results and the
/// output gradients, named for runTrainingBackward, after the checks.
struct BackwardCall {
  std::shared_ptr<const Artifact> artifact;
  std::vector<std::string> inputNames; ///< in the order of `inputs`
  TensorMap inputs, forwardResults, gradients;
};

/// Names `inputs`, `saved` (forward_train's outputs after y) and `grads` (of
/// y and the final states) and checks their counts and the inputs.
BackwardCall prepareBackward(const std::string &path, at::TensorList inputs,
                             at::TensorList saved,
                             const c10::List<std::optional<at::Tensor>> &grads) {
  BackwardCall call;
  call.artifact = artifactAt(path);
  const Artifact &artifact = *call.artifact;
  call.inputs = nameInputs(artifact, inputs, "backward");
  CallShape shape = checkCall(artifact, call.inputs);
  call.inputNames = inputNames(artifact);
  call.inputNames.resize(inputs.size());
  auto shapes = outputShapes(artifact, shape, /*train=*/true);
  const size_t outputs = 1 + artifact.signature().states.size();
  if (saved.size() + 1 != shapes.size())
    throw Error(artifact.path() + ": fwp::backward takes " + std::to_string(shapes.size() - 1) +
                " saved tensors (forward_train's outputs after y), got " +
                std::to_string(saved.size()));
  if (grads.size() != outputs)
    throw Error(artifact.path() + ": fwp::backward takes " + std::to_string(outputs) +
                " gradients (of y and of every final state; None for zero), got " +
                std::to_string(grads.size()));
  for (size_t i = 0; i < saved.size(); ++i)
    call.forwardResults[shapes[1 + i].first] = saved[i];
  for (size_t i = 0; i < outputs; ++i) {
    std::optional<at::Tensor> grad = grads.get(i);
    if (grad && grad->defined())
      call.gradients["grad." + shapes[i].first] = *grad;
  }
  return call;
}

std::vector<at::Tensor> backward(const std::string &path, at::TensorList inputs,
                                 at::TensorList saved,
                                 const c10::List<std::optional<at::Tensor>> &grads) {
  BackwardCall call = prepareBackward(path, inputs, saved, grads);
  TensorMap results =
      runTrainingBackward(*call.artifact, call.inputs, call.forwardResults, call.gradients);
  std::vector<at::Tensor> out;
  for (const std::string &name : call.inputNames)
    out.push_back(results.at("grad." + name));
  return out;
}

std::vector<at::Tensor> backwardMeta(const std::string &path, at::TensorList inputs,
                                     at::TensorList saved,
                                     const c10::List<std::optional<at::Tensor>> &grads) {
  prepareBackward(path, inputs, saved, grads);
  std::vector<at::Tensor> out;
  for (const at::Tensor &input : inputs)
    out.push_back(at::empty(input.sizes(), input.options()));
  return out;
}

nlohmann::json specsJson(const std::vector<TensorSpec> &specs, const Dims &dims) {
  nlohmann::json out = nlohmann::json::array();
  for (const TensorSpec &spec : specs)
    out.push_back({{"name", spec.name}, {"shape", resolveShape(spec, dims)}});
  return out;
}

/// The artifact's contract as JSON: what fwp.signature() returns.
std::string manifest(const std::string &path) {
  std::shared_ptr<const Artifact> artifact = artifactAt(path);
  const LayerSignature &signature = artifact->signature();
  const Dims &dims = artifact->dims();
  nlohmann::json out;
  out["path"] = artifact->path();
  out["layer"] = signature.layer;
  out["dtype"] = artifact->dtype() == torch::kDouble ? "float64" : "float32";
  out["dims"] = dims;
  out["seq"] = specsJson(signature.seq, dims);
  out["params"] = specsJson(signature.params, dims);
  out["states"] = specsJson(signature.states, dims);
  out["output"] = specsJson({signature.output}, dims)[0];
  out["tape"] = specsJson(artifact->tape(), dims);
  out["cuda"] = artifact->hasCuda();
  out["param_inits"] = artifact->paramInits();
  out["backward"] = artifact->backwardStrategies();
  out["checkpoint_every"] = artifact->checkpointEvery();
  return out.dump();
}

/// A param's initial value [heads, *shape] as the layer's IR asks for it
/// (`fwp.param_init`; the same rule as fwp-train's).
at::Tensor initialParamOp(const std::string &init, int64_t heads, at::IntArrayRef shape) {
  return initialParam(init, heads, shape.vec());
}

} // namespace
} // namespace fwp

TORCH_LIBRARY(fwp, m) {
  // The kernels read their buffers as dense row-major arrays.
  const std::vector<at::Tag> tags{at::Tag::needs_fixed_stride_order};
  m.def("manifest(str artifact) -> str", &fwp::manifest);
  m.def("initial_param(str init, int heads, int[] shape) -> Tensor", &fwp::initialParamOp);
  m.def("forward(str artifact, Tensor[] inputs) -> Tensor[]", tags);
  m.def("forward_train(str artifact, Tensor[] inputs) -> Tensor[]", tags);
  m.def("backward(str artifact, Tensor[] inputs, Tensor[] saved, Tensor?[] grads) -> Tensor[]",
        tags);
}

namespace {
template <bool Train>
std::vector<at::Tensor> forwardKernel(const std::string &path, at::TensorList inputs) {
  return fwp::forwardOutputs(path, inputs, Train);
}
template <bool Train>
std::vector<at::Tensor> forwardMetaKernel(const std::string &path, at::TensorList inputs) {
  return fwp::forwardMeta(path, inputs, Train);
}
} // namespace

// One kernel serves CPU and CUDA tensors: runCompiledForward dispatches on
// the tensors' device.
TORCH_LIBRARY_IMPL(fwp, CPU, m) {
  m.impl("forward", &forwardKernel<false>);
  m.impl("forward_train", &forwardKernel<true>);
  m.impl("backward", &fwp::backward);
}

TORCH_LIBRARY_IMPL(fwp, CUDA, m) {
  m.impl("forward", &forwardKernel<false>);
  m.impl("forward_train", &forwardKernel<true>);
  m.impl("backward", &fwp::backward);
}

TORCH_LIBRARY_IMPL(fwp, Meta, m) {
  m.impl("forward", &forwardMetaKernel<false>);
  m.impl("forward_train", &forwardMetaKernel<true>);
  m.impl("backward", &fwp::backwardMeta);
}
