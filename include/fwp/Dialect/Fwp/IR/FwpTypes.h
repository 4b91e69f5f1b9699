//===- FwpTypes.h - Types of the fwp dialect --------------------*- C++ -*-===//
#ifndef FWP_DIALECT_FWP_IR_FWPTYPES_H
#define FWP_DIALECT_FWP_IR_FWPTYPES_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Types.h"

#define GET_TYPEDEF_CLASSES
#include "fwp/Dialect/Fwp/IR/FwpOpsTypes.h.inc"

#endif // FWP_DIALECT_FWP_IR_FWPTYPES_H
