//===- Passes.h - Transformations of the fwp dialect ------------*- C++ -*-===//
#ifndef FWP_DIALECT_FWP_TRANSFORMS_PASSES_H
#define FWP_DIALECT_FWP_TRANSFORMS_PASSES_H

#include "fwp/Dialect/Fwp/IR/FwpOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <optional>
#include <string>

namespace mlir::fwp {

#define GEN_PASS_DECL
#include "fwp/Dialect/Fwp/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "fwp/Dialect/Fwp/Transforms/Passes.h.inc"

/// The role attribute fwp-differentiate puts on the scans it creates:
/// "forward_train" or "backward"; a scan without it is an inference forward.
inline constexpr llvm::StringLiteral kRoleAttrName = "fwp.role";
/// On a "forward_train"/"backward" scan: the symbol of its forward scan.
inline constexpr llvm::StringLiteral kForwardAttrName = "fwp.forward";
/// On a scan: how the backward recovers each state at t-1, a dictionary from
/// state name to "invert", "store" or "checkpoint:C" (docs/design.md,
/// "Backward strategies"). fwp-differentiate fills in the defaults.
inline constexpr llvm::StringLiteral kBackwardAttrName = "fwp.backward";
/// The segment length of `checkpoint` when none is given.
inline constexpr int64_t kDefaultCheckpointEvery = 64;

/// A backward strategy: invert the writes, store every step's state, or
/// keep one state every `every` steps and recompute the segments.
struct BackwardStrategy {
  enum Kind { Invert, Store, Checkpoint } kind = Invert;
  int64_t every = 0; ///< Checkpoint only: steps per segment (> 0)
  std::string str() const;
};
/// Parses "invert", "store", "checkpoint" or "checkpoint:C" (C > 0).
std::optional<BackwardStrategy> parseBackwardStrategy(llvm::StringRef text);
/// Sets `strategy` for every fast-weight state of every forward scan of
/// `module` (what `fwp-compile --backward` does).
void setBackwardStrategy(ModuleOp module, const BackwardStrategy &strategy);

} // namespace mlir::fwp

#endif // FWP_DIALECT_FWP_TRANSFORMS_PASSES_H
