//===- CompiledLayer.h - Layers compiled by fwp-compile ---------*- C++ -*-===//
//
// A .fwpk artifact (docs/design.md) is a container: a JSON manifest and
// sections (the CPU code, a shared library with one C entry point per
// kernel; the PTX and cubins of the CUDA kernels), each with a SHA-256
// digest. Artifact::load verifies all of it before it maps any code
// (ArtifactContainer.h). CompiledLayer validates every call's tensors
// against the manifest and runs the kernels as a
// torch autograd function: forward (or forward_train, which also records the
// tape, when gradients are needed) and backward. An artifact compiled with
// CUDA kernels (`kernels.cuda` in the manifest, PTX and cubin images as
// exported symbols) runs the same way on CUDA tensors. An f32 artifact also
// takes all-bfloat16 inputs: cast to f32 for the kernels, outputs cast back.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/CudaScan.h"
#include "fwp/runtime/Layer.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace fwp {

/// One buffer argument of a kernel, as the manifest lists it.
struct KernelArg {
  std::string role; ///< seq, param, state, output, tape, grad_*
  std::string name;
  std::vector<int64_t> shape; ///< -1 stands for T
};

/// A CPU entry point: void symbol(int64_t T, void **descriptors).
struct CpuKernel {
  std::string symbol;
  /// Steps per chunk of the kernel's chunkwise form; 0 for the recurrent form
  /// (the manifest's "chunk"; absent in artifacts that predate it).
  int64_t chunk = 0;
  /// Passes over time of one fast weight each (the manifest's "stages"; 1
  /// for one loop, and in artifacts that predate it).
  int64_t stages = 1;
  std::vector<KernelArg> args;
  void (*entry)(int64_t, void **) = nullptr;
};

/// The parsed manifest of an artifact and its loaded code.
class Artifact {
public:
  /// Verifies `path` (opened by that path; the container, every digest, the
  /// manifest and every cross-reference), then maps its CPU code; throws
  /// fwp::Error naming the file and the field or section at fault.
  static std::shared_ptr<const Artifact> load(const std::string &path);
  ~Artifact();
  Artifact(const Artifact &) = delete;
  Artifact &operator=(const Artifact &) = delete;

  const std::string &path() const { return path_; }
  /// The CPU image this host runs: the first section of the manifest's
  /// "targets" whose features it has (e.g. "cpu.x86-64-v3").
  const std::string &cpuSection() const { return cpuSection_; }
  const LayerSignature &signature() const { return signature_; }
  const Dims &dims() const { return dims_; }
  torch::ScalarType dtype() const { return dtype_; }
  /// Names and per-step shapes of the tape that forward_train records.
  const std::vector<TensorSpec> &tape() const { return tape_; }
  /// Per state: "invert", "store" or "checkpoint" (the manifest's
  /// "backward"; empty for artifacts that predate it).
  const std::map<std::string, std::string> &backwardStrategies() const {
    return backwardStrategies_;
  }
  /// Steps per segment of a checkpointed backward; 0 when the forward keeps
  /// its whole tape.
  int64_t checkpointEvery() const { return checkpointEvery_; }
  /// The initial values the layer asks for, by param name ("zeros", "ones",
  /// "constant:V", "linspace:A:B"; the IR's `fwp.param_init`). A param
  /// missing here takes the model's default.
  const std::map<std::string, std::string> &paramInits() const { return paramInits_; }
  const CpuKernel &forward() const { return forward_; }
  const CpuKernel &forwardTrain() const { return forwardTrain_; }
  const CpuKernel &backward() const { return backward_; }
  /// The energy form's deferred products (docs/design.md, "The backward of a
  /// decaying fast weight"): a forward-running kernel that, after the
  /// backward over the same steps, rebuilds the weight from its value at the
  /// first step, forms the products W d of the backward's `deferred.*` and
  /// yields gradients to add to the backward's. Null for most layers.
  const CpuKernel *backwardDeferred() const {
    return backwardDeferred_ ? &*backwardDeferred_ : nullptr;
  }
  /// Whether the artifact carries CUDA kernels.
  bool hasCuda() const { return cudaPtx_.has_value(); }
  /// The CUDA kernels for a device of architecture `chip` (e.g. "sm_90"):
  /// the cubins when they were assembled for `chip`, else the PTX (which
  /// the driver compiles once per process). Throws fwp::Error without CUDA
  /// kernels.
  const cuda::KernelBundle &cudaKernels(const std::string &chip) const;

private:
  friend std::string describeArtifact(const std::string &path, std::string *cpuSection);
  Artifact() = default;
  /// Verifies `path`; maps its code only with `mapCode`.
  static std::shared_ptr<Artifact> loadImpl(const std::string &path, bool mapCode);
  std::string path_;
  std::string cpuSection_;
  void *handle_ = nullptr;
  int imageFd_ = -1; ///< the memfd holding the mapped CPU code
  LayerSignature signature_;
  Dims dims_;
  torch::ScalarType dtype_ = torch::kFloat;
  std::vector<TensorSpec> tape_;
  std::map<std::string, std::string> backwardStrategies_;
  int64_t checkpointEvery_ = 0;
  std::map<std::string, std::string> paramInits_;
  CpuKernel forward_, forwardTrain_, backward_;
  std::optional<CpuKernel> backwardDeferred_;
  std::optional<cuda::KernelBundle> cudaPtx_, cudaCubin_;
  std::string cudaChip_;
};

class CompiledLayer : public FastWeightLayer {
public:
  explicit CompiledLayer(std::shared_ptr<const Artifact> artifact);
  const LayerSignature &signature() const override;
  const Dims &dims() const override;
  TensorMap forward(const TensorMap &inputs) const override;
  std::map<std::string, std::string> paramInits() const override {
    return artifact_->paramInits();
  }
  const Artifact &artifact() const { return *artifact_; }

private:
  std::shared_ptr<const Artifact> artifact_;
};

/// The kernels of `artifact` without autograd, on CPU or CUDA tensors: what
/// CompiledLayer's autograd function runs, and what the torch.ops.fwp
/// operators wrap (runtime/torch, docs/python.md). `inputs` as for
/// FastWeightLayer::forward, validated the same way (fwp::Error otherwise).
/// Returns "y", "final.<state>" for every state and, with `train`
/// (forward_train), every tape entry under its manifest name (and no "y"
/// for a checkpointed layer: see compiledForwardShapes). A layer whose
/// backward has the energy form (a checkpointed decaying weight,
/// docs/design.md) computes reads of the output gradients in forward_train:
/// `grads` gives them ("grad.y"; zero when absent).
TensorMap runCompiledForward(const Artifact &artifact, const TensorMap &inputs, bool train,
                             const TensorMap &grads = {});

/// The backward kernel: from the forward's `inputs`, the results of
/// runCompiledForward(train = true) (`final.<state>` and the tape) and the
/// output gradients "grad.y" and "grad.final.<state>" (each optional: zero
/// when absent), returns "grad.<name>" for every tensor of `inputs`
/// (params' gradients summed over the batch). Checks the shapes, dtypes and
/// devices of the forward results and gradients (fwp::Error).
TensorMap runCompiledBackward(const Artifact &artifact, const TensorMap &inputs,
                              const TensorMap &forwardResults, const TensorMap &grads);

/// Names and shapes of what runCompiledForward returns for a call of
/// `batch` x `heads` x `steps`, in order: "y", "final.<state>" in the
/// signature's order, then (with `train`) the tape in the manifest's order.
/// A checkpointed layer's forward_train, which only rebuilds a segment's
/// tape inside the backward, returns no "y".
std::vector<std::pair<std::string, std::vector<int64_t>>>
compiledForwardShapes(const Artifact &artifact, int64_t batch, int64_t heads, int64_t steps,
                      bool train);
/// The forward of a call that needs gradients, as CompiledLayer's autograd
/// function runs it: "y", "final.<state>" and what the backward needs kept
/// (trainingForwardShapes): forward_train's tape, or, for a checkpointed
/// layer (Artifact::checkpointEvery), only the states at every segment's
/// start ("checkpoint.<k>.<state>"; on CPU the plain forward kernel, one
/// sequence at a time). `inputs` as for runCompiledForward.
TensorMap runTrainingForward(const Artifact &artifact, const TensorMap &inputs);

/// The backward of runTrainingForward: from its `inputs`, its results
/// (everything after "y") and the gradients "grad.y" / "grad.final.<state>"
/// (each optional), "grad.<name>" for every tensor of `inputs`. A
/// checkpointed layer recomputes one segment's tape at a time. Checks every
/// result's and gradient's shape and device (fwp::Error).
TensorMap runTrainingBackward(const Artifact &artifact, const TensorMap &inputs,
                              const TensorMap &forwardResults, const TensorMap &grads);

/// Names and shapes of what runTrainingForward returns, in order: "y",
/// "final.<state>", then the tape (compiledForwardShapes with `train`) or,
/// for a checkpointed layer, "checkpoint.<k>.<state>" for every segment k
/// and state (each [batch, heads, state shape...]).
std::vector<std::pair<std::string, std::vector<int64_t>>>
trainingForwardShapes(const Artifact &artifact, int64_t batch, int64_t heads, int64_t steps);

/// Verifies `path` as Artifact::load does, without mapping any code, and
/// returns its manifest (JSON text), and in `cpuSection` (when given) the
/// CPU image this host would run; throws fwp::Error (fwp-inspect).
std::string describeArtifact(const std::string &path, std::string *cpuSection = nullptr);

/// The initial value [heads, shape...] (float32) of a param whose layer asks
/// for `init` (Artifact::paramInits): "zeros", "ones", "constant:V", or
/// "linspace:A:B" (head h gets A + (B - A) h / (heads - 1)). Throws
/// fwp::Error for anything else.
torch::Tensor initialParam(const std::string &init, int64_t heads,
                           const std::vector<int64_t> &shape);

/// Loads a .fwpk as a FastWeightLayer (throws fwp::Error).
std::unique_ptr<FastWeightLayer> loadCompiledLayer(const std::string &path);

} // namespace fwp
