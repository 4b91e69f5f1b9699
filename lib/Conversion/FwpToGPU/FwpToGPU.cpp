//===- FwpToGPU.cpp - The GPU lowering passes and the PTX pipeline --------===//

#include "fwp/Conversion/FwpToGPU/FwpToGPU.h"

#include "mlir/Dialect/GPU/Pipelines/Passes.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/ToolOutputFile.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_CONVERTFWPTOGPU
#define GEN_PASS_DEF_FWPGPUDUMPISA
#include "fwp/Conversion/FwpToGPU/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;

namespace {

struct ConvertFwpToGPUPass
    : public mlir::fwp::impl::ConvertFwpToGPUBase<ConvertFwpToGPUPass> {
  using Base::Base;
  void runOnOperation() override {
    GpuLoweringOptions options;
    options.blockSize = blockSize;
    if (failed(lowerScansToGpu(getOperation(), options)))
      return signalPassFailure();
    // The emitter builds index arithmetic naively; fold and share it.
    OpPassManager cleanup("builtin.module");
    cleanup.addPass(createCanonicalizerPass());
    cleanup.addPass(createCSEPass());
    if (failed(runPipeline(cleanup, getOperation())))
      signalPassFailure();
  }
};

struct FwpGpuDumpIsaPass
    : public mlir::fwp::impl::FwpGpuDumpIsaBase<FwpGpuDumpIsaPass> {
  using Base::Base;
  void runOnOperation() override {
    WalkResult result = getOperation().walk([&](gpu::BinaryOp binary) {
      if (binary.getObjects().empty())
        return WalkResult::advance();
      auto object = cast<gpu::ObjectAttr>(binary.getObjects()[0]);
      SmallString<128> path(dir);
      llvm::sys::path::append(path, binary.getSymName() + ".ptx");
      std::string error;
      auto file = openOutputFile(path, &error);
      if (!file) {
        binary.emitError() << "cannot write " << path << ": " << error;
        return WalkResult::interrupt();
      }
      file->os() << object.getObject().getValue();
      file->keep();
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};

struct GpuToPtxPipelineOptions
    : public PassPipelineOptions<GpuToPtxPipelineOptions> {
  Option<int64_t> blockSize{*this, "block-size",
                            llvm::cl::desc("threads per block (0: automatic)"),
                            llvm::cl::init(0)};
  Option<std::string> chip{*this, "chip", llvm::cl::desc("the sm_XX target"),
                           llvm::cl::init("sm_90")};
  Option<std::string> features{*this, "features",
                               llvm::cl::desc("NVPTX features (PTX version)"),
                               llvm::cl::init("+ptx80")};
  Option<int> optLevel{*this, "opt-level", llvm::cl::desc("0 to 3"),
                       llvm::cl::init(3)};
};

} // namespace

void mlir::fwp::buildGpuToPtxPipeline(OpPassManager &pm,
                                      const PtxOptions &options) {
  gpu::GPUToNVVMPipelineOptions nvvm;
  nvvm.cubinChip = options.chip;
  nvvm.cubinFeatures = options.features;
  nvvm.cubinFormat = "isa";
  nvvm.optLevel = options.optLevel;
  gpu::buildLowerToNVVMPassPipeline(pm, nvvm);
}

void mlir::fwp::registerFwpGpuPasses() {
  registerFwpToGPUPasses();
  PassPipelineRegistration<GpuToPtxPipelineOptions>(
      "fwp-gpu-to-ptx",
      "fwp scans -> one GPU kernel each -> NVVM -> gpu.binary holding PTX",
      [](OpPassManager &pm, const GpuToPtxPipelineOptions &options) {
        pm.addPass(createConvertFwpToGPU(
            ConvertFwpToGPUOptions{options.blockSize}));
        PtxOptions ptx;
        ptx.chip = options.chip;
        ptx.features = options.features;
        ptx.optLevel = options.optLevel;
        buildGpuToPtxPipeline(pm, ptx);
      });
}
