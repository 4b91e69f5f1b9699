//===- Passes.cpp - Register every fwp pass -------------------------------===//

#include "fwp/Passes.h"

#include "fwp/Conversion/FwpToGPU/FwpToGPU.h"

void fwp::registerFwpPasses() {
  mlir::fwp::registerFwpPasses();
  mlir::fwp::registerFwpGpuPasses();
}
