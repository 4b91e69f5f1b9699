//===- Cuda.cpp - Compiling fwp scans to CUDA kernels ---------------------===//

#include "fwp/Target/Cuda.h"
#include "fwp/Target/Container.h"

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
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;

namespace fwp {

llvm::json::Object CudaKernel::manifestEntry() const {
  llvm::json::Object entry{
      {"kernel", kernel},
      {"scan", scan},
      {"dtype", dtype},
      {"ptx_symbol", ptxSymbol()},
      {"chip", chip},
      {"block", llvm::json::Array{blockSize, 1, 1}},
      {"grid", llvm::json::Array{"B*H", 1, 1}},
      {"shared_bytes", sharedBytes},
      {"args", llvm::json::Array(args)},
      {"scalar_args", llvm::json::Array{"B", "H", "T"}}};
  if (!cubin.empty()) {
    entry["cubin_symbol"] = cubinSymbol();
    entry["cubin_bytes"] = static_cast<int64_t>(cubin.size());
  }
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

/// What ptxas made of a kernel.
struct Assembled {
  std::string cubin;
  int64_t registers = 0;
  int64_t spillBytes = 0; ///< spill stores + stack frame
};

/// Assembles `ptx` for `chip` with ptxas -v; the cubin and its register
/// use, or an error text.
static FailureOr<Assembled> assemble(StringRef ptxas, StringRef ptx,
                                     StringRef chip, std::string &error) {
  SmallString<128> ptxPath, cubinPath, logPath;
  if (llvm::sys::fs::createTemporaryFile("fwp", "ptx", ptxPath) ||
      llvm::sys::fs::createTemporaryFile("fwp", "cubin", cubinPath) ||
      llvm::sys::fs::createTemporaryFile("fwp", "log", logPath)) {
    error = "cannot create temporary files for ptxas";
    return failure();
  }
  llvm::scope_exit cleanup([&] {
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
  SmallVector<StringRef> argv{ptxas, arch, "-O3", "-v", ptxPath, "-o", cubinPath};
  std::optional<StringRef> redirects[] = {std::nullopt, StringRef(logPath),
                                          StringRef(logPath)};
  int rc = llvm::sys::ExecuteAndWait(ptxas, argv, std::nullopt, redirects);
  auto log = llvm::MemoryBuffer::getFile(logPath);
  StringRef text = log ? (*log)->getBuffer() : StringRef();
  if (rc != 0) {
    error = ("ptxas failed (exit " + Twine(rc) + "): " +
             (text.empty() ? StringRef("no output") : text))
                .str();
    return failure();
  }
  auto cubin = llvm::MemoryBuffer::getFile(cubinPath, /*IsText=*/false);
  if (!cubin) {
    error = "ptxas wrote no cubin";
    return failure();
  }
  Assembled out;
  out.cubin = (*cubin)->getBuffer().str();
  // "Used 242 registers", "688 bytes stack frame, 1200 bytes spill stores".
  auto numberBefore = [&](StringRef marker) -> int64_t {
    size_t at = text.find(marker);
    if (at == StringRef::npos)
      return 0;
    StringRef head = text.take_front(at).rtrim();
    size_t space = head.find_last_of(" \t");
    int64_t value = 0;
    head.drop_front(space == StringRef::npos ? 0 : space + 1).getAsInteger(10, value);
    return value;
  };
  size_t used = text.find("Used ");
  if (used != StringRef::npos)
    text.drop_front(used + 5).take_until([](char c) { return c == ' '; })
        .getAsInteger(10, out.registers);
  out.spillBytes = numberBefore(" bytes spill stores") +
                   numberBefore(" bytes stack frame");
  return out;
}

namespace {
/// One scan compiled at one block size.
struct Compiled {
  CudaKernel kernel;
  Assembled assembled; ///< empty without ptxas
};
} // namespace

/// Lowers `scan` alone to one kernel at `blockSize` (0: the lowering's own
/// choice) and serialises it to PTX (and a cubin with `ptxas`).
static FailureOr<Compiled> compileScan(mlir::fwp::ScanOp scan,
                                       const CudaOptions &options,
                                       int64_t blockSize, StringRef ptxas) {
  MLIRContext *context = scan.getContext();
  OwningOpRef<ModuleOp> work = ModuleOp::create(scan.getLoc());
  OpBuilder builder(context);
  builder.setInsertionPointToEnd(work->getBody());
  builder.clone(*scan.getOperation());

  PassManager lower(context);
  lower.addPass(mlir::fwp::createConvertFwpToGPU(
      mlir::fwp::ConvertFwpToGPUOptions{blockSize}));
  if (failed(lower.run(*work)))
    return failure();

  Compiled out;
  CudaKernel &k = out.kernel;
  for (auto gpuModule : work->getOps<gpu::GPUModuleOp>()) {
    for (auto func : gpuModule.getOps<gpu::GPUFuncOp>()) {
      k.scan = cast<StringAttr>(func->getAttr(mlir::fwp::kGpuScanAttr)).str();
      k.role =
          cast<StringAttr>(func->getAttr(mlir::fwp::kGpuKernelRoleAttr)).str();
      k.kernel = func.getName().str();
      k.chip = options.chip;
      k.dtype =
          cast<StringAttr>(func->getAttr(mlir::fwp::kGpuDtypeAttr)).str();
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
  for (auto binary : work->getOps<gpu::BinaryOp>())
    if (!binary.getObjects().empty())
      k.ptx = cast<gpu::ObjectAttr>(binary.getObjects()[0]).getObject().str();
  if (k.ptx.empty()) {
    scan.emitError() << "no PTX was produced for kernel " << k.kernel;
    return failure();
  }
  // A call left to libdevice (f64 math without libdevice at compile time)
  // would fail to load on the GPU machine: refuse it here.
  size_t external = k.ptx.find(".extern .func");
  if (external != std::string::npos) {
    size_t end = k.ptx.find('(', external);
    scan.emitError() << "kernel " << k.kernel << " calls an external function ("
                     << StringRef(k.ptx).slice(external, end).trim()
                     << "); f64 math needs CUDA's libdevice where fwp-compile "
                        "runs";
    return failure();
  }
  if (ptxas.empty())
    return out;
  std::string error;
  FailureOr<Assembled> assembled = assemble(ptxas, k.ptx, k.chip, error);
  if (failed(assembled)) {
    scan.emitError() << "kernel " << k.kernel << ": " << error;
    return failure();
  }
  out.assembled = std::move(*assembled);
  return out;
}

FailureOr<std::vector<CudaKernel>>
compileScansForCuda(ModuleOp module, const CudaOptions &options) {
  MLIRContext *context = module.getContext();
  DialectRegistry registry;
  registerCudaTargetDialects(registry);
  context->appendDialectRegistry(registry);

  SmallVector<mlir::fwp::ScanOp> scans(module.getOps<mlir::fwp::ScanOp>());
  if (scans.empty()) {
    module.emitError("no fwp.scan to compile for CUDA");
    return failure();
  }
  std::string ptxas = findPtxas(options);
  bool tune = options.blockSize == 0 && options.tuneBlockSize && !ptxas.empty();
  std::vector<CudaKernel> kernels;
  auto report = [&](mlir::fwp::ScanOp scan, int64_t blockSize) {
    if (!options.progress)
      return;
    std::string line = llvm::formatv("CUDA kernel {0}/{1}: {2}",
                                     kernels.size() + 1, scans.size(),
                                     scan.getSymName());
    if (blockSize)
      line += ", block " + std::to_string(blockSize);
    options.progress(line);
  };
  for (mlir::fwp::ScanOp scan : scans) {
    report(scan, options.blockSize);
    FailureOr<Compiled> best =
        compileScan(scan, options, options.blockSize, tune || options.emitCubin
                                                          ? ptxas
                                                          : "");
    if (failed(best))
      return failure();
    if (tune) {
      // The lowering's choice, or half or twice as many threads if ptxas
      // then spills less (registers per thread shrink as blocks grow).
      int64_t chosen = best->kernel.blockSize;
      for (int64_t candidate : {chosen / 2, chosen * 2}) {
        if (candidate < 32 || candidate > 1024 ||
            best->assembled.spillBytes == 0)
          continue;
        report(scan, candidate);
        FailureOr<Compiled> other = compileScan(scan, options, candidate, ptxas);
        if (failed(other))
          return failure();
        if (other->assembled.spillBytes < best->assembled.spillBytes)
          best = std::move(other);
      }
    }
    CudaKernel kernel = std::move(best->kernel);
    if (options.emitCubin)
      kernel.cubin = std::move(best->assembled.cubin);
    kernel.registers = best->assembled.registers;
    kernel.spillBytes = best->assembled.spillBytes;
    kernels.push_back(std::move(kernel));
  }
  return kernels;
}

llvm::json::Object cudaManifestKernels(const std::vector<CudaKernel> &kernels) {
  llvm::json::Object cuda;
  for (const CudaKernel &k : kernels)
    cuda[k.role] = k.manifestEntry();
  return cuda;
}

LogicalResult writeCudaBundle(ModuleOp module,
                              const std::vector<CudaKernel> &kernels,
                              StringRef dir) {
  if (std::error_code ec = llvm::sys::fs::create_directories(dir)) {
    module.emitError() << "cannot create " << dir << ": " << ec.message();
    return failure();
  }
  auto write = [&](StringRef name, StringRef bytes) -> LogicalResult {
    SmallString<128> path(dir);
    llvm::sys::path::append(path, name);
    std::string error;
    if (failed(writeOutputFile(path, bytes, error))) {
      module.emitError() << error;
      return failure();
    }
    return success();
  };
  llvm::json::Object dims;
  std::string layer;
  for (auto scan : module.getOps<mlir::fwp::ScanOp>()) {
    if (scan->hasAttr("fwp.role"))
      continue;
    layer = scan.getSymName().str();
    for (NamedAttribute dim : scan.getDims())
      dims[dim.getName().getValue()] =
          cast<IntegerAttr>(dim.getValue()).getInt();
  }
  llvm::json::Object bundle{{"layer", layer},
                            {"dims", std::move(dims)},
                            {"cuda", cudaManifestKernels(kernels)}};
  std::string json;
  llvm::raw_string_ostream os(json);
  os << llvm::formatv("{0:2}", llvm::json::Value(std::move(bundle))) << "\n";
  if (failed(write("kernels.json", json)))
    return failure();
  for (const CudaKernel &k : kernels) {
    if (failed(write(k.kernel + ".ptx", k.ptx)))
      return failure();
    if (!k.cubin.empty() && failed(write(k.kernel + ".cubin", k.cubin)))
      return failure();
  }
  return success();
}

LogicalResult checkCudaChip(StringRef chip, std::string &error) {
  LLVMInitializeNVPTXTargetInfo();
  LLVMInitializeNVPTXTargetMC();
  llvm::Triple triple("nvptx64-nvidia-cuda");
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return failure();
  std::unique_ptr<llvm::MCSubtargetInfo> subtarget(
      target->createMCSubtargetInfo(triple, "", ""));
  if (!chip.starts_with("sm_") || !subtarget ||
      !subtarget->isCPUStringValid(chip)) {
    error = "unknown GPU architecture '" + chip.str() +
            "' (--cuda-chip takes a name such as sm_80, sm_90 or sm_90a)";
    return failure();
  }
  return success();
}

} // namespace fwp
