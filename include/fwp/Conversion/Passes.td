//===- Passes.td - Conversions out of the fwp dialect ------*- tablegen -*-===//
#ifndef FWP_CONVERSION_PASSES_TD
#define FWP_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertFwpToCPU : Pass<"convert-fwp-to-cpu", "mlir::ModuleOp"> {
  let summary = "lower every fwp.scan to a CPU function over one (batch, head)";
  let description = [{
    Each `fwp.scan @L` becomes `func.func @L(%T: index, <buffers>)` with the
    `llvm.emit_c_interface` attribute. Buffers, in order: the seq inputs
    (`memref<?xNxf32>`, `memref<?xf32>` for scalars), the params, the states
    (read and written in place: initial value in, final value out) and the
    outputs (`memref<?xNxf32>` / `memref<?xf32>`). Time is an `scf.for`
    (counting down for `reverse` scans); vectors live in registers (`vector`
    dialect), fast weights in memory, updated in place when the old value has
    no later use and copied otherwise; scratch matrices are allocated once per
    call, outside the time loop.

    A scan whose one fast weight is updated linearly (a decay of its rows,
    then a sum or delta-rule write) with coefficients from the time-parallel
    prologue, and only read otherwise, may instead run in the chunkwise form
    (`chunk`): per chunk of `chunk` steps, the reads of the chunk's first
    state for all steps at once, the steps' interactions within the chunk,
    and one update of the state (docs/compiler.md, "The chunkwise form").

    ```
    fwp-opt models/delta_net.mlir --convert-fwp-to-cpu
    fwp-opt models/delta_net.mlir --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=16
    ```
  }];
  let options = [
    Option<"chunk", "chunk", "int64_t", /*default=*/"0",
           "steps per chunk of the chunkwise form where a scan has one "
           "(0: the recurrent form; -1: chosen by the fast weight's size)">
  ];
  let dependentDialects = [
    "::mlir::func::FuncDialect", "::mlir::scf::SCFDialect",
    "::mlir::memref::MemRefDialect", "::mlir::vector::VectorDialect",
    "::mlir::arith::ArithDialect", "::mlir::math::MathDialect"
  ];
}

def FwpApproximateMath : Pass<"fwp-approximate-math", "mlir::ModuleOp"> {
  let summary = "replace f32 exp and tanh by inline polynomial approximations";
  let description = [{
    `convert-math-to-llvm` turns `math.exp` and `math.tanh` into LLVM
    intrinsics that the x86 back end scalarises into one libm call per lane:
    in the CPU kernels' feature maps and gates those calls cost more than the
    fast-weight arithmetic at d = 16. This pass rewrites the f32 forms with
    MLIR's polynomial approximations (range reduction + minimax polynomials,
    a few ulp) into plain arith ops that vectorise. f64 ops are left alone.

    ```
    fwp-opt f.mlir --convert-fwp-to-cpu --fwp-approximate-math
    ```
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def FwpCPUEntryPoints : Pass<"fwp-cpu-entry-points", "mlir::ModuleOp"> {
  let summary = "add packed C entry points fwp_<L>(int64_t T, void **args)";
  let description = [{
    Runs after the lowering to the LLVM dialect. For every function that has
    a C interface wrapper `_mlir_ciface_<L>`, adds
    `llvm.func @fwp_<L>(%T: i64, %args: !llvm.ptr)`, which loads the i-th
    memref descriptor pointer from `args[i]` and calls the wrapper. The
    runtime calls these, whatever the number of buffers.

    ```
    fwp-opt f.mlir --convert-fwp-to-cpu --convert-to-llvm --fwp-cpu-entry-points
    ```
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect"];
}

#endif // FWP_CONVERSION_PASSES_TD
