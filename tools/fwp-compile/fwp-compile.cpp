//===- fwp-compile.cpp - Compile a fast-weight layer to a .fwpk -----------===//
//
//   fwp-compile models/rdn.mlir -o rdn.fwpk [--dim d=32] [--emit=STAGE]
//
// Stages: mlir (differentiated fwp IR), llvm-mlir (LLVM dialect), llvm
// (optimised LLVM IR), ptx (a folder with one PTX file per CUDA kernel),
// manifest (JSON), obj (object file), fwpk (default). --cpu lists processors
// (default native,x86-64-v3): one CPU image each, the runtime runs the first
// the host can (llvm and obj: the first's code). An f32 layer also gets
// CUDA kernels (PTX, and a cubin when ptxas is installed) as sections next to
// the CPU code. The .fwpk container (docs/design.md) lists every section with
// its SHA-256 digest; outputs are written by fwp::writeOutputFile (Container.h).
//
//===----------------------------------------------------------------------===//

#include "fwp/InitAll.h"
#include "fwp/Target/Artifact.h"
#include "fwp/Target/Container.h"
#include "fwp/Target/Cuda.h"
#include "fwp/Tools/CommandLine.h"

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
#include "llvm/ADT/ScopeExit.h"
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

// --help shows these categories (and LLVM's generic options) only; every
// other option of LLVM and MLIR is hidden (--help-hidden lists them).
static cl::OptionCategory outputCategory("Output");
static cl::OptionCategory modelCategory("The layer");
static cl::OptionCategory targetCategory("Code generation");
static cl::OptionCategory debugCategory("Debugging");

static cl::extrahelp examples(R"(
EXAMPLES:
  fwp-compile models/rdn.mlir -o rdn.fwpk          # CPU + CUDA kernels, forward + backward
  fwp-compile models/delta_mlp.mlir --dim d=32 --dim d_ff=128 --emit=ptx -o mlp_ptx
                                                   # mlp_ptx/<kernel>.ptx, one per kernel
)");

static cl::opt<std::string> inputFile(cl::Positional,
                                      cl::desc("<layer .mlir file>"),
                                      cl::Required, cl::cat(outputCategory));
static cl::opt<std::string>
    outputFile("o",
               cl::desc("output file ('-': stdout; a folder for --emit=ptx)"),
               cl::value_desc("path"), cl::init(""), cl::cat(outputCategory));
static cl::list<std::string>
    dims("dim", cl::desc("override a named size of the model: --dim d=32"),
         cl::value_desc("name=value"), cl::cat(modelCategory));
enum class Stage { Mlir, LlvmMlir, Llvm, Ptx, Manifest, Object, Artifact };
static cl::opt<Stage> emit(
    "emit", cl::desc("stop after a stage and write its output"),
    cl::values(clEnumValN(Stage::Mlir, "mlir", "fwp IR after differentiation"),
               clEnumValN(Stage::LlvmMlir, "llvm-mlir",
                          "the LLVM dialect after the CPU lowering"),
               clEnumValN(Stage::Llvm, "llvm", "optimised LLVM IR"),
               clEnumValN(Stage::Ptx, "ptx",
                          "the CUDA kernels, one .ptx file each, in a folder"),
               clEnumValN(Stage::Manifest, "manifest", "the JSON manifest"),
               clEnumValN(Stage::Object, "obj", "the object file"),
               clEnumValN(Stage::Artifact, "fwpk", "the artifact (default)")),
    cl::init(Stage::Artifact), cl::cat(outputCategory));
static cl::opt<std::string> backward(
    "backward",
    cl::desc("how the backward recovers past fast-weight states: invert, "
             "store or checkpoint[:C] (default: invert where the writes can "
             "be undone, else checkpoint:64; docs/design.md)"),
    cl::value_desc("strategy"), cl::init(""), cl::cat(modelCategory));
static cl::opt<std::string>
    dtype("dtype", cl::desc("compute in this float type instead of the "
                            "model's (f32 or f64)"),
          cl::init(""), cl::cat(modelCategory));
static cl::opt<std::string> chunk(
    "chunk",
    cl::desc("chunkwise form of linear layers' scans (forward, training "
             "forward, backward): auto (default), off, or steps per chunk"),
    cl::value_desc("auto|off|N"), cl::init("auto"), cl::cat(targetCategory));
static cl::opt<std::string>
    cpu("cpu",
        cl::desc("processors of the CPU code, best first (one image each)"),
        cl::value_desc("name,name,..."), cl::init("native,x86-64-v3"),
        cl::cat(targetCategory));

enum class CudaMode { Auto, On, Off };
static cl::opt<CudaMode> cudaMode(
    "cuda", cl::desc("also compile CUDA kernels into the artifact"),
    cl::values(clEnumValN(CudaMode::Auto, "auto",
                          "when the layer computes in f32 (default)"),
               clEnumValN(CudaMode::On, "on", "always (an error if impossible)"),
               clEnumValN(CudaMode::Off, "off", "CPU kernels only")),
    cl::init(CudaMode::Auto), cl::cat(targetCategory));
static cl::opt<std::string>
    cudaChip("cuda-chip",
             cl::desc("GPU architecture of the CUDA kernels (sm_80, sm_90, "
                      "...)"),
             cl::init("sm_90"), cl::cat(targetCategory));
static cl::opt<int64_t> cudaBlockSize(
    "cuda-block-size",
    cl::desc("threads per block of every CUDA kernel (0: chosen per kernel)"),
    cl::init(0), cl::cat(targetCategory));

static int fail(const llvm::Twine &message) {
  llvm::errs() << "fwp-compile: error: " << message << "\n";
  return 1;
}

/// Every output goes through fwp::writeOutputFile: never through a symlink,
/// never replacing a device or FIFO, via an exclusive temporary file.
static LogicalResult writeText(StringRef path, StringRef text) {
  std::string error;
  if (failed(fwp::writeOutputFile(path, text, error))) {
    llvm::errs() << "fwp-compile: error: " << error << "\n";
    return failure();
  }
  return success();
}

/// Links the object code into a shared library in a private temporary
/// folder and returns the library's bytes.
static FailureOr<std::string> linkInPrivateFolder(StringRef layerName,
                                                  StringRef object,
                                                  std::string &error) {
  llvm::SmallString<128> folder;
  if (std::error_code ec =
          llvm::sys::fs::createUniqueDirectory("fwp-compile", folder)) {
    error = "cannot create a temporary folder: " + ec.message();
    return failure();
  }
  // Destroyed last: the folder goes after the files in it.
  llvm::scope_exit removeFolder([&] { llvm::sys::fs::remove(folder); });
  llvm::SmallString<128> objectPath(folder), libraryPath(folder);
  llvm::sys::path::append(objectPath, "layer.o");
  llvm::sys::path::append(libraryPath, "layer.so");
  llvm::FileRemover removeObject(objectPath), removeLibrary(libraryPath);
  {
    std::error_code ec;
    llvm::raw_fd_ostream out(objectPath, ec, llvm::sys::fs::OF_None);
    if (ec) {
      error = "cannot write a temporary object file: " + ec.message();
      return failure();
    }
    out << object;
  }
  if (failed(fwp::linkSharedLibrary(objectPath, libraryPath, error)))
    return failure();
  auto library = llvm::MemoryBuffer::getFile(libraryPath);
  if (!library) {
    error = "cannot read the linked library: " + library.getError().message();
    return failure();
  }
  return (*library)->getBuffer().str();
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  fwp::registerAllPasses();
  fwp::moveOptionsTo(debugCategory,
                     {"mlir-print-ir-after-all", "mlir-print-ir-before-all",
                      "mlir-print-ir-after-failure"});
  fwp::hideOptionsOutside(
      {&outputCategory, &modelCategory, &targetCategory, &debugCategory});
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
  // The targets' descriptions go into the manifest; an unknown or empty
  // --cpu name is reported before any work.
  FailureOr<std::vector<fwp::CpuTarget>> targets =
      fwp::describeCpuTargets(cpu, error);
  if (failed(targets))
    return fail(error);
  if (cudaMode != CudaMode::Off && failed(::fwp::checkCudaChip(cudaChip, error)))
    return fail(error);
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

  int64_t chunkLength = -1;
  if (chunk == "off")
    chunkLength = 0;
  else if (chunk != "auto" &&
           (StringRef(chunk).getAsInteger(10, chunkLength) || chunkLength < 1 ||
            chunkLength > 1024))
    return fail("--chunk=" + chunk +
                ": expected auto, off or a chunk length from 1 to 1024");

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
    static const char *extensions[] = {".mlir", ".mlir", ".ll",  "_ptx",
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
    // On a terminal, one line redrawn in place while the kernels compile
    // (ptxas tunes each one: seconds per kernel).
    bool shown = false;
    if (llvm::errs().is_displayed())
      options.progress = [&](StringRef line) {
        llvm::errs() << "\r\033[2Kfwp-compile: " << line;
        llvm::errs().flush();
        shown = true;
      };
    FailureOr<std::vector<::fwp::CudaKernel>> kernels =
        ::fwp::compileScansForCuda(*module, options);
    if (shown)
      llvm::errs() << "\r\033[2K";
    if (failed(kernels))
      return fail("cannot compile CUDA kernels for '" + layerName +
                  "' (--cuda=off compiles the CPU kernels only)");
    cudaKernels = std::move(*kernels);
    (*manifest->getObject("kernels"))["cuda"] =
        ::fwp::cudaManifestKernels(cudaKernels);
  } else if (emit == Stage::Ptx) {
    return fail("--emit=ptx needs CUDA kernels (not --cuda=off)");
  }
  if (emit == Stage::Ptx && output == "-") {
    // For reading only: several PTX modules in one text are no valid PTX.
    std::string text;
    for (const ::fwp::CudaKernel &kernel : cudaKernels)
      text += "// ---- " + kernel.role + ": " + kernel.kernel + " (" +
              kernel.chip + ", block " + std::to_string(kernel.blockSize) +
              ") ----\n" + kernel.ptx;
    return failed(writeText(output, text)) ? 1 : 0;
  }
  if (emit == Stage::Ptx) {
    // One PTX module per kernel, each a valid input of ptxas.
    if (llvm::sys::fs::is_regular_file(output))
      return fail("--emit=ptx writes one file per kernel into a folder, and '" +
                  output + "' is a file");
    return failed(::fwp::writeCudaBundle(*module, cudaKernels, output)) ? 1
                                                                       : 0;
  }
  // The PTX and cubins become sections of the container; the manifest the
  // CPU code carries lists them with their digests (all but its own).
  std::vector<::fwp::ContainerSection> sections;
  for (const ::fwp::CudaKernel &kernel : cudaKernels) {
    sections.push_back({kernel.ptxSymbol(), "ptx", kernel.ptx});
    if (!kernel.cubin.empty())
      sections.push_back({kernel.cubinSymbol(), "cubin", kernel.cubin});
  }
  (*manifest)["targets"] = fwp::cpuTargetEntries(*targets);
  (*manifest)["sections"] = ::fwp::sectionEntries(sections);
  PassManager lowering(&context);
  if (failed(applyPassManagerCLOptions(lowering)))
    return 1;
  fwp::buildCPULoweringPipeline(lowering, chunkLength);
  if (failed(lowering.run(*module)))
    return 1;
  // Which form each CPU kernel took (the lowering chose it).
  fwp::recordCpuKernelForms(*manifest, *module);
  std::string manifestJson;
  {
    llvm::raw_string_ostream os(manifestJson);
    os << llvm::formatv("{0:2}", llvm::json::Value(llvm::json::Object(*manifest)));
  }
  if (emit == Stage::Manifest)
    return failed(writeText(output, manifestJson + "\n")) ? 1 : 0;
  if (emit == Stage::LlvmMlir) {
    std::string text;
    llvm::raw_string_ostream os(text);
    module->print(os);
    return failed(writeText(output, text)) ? 1 : 0;
  }

  // One image per processor: the same LLVM-dialect module translated,
  // optimised and compiled for each (--emit=llvm and obj: the first only).
  // Every image carries the same manifest (the container's less the CPU
  // sections' entries, which cannot list their own digests).
  for (const fwp::CpuTarget &target : *targets) {
    llvm::LLVMContext llvmContext;
    FailureOr<std::unique_ptr<llvm::Module>> llvmModule =
        fwp::translateToOptimizedLLVM(*module, llvmContext, manifestJson,
                                      target.request);
    if (failed(llvmModule))
      return 1;
    if (emit == Stage::Llvm) {
      std::string text;
      llvm::raw_string_ostream os(text);
      (*llvmModule)->print(os, nullptr);
      return failed(writeText(output, text)) ? 1 : 0;
    }

    llvm::SmallString<0> object;
    if (failed(fwp::emitObjectFile(**llvmModule, target.request, object, error)))
      return fail(error);
    if (emit == Stage::Object)
      return failed(writeText(output, object)) ? 1 : 0;

    FailureOr<std::string> library =
        linkInPrivateFolder(layerName, object, error);
    if (failed(library))
      return fail(error);
    sections.push_back({target.section, "elf", std::move(*library)});
  }
  return failed(writeText(output, ::fwp::buildContainer(std::move(*manifest),
                                                        sections)))
             ? 1
             : 0;
}
