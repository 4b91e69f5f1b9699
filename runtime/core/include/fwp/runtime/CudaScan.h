//===- CudaScan.h - A layer's GPU kernels on the runtime's tensors -*- C++ -*-===//
//
// Runs the three kernels of a layer (forward, forward_train, backward) on
// CUDA tensors named as in the runtime's tensor contract (Layer.h):
// seq inputs [B, H, T, n], params [H, ...], optional "init.<state>"; results
// "y", "final.<state>", the tape; gradients "grad.<seq>", "grad.<param>",
// "grad.init.<state>". The kernels come from a kernel bundle (a folder that
// `fwp-opt --fwp-differentiate --test-fwp-cuda-compile=dir=...` writes:
// kernels.json and one .ptx per kernel), or from a .fwpk's manifest and
// embedded images (fwp::CompiledLayer; docs/gpu.md).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/CudaLauncher.h"

namespace fwp::cuda {

struct KernelBundle {
  std::string dir;
  std::string layer;
  Dims dims;
  KernelSpec forward, forwardTrain, backward;
  /// The energy form's deferred products (the manifest's optional
  /// `backward_deferred`), which runBackward runs after the backward.
  std::optional<KernelSpec> backwardDeferred;
  /// PTX text by kernel name.
  std::map<std::string, std::string> images;

  /// Reads `dir`; throws fwp::Error naming the file and field at fault.
  static KernelBundle load(const std::string &dir);
  /// From a manifest's `kernels.cuda` object and the images by kernel name
  /// (e.g. the fwp_ptx_<kernel> texts of a .fwpk); `where` names the source
  /// in errors.
  static KernelBundle fromManifest(const nlohmann::json &cuda,
                                   std::map<std::string, std::string> images,
                                   const std::string &where);
  const std::string &image(const KernelSpec &spec) const;
};

/// Runs forward (or forward_train, which also returns the tape entries
/// "tape.*") and returns "y" and "final.<state>". `grads` ("grad.y") feeds
/// a forward_train that reads the output gradients (the energy form of a
/// decaying weight's backward); zero when absent.
TensorMap runForward(const KernelBundle &bundle, const TensorMap &inputs,
                     bool train, const TensorMap &grads = {});

/// Runs backward from the inputs, the forward_train results (finals and
/// tape) and the output gradients ("grad.y", optional
/// "grad.final.<state>"); returns "grad.<seq>", "grad.<param>" (summed over
/// the batch) and "grad.init.<state>". With a `backwardDeferred` kernel,
/// runs it after the backward (the weight from the inputs' "init.<state>")
/// and adds its gradients.
TensorMap runBackward(const KernelBundle &bundle, const TensorMap &inputs,
                      const TensorMap &forwardResults, const TensorMap &grads);

} // namespace fwp::cuda
