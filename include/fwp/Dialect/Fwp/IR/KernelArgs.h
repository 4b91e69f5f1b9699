//===- KernelArgs.h - The runtime's roles of a scan's arguments -*- C++ -*-===//
//
// A compiled scan is a kernel whose arguments the runtime binds by role and
// name (the manifest's `args`, docs/compiler.md): the CPU manifest
// (lib/Target/Artifact.cpp) and the GPU kernels (convert-fwp-to-gpu) both
// name them through kernelArgRole, so that the two cannot disagree.
//
//===----------------------------------------------------------------------===//
#ifndef FWP_DIALECT_FWP_IR_KERNELARGS_H
#define FWP_DIALECT_FWP_IR_KERNELARGS_H

#include "fwp/Dialect/Fwp/IR/FwpOps.h"

#include <utility>

namespace mlir::fwp {

/// Where an argument of a scan's kernel comes from in the scan.
enum class ScanArgKind { Seq, Param, State, Output };

/// The runtime's role of the argument of `kind` named `name` in `scan` (by
/// the scan's `fwp.role`: forward, forward_train, backward,
/// backward_deferred), and its name as the runtime knows it:
///   seq     "seq"; "tape" (tape.*); "deferred" (deferred.*, the backward's
///           values for the deferred products); "grad_output" (grad.<out>,
///           in every scan but the forward);
///   param   "param";
///   state   "state"; "grad_state" (grad.state.*); "grad_param"
///           (grad.param.*); "energy" (energy.*, in the backward);
///   output  "output"; "tape"; "deferred"; "grad_seq" (grad.*, in the
///           backward and backward_deferred).
std::pair<StringRef, StringRef> kernelArgRole(ScanOp scan, ScanArgKind kind,
                                              StringRef name);

} // namespace mlir::fwp

#endif // FWP_DIALECT_FWP_IR_KERNELARGS_H
