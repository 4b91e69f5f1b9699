//===- TimeParallel.h - Time-parallel parts of a scan step ------*- C++ -*-===//
//
// A scan's step splits by dataflow into three parts (docs/design.md,
// "Time-parallel prologue and epilogue"):
//
//   prologue  ops that depend on seq inputs, params and constants alone
//             (feature maps, gates, the backward's state-independent
//             adjoints): every step's values can be computed before the
//             time loop, in parallel over t;
//   core      the recurrence: everything that depends on a state;
//   epilogue  ops that use core values (and prologue values, seq inputs,
//             params) but feed no state and no core op, only outputs:
//             computed after the time loop, in parallel over t.
//
// fwp-split-time-parallel records the split on the body's ops as the
// discardable attribute `fwp.phase = "prologue" | "epilogue"` (no attribute:
// core); the scan's verifier checks it, and the CPU lowering builds one loop
// per part from it. A lowering that ignores the attribute computes every op
// inside the step, which is always correct.
//
//===----------------------------------------------------------------------===//
#ifndef FWP_DIALECT_FWP_IR_TIMEPARALLEL_H
#define FWP_DIALECT_FWP_IR_TIMEPARALLEL_H

#include "fwp/Dialect/Fwp/IR/FwpOps.h"

#include "llvm/ADT/DenseMap.h"

namespace mlir::fwp {

/// The discardable attribute on a scan body op naming its part of the step.
inline constexpr llvm::StringLiteral kPhaseAttrName = "fwp.phase";

enum class StepPhase { Core, Prologue, Epilogue };

/// The part `op` is assigned to by its `fwp.phase` attribute (Core without
/// one, or with a malformed one: the verifier reports that).
StepPhase getStepPhase(Operation *op);
/// Sets (or, for Core, removes) the `fwp.phase` attribute of `op`.
void setStepPhase(Operation *op, StepPhase phase);

/// Whether `op` may be computed outside the time loop at all: a side-effect
/// free op without regions whose results are scalars or vectors (a
/// fast-weight matrix per step would cost T * K * V of memory).
bool isTimeParallelCandidate(Operation *op);

/// The largest split of `scan`'s body: every candidate op whose operands are
/// seq inputs, params or prologue results is in the prologue; every other
/// candidate whose results only reach outputs (through epilogue ops) and
/// whose matrix operands are seq inputs or params is in the epilogue.
llvm::DenseMap<Operation *, StepPhase> computeTimeParallelSplit(ScanOp scan);

/// Checks the `fwp.phase` attributes of `scan`'s body: prologue ops use only
/// seq inputs, params and prologue results; epilogue ops feed only epilogue
/// ops and outputs, and read no state matrix.
LogicalResult verifyStepPhases(ScanOp scan);

} // namespace mlir::fwp

#endif // FWP_DIALECT_FWP_IR_TIMEPARALLEL_H
