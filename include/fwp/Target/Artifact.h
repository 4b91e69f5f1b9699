//===- Artifact.h - Building .fwpk artifacts --------------------*- C++ -*-===//
//
// The steps of fwp-compile: front end (differentiation), manifest, CPU
// lowering to LLVM, code generation and linking into a shared library (the
// CPU section of the .fwpk container, Container.h).
// docs/design.md describes the artifact and its manifest.
//
//===----------------------------------------------------------------------===//
#ifndef FWP_TARGET_ARTIFACT_H
#define FWP_TARGET_ARTIFACT_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/JSON.h"

#include <memory>
#include <string>
#include <vector>

namespace fwp {

/// Version of the artifact format; the runtime refuses other versions.
inline constexpr int kArtifactFormatVersion = 3;

/// Decompose, canonicalise and differentiate: afterwards the module holds
/// the forward scan @L, @L_train and @L_grad. `backward`, when not empty, is
/// the backward strategy of every fast-weight state (fwp-compile --backward).
void buildFrontEndPipeline(mlir::OpPassManager &pm, llvm::StringRef backward = "");
/// fwp scans -> LLVM dialect with packed entry points fwp_<scan>. `chunk`:
/// the chunk length of the chunkwise form of linear scans (-1: chosen by the
/// fast weight's size; 0: never; convert-fwp-to-cpu's option).
void buildCPULoweringPipeline(mlir::OpPassManager &pm, int64_t chunk = -1);
/// Adds "chunk" to every CPU kernel of the manifest: the chunk length of its
/// chunkwise form, 0 for the recurrent one (the `fwp.chunk` attribute that
/// convert-fwp-to-cpu leaves on the lowered functions of `lowered`).
void recordCpuKernelForms(llvm::json::Object &manifest, mlir::ModuleOp lowered);
/// Registers `fwp-pipeline` (options: target=cpu) with the pass registry.
void registerFwpPipelines();

/// The manifest of a differentiated module (one layer); emits a diagnostic
/// and fails when the module does not hold exactly one layer.
mlir::FailureOr<llvm::json::Object> buildManifest(mlir::ModuleOp module);

/// A constant byte string the artifact exports as a global (`symbol`), with
/// a NUL appended: the GPU kernels' PTX and cubin images.
struct EmbeddedData {
  std::string symbol;
  std::string bytes;
};

/// Translates an LLVM-dialect module to LLVM IR for x86-64 (`cpu` names the
/// processor, e.g. "x86-64-v3" or "native"), adds the `fwp_manifest`
/// global and the `embedded` data, and optimises at -O3.
mlir::FailureOr<std::unique_ptr<llvm::Module>>
translateToOptimizedLLVM(mlir::ModuleOp module, llvm::LLVMContext &context,
                         llvm::StringRef manifestJson, llvm::StringRef cpu,
                         llvm::ArrayRef<EmbeddedData> embedded = {});

/// One CPU image of an artifact: the processor as asked for (`request`,
/// e.g. "native"), as LLVM resolved it (`cpu`, e.g. "sapphirerapids"), its
/// features (LLVM's names) and the image's section ("cpu.<cpu>").
struct CpuTarget {
  std::string request;
  std::string cpu;
  std::vector<std::string> features;
  std::string section;
};

/// The targets of `--cpu`'s comma-separated list, in its order, each
/// processor once (`native` resolves to this machine's, which may repeat a
/// name of the list); fails with `error` for an empty or unknown name.
mlir::FailureOr<std::vector<CpuTarget>> describeCpuTargets(llvm::StringRef list,
                                                           std::string &error);

/// The manifest's "targets": triple, cpu, features and section of each.
llvm::json::Array cpuTargetEntries(llvm::ArrayRef<CpuTarget> targets);

/// Generates the object code of `module` into `object`.
mlir::LogicalResult emitObjectFile(llvm::Module &module, llvm::StringRef cpu,
                                   llvm::SmallVectorImpl<char> &object,
                                   std::string &error);

/// Links `objectPath` into the shared library `outputPath` (a path in a
/// private temporary folder: the caller puts the library into the .fwpk
/// container) with the system C compiler driver, without start files, so
/// that the library has no initializers.
mlir::LogicalResult linkSharedLibrary(llvm::StringRef objectPath,
                                      llvm::StringRef outputPath,
                                      std::string &error);

} // namespace fwp

#endif // FWP_TARGET_ARTIFACT_H
