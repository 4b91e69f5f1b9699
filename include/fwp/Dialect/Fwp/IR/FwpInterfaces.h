//===- FwpInterfaces.h - Op interfaces of the fwp dialect -------*- C++ -*-===//
#ifndef FWP_DIALECT_FWP_IR_FWPINTERFACES_H
#define FWP_DIALECT_FWP_IR_FWPINTERFACES_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/PatternMatch.h"

#include <optional>

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

  // The energy form of a decaying fast weight's backward (docs/design.md,
  // "The backward of a decaying fast weight"). For a weight value W of such
  // a state, E(W) = rowsum(adj(W) (.) W), a vector of the key dimension:
  // the backward carries it instead of W, so the rules of the ops that use
  // W linearly (reads, sum writes, row decays) update E instead of reading
  // W, and a read's gradient with respect to its query, W g, comes from the
  // training forward (`precomputedRead`).

  /// Whether `weight` (a forward value) belongs to a state whose backward
  /// carries E instead of the weight.
  virtual bool tracksEnergy(Value weight) const { return false; }
  /// E(weight) once all its uses are visited; null when it is zero.
  virtual Value energyOf(Value weight) const { return {}; }
  /// E(weight) += contribution (null adds nothing).
  virtual void accumulateEnergy(Value weight, Value contribution) {}
  /// The backward's value of `W g` for `read` (y = W^T q, g = adj(y)),
  /// which the training forward computed: a read of a tracked weight.
  virtual Value precomputedRead(Operation *read) const { return {}; }
  /// A product `W x` of a tracked weight value with a backward value `x`
  /// that the backward, which has no W, cannot form: `update` (a delta
  /// write retrieving through W) hands `x` over, and a forward-running scan
  /// after the backward (`@L_deferred`) forms `W x` and adds its gradient
  /// through the update's key. Returns false where the backward cannot defer.
  virtual bool deferProduct(Operation *update, Value x) { return false; }

private:
  OpBuilder &builder_;
};

/// A fast-weight update W -> W' that is linear in W, with coefficients that
/// are values of the step: either a decay of the rows,
///   W'[e, :] = rowScale[e] W[e, :],
/// or a write of `key` (x) w, where w = `value` (a sum write) or, for the
/// delta rule, w = rate (value - W^T key), with W^T key the op's `retrieved`
/// result. The chunkwise form of a scan (CPU lowering) composes these.
struct LinearUpdate {
  Value rowScale;  // decay: a vector of the key dimension
  Value key;       // write: the key (rows)
  Value value;     // write: the value (columns)
  Value rate;      // delta rule: the scalar rate; null for a sum write
  Value retrieved; // delta rule: the result holding W^T key (may be unused)
};

} // namespace mlir::fwp

#include "fwp/Dialect/Fwp/IR/FwpInterfaces.h.inc"

#endif // FWP_DIALECT_FWP_IR_FWPINTERFACES_H
