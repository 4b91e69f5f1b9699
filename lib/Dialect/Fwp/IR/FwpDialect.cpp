//===- FwpDialect.cpp - The fwp dialect and its types ---------------------===//

#include "fwp/Dialect/Fwp/IR/FwpDialect.h"
#include "fwp/Dialect/Fwp/IR/FwpOps.h"
#include "fwp/Dialect/Fwp/IR/FwpTypes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::fwp;

#include "fwp/Dialect/Fwp/IR/FwpOpsDialect.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "fwp/Dialect/Fwp/IR/FwpOpsTypes.cpp.inc"

void FwpDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "fwp/Dialect/Fwp/IR/FwpOps.cpp.inc"
      >();
  addTypes<
#define GET_TYPEDEF_LIST
#include "fwp/Dialect/Fwp/IR/FwpOpsTypes.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// FastWeightType
//===----------------------------------------------------------------------===//

// !fwp.fast_weight<KxVxf32>
Type FastWeightType::parse(AsmParser &parser) {
  SmallVector<int64_t, 2> shape;
  Type elementType;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess() ||
      parser.parseDimensionList(shape, /*allowDynamic=*/false,
                                /*withTrailingX=*/true) ||
      parser.parseType(elementType) || parser.parseGreater())
    return {};
  if (shape.size() != 2) {
    parser.emitError(loc, "a fast weight has exactly two dimensions "
                          "(key x value), got ")
        << shape.size();
    return {};
  }
  auto floatType = dyn_cast<FloatType>(elementType);
  if (!floatType) {
    parser.emitError(loc, "fast-weight element type must be a float, got ")
        << elementType;
    return {};
  }
  return parser.getChecked<FastWeightType>(parser.getContext(), shape[0],
                                           shape[1], floatType);
}

void FastWeightType::print(AsmPrinter &printer) const {
  printer << '<' << getKeyDim() << 'x' << getValueDim() << 'x'
          << getElementType() << '>';
}

LogicalResult
FastWeightType::verify(function_ref<InFlightDiagnostic()> emitError,
                       int64_t keyDim, int64_t valueDim, FloatType elementType) {
  if (keyDim <= 0 || valueDim <= 0)
    return emitError() << "fast-weight dimensions must be positive, got "
                       << keyDim << "x" << valueDim;
  if (!elementType.isF32() && !elementType.isF64())
    return emitError() << "fast-weight element type must be f32 or f64, got "
                       << elementType;
  return success();
}
