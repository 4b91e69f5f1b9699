//===- InitAll.cpp - Register everything fwp tools use --------------------===//

#include "fwp/InitAll.h"

#include "fwp/Dialect/Fwp/IR/FwpDialect.h"
#include "fwp/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

void fwp::registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<mlir::fwp::FwpDialect>();
  // Upstream dialects and their LLVM-translation/interface extensions: fwp-opt
  // shows every stage of the lowering, so it must parse all of them.
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  // gpu-module-to-binary translates gpu.modules (NVVM) to LLVM IR.
  mlir::registerAllGPUToLLVMIRTranslations(registry);
}

void fwp::registerAllPasses() {
  mlir::registerAllPasses();
  fwp::registerFwpPasses();
}
