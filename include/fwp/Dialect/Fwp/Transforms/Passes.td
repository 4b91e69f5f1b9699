//===- Passes.td - Transformations of the fwp dialect ------*- tablegen -*-===//
#ifndef FWP_DIALECT_FWP_TRANSFORMS_PASSES_TD
#define FWP_DIALECT_FWP_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def FwpSpecializeDims : Pass<"fwp-specialize-dims", "mlir::ModuleOp"> {
  let summary = "re-specialise scans to other values of their named dims";
  let description = [{
    Every `fwp.scan` names its sizes (`dims(d = 16, d_ff = 64)`). This pass
    gives the named dims new values (`d=32,d_ff=128`) and rewrites every type
    dimension by the dim it stands for, not by its value: results follow
    their operands (`fwp.read` returns the weight's value size, `fwp.dpfp`
    returns 2*nu*d, a multiple of its input), and an argument's size reads as
    the dim of that value, else as a multiple of a dim (a DPFP-sized state),
    else as a constant. Where several readings fit (a 64 that may be `d_ff`
    or `4*d`), each is checked on a copy of the scan with distinct probe
    values for the dims, and only those the ops' verifiers accept count; if
    they disagree on the new sizes (two dims of one value, one of them
    changed), the pass stops with an error. Dims not named keep their value;
    a named dim the scan does not declare is an error.
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

def FwpDecompose : Pass<"fwp-decompose", "mlir::ModuleOp"> {
  let summary = "replace composite ops by the core ops that backends lower";
  let description = [{
    Every op with the `DecomposableOpInterface` (`fwp.scale_weight`,
    `fwp.l2_norm`, `fwp.scale_const`) is replaced by its decomposition into
    core ops, so that `fwp-differentiate` and the CPU and GPU lowerings only
    meet the core. Runs after `fwp-specialize-dims` (a decomposition may fold
    a size into a constant) and before `fwp-differentiate`.

    ```
    fwp-opt models/gated_delta_net.mlir --fwp-decompose
    ```
  }];
  let dependentDialects = ["::mlir::fwp::FwpDialect"];
}

def FwpDifferentiate : Pass<"fwp-differentiate", "mlir::ModuleOp"> {
  let summary = "reverse-mode differentiation of every scan";
  let description = [{
    For each forward `fwp.scan @L` (one without `fwp.role`), adds `@L_train`,
    the forward with tape outputs, and `@L_grad`, a `reverse` scan that runs
    time backwards and yields the gradients of the seq inputs per step, of
    the initial states and of the params (summed over time). Each op's rule
    is its `AdjointOpInterface`.

    Each state is recovered at `t - 1` by a backward strategy, the scan's
    `fwp.backward` dictionary (state name to strategy):

    * `invert`: the state's update is a chain of invertible updates
      (`FastWeightUpdateOpInterface`, e.g. `S_{t-1} = S_t - key (x) delta`);
      the tape records what undoing them needs. No memory per step.
    * `store`: the tape records the state at `t - 1` (`tape.<state>.prev`).
    * `checkpoint:C`: the IR is that of `store`; the runtime keeps the states
      every C steps only and recomputes one segment's tape at a time
      (the manifest's `checkpoint_every`). `@L_train` then runs only to
      rebuild a segment's tape: it yields the tape and no outputs. A
      checkpointed weight used only linearly gets the energy form
      (docs/design.md); if its chain has delta writes, a third scan
      `@L_deferred` (role `backward_deferred`) runs forwards after the
      backward and adds the gradients of the products `W d` the backward,
      which has no `W`, hands over (`deferred.<W>.<i>`).

    Missing entries default to `invert` for fast weights whose updates are
    invertible, `checkpoint:64` for other fast weights, and `store` for
    vector and scalar states (`checkpoint` when another state is
    checkpointed). The pass writes the resolved dictionary on the forward,
    training and backward scans. An op without an adjoint rule, or `invert`
    asked for a state that cannot be inverted, is an error naming it.

    `backward=STRATEGY` sets the strategy of every fast-weight state first
    (what `fwp-compile --backward` does).

    ```
    fwp-opt models/delta_net.mlir --fwp-differentiate
    fwp-opt models/delta_net.mlir --fwp-differentiate="backward=checkpoint:32"
    ```
  }];
  let options = [
    Option<"backward", "backward", "std::string", /*default=*/"\"\"",
           "invert, store or checkpoint[:C] for every fast-weight state">
  ];
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

def FwpSplitTimeParallel : Pass<"fwp-split-time-parallel", "mlir::ModuleOp"> {
  let summary = "mark each scan's time-parallel prologue and epilogue";
  let description = [{
    Splits the step of every `fwp.scan` (forward, training forward and
    backward alike) by dataflow into three parts and records the split on
    the body's ops as `fwp.phase = "prologue"` or `"epilogue"` (no
    attribute: the recurrent core):

    * **prologue**: ops whose operands are seq inputs, params or other
      prologue values (feature maps, sigmoids of gate logits, the backward's
      state-independent adjoints). They do not depend on the states, so a
      lowering computes them for all steps before the time loop.
    * **epilogue**: the other ops whose results reach only outputs, through
      epilogue ops (never a state or a core op), and that read no state
      matrix (e.g. the backward's gradient through a feature map). A
      lowering computes them for all steps after the time loop.

    Only side-effect free ops computing scalars or vectors are moved (a
    matrix per step would cost `T K V` memory). The scan's verifier checks
    the attributes; the pass first removes existing ones, so it is
    idempotent. It runs last, after `fwp-differentiate` and `fwp-fuse`
    (which know nothing of phases). `convert-fwp-to-cpu` runs the time loop
    in blocks of 16 steps, each block a loop over its steps per part (the
    chunkwise form: the prologue per chunk, the epilogue in the loop that
    ends each step), the prologue prefetching the next block's vector
    inputs; the GPU lowering computes every op inside the step.

    ```
    fwp-opt models/delta_net.mlir --fwp-differentiate --fwp-fuse --fwp-split-time-parallel
    fwp-opt models/delta_net.mlir --fwp-split-time-parallel="epilogue=false"
    ```
  }];
  let options = [
    Option<"prologue", "prologue", "bool", /*default=*/"true",
           "mark the prologue">,
    Option<"epilogue", "epilogue", "bool", /*default=*/"true",
           "mark the epilogue">
  ];
  let dependentDialects = ["::mlir::fwp::FwpDialect"];
}

#endif // FWP_DIALECT_FWP_TRANSFORMS_PASSES_TD
