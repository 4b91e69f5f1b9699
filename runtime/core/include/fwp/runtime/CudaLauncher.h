//===- CudaLauncher.h - Running fwp's compiled GPU kernels ------*- C++ -*-===//
//
// Launches the kernels that the compiler's CUDA target writes into the
// manifest (`kernels.cuda.<role>`, docs/gpu.md): one thread block per
// (batch, head), the full [B, H, ...] tensors as arguments, then B, H, T.
//
// The CUDA driver is loaded at run time (dlopen "libcuda.so.1"): the runtime
// builds and runs on machines without a GPU, where launches fail with a
// clear fwp::Error. Modules are loaded once per (context, image) and cached;
// launches go to LibTorch's current CUDA stream (FWP_ENABLE_CUDA builds) or
// to the default stream. Every launch is checked against the device's
// limits before it is made.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/Layer.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace fwp::cuda {

/// Symbolic sizes in an argument shape.
inline constexpr int64_t kSteps = -1;  ///< T (the manifest's -1)
inline constexpr int64_t kBatch = -2;  ///< B (the manifest's "B")
inline constexpr int64_t kHeads = -3;  ///< H (the manifest's "H")

/// The roles a kernel argument may have, in the CPU and the CUDA manifest
/// alike (the compiler's kernelArgRole names them).
const std::set<std::string> &knownArgRoles();

/// One buffer argument of a kernel.
struct ArgSpec {
  std::string role; ///< one of knownArgRoles()
  std::string name;
  std::vector<int64_t> shape; ///< sizes, kBatch, kHeads, kSteps
};

/// A manifest entry `kernels.cuda.<role>`, parsed and checked.
struct KernelSpec {
  std::string kernel; ///< PTX entry name
  std::string scan;
  torch::ScalarType dtype = torch::kFloat;
  int64_t blockSize = 0;
  int64_t sharedBytes = 0;
  std::vector<ArgSpec> args;

  /// Parses an entry; throws fwp::Error naming `where` and the field at
  /// fault (e.g. "model.fwpk: kernels.cuda.backward.block").
  static KernelSpec fromJson(const nlohmann::json &entry,
                             const std::string &where);
};

/// What a device allows; filled from the driver, or by hand in tests.
struct DeviceLimits {
  std::string device = "device"; ///< for messages, e.g. "cuda:0 (sm_90)"
  int64_t maxThreadsPerBlock = 1024;
  /// Dynamic shared memory a block may opt in to.
  int64_t maxSharedBytesPerBlock = 48 * 1024;
  int64_t maxGridX = 2147483647;
  /// The kernel's own limit (registers); 0 when not known.
  int64_t kernelMaxThreadsPerBlock = 0;
  std::string chip; ///< e.g. "sm_90"; empty when not known
};

/// Elements of argument `arg` at (B, H, T).
int64_t argElements(const ArgSpec &arg, int64_t B, int64_t H, int64_t T);

/// Throws fwp::Error, naming the kernel and the limit, when the launch of
/// `spec` at (B, H, T) cannot run on a device with `limits`.
void validateLaunch(const KernelSpec &spec, int64_t B, int64_t H, int64_t T,
                    const DeviceLimits &limits);

/// Throws fwp::Error, naming the argument, unless `args` match the spec:
/// count, CUDA tensors on one device, dtype, contiguity, element counts
/// (and leading B, H sizes). Needs no driver.
void checkArguments(const KernelSpec &spec,
                    const std::vector<torch::Tensor> &args, int64_t B,
                    int64_t H, int64_t T);

/// Whether the CUDA driver loads and reports a device (never throws); `why`
/// receives the reason when not.
bool driverAvailable(std::string *why = nullptr);

/// The limits of CUDA device `index` (throws fwp::Error without a driver).
DeviceLimits deviceLimits(int index);

/// Runs the kernel over the whole batch: `args` in the spec's order (the
/// tensors the kernel reads, and those it writes in place), `image` the PTX
/// text or cubin the manifest names. Validates the arguments and the
/// launch, loads (and caches) the module in the device's primary context,
/// and launches on the current stream. Asynchronous, like any CUDA op.
void runKernel(const KernelSpec &spec, const std::string &image,
               const std::vector<torch::Tensor> &args, int64_t B, int64_t H,
               int64_t T);

/// The same from a manifest entry.
void runKernel(const nlohmann::json &entry, const std::string &image,
               const std::vector<torch::Tensor> &args, int64_t B, int64_t H,
               int64_t T);

/// The same with the tensors keyed "<role>:<name>" (names alone are not
/// unique: a state and an output may both be called "y").
void runKernel(const nlohmann::json &entry, const std::string &image,
               const std::map<std::string, torch::Tensor> &tensorsByKey,
               int64_t B, int64_t H, int64_t T);

/// "<role>:<name>", the key of an argument in runKernel's map form.
inline std::string argKey(const ArgSpec &arg) {
  return arg.role + ":" + arg.name;
}

} // namespace fwp::cuda
