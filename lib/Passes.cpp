//===- Passes.cpp - Register every fwp pass -------------------------------===//

#include "fwp/Passes.h"

void fwp::registerFwpPasses() { mlir::fwp::registerFwpPasses(); }
