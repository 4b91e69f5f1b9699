//===- FwpToGPU.cpp - The GPU lowering passes and the PTX pipeline --------===//

#include "fwp/Conversion/FwpToGPU/FwpToGPU.h"

#include "mlir/Dialect/GPU/Pipelines/Passes.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/ToolOutputFile.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_CONVERTFWPTOGPU
#define GEN_PASS_DEF_FWPGPUDUMPISA
#define GEN_PASS_DEF_FWPGPUEXPANDMATH
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
    options.prefetch = prefetch;
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

/// An f32 math op -> an LLVM intrinsic that NVPTX emits as one instruction
/// (fma.rn), instead of a libdevice call.
template <typename MathOp, typename IntrinsicOp>
struct MathToIntrinsic : public OpRewritePattern<MathOp> {
  using OpRewritePattern<MathOp>::OpRewritePattern;
  LogicalResult matchAndRewrite(MathOp op,
                                PatternRewriter &rewriter) const override {
    if (!op.getType().isF32())
      return failure();
    rewriter.replaceOpWithNewOp<IntrinsicOp>(op, op.getType(),
                                             op->getOperands());
    return success();
  }
};

/// An f32 math op -> one PTX instruction as inline assembly, for ops whose
/// LLVM intrinsics convert-gpu-to-nvvm sends to libdevice (sqrt, floor,
/// abs).
template <typename MathOp>
struct MathToPtx : public OpRewritePattern<MathOp> {
  MathToPtx(MLIRContext *context, StringRef instruction)
      : OpRewritePattern<MathOp>(context), instruction(instruction) {}
  LogicalResult matchAndRewrite(MathOp op,
                                PatternRewriter &rewriter) const override {
    if (!op.getType().isF32())
      return failure();
    rewriter.replaceOpWithNewOp<LLVM::InlineAsmOp>(
        op, op.getType(), op->getOperands(),
        rewriter.getStringAttr(instruction), rewriter.getStringAttr("=f,f"),
        UnitAttr(), UnitAttr(), LLVM::TailCallKindAttr(),
        LLVM::AsmDialectAttr(), ArrayAttr());
    return success();
  }
  std::string instruction;
};

struct FwpGpuExpandMathPass
    : public mlir::fwp::impl::FwpGpuExpandMathBase<FwpGpuExpandMathPass> {
  using Base::Base;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    // exp and tanh (f32) as polynomials; the patterns leave f64 alone.
    populateMathPolynomialApproximationPatterns(
        patterns, [](StringRef name) {
          return name == math::ExpOp::getOperationName() ||
                 name == math::TanhOp::getOperationName();
        });
    patterns.add<MathToIntrinsic<math::FmaOp, LLVM::FMAOp>>(&getContext());
    patterns.add<MathToPtx<math::AbsFOp>>(&getContext(), kPtxAbs);
    patterns.add<MathToPtx<math::SqrtOp>>(&getContext(),
                                          kPtxSqrt);
    patterns.add<MathToPtx<math::FloorOp>>(&getContext(),
                                           kPtxFloor);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
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
  pm.addNestedPass<gpu::GPUModuleOp>(createFwpGpuExpandMath());
  gpu::buildLowerToNVVMPassPipeline(pm, nvvm);
}

void mlir::fwp::registerFwpGpuPasses() {
  registerFwpToGPUPasses();
  PassPipelineRegistration<GpuToPtxPipelineOptions>(
      "fwp-gpu-to-ptx",
      "fwp scans -> one GPU kernel each -> NVVM -> gpu.binary holding PTX",
      [](OpPassManager &pm, const GpuToPtxPipelineOptions &options) {
        ConvertFwpToGPUOptions lowering;
        lowering.blockSize = options.blockSize;
        pm.addPass(createConvertFwpToGPU(lowering));
        PtxOptions ptx;
        ptx.chip = options.chip;
        ptx.features = options.features;
        ptx.optLevel = options.optLevel;
        buildGpuToPtxPipeline(pm, ptx);
      });
}
