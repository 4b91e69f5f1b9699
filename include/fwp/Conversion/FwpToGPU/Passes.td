//===- Passes.td - The GPU lowering of the fwp dialect -----*- tablegen -*-===//
#ifndef FWP_CONVERSION_FWPTOGPU_PASSES_TD
#define FWP_CONVERSION_FWPTOGPU_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertFwpToGPU : Pass<"convert-fwp-to-gpu", "mlir::ModuleOp"> {
  let summary = "lower every fwp.scan to one fused GPU kernel";
  let description = [{
    Each `fwp.scan @L` becomes `gpu.module @L_gpu` holding the kernel
    `gpu.func @L_kernel`: one thread block per (batch, head) pair
    (`grid = B * H`), time as an `scf.for` inside the kernel (counting down
    for `reverse` scans). Fast-weight matrices stay in registers for the
    whole sequence, each thread holding a strip of a column
    (`W[s + S r, m]`); per-step vectors live in dynamic shared memory with
    slots reused once their value is dead, and barriers are placed only
    where one thread reads what another wrote. Reductions over a column use
    butterfly `gpu.shuffle`s; reductions over a whole vector are done by
    every warp at once (no barrier needed); the transposed read combines
    warps through shared memory. Kernel arguments are one `!llvm.ptr` per
    buffer (seq inputs, params, states, outputs: the full `[B, H, ...]`
    tensors) followed by `B`, `H`, `T` as `i64`; the scan's ABI is recorded
    on the kernel as attributes (`fwp.args`, `fwp.block_size`,
    `fwp.shared_bytes`, `fwp.scan`, `fwp.kernel_role`). An op without a GPU
    lowering is an error naming it. docs/gpu.md describes the scheme.

    ```
    fwp-opt models/delta_net.mlir --convert-fwp-to-gpu
    fwp-opt models/delta_net.mlir --convert-fwp-to-gpu="block-size=64"
    ```
  }];
  let options = [
    Option<"blockSize", "block-size", "int64_t", /*default=*/"0",
           "threads per block (a power of two, 32 to 1024); 0 chooses from "
           "the size of the fast-weight state">,
    Option<"prefetch", "prefetch", "bool", /*default=*/"true",
           "prefetch the next step's seq rows into L1 (PTX prefetch.L1)">
  ];
  let dependentDialects = [
    "::mlir::gpu::GPUDialect", "::mlir::scf::SCFDialect",
    "::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect", "::mlir::vector::VectorDialect",
    "::mlir::LLVM::LLVMDialect"
  ];
}

def FwpGpuExpandMath : Pass<"fwp-gpu-expand-math", "mlir::gpu::GPUModuleOp"> {
  let summary = "expand f32 math ops into arithmetic and sqrt into the LLVM intrinsic";
  let description = [{
    `convert-gpu-to-nvvm` turns `math.exp`, `math.tanh` and `math.sqrt` into
    calls to CUDA's libdevice (`__nv_expf`, ...), which `gpu-module-to-binary`
    can only resolve when libdevice is installed where the compiler runs; a
    PTX with an unresolved call does not load. This pass makes the f32
    kernels self-contained: `math.exp` and `math.tanh` become MLIR's
    polynomial approximations (arith and math.fma/floor/absf); `math.fma`
    becomes the LLVM intrinsic (PTX `fma.rn`), and `math.sqrt`,
    `math.floor` and `math.absf`, whose intrinsics convert-gpu-to-nvvm also
    sends to libdevice, become one inline PTX instruction each (`sqrt.rn`,
    `cvt.rmi`, `abs`). f64 math is left to libdevice.

    ```
    fwp-opt f.mlir --convert-fwp-to-gpu --pass-pipeline='builtin.module(gpu.module(fwp-gpu-expand-math))'
    ```
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
    "::mlir::vector::VectorDialect", "::mlir::LLVM::LLVMDialect"
  ];
}

def FwpGpuDumpIsa : Pass<"fwp-gpu-dump-isa", "mlir::ModuleOp"> {
  let summary = "write the PTX of every gpu.binary to <dir>/<name>.ptx";
  let description = [{
    After `gpu-module-to-binary` (format `isa`), writes the text of the
    first object of every `gpu.binary @N` to `<dir>/N.ptx`, so that tests
    and people can feed it to `ptxas`. The module is left unchanged.

    ```
    fwp-opt models/delta_net.mlir --fwp-gpu-to-ptx --fwp-gpu-dump-isa=dir=/tmp/ptx -o /dev/null
    ```
  }];
  let options = [
    Option<"dir", "dir", "std::string", /*default=*/"\".\"",
           "the folder to write the .ptx files to">
  ];
}

#endif // FWP_CONVERSION_FWPTOGPU_PASSES_TD
