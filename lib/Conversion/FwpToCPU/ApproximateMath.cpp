//===- ApproximateMath.cpp - Inline f32 exp and tanh for the CPU ----------===//
//
// fwp-approximate-math: MLIR's polynomial approximations of f32 exp and tanh
// instead of scalarised libm calls, so the feature maps and gates vectorise.
//
//===----------------------------------------------------------------------===//

#include "fwp/Conversion/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_FWPAPPROXIMATEMATH
#include "fwp/Conversion/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;

namespace {
struct FwpApproximateMathPass
    : public mlir::fwp::impl::FwpApproximateMathBase<FwpApproximateMathPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    // Only the functions the CPU lowering emits whose approximations are
    // accurate to a few ulp; the patterns themselves apply to f32 only.
    populateMathPolynomialApproximationPatterns(patterns, [](StringRef name) {
      return name == math::ExpOp::getOperationName() ||
             name == math::TanhOp::getOperationName();
    });
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};
} // namespace
