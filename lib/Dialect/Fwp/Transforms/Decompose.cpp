//===- Decompose.cpp - Replace composite ops by core ops ------------------===//
//
// Each composite op says how it decomposes (DecomposableOpInterface); this
// pass applies them until none is left.
//
//===----------------------------------------------------------------------===//

#include "fwp/Dialect/Fwp/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_FWPDECOMPOSE
#include "fwp/Dialect/Fwp/Transforms/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;

namespace {

struct FwpDecomposePass
    : public mlir::fwp::impl::FwpDecomposeBase<FwpDecomposePass> {
  void runOnOperation() override {
    // Decompositions emit core ops only, so one sweep suffices.
    SmallVector<DecomposableOpInterface> composites;
    getOperation().walk(
        [&](DecomposableOpInterface op) { composites.push_back(op); });
    IRRewriter rewriter(&getContext());
    for (DecomposableOpInterface op : composites) {
      rewriter.setInsertionPoint(op);
      op.decompose(rewriter);
    }
  }
};

} // namespace
