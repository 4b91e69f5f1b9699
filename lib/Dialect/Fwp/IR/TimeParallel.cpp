//===- TimeParallel.cpp - Time-parallel parts of a scan step --------------===//
//
// The dataflow rules of the prologue / core / epilogue split
// (TimeParallel.h): which ops may leave the time loop, the largest split,
// and the verifier of the `fwp.phase` attributes.
//
//===----------------------------------------------------------------------===//

#include "fwp/Dialect/Fwp/IR/TimeParallel.h"

#include "mlir/Interfaces/SideEffectInterfaces.h"

using namespace mlir;
using namespace mlir::fwp;

static constexpr llvm::StringLiteral kPrologue = "prologue";
static constexpr llvm::StringLiteral kEpilogue = "epilogue";

StepPhase mlir::fwp::getStepPhase(Operation *op) {
  auto name = op->getAttrOfType<StringAttr>(kPhaseAttrName);
  if (name && name.getValue() == kPrologue)
    return StepPhase::Prologue;
  if (name && name.getValue() == kEpilogue)
    return StepPhase::Epilogue;
  return StepPhase::Core;
}

void mlir::fwp::setStepPhase(Operation *op, StepPhase phase) {
  if (phase == StepPhase::Core) {
    op->removeAttr(kPhaseAttrName);
    return;
  }
  op->setAttr(kPhaseAttrName,
              StringAttr::get(op->getContext(), phase == StepPhase::Prologue
                                                    ? kPrologue
                                                    : kEpilogue));
}

bool mlir::fwp::isTimeParallelCandidate(Operation *op) {
  if (isa<YieldOp>(op) || op->getNumRegions() != 0 ||
      op->getNumResults() == 0 || !isMemoryEffectFree(op))
    return false;
  return llvm::none_of(op->getResultTypes(), llvm::IsaPred<FastWeightType>);
}

/// Whether `value` is one of `scan`'s seq inputs or params: available at
/// every step without running the recurrence.
static bool isSeqOrParam(ScanOp scan, Value value) {
  auto arg = dyn_cast<BlockArgument>(value);
  return arg && arg.getOwner() == &scan.getBodyBlock() &&
         arg.getArgNumber() < scan.getNumSeq() + scan.getNumParams();
}

/// The rule of a prologue op's operands; `phaseOf` gives the part of an op.
template <typename PhaseOf>
static std::optional<unsigned> firstNonPrologueOperand(ScanOp scan,
                                                       Operation *op,
                                                       PhaseOf phaseOf) {
  for (OpOperand &operand : op->getOpOperands()) {
    Value value = operand.get();
    if (isSeqOrParam(scan, value))
      continue;
    Operation *def = value.getDefiningOp();
    if (def && phaseOf(def) == StepPhase::Prologue)
      continue;
    return operand.getOperandNumber();
  }
  return std::nullopt;
}

/// The epilogue's operand rule: a matrix operand must be a seq input or a
/// param (a state matrix exists only inside the time loop).
static std::optional<unsigned> firstStateMatrixOperand(ScanOp scan,
                                                       Operation *op) {
  for (OpOperand &operand : op->getOpOperands())
    if (isa<FastWeightType>(operand.get().getType()) &&
        !isSeqOrParam(scan, operand.get()))
      return operand.getOperandNumber();
  return std::nullopt;
}

/// The epilogue's use rule: every use is an epilogue op or an output of the
/// yield. Returns the first use that breaks it.
template <typename PhaseOf>
static OpOperand *firstNonEpilogueUse(ScanOp scan, Operation *op,
                                      PhaseOf phaseOf) {
  for (OpResult result : op->getResults())
    for (OpOperand &use : result.getUses()) {
      Operation *user = use.getOwner();
      if (isa<YieldOp>(user) ? use.getOperandNumber() < scan.getNumStates()
                             : phaseOf(user) != StepPhase::Epilogue)
        return &use;
    }
  return nullptr;
}

llvm::DenseMap<Operation *, StepPhase>
mlir::fwp::computeTimeParallelSplit(ScanOp scan) {
  llvm::DenseMap<Operation *, StepPhase> phases;
  auto phaseOf = [&](Operation *op) { return phases.lookup(op); };
  Block &body = scan.getBodyBlock();
  // Forwards: an op is in the prologue once all its operands are.
  for (Operation &op : body.without_terminator())
    if (isTimeParallelCandidate(&op) &&
        !firstNonPrologueOperand(scan, &op, phaseOf))
      phases[&op] = StepPhase::Prologue;
  // Backwards: an op is in the epilogue once all its users are.
  for (Operation &op : llvm::reverse(body.without_terminator()))
    if (isTimeParallelCandidate(&op) && !phases.contains(&op) &&
        !firstStateMatrixOperand(scan, &op) &&
        !firstNonEpilogueUse(scan, &op, phaseOf))
      phases[&op] = StepPhase::Epilogue;
  return phases;
}

LogicalResult mlir::fwp::verifyStepPhases(ScanOp scan) {
  auto phaseOf = [](Operation *op) { return getStepPhase(op); };
  for (Operation &op : scan.getBodyBlock()) {
    Attribute attr = op.getAttr(kPhaseAttrName);
    if (!attr)
      continue;
    auto name = dyn_cast<StringAttr>(attr);
    if (!name || (name.getValue() != kPrologue && name.getValue() != kEpilogue))
      return op.emitOpError()
             << "has '" << kPhaseAttrName << "' " << attr
             << "; expected \"prologue\" or \"epilogue\"";
    if (!isTimeParallelCandidate(&op))
      return op.emitOpError()
             << "is marked " << name.getValue()
             << " but only side-effect free ops computing scalars or vectors "
                "run outside the time loop";
    if (getStepPhase(&op) == StepPhase::Prologue) {
      if (std::optional<unsigned> index =
              firstNonPrologueOperand(scan, &op, phaseOf))
        return op.emitOpError()
               << "is marked prologue but operand #" << *index
               << " is not a seq input, a param or a prologue value";
      continue;
    }
    if (std::optional<unsigned> index = firstStateMatrixOperand(scan, &op))
      return op.emitOpError()
             << "is marked epilogue but operand #" << *index
             << " is a fast weight of the recurrence";
    if (OpOperand *use = firstNonEpilogueUse(scan, &op, phaseOf)) {
      if (isa<YieldOp>(use->getOwner()))
        return op.emitOpError()
               << "is marked epilogue but is yielded as state '"
               << cast<StringAttr>(
                      scan.getStateNames()[use->getOperandNumber()])
                      .getValue()
               << "'";
      return op.emitOpError()
             << "is marked epilogue but is used by '"
             << use->getOwner()->getName() << "', which is not in the epilogue";
    }
  }
  return success();
}
