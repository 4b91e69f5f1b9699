//===- SplitTimeParallel.cpp - Mark the time-parallel parts of scans ------===//
//
// fwp-split-time-parallel: records computeTimeParallelSplit (TimeParallel.h)
// on the ops of every scan's body as `fwp.phase` attributes.
//
//===----------------------------------------------------------------------===//

#include "fwp/Dialect/Fwp/IR/TimeParallel.h"
#include "fwp/Dialect/Fwp/Transforms/Passes.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_FWPSPLITTIMEPARALLEL
#include "fwp/Dialect/Fwp/Transforms/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;

namespace {
struct SplitTimeParallelPass
    : public mlir::fwp::impl::FwpSplitTimeParallelBase<SplitTimeParallelPass> {
  using Base::Base;

  void runOnOperation() override {
    for (ScanOp scan : getOperation().getOps<ScanOp>()) {
      for (Operation &op : scan.getBodyBlock())
        setStepPhase(&op, StepPhase::Core);
      for (auto [op, phase] : computeTimeParallelSplit(scan))
        if ((phase == StepPhase::Prologue && prologue) ||
            (phase == StepPhase::Epilogue && epilogue))
          setStepPhase(op, phase);
    }
  }
};
} // namespace
