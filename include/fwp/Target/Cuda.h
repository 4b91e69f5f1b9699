//===- Cuda.h - Compiling fwp scans to CUDA kernels -------------*- C++ -*-===//
//
// The GPU half of fwp-compile: every fwp.scan of a module becomes one fused
// kernel (convert-fwp-to-gpu), compiled through MLIR's own GPU path to PTX
// (and to a cubin when ptxas is installed). The result carries what the
// manifest's `kernels.cuda.<role>` entries need; docs/gpu.md describes the
// kernel ABI.
//
//===----------------------------------------------------------------------===//
#ifndef FWP_TARGET_CUDA_H
#define FWP_TARGET_CUDA_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/JSON.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace fwp {

struct CudaOptions {
  /// The PTX target (sm_80 code also runs on sm_90 through the driver's JIT).
  std::string chip = "sm_90";
  /// NVPTX features: the PTX ISA version (+ptx80 = CUDA 12.0 drivers).
  std::string features = "+ptx80";
  int optLevel = 3;
  /// Threads per block (power of two, 32..1024); 0 chooses per scan.
  int64_t blockSize = 0;
  /// Also assemble a cubin for `chip` when ptxas is found.
  bool emitCubin = true;
  /// With blockSize 0 and ptxas found: also try half and twice the
  /// lowering's block size when ptxas spills registers, and keep the one
  /// that spills least.
  bool tuneBlockSize = true;
  /// ptxas to use; empty: PATH, then /usr/local/cuda/bin.
  std::string ptxasPath;
  /// Called before each kernel is compiled (and each block size ptxas
  /// tries), with a line such as "CUDA kernel 2/3: rdn_train, block 256";
  /// fwp-compile shows it while it works.
  std::function<void(llvm::StringRef)> progress;
};

/// One compiled kernel: a scan's ABI plus its PTX.
struct CudaKernel {
  std::string scan;   ///< the fwp.scan symbol, e.g. "delta_net_grad"
  std::string role;   ///< "forward", "forward_train" or "backward"
  std::string kernel; ///< the PTX entry, e.g. "delta_net_grad_kernel"
  std::string chip;   ///< the sm_XX the PTX (and cubin) target
  std::string dtype;  ///< "f32" or "f64"
  std::string ptx;    ///< NUL-free PTX text
  std::string cubin;  ///< ELF image for `chip`, empty without ptxas
  int64_t blockSize = 0;
  int64_t sharedBytes = 0; ///< dynamic shared memory per block
  /// ptxas's report (0 when ptxas was not run): registers per thread and
  /// bytes of spill stores + stack frame.
  int64_t registers = 0, spillBytes = 0;
  /// [{"role", "name", "shape"}] in argument order; shapes use "B", "H" and
  /// -1 for T. Three i64 arguments B, H, T follow the buffers.
  llvm::json::Array args;

  /// The symbol fwp-compile gives the PTX text: fwp_ptx_<kernel>.
  std::string ptxSymbol() const { return "fwp_ptx_" + kernel; }
  /// The symbol of the cubin image: fwp_cubin_<kernel>.
  std::string cubinSymbol() const { return "fwp_cubin_" + kernel; }

  /// The manifest entry `kernels.cuda.<role>`:
  /// {"kernel", "scan", "dtype", "ptx_symbol", ["cubin_symbol"], "chip",
  ///  "block": [NT, 1, 1], "grid": ["B*H", 1, 1], "shared_bytes",
  ///  "args": [...], "scalar_args": ["B", "H", "T"]}.
  llvm::json::Object manifestEntry() const;
};

/// Dialects, interfaces and translations the CUDA path needs (gpu, nvvm,
/// llvm, the NVVM target attribute, GPU-to-LLVM-IR translations). The
/// context of a module passed to compileScansForCuda must have them;
/// compileScansForCuda appends them itself.
void registerCudaTargetDialects(mlir::DialectRegistry &registry);

/// Compiles every fwp.scan of `module` (left unchanged) to one kernel. Run
/// it after the front end (fwp-differentiate, fwp-fuse: see
/// buildFrontEndPipeline), as for the CPU.
/// Emits a diagnostic and fails on an op without a GPU lowering, a
/// configuration no GPU can run, PTX that would need libdevice, or a ptxas
/// error.
mlir::FailureOr<std::vector<CudaKernel>>
compileScansForCuda(mlir::ModuleOp module, const CudaOptions &options);

/// The manifest's `kernels.cuda` object: {"forward": ..., "forward_train":
/// ..., "backward": ...} from the kernels' roles.
llvm::json::Object cudaManifestKernels(const std::vector<CudaKernel> &kernels);

/// Fails with `error` unless `chip` is a GPU architecture that LLVM's NVPTX
/// back end knows (sm_80, sm_90a, ...).
mlir::LogicalResult checkCudaChip(llvm::StringRef chip, std::string &error);

/// The ptxas to run, or "" when there is none.
std::string findPtxas(const CudaOptions &options);

/// Writes a kernel bundle to `dir`: kernels.json ({"layer", "dims",
/// "cuda": cudaManifestKernels}) and <kernel>.ptx (and <kernel>.cubin) per
/// kernel; the runtime's tests and benchmark read it (fwp::cuda::
/// KernelBundle). Emits a diagnostic on `module` and fails on I/O errors.
mlir::LogicalResult writeCudaBundle(mlir::ModuleOp module,
                                    const std::vector<CudaKernel> &kernels,
                                    llvm::StringRef dir);

} // namespace fwp

#endif // FWP_TARGET_CUDA_H
