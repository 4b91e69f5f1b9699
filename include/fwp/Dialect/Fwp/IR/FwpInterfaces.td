//===- FwpInterfaces.td - Op interfaces of the fwp dialect -*- tablegen -*-===//
//
// The rules of an op live with the op: its reverse-mode adjoint, what the
// backward needs of an op that updates a fast weight, and the decomposition
// of a composite op into the core that every backend lowers.
//
//===----------------------------------------------------------------------===//
#ifndef FWP_DIALECT_FWP_IR_FWPINTERFACES_TD
#define FWP_DIALECT_FWP_IR_FWPINTERFACES_TD

include "mlir/IR/OpBase.td"

def Fwp_AdjointOpInterface : OpInterface<"AdjointOpInterface"> {
  let cppNamespace = "::mlir::fwp";
  let description = [{
    The reverse-mode rule of an op, used by `fwp-differentiate`. The op reads
    the gradients reaching its results (`adjoints.adjointOf(result)`, null
    when none reaches it), the recomputed values of its operands and results
    in the backward body (`adjoints.recomputed(value)`), and adds its
    operands' gradient contributions with `adjoints.accumulate(operand, g)`
    (or `accumulateOuter(weight, key, value)` for a rank-one contribution to
    a fast weight). New ops are emitted with `adjoints.builder()`.
  }];
  let methods = [
    InterfaceMethod<
      "Emits the vector-Jacobian product of the op; fails with a diagnostic "
      "when it has none.",
      "::llvm::LogicalResult", "buildAdjoint",
      (ins "::mlir::fwp::AdjointEmitter &":$adjoints)>
  ];
}

def Fwp_FastWeightUpdateOpInterface : OpInterface<"FastWeightUpdateOpInterface"> {
  let cppNamespace = "::mlir::fwp";
  let description = [{
    An op that computes a fast weight from another one (a write, a decay).
    `fwp-differentiate` follows chains of these from a state's value at
    `t - 1` to its value at `t`. When every update of a chain is invertible,
    the backward can rebuild the state at `t - 1` from the one at `t`
    (strategy `invert`): the training forward records `buildInverseTape` per
    step and the backward applies `buildInverse`. Otherwise the state is
    stored or checkpointed (docs/design.md, "Backward strategies").
  }];
  let methods = [
    InterfaceMethod<"The fast weight before the update (an operand).",
      "::mlir::Value", "getUpdatedWeight">,
    InterfaceMethod<"The fast weight after the update (a result).",
      "::mlir::Value", "getUpdateResult">,
    InterfaceMethod<"Whether the update can be undone exactly enough for the "
      "`invert` strategy.", "bool", "isInvertible">,
    InterfaceMethod<"Emits, after the op, the values the training forward "
      "records per step so that the update can be undone.",
      "::llvm::SmallVector<::mlir::Value>", "buildInverseTape",
      (ins "::mlir::OpBuilder &":$builder),
      /*methodBody=*/"", /*defaultImplementation=*/"return {};">,
    InterfaceMethod<"Emits the weight before the update from `newWeight` and "
      "the recorded `tape`.",
      "::mlir::Value", "buildInverse",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Value":$newWeight,
           "::mlir::ValueRange":$tape),
      /*methodBody=*/"", /*defaultImplementation=*/"return {};">,
    InterfaceMethod<"The update as a map linear in the old weight, for the "
      "chunkwise form of a scan (docs/compiler.md, \"The chunkwise form\"); "
      "nullopt when it is not one.",
      "std::optional<::mlir::fwp::LinearUpdate>", "getLinearUpdate", (ins),
      /*methodBody=*/"", /*defaultImplementation=*/"return std::nullopt;">,
    InterfaceMethod<"In a backward body where the weights before and after "
      "the update are already rebuilt (and mapped in `mapping`) from the "
      "backward's values of `buildInverseTape` (`tape`), emits the op's other "
      "results and maps them.",
      "void", "recomputeOtherResults",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::IRMapping &":$mapping,
           "::mlir::ValueRange":$tape),
      /*methodBody=*/"", /*defaultImplementation=*/"return;">
  ];
}

def Fwp_DecomposableOpInterface : OpInterface<"DecomposableOpInterface"> {
  let cppNamespace = "::mlir::fwp";
  let description = [{
    A composite op: `fwp-decompose` replaces it by core ops, so that
    differentiation and every backend see only the core.
  }];
  let methods = [
    InterfaceMethod<"Replaces the op by core ops.",
      "void", "decompose", (ins "::mlir::RewriterBase &":$rewriter)>
  ];
}

#endif // FWP_DIALECT_FWP_IR_FWPINTERFACES_TD
