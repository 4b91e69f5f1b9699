//===- Cuda.cpp - Compiling fwp scans to CUDA kernels ---------------------===//

#include "fwp/Target/Cuda.h"

#include "fwp/Conversion/FwpToGPU/FwpToGPU.h"
#include "fwp/Dialect/Fwp/IR/FwpDialect.h"
#include "fwp/Dialect/Fwp/IR/FwpOps.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;

namespace fwp {

llvm::json::Object CudaKernel::manifestEntry() const {
  llvm::json::Object entry{
      {"kernel", kernel},
      {"scan", scan},
      {"ptx_symbol", ptxSymbol()},
      {"chip", chip},
      {"block", llvm::json::Array{blockSize, 1, 1}},
      {"grid", llvm::json::Array{"B*H", 1, 1}},
      {"shared_bytes", sharedBytes},
      {"args", llvm::json::Array(args)},
      {"scalar_args", llvm::json::Array{"B", "H", "T"}}};
  if (!cubin.empty())
    entry["cubin_symbol"] = cubinSymbol();
  return entry;
}

void registerCudaTargetDialects(DialectRegistry &registry) {
  registry.insert<mlir::fwp::FwpDialect>();
  // The NVVM pipeline goes through most upstream dialects and the
  // convert-to-LLVM interfaces that their extensions register.
  registerAllDialects(registry);
  registerAllExtensions(registry);
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  registerAllGPUToLLVMIRTranslations(registry);
}

std::string findPtxas(const CudaOptions &options) {
  if (!options.ptxasPath.empty())
    return llvm::sys::fs::can_execute(options.ptxasPath) ? options.ptxasPath
                                                         : "";
  if (auto found = llvm::sys::findProgramByName("ptxas"))
    return *found;
  const char *fallback = "/usr/local/cuda/bin/ptxas";
  return llvm::sys::fs::can_execute(fallback) ? fallback : "";
}

/// Assembles `ptx` for `chip` with ptxas; the cubin bytes, or an error text.
static FailureOr<std::string> assemble(StringRef ptxas, StringRef ptx,
                                       StringRef chip, std::string &error) {
  SmallString<128> ptxPath, cubinPath, logPath;
  if (llvm::sys::fs::createTemporaryFile("fwp", "ptx", ptxPath) ||
      llvm::sys::fs::createTemporaryFile("fwp", "cubin", cubinPath) ||
      llvm::sys::fs::createTemporaryFile("fwp", "log", logPath)) {
    error = "cannot create temporary files for ptxas";
    return failure();
  }
  auto cleanup = llvm::make_scope_exit([&] {
    llvm::sys::fs::remove(ptxPath);
    llvm::sys::fs::remove(cubinPath);
    llvm::sys::fs::remove(logPath);
  });
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(ptxPath, ec);
    if (ec) {
      error = "cannot write " + ptxPath.str().str();
      return failure();
    }
    os << ptx;
  }
  std::string arch = ("-arch=" + chip).str();
  SmallVector<StringRef> argv{ptxas, arch, "-O3", ptxPath, "-o", cubinPath};
  std::optional<StringRef> redirects[] = {std::nullopt, StringRef(logPath),
                                          StringRef(logPath)};
  int rc = llvm::sys::ExecuteAndWait(ptxas, argv, std::nullopt, redirects);
  if (rc != 0) {
    auto log = llvm::MemoryBuffer::getFile(logPath);
    error = ("ptxas failed (exit " + Twine(rc) + "): " +
             (log ? (*log)->getBuffer() : StringRef("no output")))
                .str();
    return failure();
  }
  auto cubin = llvm::MemoryBuffer::getFile(cubinPath, /*IsText=*/false);
  if (!cubin) {
    error = "ptxas wrote no cubin";
    return failure();
  }
  return (*cubin)->getBuffer().str();
}

FailureOr<std::vector<CudaKernel>>
compileScansForCuda(ModuleOp module, const CudaOptions &options) {
  MLIRContext *context = module.getContext();
  DialectRegistry registry;
  registerCudaTargetDialects(registry);
  context->appendDialectRegistry(registry);

  // Work on a module of copies of the scans only: the caller's module may
  // already hold other lowerings.
  OwningOpRef<ModuleOp> work = ModuleOp::create(module.getLoc());
  OpBuilder builder(context);
  builder.setInsertionPointToEnd(work->getBody());
  for (auto scan : module.getOps<mlir::fwp::ScanOp>())
    builder.clone(*scan.getOperation());
  if (work->getBody()->empty()) {
    module.emitError("no fwp.scan to compile for CUDA");
    return failure();
  }

  PassManager lower(context);
  lower.addPass(mlir::fwp::createConvertFwpToGPU(
      mlir::fwp::ConvertFwpToGPUOptions{options.blockSize}));
  if (failed(lower.run(*work)))
    return failure();

  std::vector<CudaKernel> kernels;
  DenseMap<StringRef, size_t> byModule;
  for (auto gpuModule : work->getOps<gpu::GPUModuleOp>()) {
    for (auto func : gpuModule.getOps<gpu::GPUFuncOp>()) {
      CudaKernel k;
      k.scan = cast<StringAttr>(func->getAttr(mlir::fwp::kGpuScanAttr)).str();
      k.role =
          cast<StringAttr>(func->getAttr(mlir::fwp::kGpuKernelRoleAttr)).str();
      k.kernel = func.getName().str();
      k.chip = options.chip;
      k.blockSize =
          cast<IntegerAttr>(func->getAttr(mlir::fwp::kGpuBlockSizeAttr))
              .getInt();
      k.sharedBytes =
          cast<IntegerAttr>(func->getAttr(mlir::fwp::kGpuSharedBytesAttr))
              .getInt();
      for (Attribute attr :
           cast<ArrayAttr>(func->getAttr(mlir::fwp::kGpuArgsAttr))) {
        auto arg = cast<DictionaryAttr>(attr);
        llvm::json::Array shape;
        for (Attribute dim : cast<ArrayAttr>(arg.get("shape"))) {
          if (auto name = dyn_cast<StringAttr>(dim))
            shape.push_back(name.str());
          else
            shape.push_back(cast<IntegerAttr>(dim).getInt());
        }
        k.args.push_back(llvm::json::Object{
            {"role", cast<StringAttr>(arg.get("role")).str()},
            {"name", cast<StringAttr>(arg.get("name")).str()},
            {"shape", std::move(shape)}});
      }
      byModule[gpuModule.getName()] = kernels.size();
      kernels.push_back(std::move(k));
    }
  }

  PassManager serialize(context);
  mlir::fwp::PtxOptions ptxOptions;
  ptxOptions.chip = options.chip;
  ptxOptions.features = options.features;
  ptxOptions.optLevel = options.optLevel;
  mlir::fwp::buildGpuToPtxPipeline(serialize, ptxOptions);
  if (failed(serialize.run(*work)))
    return failure();

  for (auto binary : work->getOps<gpu::BinaryOp>()) {
    auto it = byModule.find(binary.getName());
    if (it == byModule.end() || binary.getObjects().empty())
      continue;
    CudaKernel &k = kernels[it->second];
    k.ptx = cast<gpu::ObjectAttr>(binary.getObjects()[0]).getObject().str();
  }
  std::string ptxas = options.emitCubin ? findPtxas(options) : "";
  for (CudaKernel &k : kernels) {
    if (k.ptx.empty()) {
      module.emitError() << "no PTX was produced for kernel " << k.kernel;
      return failure();
    }
    // A call left to libdevice (f64 math without libdevice at compile
    // time) would fail to load on the GPU machine: refuse it here.
    size_t external = k.ptx.find(".extern .func");
    if (external != std::string::npos) {
      size_t end = k.ptx.find('(', external);
      module.emitError()
          << "kernel " << k.kernel << " calls an external function ("
          << StringRef(k.ptx).slice(external, end).trim()
          << "); f64 math needs CUDA's libdevice where fwp-compile runs";
      return failure();
    }
    if (ptxas.empty())
      continue;
    std::string error;
    FailureOr<std::string> cubin = assemble(ptxas, k.ptx, k.chip, error);
    if (failed(cubin)) {
      module.emitError() << "kernel " << k.kernel << ": " << error;
      return failure();
    }
    k.cubin = std::move(*cubin);
  }
  return kernels;
}

llvm::json::Object cudaManifestKernels(const std::vector<CudaKernel> &kernels) {
  llvm::json::Object cuda;
  for (const CudaKernel &k : kernels)
    cuda[k.role] = k.manifestEntry();
  return cuda;
}

//===----------------------------------------------------------------------===//
// test-fwp-cuda-compile: the API above, from fwp-opt
//===----------------------------------------------------------------------===//

namespace {
struct TestCudaCompilePass
    : public PassWrapper<TestCudaCompilePass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(TestCudaCompilePass)
  TestCudaCompilePass() = default;
  TestCudaCompilePass(const TestCudaCompilePass &other) : PassWrapper(other) {}
  StringRef getArgument() const final { return "test-fwp-cuda-compile"; }
  StringRef getDescription() const final {
    return "print the kernels.cuda manifest object that compileScansForCuda "
           "builds for the module's scans (the module is left unchanged)";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registerCudaTargetDialects(registry);
  }
  void runOnOperation() override {
    CudaOptions options;
    options.chip = chip;
    options.emitCubin = cubin;
    FailureOr<std::vector<CudaKernel>> kernels =
        compileScansForCuda(getOperation(), options);
    if (failed(kernels))
      return signalPassFailure();
    // One line per kernel: its role and manifest entry, then what was built.
    llvm::json::Object cuda = cudaManifestKernels(*kernels);
    for (const CudaKernel &k : *kernels) {
      llvm::outs() << k.role << ": "
                   << llvm::json::Value(llvm::json::Object(*cuda.getObject(k.role)))
                   << "\n";
      StringRef image = k.cubin;
      llvm::outs() << k.kernel << ": ptx " << k.ptx.size() << " bytes, cubin "
                   << (image.empty()                  ? "none"
                       : image.starts_with("\x7f" "ELF") ? "elf"
                                                        : "not elf")
                   << "\n";
    }
  }
  Option<std::string> chip{*this, "chip", llvm::cl::desc("sm_XX"),
                           llvm::cl::init("sm_90")};
  Option<bool> cubin{*this, "cubin", llvm::cl::desc("assemble with ptxas"),
                     llvm::cl::init(false)};
};
} // namespace

void registerCudaTestPasses() { PassRegistration<TestCudaCompilePass>(); }

} // namespace fwp
