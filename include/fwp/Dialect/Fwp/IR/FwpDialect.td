//===- FwpDialect.td - The fwp dialect ---------------------*- tablegen -*-===//
#ifndef FWP_DIALECT_FWP_IR_FWPDIALECT_TD
#define FWP_DIALECT_FWP_IR_FWPDIALECT_TD

include "mlir/IR/OpBase.td"

def Fwp_Dialect : Dialect {
  let name = "fwp";
  let cppNamespace = "::mlir::fwp";
  let summary = "Recurrent Fast Weight Programmers: fast-weight states, writes, reads, scans";
  let description = [{
    The `fwp` dialect describes one head of a fast-weight layer as a recurrence
    over time. A `fwp.scan` holds the body of one time step; its block
    arguments are the step's sequence inputs, the loop-invariant params and the
    recurrent states (fast-weight matrices and vectors such as the previous
    output). Fast weights are key-major matrices `W[e, m]` (`e` a key index,
    `m` a value index) of type `!fwp.fast_weight<KxVxf32>`; per-head vectors are
    builtin 1-D `vector`s and scalars are builtin floats.

    ```mlir
    fwp.scan @delta_net dims(d = 4)
        seq(%q : vector<4xf32>, %k : vector<4xf32>, %v : vector<4xf32>, %beta : f32)
        states(%W : !fwp.fast_weight<4x4xf32>)
        outputs(y : vector<4xf32>) {
      %qe = fwp.elu_plus_one %q : vector<4xf32>
      %qf = fwp.sum_norm %qe : vector<4xf32>
      %ke = fwp.elu_plus_one %k : vector<4xf32>
      %kf = fwp.sum_norm %ke : vector<4xf32>
      %b = fwp.sigmoid %beta : f32
      %W1, %vbar = fwp.write_delta %W, %kf, %v, %b : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
      %y = fwp.read %W1, %qf : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
      fwp.yield %W1, %y : !fwp.fast_weight<4x4xf32>, vector<4xf32>
    }
    ```
  }];
  let useDefaultTypePrinterParser = 1;
  let hasConstantMaterializer = 0;
}

#endif // FWP_DIALECT_FWP_IR_FWPDIALECT_TD
