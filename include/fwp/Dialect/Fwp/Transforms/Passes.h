//===- Passes.h - Transformations of the fwp dialect ------------*- C++ -*-===//
#ifndef FWP_DIALECT_FWP_TRANSFORMS_PASSES_H
#define FWP_DIALECT_FWP_TRANSFORMS_PASSES_H

#include "fwp/Dialect/Fwp/IR/FwpOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

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

} // namespace mlir::fwp

#endif // FWP_DIALECT_FWP_TRANSFORMS_PASSES_H
