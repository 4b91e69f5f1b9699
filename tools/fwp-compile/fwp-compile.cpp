//===- fwp-compile.cpp - Compile a fast-weight layer to a .fwpk -----------===//
//
//   fwp-compile models/rdn.mlir -o rdn.fwpk [--dim d=32] [--emit=STAGE]
//
// Stages: mlir (differentiated fwp IR), llvm-mlir (LLVM dialect), llvm
// (optimised LLVM IR), ptx (the GPU kernels), manifest (JSON), obj (object
// file), fwpk (default). An f32 layer also gets CUDA kernels (PTX, and a
// cubin when ptxas is installed) embedded next to the CPU code.
//
//===----------------------------------------------------------------------===//

#include "fwp/InitAll.h"
#include "fwp/Target/Artifact.h"
#include "fwp/Target/Cuda.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
namespace cl = llvm::cl;

static cl::opt<std::string> inputFile(cl::Positional,
                                      cl::desc("<layer .mlir file>"),
                                      cl::Required);
static cl::opt<std::string> outputFile("o", cl::desc("output file"),
                                       cl::value_desc("path"), cl::init(""));
static cl::list<std::string>
    dims("dim", cl::desc("override a named size of the model: --dim d=32"),
         cl::value_desc("name=value"));
enum class Stage { Mlir, LlvmMlir, Llvm, Ptx, Manifest, Object, Artifact };
static cl::opt<Stage> emit(
    "emit", cl::desc("stop after a stage and write its output"),
    cl::values(clEnumValN(Stage::Mlir, "mlir", "fwp IR after differentiation"),
               clEnumValN(Stage::LlvmMlir, "llvm-mlir",
                          "the LLVM dialect after the CPU lowering"),
               clEnumValN(Stage::Llvm, "llvm", "optimised LLVM IR"),
               clEnumValN(Stage::Ptx, "ptx", "the CUDA kernels' PTX"),
               clEnumValN(Stage::Manifest, "manifest", "the JSON manifest"),
               clEnumValN(Stage::Object, "obj", "the object file"),
               clEnumValN(Stage::Artifact, "fwpk", "the artifact (default)")),
    cl::init(Stage::Artifact));
static cl::opt<std::string> backward(
    "backward",
    cl::desc("how the backward recovers past fast-weight states: invert, "
             "store or checkpoint[:C] (default: invert where the writes can "
             "be undone, else checkpoint:64; docs/design.md)"),
    cl::value_desc("strategy"), cl::init(""));
static cl::opt<std::string>
    dtype("dtype", cl::desc("compute in this float type instead of the "
                            "model's (f32 or f64)"),
          cl::init(""));
static cl::opt<std::string>
    cpu("cpu", cl::desc("x86-64 processor to generate code for (a name such "
                        "as x86-64-v3, or 'native')"),
        cl::init("x86-64-v3"));

enum class CudaMode { Auto, On, Off };
static cl::opt<CudaMode> cudaMode(
    "cuda", cl::desc("also compile CUDA kernels into the artifact"),
    cl::values(clEnumValN(CudaMode::Auto, "auto",
                          "when the layer computes in f32 (default)"),
               clEnumValN(CudaMode::On, "on", "always (an error if impossible)"),
               clEnumValN(CudaMode::Off, "off", "CPU kernels only")),
    cl::init(CudaMode::Auto));
static cl::opt<std::string>
    cudaChip("cuda-chip",
             cl::desc("GPU architecture of the CUDA kernels (sm_80, sm_90, "
                      "...); PTX for sm_XX runs on that and newer GPUs"),
             cl::init("sm_90"));
static cl::opt<int64_t> cudaBlockSize(
    "cuda-block-size",
    cl::desc("threads per block of every CUDA kernel (0: chosen per kernel)"),
    cl::init(0));

static int fail(const llvm::Twine &message) {
  llvm::errs() << "fwp-compile: error: " << message << "\n";
  return 1;
}

static LogicalResult writeText(StringRef path, StringRef text) {
  std::string error;
  auto out = openOutputFile(path, &error);
  if (!out) {
    llvm::errs() << "fwp-compile: error: " << error << "\n";
    return failure();
  }
  out->os() << text;
  out->keep();
  return success();
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  fwp::registerAllPasses();
  cl::ParseCommandLineOptions(argc, argv,
                              "fwp-compile: compile a fast-weight layer (fwp "
                              "dialect) into a .fwpk artifact\n");

  DialectRegistry registry;
  fwp::registerAllDialects(registry);
  ::fwp::registerCudaTargetDialects(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();

  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> input =
      openInputFile(inputFile, &error);
  if (!input)
    return fail(error);
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(input), llvm::SMLoc());
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);

  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1;

  // fwp-differentiate checks the strategy; only its characters are checked here.
  if (llvm::any_of(backward, [](char c) { return !llvm::isAlnum(c) && c != ':'; }))
    return fail("--backward=" + backward +
                ": expected invert, store, checkpoint or checkpoint:C");

  PassManager frontEnd(&context);
  if (failed(applyPassManagerCLOptions(frontEnd)))
    return 1;
  if (!dims.empty() || !dtype.empty()) {
    std::string pipeline = "fwp-specialize-dims{";
    if (!dims.empty()) {
      pipeline += "dims=";
      for (auto [i, dim] : llvm::enumerate(dims))
        pipeline += (i ? "," : "") + dim;
    }
    if (!dtype.empty())
      pipeline += (dims.empty() ? "dtype=" : " dtype=") + dtype;
    pipeline += "}";
    if (failed(parsePassPipeline(pipeline, frontEnd, llvm::errs())))
      return 1;
  }
  fwp::buildFrontEndPipeline(frontEnd, backward);
  if (failed(frontEnd.run(*module)))
    return 1;

  std::string layerName;
  for (auto &op : module->getBody()->getOperations())
    if (auto symbol = op.getAttrOfType<StringAttr>("sym_name")) {
      layerName = symbol.getValue().str();
      break;
    }
  std::string output = outputFile;
  if (output.empty()) {
    static const char *extensions[] = {".mlir", ".mlir", ".ll",  ".ptx",
                                       ".json", ".o",    ".fwpk"};
    output = layerName + extensions[static_cast<int>(emit.getValue())];
  }

  if (emit == Stage::Mlir) {
    std::string text;
    llvm::raw_string_ostream os(text);
    module->print(os);
    return failed(writeText(output, text)) ? 1 : 0;
  }

  FailureOr<llvm::json::Object> manifest = fwp::buildManifest(*module);
  if (failed(manifest))
    return 1;

  // The GPU half works on a copy of the differentiated module; it needs f32
  // math (f64 would call libdevice), so `auto` leaves f64 layers CPU-only.
  std::vector<::fwp::CudaKernel> cudaKernels;
  std::string layerDtype;
  if (std::optional<StringRef> value = manifest->getString("dtype"))
    layerDtype = value->str();
  bool wantCuda = cudaMode == CudaMode::On ||
                  (cudaMode == CudaMode::Auto && layerDtype == "f32") ||
                  emit == Stage::Ptx;
  if (wantCuda && cudaMode != CudaMode::Off) {
    ::fwp::CudaOptions options;
    options.chip = cudaChip;
    options.blockSize = cudaBlockSize;
    FailureOr<std::vector<::fwp::CudaKernel>> kernels =
        ::fwp::compileScansForCuda(*module, options);
    if (failed(kernels))
      return fail("cannot compile CUDA kernels for '" + layerName +
                  "' (--cuda=off compiles the CPU kernels only)");
    cudaKernels = std::move(*kernels);
    (*manifest->getObject("kernels"))["cuda"] =
        ::fwp::cudaManifestKernels(cudaKernels);
  } else if (emit == Stage::Ptx) {
    return fail("--emit=ptx needs CUDA kernels (not --cuda=off)");
  }
  if (emit == Stage::Ptx) {
    std::string text;
    for (const ::fwp::CudaKernel &kernel : cudaKernels)
      text += "// ---- " + kernel.role + ": " + kernel.kernel + " (" +
              kernel.chip + ", block " + std::to_string(kernel.blockSize) +
              ") ----\n" + kernel.ptx;
    return failed(writeText(output, text)) ? 1 : 0;
  }
  std::vector<::fwp::EmbeddedData> embedded;
  for (const ::fwp::CudaKernel &kernel : cudaKernels) {
    embedded.push_back({kernel.ptxSymbol(), kernel.ptx});
    if (!kernel.cubin.empty())
      embedded.push_back({kernel.cubinSymbol(), kernel.cubin});
  }
  std::string manifestJson;
  {
    llvm::raw_string_ostream os(manifestJson);
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(*manifest)));
  }
  if (emit == Stage::Manifest)
    return failed(writeText(output, manifestJson + "\n")) ? 1 : 0;

  PassManager lowering(&context);
  if (failed(applyPassManagerCLOptions(lowering)))
    return 1;
  fwp::buildCPULoweringPipeline(lowering);
  if (failed(lowering.run(*module)))
    return 1;
  if (emit == Stage::LlvmMlir) {
    std::string text;
    llvm::raw_string_ostream os(text);
    module->print(os);
    return failed(writeText(output, text)) ? 1 : 0;
  }

  llvm::LLVMContext llvmContext;
  FailureOr<std::unique_ptr<llvm::Module>> llvmModule =
      fwp::translateToOptimizedLLVM(*module, llvmContext, manifestJson, cpu,
                                    embedded);
  if (failed(llvmModule))
    return 1;
  if (emit == Stage::Llvm) {
    std::string text;
    llvm::raw_string_ostream os(text);
    (*llvmModule)->print(os, nullptr);
    return failed(writeText(output, text)) ? 1 : 0;
  }

  if (emit == Stage::Object)
    return failed(fwp::emitObjectFile(**llvmModule, cpu, output, error))
               ? fail(error)
               : 0;

  llvm::SmallString<128> objectPath;
  if (std::error_code ec = llvm::sys::fs::createTemporaryFile(
          "fwp-" + layerName, "o", objectPath))
    return fail("cannot create a temporary object file: " + ec.message());
  llvm::FileRemover removeObject(objectPath);
  if (failed(fwp::emitObjectFile(**llvmModule, cpu, objectPath, error)) ||
      failed(fwp::linkSharedLibrary(objectPath, output, error)))
    return fail(error);
  return 0;
}
