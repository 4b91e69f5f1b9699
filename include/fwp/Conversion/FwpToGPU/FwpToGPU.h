//===- FwpToGPU.h - Lowering fwp scans to fused GPU kernels -----*- C++ -*-===//
//
// Every fwp.scan becomes one kernel: a thread block per (batch, head), time
// as a loop inside the kernel, fast weights in registers, per-step vectors in
// shared memory. docs/gpu.md describes the scheme and the kernel ABI.
//
//===----------------------------------------------------------------------===//
#ifndef FWP_CONVERSION_FWPTOGPU_FWPTOGPU_H
#define FWP_CONVERSION_FWPTOGPU_FWPTOGPU_H

#include "fwp/Dialect/Fwp/IR/FwpOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <string>

namespace mlir::fwp {

#define GEN_PASS_DECL
#include "fwp/Conversion/FwpToGPU/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "fwp/Conversion/FwpToGPU/Passes.h.inc"

/// Attributes that convert-fwp-to-gpu puts on every kernel (gpu.func): the
/// ABI the runtime needs. They do not survive gpu-module-to-binary, so
/// read them (kernelInfos below) before serialising.
inline constexpr llvm::StringLiteral kGpuScanAttr = "fwp.scan";
/// "forward", "forward_train" or "backward" (the scan's fwp.role).
inline constexpr llvm::StringLiteral kGpuKernelRoleAttr = "fwp.kernel_role";
inline constexpr llvm::StringLiteral kGpuBlockSizeAttr = "fwp.block_size";
/// "f32" or "f64": the element type of every buffer.
inline constexpr llvm::StringLiteral kGpuDtypeAttr = "fwp.dtype";
/// Bytes of dynamic shared memory a launch must request.
inline constexpr llvm::StringLiteral kGpuSharedBytesAttr = "fwp.shared_bytes";
/// The buffer arguments in order: [{role, name, shape}], shape entries being
/// "B", "H", -1 (= T) or sizes. B, H, T follow them as i64 arguments.
inline constexpr llvm::StringLiteral kGpuArgsAttr = "fwp.args";

/// The inline PTX that fwp-gpu-expand-math uses for f32 sqrt, floor, abs.
inline constexpr llvm::StringLiteral kPtxSqrt = "sqrt.rn.f32 $0, $1;";
inline constexpr llvm::StringLiteral kPtxFloor = "cvt.rmi.f32.f32 $0, $1;";
inline constexpr llvm::StringLiteral kPtxAbs = "abs.f32 $0, $1;";

struct GpuLoweringOptions {
  /// Threads per block: a power of two in [32, 1024], or 0 to choose from
  /// the size of the fast-weight state.
  int64_t blockSize = 0;
};

/// Lowers every fwp.scan of `module` to `gpu.module @<scan>_gpu` holding
/// `gpu.func @<scan>_kernel`, and erases the scans. Emits a diagnostic and
/// fails on an op without a GPU lowering or a configuration no GPU can run.
LogicalResult lowerScansToGpu(ModuleOp module,
                              const GpuLoweringOptions &options);

/// The kernel name of scan `scanName`.
inline std::string gpuKernelName(llvm::StringRef scanName) {
  return (scanName + "_kernel").str();
}
/// The gpu.module (and, after serialisation, gpu.binary) name of a scan.
inline std::string gpuModuleName(llvm::StringRef scanName) {
  return (scanName + "_gpu").str();
}

/// Options of the gpu -> NVVM -> PTX half of the pipeline.
struct PtxOptions {
  std::string chip = "sm_90";
  /// PTX ISA version and other NVPTX features; +ptx80 (CUDA 12.0) suits
  /// sm_80 and sm_90.
  std::string features = "+ptx80";
  int optLevel = 3;
};

/// gpu.module -> NVVM -> gpu.binary holding PTX (`format=isa`), through
/// MLIR's own `gpu-lower-to-nvvm-pipeline`.
void buildGpuToPtxPipeline(OpPassManager &pm, const PtxOptions &options);

/// Registers the passes of this folder and the pipeline `fwp-gpu-to-ptx`
/// (convert-fwp-to-gpu, then buildGpuToPtxPipeline; options block-size,
/// chip, features, opt-level).
void registerFwpGpuPasses();

} // namespace mlir::fwp

#endif // FWP_CONVERSION_FWPTOGPU_FWPTOGPU_H
