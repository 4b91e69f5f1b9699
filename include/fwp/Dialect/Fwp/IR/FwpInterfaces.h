//===- FwpInterfaces.h - Op interfaces of the fwp dialect -------*- C++ -*-===//
#ifndef FWP_DIALECT_FWP_IR_FWPINTERFACES_H
#define FWP_DIALECT_FWP_IR_FWPINTERFACES_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::fwp {

/// What an op's adjoint rule (AdjointOpInterface) sees of the backward body
/// that fwp-differentiate builds.
class AdjointEmitter {
public:
  explicit AdjointEmitter(OpBuilder &builder) : builder_(builder) {}
  virtual ~AdjointEmitter() = default;

  OpBuilder &builder() { return builder_; }
  /// The gradient reaching a forward value; null when none does.
  virtual Value adjointOf(Value forwardValue) const = 0;
  /// The backward body's recomputed counterpart of a forward value.
  virtual Value recomputed(Value forwardValue) const = 0;
  /// adj(x) += contribution (a value of x's type; null adds nothing).
  virtual void accumulate(Value forwardValue, Value contribution) = 0;
  /// adj(W) += key (x) value, for a fast weight W.
  virtual void accumulateOuter(Value weight, Value key, Value value) = 0;

private:
  OpBuilder &builder_;
};

} // namespace mlir::fwp

#include "fwp/Dialect/Fwp/IR/FwpInterfaces.h.inc"

#endif // FWP_DIALECT_FWP_IR_FWPINTERFACES_H
