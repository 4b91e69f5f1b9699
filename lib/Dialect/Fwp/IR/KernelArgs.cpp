//===- KernelArgs.cpp - The runtime's roles of a scan's arguments ---------===//

#include "fwp/Dialect/Fwp/IR/KernelArgs.h"

using namespace mlir;
using namespace mlir::fwp;

std::pair<StringRef, StringRef>
mlir::fwp::kernelArgRole(ScanOp scan, ScanArgKind kind, StringRef name) {
  StringRef scanRole = "forward";
  if (auto role = scan->getAttrOfType<StringAttr>("fwp.role"))
    scanRole = role.getValue();
  bool backward = scanRole == "backward";
  bool yieldsGradients = backward || scanRole == "backward_deferred";
  switch (kind) {
  case ScanArgKind::Seq:
    if (name.starts_with("tape."))
      return {"tape", name};
    if (name.starts_with("deferred."))
      return {"deferred", name};
    // The backward's output gradients; the training forward's too when it
    // computes reads of them (the energy form, docs/design.md).
    if (scanRole != "forward" && name.consume_front("grad."))
      return {"grad_output", name};
    return {"seq", name};
  case ScanArgKind::Param:
    return {"param", name};
  case ScanArgKind::State:
    if (name.consume_front("grad.state."))
      return {"grad_state", name};
    if (name.consume_front("grad.param."))
      return {"grad_param", name};
    if (backward && name.consume_front("energy."))
      return {"energy", name}; // rowsum(adj(W) (.) W) of the fast weight
    return {"state", name};
  case ScanArgKind::Output:
    if (name.starts_with("tape."))
      return {"tape", name};
    if (name.starts_with("deferred."))
      return {"deferred", name};
    if (yieldsGradients && name.consume_front("grad."))
      return {"grad_seq", name};
    return {"output", name};
  }
  llvm_unreachable("unknown scan argument kind");
}
