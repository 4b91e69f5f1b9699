//===- FwpTypes.td - Types of the fwp dialect --------------*- tablegen -*-===//
#ifndef FWP_DIALECT_FWP_IR_FWPTYPES_TD
#define FWP_DIALECT_FWP_IR_FWPTYPES_TD

include "fwp/Dialect/Fwp/IR/FwpDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/BuiltinTypeInterfaces.td"

def Fwp_FastWeightType : TypeDef<Fwp_Dialect, "FastWeight"> {
  let mnemonic = "fast_weight";
  let summary = "a key-major fast-weight matrix W[key, value]";
  let description = [{
    A `K x V` matrix stored key-major: `W[e, m]` with `e < K` a key index and
    `m < V` a value index. It is the state that `fwp.write_sum` and
    `fwp.write_delta` update and `fwp.read` queries; slow matrix params that
    are used like a fast weight (e.g. RDN's `R_q`) have this type too.

    ```mlir
    !fwp.fast_weight<16x64xf32>   // d_key = 16, d_value = 64
    ```
  }];
  let parameters = (ins "int64_t":$keyDim, "int64_t":$valueDim,
                        "::mlir::FloatType":$elementType);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

#endif // FWP_DIALECT_FWP_IR_FWPTYPES_TD
