//===- fwp-opt.cpp - The fwp optimizer driver -----------------------------===//
//
// mlir-opt with the fwp dialect, its passes and the upstream dialects and
// passes it lowers through.
//
//===----------------------------------------------------------------------===//

#include "fwp/InitAll.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  fwp::registerAllDialects(registry);
  fwp::registerAllPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "fwp optimizer driver\n", registry));
}
