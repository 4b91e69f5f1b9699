//===- CompilerTest.cpp - Unit tests of the compiler's C++ API ------------===//

#include "fwp/Dialect/Fwp/IR/FwpOps.h"
#include "fwp/InitAll.h"
#include "fwp/Target/Artifact.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Analysis/LoopInfo.h"
#include "llvm/Analysis/ValueTracking.h"
#include "llvm/IR/Dominators.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"

#include <gtest/gtest.h>

namespace {

using namespace mlir;

class CompilerTest : public testing::Test {
protected:
  CompilerTest() {
    DialectRegistry registry;
    ::fwp::registerAllDialects(registry);
    ::fwp::registerAllPasses();
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }
  MLIRContext context;
};

/// A scan built through the C++ builder verifies, prints and parses back.
TEST_F(CompilerTest, BuildsAScanProgrammatically) {
  OpBuilder builder(&context);
  Location loc = builder.getUnknownLoc();
  auto module = ModuleOp::create(loc);
  builder.setInsertionPointToEnd(module.getBody());
  auto f32 = builder.getF32Type();
  auto vec = VectorType::get({3}, f32);
  auto weight = mlir::fwp::FastWeightType::get(&context, 3, 3, f32);
  auto scan = mlir::fwp::ScanOp::create(
      builder, loc, "sum_layer",
      builder.getDictionaryAttr({builder.getNamedAttr("d", builder.getI64IntegerAttr(3))}),
      {"k", "v"}, {vec, vec}, {}, {}, {"W"}, {weight}, {"y"}, {vec}, false);
  Block &body = scan.getBodyBlock();
  builder.setInsertionPointToEnd(&body);
  Value written = mlir::fwp::WriteSumOp::create(builder, loc, body.getArgument(2),
                                                body.getArgument(0), body.getArgument(1));
  Value read = mlir::fwp::ReadOp::create(builder, loc, vec, written, body.getArgument(0));
  mlir::fwp::YieldOp::create(builder, loc, ValueRange{written, read});
  ASSERT_TRUE(succeeded(verify(module)));

  std::string text;
  llvm::raw_string_ostream os(text);
  module.print(os);
  EXPECT_NE(text.find("seq(%k: vector<3xf32>, %v: vector<3xf32>)"), std::string::npos) << text;
  OwningOpRef<ModuleOp> reparsed = parseSourceString<ModuleOp>(text, &context);
  ASSERT_TRUE(reparsed);
  EXPECT_EQ(cast<mlir::fwp::ScanOp>(&reparsed->getBody()->front()).getDim("d"), 3);
  module.erase();
}

TEST_F(CompilerTest, FastWeightTypeRejectsBadSizesWithoutAborting) {
  std::string message;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diagnostic) {
    message = diagnostic.str();
    return success();
  });
  auto bad = mlir::fwp::FastWeightType::getChecked(
      [&] { return emitError(UnknownLoc::get(&context)); }, &context, int64_t(4), int64_t(-2),
      cast<FloatType>(Float32Type::get(&context)));
  EXPECT_FALSE(bad);
  EXPECT_EQ(message, "fast-weight dimensions must be positive, got 4x-2");
}

/// The manifest names every kernel argument with the role the runtime
/// expects, in the order of the kernel's buffers. (The key depends on the
/// state h, so the tape records it.)
TEST_F(CompilerTest, ManifestListsKernelArgumentsByRole) {
  const char *source = R"mlir(
    fwp.scan @layer dims(d = 2)
        seq(%k : vector<2xf32>, %b : f32) params(%w : vector<2xf32>)
        states(%W : !fwp.fast_weight<2x2xf32>, %h : vector<2xf32>)
        outputs(y : vector<2xf32>) {
      %k2 = fwp.mul %h, %w : vector<2xf32>
      %W1, %r = fwp.write_delta %W, %k2, %k, %b : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
      %y = fwp.read %W1, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
      fwp.yield %W1, %y, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
    })mlir";
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(source, &context);
  ASSERT_TRUE(module);
  PassManager pm(&context);
  ::fwp::buildFrontEndPipeline(pm);
  ASSERT_TRUE(succeeded(pm.run(*module)));
  FailureOr<llvm::json::Object> manifest = ::fwp::buildManifest(*module);
  ASSERT_TRUE(succeeded(manifest));

  const llvm::json::Object *kernels = manifest->getObject("kernels")->getObject("cpu");
  auto roles = [&](llvm::StringRef kernel) {
    std::vector<std::string> out;
    for (const llvm::json::Value &arg : *kernels->getObject(kernel)->getArray("args")) {
      const llvm::json::Object *object = arg.getAsObject();
      out.push_back((*object->getString("role") + ":" + *object->getString("name")).str());
    }
    return out;
  };
  EXPECT_EQ(roles("forward"), (std::vector<std::string>{"seq:k", "seq:b", "param:w",
                                                        "state:W", "state:h", "output:y"}));
  EXPECT_EQ(roles("forward_train"),
            (std::vector<std::string>{"seq:k", "seq:b", "param:w", "state:W", "state:h",
                                      "output:y", "tape:tape.W.0.key", "tape:tape.W.0.delta",
                                      "tape:tape.h.prev"}));
  EXPECT_EQ(roles("backward"),
            (std::vector<std::string>{"seq:k", "seq:b", "grad_output:y", "tape:tape.W.0.key",
                                      "tape:tape.W.0.delta", "tape:tape.h.prev", "param:w",
                                      "state:W", "grad_state:W", "grad_state:h",
                                      "grad_param:w", "grad_seq:k", "grad_seq:b"}));
  EXPECT_EQ(*manifest->getString("layer"), "layer");
  EXPECT_EQ(*manifest->getInteger("version"), ::fwp::kArtifactFormatVersion);
}

/// A 16x16 f32 fast weight runs the time loop in registers only where the
/// processor has AVX-512 (32 registers of 64 bytes): for x86-64-v4 the loop
/// stores nothing to the state's buffer (its rows are carried in registers
/// and written back after the loop); for x86-64-v3 (16 registers of 32
/// bytes, where the stack copy would only spill) the rows are loaded and
/// stored in the loop, from and to the buffer (Artifact.cpp,
/// foldRegisterStateCopies).
TEST_F(CompilerTest, MatrixStateInRegistersOnlyWithAvx512) {
  const char *source = R"mlir(
    fwp.scan @decay dims(d = 16)
        seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>, %g : vector<16xf32>)
        states(%W : !fwp.fast_weight<16x16xf32>) outputs(y : vector<16xf32>) {
      %a = fwp.sigmoid %g : vector<16xf32>
      %Wd = fwp.scale_rows %W, %a : !fwp.fast_weight<16x16xf32>, vector<16xf32>
      %W1 = fwp.write_sum %Wd, %k, %v : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
      %y = fwp.read %W1, %q : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
      fwp.yield %W1, %y : !fwp.fast_weight<16x16xf32>, vector<16xf32>
    })mlir";
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(source, &context);
  ASSERT_TRUE(module);
  PassManager pm(&context);
  ::fwp::buildFrontEndPipeline(pm);
  ::fwp::buildCPULoweringPipeline(pm, /*chunk=*/0);
  ASSERT_TRUE(succeeded(pm.run(*module)));

  // Stores (or copies) into the state's buffer (the aligned pointer of its
  // memref: argument 1 + 4 seq memrefs of 7 values + 1) inside / outside
  // loops.
  auto storesToState = [&](llvm::StringRef cpu) -> std::pair<int, int> {
    llvm::LLVMContext llvmContext;
    auto llvmModule = ::fwp::translateToOptimizedLLVM(*module, llvmContext, "{}", cpu);
    EXPECT_TRUE(succeeded(llvmModule));
    if (failed(llvmModule))
      return {-1, -1};
    llvm::Function *function = (*llvmModule)->getFunction("decay");
    EXPECT_TRUE(function);
    if (!function)
      return {-1, -1};
    llvm::Value *state = function->getArg(1 + 4 * 7 + 1);
    llvm::DominatorTree dominators(*function);
    llvm::LoopInfo loops(dominators);
    int inLoops = 0, outside = 0;
    for (llvm::BasicBlock &block : *function)
      for (llvm::Instruction &inst : block)
        if (auto *store = llvm::dyn_cast<llvm::StoreInst>(&inst)) {
          if (llvm::getUnderlyingObject(store->getPointerOperand()) == state)
            ++(loops.getLoopFor(&block) ? inLoops : outside);
        } else if (auto *copy = llvm::dyn_cast<llvm::MemCpyInst>(&inst)) {
          if (llvm::getUnderlyingObject(copy->getRawDest()) == state)
            ++(loops.getLoopFor(&block) ? inLoops : outside);
        }
    return {inLoops, outside};
  };
  auto [v4InLoops, v4Outside] = storesToState("x86-64-v4");
  EXPECT_EQ(v4InLoops, 0);
  EXPECT_GT(v4Outside, 0);
  auto [v3InLoops, v3Outside] = storesToState("x86-64-v3");
  EXPECT_GT(v3InLoops, 0);
}

TEST_F(CompilerTest, ManifestNeedsOneDifferentiatedLayer) {
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(
      "fwp.scan @only seq(%x : f32) outputs(y : f32) { fwp.yield %x : f32 }", &context);
  ASSERT_TRUE(module);
  std::string message;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diagnostic) {
    message = diagnostic.str();
    return success();
  });
  EXPECT_TRUE(failed(::fwp::buildManifest(*module)));
  EXPECT_NE(message.find("expected one layer"), std::string::npos) << message;
}

} // namespace
