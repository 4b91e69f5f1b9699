//===- TestCudaCompile.cpp - test-fwp-cuda-compile ------------------------===//
//
// compileScansForCuda (include/fwp/Target/Cuda.h), the API fwp-compile
// calls, from fwp-opt: prints the manifest entry of every kernel and what
// was built; with dir=..., writes a kernel bundle.
//
//===----------------------------------------------------------------------===//

#include "fwp/Target/Cuda.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

namespace fwp::test {
#define GEN_PASS_DECL_TESTFWPCUDACOMPILE
#define GEN_PASS_DEF_TESTFWPCUDACOMPILE
#include "TestPasses.h.inc"
} // namespace fwp::test

using namespace mlir;

namespace {
struct TestFwpCudaCompilePass
    : public fwp::test::impl::TestFwpCudaCompileBase<TestFwpCudaCompilePass> {
  using Base::Base;

  void getDependentDialects(DialectRegistry &registry) const override {
    fwp::registerCudaTargetDialects(registry);
  }

  void runOnOperation() override {
    fwp::CudaOptions options;
    options.chip = chip;
    options.emitCubin = cubin;
    options.blockSize = blockSize;
    options.tuneBlockSize = tune;
    FailureOr<std::vector<fwp::CudaKernel>> kernels =
        fwp::compileScansForCuda(getOperation(), options);
    if (failed(kernels))
      return signalPassFailure();
    if (!dir.empty() &&
        failed(fwp::writeCudaBundle(getOperation(), *kernels, dir)))
      return signalPassFailure();
    // One line per kernel: its role and manifest entry, then what was built.
    llvm::json::Object cuda = fwp::cudaManifestKernels(*kernels);
    for (const fwp::CudaKernel &k : *kernels) {
      llvm::outs() << k.role << ": "
                   << llvm::json::Value(llvm::json::Object(*cuda.getObject(k.role)))
                   << "\n";
      StringRef image = k.cubin;
      llvm::outs() << k.kernel << ": ptx " << k.ptx.size() << " bytes, cubin "
                   << (image.empty()                  ? "none"
                       : image.starts_with("\x7f" "ELF") ? "elf"
                                                        : "not elf")
                   << ", block " << k.blockSize << ", registers "
                   << k.registers << ", spill " << k.spillBytes << "\n";
    }
  }
};
} // namespace
