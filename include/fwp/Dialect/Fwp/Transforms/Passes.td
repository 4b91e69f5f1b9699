//===- Passes.td - Transformations of the fwp dialect ------*- tablegen -*-===//
#ifndef FWP_DIALECT_FWP_TRANSFORMS_PASSES_TD
#define FWP_DIALECT_FWP_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def FwpSpecializeDims : Pass<"fwp-specialize-dims", "mlir::ModuleOp"> {
  let summary = "re-specialise scans to other values of their named dims";
  let description = [{
    Every `fwp.scan` names its sizes (`dims(d = 16, d_ff = 64)`); their values
    are pairwise distinct, so each type dimension equal to a dim's value
    stands for that dim. This pass rewrites every such dimension (in block
    argument, result and output types) to the new value given in `dims`
    (`d=32,d_ff=128`), and the scan's `dims` attribute with it. Dims not named
    keep their value; a named dim the scan does not declare is an error.
    `dtype=f64` also turns every f32 scalar, vector and fast weight into f64
    (for gradient checks in double precision).

    ```
    fwp-opt models/delta_mlp.mlir --fwp-specialize-dims="dims=d=32,d_ff=128"
    ```
  }];
  let options = [
    ListOption<"dims", "dims", "std::string", "name=value pairs">,
    Option<"dtype", "dtype", "std::string", /*default=*/"\"\"",
           "also change the element type of every value: f32 or f64">
  ];
}

def FwpDifferentiate : Pass<"fwp-differentiate", "mlir::ModuleOp"> {
  let summary = "reverse-mode differentiation of every scan";
  let description = [{
    For each forward `fwp.scan @L` (one without `fwp.role`), adds `@L_train`,
    the forward with tape outputs, and `@L_grad`, a `reverse` scan that runs
    time backwards and yields the gradients of the seq inputs per step, of
    the initial states and of the params (summed over time). Matrix states
    are rebuilt by inverting their writes (`S_{t-1} = S_t - key (x) delta`,
    recorded on the tape); vector and scalar states are recorded on the tape.
    The choice is explicit in the IR (`fwp.reconstruct = "invert"` on the
    backward scan). An op without an adjoint rule, or a matrix state whose
    update is not a chain of writes, is an error naming it.

    ```
    fwp-opt models/delta_net.mlir --fwp-differentiate
    ```
  }];
  let dependentDialects = ["::mlir::fwp::FwpDialect"];
}

def FwpFuse : Pass<"fwp-fuse", "mlir::ModuleOp"> {
  let summary = "fuse reads of a fast weight's old value into the write that replaced it";
  let description = [{
    A read of a fast weight `W` after a rank-one write `W' = W + k (x) u`
    (`fwp.write_sum`, or `fwp.write_delta` with `u = beta (v - vbar)`) keeps
    both `W` and `W'` alive, so a lowering must copy `W` before updating it.
    This pass rewrites such reads through the write:

    * `read(W, q)            = read(W', q) - u (k . q)`
    * `read_transposed(W, x) = read_transposed(W', x) - k (u . x)`

    after which the write is the last use of `W` and every lowering updates
    the matrix in place. The backward scans of `fwp-differentiate` need it:
    they rebuild `W_{t-1}` from `W_t` and read both. Other later uses of `W`
    (a second write, a yield) are left alone.

    ```
    fwp-opt models/delta_net.mlir --fwp-differentiate --fwp-fuse --canonicalize --cse
    ```
  }];
  let dependentDialects = ["::mlir::fwp::FwpDialect"];
}

#endif // FWP_DIALECT_FWP_TRANSFORMS_PASSES_TD
