//===- Passes.cpp - Register every fwp pass -------------------------------===//

#include "fwp/Passes.h"

#include "fwp/Conversion/FwpToGPU/FwpToGPU.h"
#include "fwp/Conversion/Passes.h"
#include "fwp/Target/Artifact.h"

void fwp::registerFwpPasses() {
  mlir::fwp::registerFwpPasses();
  mlir::fwp::registerFwpConversionPasses();
  mlir::fwp::registerFwpGpuPasses();
  fwp::registerFwpPipelines();
}
