//===- Passes.h - Conversions out of the fwp dialect ------------*- C++ -*-===//
#ifndef FWP_CONVERSION_PASSES_H
#define FWP_CONVERSION_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::fwp {

#define GEN_PASS_DECL
#include "fwp/Conversion/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "fwp/Conversion/Passes.h.inc"

/// Name of the packed entry point of the CPU function of scan `scanName`.
inline std::string cpuEntryPointName(llvm::StringRef scanName) {
  return ("fwp_" + scanName).str();
}

} // namespace mlir::fwp

#endif // FWP_CONVERSION_PASSES_H
