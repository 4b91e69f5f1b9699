//===- FwpDialect.h - The fwp dialect ---------------------------*- C++ -*-===//
#ifndef FWP_DIALECT_FWP_IR_FWPDIALECT_H
#define FWP_DIALECT_FWP_IR_FWPDIALECT_H

#include "mlir/IR/Dialect.h"

#include "fwp/Dialect/Fwp/IR/FwpOpsDialect.h.inc"

#endif // FWP_DIALECT_FWP_IR_FWPDIALECT_H
