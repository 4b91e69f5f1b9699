//===- TestPasses.cpp - Register fwp's test passes ------------------------===//

#include "mlir/Pass/Pass.h"

namespace fwp::test {
#define GEN_PASS_DECL
#include "TestPasses.h.inc"

#define GEN_PASS_REGISTRATION
#include "TestPasses.h.inc"

/// Registers test-fwp-gpu-kernels and test-fwp-cuda-compile (fwp-opt calls
/// it when built with the tests).
void registerTestPasses() { registerFwpTestPasses(); }
} // namespace fwp::test
