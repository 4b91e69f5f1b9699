//===- TestPasses.td - fwp's test passes -------------------*- tablegen -*-===//
//
// Passes that only tests use. They live in the FwpTestPasses library, which
// fwp-opt links (when built with the tests); fwp-compile, the plugin and the
// compiler libraries do not.
//
//===----------------------------------------------------------------------===//
#ifndef FWP_TEST_LIB_TESTPASSES_TD
#define FWP_TEST_LIB_TESTPASSES_TD

include "mlir/Pass/PassBase.td"

def TestFwpGpuKernels : Pass<"test-fwp-gpu-kernels", "mlir::ModuleOp"> {
  let summary = "run the GPU kernels of every scan on a simulated GPU and "
                "compare them with the fwp semantics";
  let description = [{
    A test pass for machines without a GPU. For every `fwp.scan` it lowers a
    copy with `convert-fwp-to-gpu`, runs the kernel on random inputs with an
    interpreter of the kernel IR that executes the threads of a block in
    lock step (checking that barriers and shuffles run in converged code and
    that no thread reads shared memory another thread wrote since the last
    barrier), evaluates the scan directly from the ops' definitions in double
    precision, and compares outputs and final states. Prints one line per
    scan; fails when an error exceeds `tol`.

    ```
    fwp-opt models/delta_net.mlir --test-fwp-gpu-kernels="batch=2 heads=2 steps=5"
    ```
  }];
  let options = [
    Option<"batch", "batch", "int64_t", /*default=*/"2", "B">,
    Option<"heads", "heads", "int64_t", /*default=*/"2", "H">,
    Option<"steps", "steps", "int64_t", /*default=*/"5", "T">,
    Option<"seed", "seed", "uint64_t", /*default=*/"1", "random seed">,
    Option<"tol", "tol", "double", /*default=*/"2.0e-4",
           "largest accepted |gpu - ref| / (1 + |ref|)">,
    Option<"blockSize", "block-size", "int64_t", /*default=*/"0",
           "threads per block (0: as convert-fwp-to-gpu chooses)">,
    Option<"expandMath", "expand-math", "bool", /*default=*/"false",
           "simulate the kernel after fwp-gpu-expand-math (the math the "
           "PTX really computes)">
  ];
  let dependentDialects = [
    "::mlir::gpu::GPUDialect", "::mlir::scf::SCFDialect",
    "::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect", "::mlir::vector::VectorDialect",
    "::mlir::LLVM::LLVMDialect"
  ];
}

def TestFwpCudaCompile : Pass<"test-fwp-cuda-compile", "mlir::ModuleOp"> {
  let summary = "print the kernels.cuda manifest object that "
                "compileScansForCuda builds for the module's scans";
  let description = [{
    Calls `fwp::compileScansForCuda` (include/fwp/Target/Cuda.h), the API
    fwp-compile uses, on the module and prints one line per kernel with its
    role and manifest entry, then one with what was built (PTX size, cubin,
    block size, registers, spills). With `dir=`, also writes the kernel
    bundle (`writeCudaBundle`). The module is left unchanged.

    ```
    fwp-opt models/rdn.mlir --fwp-differentiate --test-fwp-cuda-compile -o /dev/null
    ```
  }];
  let options = [
    Option<"chip", "chip", "std::string", /*default=*/"\"sm_90\"", "sm_XX">,
    Option<"cubin", "cubin", "bool", /*default=*/"false",
           "assemble with ptxas">,
    Option<"dir", "dir", "std::string", /*default=*/"\"\"",
           "write a kernel bundle here">,
    Option<"tune", "tune", "bool", /*default=*/"false",
           "let ptxas's spills choose the block size">,
    Option<"blockSize", "block-size", "int64_t", /*default=*/"0",
           "threads per block (0: automatic)">
  ];
}

#endif // FWP_TEST_LIB_TESTPASSES_TD
