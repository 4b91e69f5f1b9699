//===- FwpOps.h - Operations of the fwp dialect -----------------*- C++ -*-===//
#ifndef FWP_DIALECT_FWP_IR_FWPOPS_H
#define FWP_DIALECT_FWP_IR_FWPOPS_H

#include "fwp/Dialect/Fwp/IR/FwpDialect.h"
#include "fwp/Dialect/Fwp/IR/FwpInterfaces.h"
#include "fwp/Dialect/Fwp/IR/FwpTypes.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"

#define GET_OP_CLASSES
#include "fwp/Dialect/Fwp/IR/FwpOps.h.inc"

#endif // FWP_DIALECT_FWP_IR_FWPOPS_H
