//===- FwpToCPU.cpp - Lower fwp.scan to a CPU function --------------------===//
//
// convert-fwp-to-cpu: the pattern families (ElementwisePatterns.cpp,
// FeatureMapPatterns.cpp, FastWeightPatterns.cpp) lower the ops of each
// scan's body inside the function and time loop that ScanToLoop.cpp builds.
//
//===----------------------------------------------------------------------===//

#include "CpuLowering.h"

#include "fwp/Conversion/Passes.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_CONVERTFWPTOCPU
#include "fwp/Conversion/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::cpu;

namespace {
struct ConvertFwpToCPUPass
    : public mlir::fwp::impl::ConvertFwpToCPUBase<ConvertFwpToCPUPass> {
  using Base::Base;
  void runOnOperation() override {
    if (chunk < -1) {
      getOperation().emitError() << "chunk must be -1 (automatic), 0 (the "
                                    "recurrent form) or a length, got "
                                 << static_cast<int64_t>(chunk);
      return signalPassFailure();
    }
    CpuPatternSet patterns;
    populateElementwisePatterns(patterns);
    populateFeatureMapPatterns(patterns);
    populateFastWeightPatterns(patterns);
    SmallVector<ScanOp> scans(getOperation().getOps<ScanOp>());
    for (ScanOp scan : scans) {
      FailureOr<bool> staged = lowerInStages(scan, patterns, chunk);
      if (failed(staged))
        return signalPassFailure();
      if (*staged) {
        scan->erase();
        continue;
      }
      ScanLowering lowering(scan, patterns, chunk);
      if (failed(lowering.run()))
        return signalPassFailure();
      scan->erase();
    }
  }
};
} // namespace
