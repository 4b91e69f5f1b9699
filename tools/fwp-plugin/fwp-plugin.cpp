//===- fwp-plugin.cpp - fwp as a plugin of the stock mlir-opt -------------===//
//
//   mlir-opt-22 --load-dialect-plugin=FwpPlugin.so --load-pass-plugin=FwpPlugin.so
//
//===----------------------------------------------------------------------===//

#include "fwp/Dialect/Fwp/IR/FwpDialect.h"
#include "fwp/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/Plugins/DialectPlugin.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "llvm/Config/llvm-config.h"

extern "C" LLVM_ATTRIBUTE_WEAK mlir::DialectPluginLibraryInfo
mlirGetDialectPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "fwp", LLVM_VERSION_STRING,
          [](mlir::DialectRegistry *registry) {
            registry->insert<mlir::fwp::FwpDialect>();
          }};
}

extern "C" LLVM_ATTRIBUTE_WEAK mlir::PassPluginLibraryInfo
mlirGetPassPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "fwp", LLVM_VERSION_STRING,
          []() { fwp::registerFwpPasses(); }};
}
