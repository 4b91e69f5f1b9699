//===- CPUEntryPoints.cpp - Packed C entry points for the runtime ---------===//
//
// The runtime knows the number of buffers of a kernel only from the manifest,
// so it calls every kernel through one C signature:
//   void fwp_<L>(int64_t T, void **args)
// which forwards args[i] (a memref descriptor pointer) to _mlir_ciface_<L>.
//
//===----------------------------------------------------------------------===//

#include "fwp/Conversion/Passes.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_FWPCPUENTRYPOINTS
#include "fwp/Conversion/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;

namespace {

struct FwpCPUEntryPointsPass
    : public mlir::fwp::impl::FwpCPUEntryPointsBase<FwpCPUEntryPointsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    static constexpr StringLiteral prefix = "_mlir_ciface_";
    SmallVector<LLVM::LLVMFuncOp> wrappers;
    for (auto func : module.getOps<LLVM::LLVMFuncOp>())
      if (func.getName().starts_with(prefix) && !func.isExternal())
        wrappers.push_back(func);

    MLIRContext *context = module.getContext();
    auto ptrType = LLVM::LLVMPointerType::get(context);
    auto i64Type = IntegerType::get(context, 64);
    OpBuilder b(context);
    for (LLVM::LLVMFuncOp wrapper : wrappers) {
      StringRef scanName = wrapper.getName().drop_front(prefix.size());
      LLVM::LLVMFunctionType wrapperType = wrapper.getFunctionType();
      ArrayRef<Type> params = wrapperType.getParams();
      if (params.empty() || params.front() != i64Type ||
          !llvm::all_of(params.drop_front(), [&](Type t) { return t == ptrType; })) {
        wrapper.emitError() << "expected (i64, ptr...) for a lowered fwp scan";
        return signalPassFailure();
      }
      Location loc = wrapper.getLoc();
      b.setInsertionPointToEnd(module.getBody());
      auto entry = LLVM::LLVMFuncOp::create(
          b, loc, cpuEntryPointName(scanName),
          LLVM::LLVMFunctionType::get(LLVM::LLVMVoidType::get(context),
                                      {i64Type, ptrType}));
      Block *body = entry.addEntryBlock(b);
      b.setInsertionPointToStart(body);
      SmallVector<Value> callArgs{body->getArgument(0)};
      for (size_t i = 1; i < params.size(); ++i) {
        Value slot = LLVM::GEPOp::create(
            b, loc, ptrType, ptrType, body->getArgument(1),
            ArrayRef<LLVM::GEPArg>{static_cast<int32_t>(i - 1)});
        callArgs.push_back(LLVM::LoadOp::create(b, loc, ptrType, slot));
      }
      LLVM::CallOp::create(b, loc, wrapper, callArgs);
      LLVM::ReturnOp::create(b, loc, ValueRange{});
    }
  }
};

} // namespace
