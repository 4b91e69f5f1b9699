//===- FwpOps.cpp - Operations of the fwp dialect -------------------------===//

#include "fwp/Dialect/Fwp/IR/FwpOps.h"
#include "fwp/Dialect/Fwp/IR/FwpLimits.h"
#include "fwp/Dialect/Fwp/IR/TimeParallel.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"

#include <cmath>

using namespace mlir;
using namespace mlir::fwp;

#define GET_OP_CLASSES
#include "fwp/Dialect/Fwp/IR/FwpOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

static Type elementTypeOf(Type type) {
  if (auto vector = dyn_cast<VectorType>(type))
    return vector.getElementType();
  if (auto weight = dyn_cast<FastWeightType>(type))
    return weight.getElementType();
  return type;
}

static int64_t vectorSize(Value value) {
  return cast<VectorType>(value.getType()).getDimSize(0);
}

static bool isValidName(StringRef name) {
  if (name.empty() || !(llvm::isAlpha(name[0]) || name[0] == '_'))
    return false;
  return llvm::all_of(name, [](char c) {
    return llvm::isAlnum(c) || c == '_' || c == '.';
  });
}

//===----------------------------------------------------------------------===//
// ScanOp
//===----------------------------------------------------------------------===//

void ScanOp::build(OpBuilder &builder, OperationState &state, StringRef name,
                   DictionaryAttr dims, ArrayRef<StringRef> seqNames,
                   TypeRange seqTypes, ArrayRef<StringRef> paramNames,
                   TypeRange paramTypes, ArrayRef<StringRef> stateNames,
                   TypeRange stateTypes, ArrayRef<StringRef> outputNames,
                   TypeRange outputTypes, bool reverse) {
  state.addAttribute(getSymNameAttrName(state.name),
                     builder.getStringAttr(name));
  state.addAttribute(getDimsAttrName(state.name),
                     dims ? dims : builder.getDictionaryAttr({}));
  state.addAttribute(getSeqNamesAttrName(state.name),
                     builder.getStrArrayAttr(seqNames));
  state.addAttribute(getParamNamesAttrName(state.name),
                     builder.getStrArrayAttr(paramNames));
  state.addAttribute(getStateNamesAttrName(state.name),
                     builder.getStrArrayAttr(stateNames));
  state.addAttribute(getOutputNamesAttrName(state.name),
                     builder.getStrArrayAttr(outputNames));
  state.addAttribute(getOutputTypesAttrName(state.name),
                     builder.getTypeArrayAttr(outputTypes));
  if (reverse)
    state.addAttribute(getReverseAttrName(state.name), builder.getUnitAttr());
  Region *region = state.addRegion();
  Block *block = new Block();
  region->push_back(block);
  SmallVector<Type> argTypes;
  llvm::append_range(argTypes, seqTypes);
  llvm::append_range(argTypes, paramTypes);
  llvm::append_range(argTypes, stateTypes);
  for (Type type : argTypes)
    block->addArgument(type, state.location);
}

YieldOp ScanOp::getYield() {
  return dyn_cast<YieldOp>(getBodyBlock().getTerminator());
}

int64_t ScanOp::getDim(StringRef name) {
  if (auto value = dyn_cast_or_null<IntegerAttr>(getDims().get(name)))
    return value.getInt();
  return 0;
}

void ScanOp::getAsmBlockArgumentNames(Region &region,
                                      OpAsmSetValueNameFn setNameFn) {
  if (region.empty())
    return;
  SmallVector<Attribute> names;
  llvm::append_range(names, getSeqNames());
  llvm::append_range(names, getParamNames());
  llvm::append_range(names, getStateNames());
  for (auto [arg, name] : llvm::zip(region.front().getArguments(), names))
    setNameFn(arg, cast<StringAttr>(name).getValue());
}

ParseResult ScanOp::parse(OpAsmParser &parser, OperationState &result) {
  Builder &builder = parser.getBuilder();
  StringAttr nameAttr;
  if (parser.parseSymbolName(nameAttr, getSymNameAttrName(result.name),
                             result.attributes))
    return failure();
  if (succeeded(parser.parseOptionalKeyword("reverse")))
    result.addAttribute(getReverseAttrName(result.name), builder.getUnitAttr());

  SmallVector<NamedAttribute> dims;
  if (succeeded(parser.parseOptionalKeyword("dims"))) {
    if (parser.parseCommaSeparatedList(
            OpAsmParser::Delimiter::Paren, [&]() -> ParseResult {
              std::string key;
              int64_t value = 0;
              if (parser.parseKeywordOrString(&key) || parser.parseEqual() ||
                  parser.parseInteger(value))
                return failure();
              dims.push_back(builder.getNamedAttr(
                  key, builder.getI64IntegerAttr(value)));
              return success();
            }))
      return failure();
  }
  result.addAttribute(getDimsAttrName(result.name),
                      builder.getDictionaryAttr(dims));

  SmallVector<OpAsmParser::Argument> args;
  auto parseArgGroup = [&](StringRef keyword, StringAttr attrName) {
    SmallVector<Attribute> names;
    if (succeeded(parser.parseOptionalKeyword(keyword))) {
      if (parser.parseCommaSeparatedList(
              OpAsmParser::Delimiter::Paren, [&]() -> ParseResult {
                OpAsmParser::Argument arg;
                if (parser.parseArgument(arg, /*allowType=*/true))
                  return failure();
                names.push_back(
                    builder.getStringAttr(arg.ssaName.name.drop_front()));
                args.push_back(arg);
                return success();
              }))
        return failure();
    }
    result.addAttribute(attrName, builder.getArrayAttr(names));
    return success();
  };
  if (failed(parseArgGroup("seq", getSeqNamesAttrName(result.name))) ||
      failed(parseArgGroup("params", getParamNamesAttrName(result.name))) ||
      failed(parseArgGroup("states", getStateNamesAttrName(result.name))))
    return failure();

  SmallVector<Attribute> outputNames, outputTypes;
  if (succeeded(parser.parseOptionalKeyword("outputs"))) {
    if (parser.parseCommaSeparatedList(
            OpAsmParser::Delimiter::Paren, [&]() -> ParseResult {
              std::string name;
              Type type;
              if (parser.parseKeywordOrString(&name) || parser.parseColon() ||
                  parser.parseType(type))
                return failure();
              outputNames.push_back(builder.getStringAttr(name));
              outputTypes.push_back(TypeAttr::get(type));
              return success();
            }))
      return failure();
  }
  result.addAttribute(getOutputNamesAttrName(result.name),
                      builder.getArrayAttr(outputNames));
  result.addAttribute(getOutputTypesAttrName(result.name),
                      builder.getArrayAttr(outputTypes));

  if (parser.parseOptionalAttrDictWithKeyword(result.attributes))
    return failure();
  Region *body = result.addRegion();
  return parser.parseRegion(*body, args);
}

void ScanOp::print(OpAsmPrinter &p) {
  p << ' ';
  p.printSymbolName(getSymName());
  if (getReverse())
    p << " reverse";
  if (!getDims().empty()) {
    p << " dims(";
    llvm::interleaveComma(getDims(), p, [&](NamedAttribute dim) {
      p.printKeywordOrString(dim.getName().getValue());
      p << " = " << cast<IntegerAttr>(dim.getValue()).getInt();
    });
    p << ')';
  }
  auto printGroup = [&](StringRef keyword, Block::BlockArgListType args) {
    if (args.empty())
      return;
    p.printNewline();
    p << "    " << keyword << '(';
    llvm::interleaveComma(args, p, [&](BlockArgument arg) {
      p.printRegionArgument(arg);
    });
    p << ')';
  };
  printGroup("seq", getSeqArgs());
  printGroup("params", getParamArgs());
  printGroup("states", getStateArgs());
  if (!getOutputNames().empty()) {
    p.printNewline();
    p << "    outputs(";
    llvm::interleaveComma(
        llvm::zip(getOutputNames(), getOutputTypes()), p, [&](auto pair) {
          p.printKeywordOrString(cast<StringAttr>(std::get<0>(pair)).getValue());
          p << " : " << cast<TypeAttr>(std::get<1>(pair)).getValue();
        });
    p << ')';
  }
  p.printOptionalAttrDictWithKeyword(
      (*this)->getAttrs(),
      {getSymNameAttrName(), getDimsAttrName(), getSeqNamesAttrName(),
       getParamNamesAttrName(), getStateNamesAttrName(),
       getOutputNamesAttrName(), getOutputTypesAttrName(),
       getReverseAttrName()});
  p << ' ';
  p.printRegion(getBody(), /*printEntryBlockArgs=*/false,
                /*printBlockTerminators=*/true);
}

static bool isSeqOrOutputType(Type type) {
  return isa<FloatType>(type) ||
         (isa<VectorType>(type) && cast<VectorType>(type).getRank() == 1);
}

LogicalResult ScanOp::verify() {
  // Names: valid, unique across the block arguments, unique outputs.
  llvm::StringSet<> argNames;
  for (auto [group, names] :
       {std::pair<StringRef, ArrayAttr>{"seq", getSeqNames()},
        {"param", getParamNames()},
        {"state", getStateNames()}}) {
    for (Attribute attr : names) {
      auto name = dyn_cast<StringAttr>(attr);
      if (!name || !isValidName(name.getValue()))
        return emitOpError() << group << " name " << attr
                             << " is not an identifier ([A-Za-z_][A-Za-z0-9_.]*)";
      if (!argNames.insert(name.getValue()).second)
        return emitOpError() << "name '" << name.getValue()
                             << "' is used twice among seq, params and states";
    }
  }
  llvm::StringSet<> outputNames;
  for (Attribute attr : getOutputNames()) {
    auto name = cast<StringAttr>(attr);
    if (!isValidName(name.getValue()))
      return emitOpError() << "output name " << attr
                           << " is not an identifier ([A-Za-z_][A-Za-z0-9_.]*)";
    if (!outputNames.insert(name.getValue()).second)
      return emitOpError() << "output name '" << name.getValue()
                           << "' is used twice";
  }
  if (getOutputTypes().size() != getOutputNames().size())
    return emitOpError() << "has " << getOutputNames().size()
                         << " output names but " << getOutputTypes().size()
                         << " output types";

  // Dims: positive and within the limits. Two dims may share a value:
  // fwp-specialize-dims tells them apart by how the ops use them.
  for (NamedAttribute dim : getDims()) {
    auto value = dyn_cast<IntegerAttr>(dim.getValue());
    if (!value || value.getInt() <= 0)
      return emitOpError() << "dim '" << dim.getName().getValue()
                           << "' must be a positive integer, got "
                           << dim.getValue();
    if (value.getInt() > kMaxDimSize)
      return emitOpError() << "dim '" << dim.getName().getValue() << "' is "
                           << value.getInt()
                           << ", more than the largest supported size "
                           << kMaxDimSize;
  }

  // Block arguments: one per name, of the right kinds.
  Block &block = getBodyBlock();
  unsigned expected = getNumSeq() + getNumParams() + getNumStates();
  if (block.getNumArguments() != expected)
    return emitOpError() << "body has " << block.getNumArguments()
                         << " arguments but seq, params and states name "
                         << expected;
  Type elementType;
  auto checkElementType = [&](Type type, StringRef what,
                              StringRef name) -> LogicalResult {
    Type element = elementTypeOf(type);
    if (!elementType)
      elementType = element;
    if (element != elementType)
      return emitOpError() << what << " '" << name << "' has element type "
                           << element << " but the scan computes in "
                           << elementType;
    return success();
  };
  // Seq inputs are per-step scalars or vectors; params, states and outputs
  // may also be matrices.
  auto checkKind = [&](Type type, StringRef what, Attribute name,
                       bool allowMatrix) -> LogicalResult {
    StringRef nameText = cast<StringAttr>(name).getValue();
    bool ok = isSeqOrOutputType(type) ||
              (allowMatrix && isa<FastWeightType>(type));
    if (!ok) {
      InFlightDiagnostic diag = emitOpError() << what << " '" << nameText << "' must be ";
      if (allowMatrix)
        diag << "a scalar, a 1-D vector or a !fwp.fast_weight";
      else
        diag << "a float scalar or a 1-D vector";
      return diag << ", got " << type;
    }
    return checkElementType(type, what, nameText);
  };
  // A backward scan's stored states (`tape.<state>.prev`) are matrices per
  // step; a layer's own seq inputs are not.
  for (auto [arg, name] : llvm::zip(getSeqArgs(), getSeqNames()))
    if (failed(checkKind(arg.getType(), "seq input", name,
                         cast<StringAttr>(name).getValue().starts_with("tape."))))
      return failure();
  for (auto [arg, name] : llvm::zip(getParamArgs(), getParamNames()))
    if (failed(checkKind(arg.getType(), "param", name, true)))
      return failure();
  for (auto [arg, name] : llvm::zip(getStateArgs(), getStateNames()))
    if (failed(checkKind(arg.getType(), "state", name, true)))
      return failure();
  for (auto [type, name] : llvm::zip(getOutputTypes(), getOutputNames()))
    if (failed(checkKind(cast<TypeAttr>(type).getValue(), "output", name, true)))
      return failure();

  // The dims must agree with the types: every dim is a size of some
  // argument or output (the manifest records the dims, the code computes
  // with the types' sizes), and no size exceeds its limit (FwpLimits.h).
  llvm::DenseSet<int64_t> sizes;
  SmallVector<Type> types = llvm::to_vector(block.getArgumentTypes());
  for (Attribute type : getOutputTypes())
    types.push_back(cast<TypeAttr>(type).getValue());
  for (Type type : types) {
    SmallVector<int64_t, 2> shape;
    int64_t limit = kMaxDimSize;
    if (auto vector = dyn_cast<VectorType>(type)) {
      shape.push_back(vector.getDimSize(0));
      limit = kMaxVectorSize;
    } else if (auto weight = dyn_cast<FastWeightType>(type)) {
      shape.append({weight.getKeyDim(), weight.getValueDim()});
    }
    for (int64_t size : shape) {
      if (size > limit)
        return emitOpError() << "has the type " << type << ", larger than the "
                             << "largest supported size " << limit;
      sizes.insert(size);
    }
  }
  for (NamedAttribute dim : getDims()) {
    int64_t value = cast<IntegerAttr>(dim.getValue()).getInt();
    if (!sizes.contains(value))
      return emitOpError() << "dim '" << dim.getName().getValue() << "' is "
                           << value
                           << " but no seq input, param, state or output has "
                              "that size: the dims must agree with the types";
  }
  return success();
}

LogicalResult ScanOp::verifyRegions() {
  auto yield = dyn_cast_or_null<YieldOp>(
      getBodyBlock().empty() ? nullptr : &getBodyBlock().back());
  if (!yield)
    return emitOpError() << "body must end in fwp.yield";
  unsigned numStates = getNumStates();
  unsigned expected = numStates + getNumOutputs();
  if (yield.getValues().size() != expected)
    return yield.emitOpError()
           << "yields " << yield.getValues().size() << " values but the scan has "
           << numStates << " states and " << getNumOutputs()
           << " outputs (states first, then outputs)";
  for (auto [index, value] : llvm::enumerate(yield.getValues())) {
    Type want;
    StringRef what, name;
    if (index < numStates) {
      want = getStateArgs()[index].getType();
      what = "state";
      name = cast<StringAttr>(getStateNames()[index]).getValue();
    } else {
      want = cast<TypeAttr>(getOutputTypes()[index - numStates]).getValue();
      what = "output";
      name = cast<StringAttr>(getOutputNames()[index - numStates]).getValue();
    }
    if (value.getType() != want)
      return yield.emitOpError()
             << "operand #" << index << " for " << what << " '" << name
             << "' has type " << value.getType() << " but the " << what
             << " has type " << want;
  }
  return verifyStepPhases(*this);
}

//===----------------------------------------------------------------------===//
// Reads and writes
//===----------------------------------------------------------------------===//

static LogicalResult checkVectorOperand(Operation *op, StringRef what,
                                        Value value, int64_t size,
                                        StringRef dimName, FastWeightType w) {
  auto type = cast<VectorType>(value.getType());
  if (type.getElementType() != w.getElementType())
    return op->emitOpError() << what << " has element type "
                             << type.getElementType() << " but the fast weight "
                             << w << " holds " << w.getElementType();
  if (type.getDimSize(0) != size)
    return op->emitOpError() << what << " has " << type.getDimSize(0)
                             << " entries but the fast weight " << w
                             << " has " << dimName << " dimension " << size;
  return success();
}

LogicalResult ReadOp::verify() {
  auto w = getWeight().getType();
  if (failed(checkVectorOperand(*this, "query", getQuery(), w.getKeyDim(),
                                "key", w)) ||
      failed(checkVectorOperand(*this, "result", getResult(), w.getValueDim(),
                                "value", w)))
    return failure();
  return success();
}

LogicalResult ReadTransposedOp::verify() {
  auto w = getWeight().getType();
  if (failed(checkVectorOperand(*this, "value", getValue(), w.getValueDim(),
                                "value", w)) ||
      failed(checkVectorOperand(*this, "result", getResult(), w.getKeyDim(),
                                "key", w)))
    return failure();
  return success();
}

LogicalResult WriteSumOp::verify() {
  auto w = getWeight().getType();
  if (failed(checkVectorOperand(*this, "key", getKey(), w.getKeyDim(), "key",
                                w)) ||
      failed(checkVectorOperand(*this, "value", getValue(), w.getValueDim(),
                                "value", w)))
    return failure();
  return success();
}

/// Whether `v` is a `fwp.constant 0.0` (of any type).
static bool isZeroConstant(Value v) {
  auto constant = v.getDefiningOp<ConstantOp>();
  return constant && constant.isZero();
}

OpFoldResult WriteSumOp::fold(FoldAdaptor) {
  // W + 0 (x) v = W + k (x) 0 = W.
  if (isZeroConstant(getKey()) || isZeroConstant(getValue()))
    return getWeight();
  return {};
}

namespace {

/// write_sum(write_sum(W, k1, v), k2, c v) = write_sum(W, k1 + c k2, v):
/// one rank-one update instead of two when the second value is the first
/// scaled (by fwp.scale and fwp.neg). The adjoint of a read taken before a
/// delta write makes such pairs in the backward (docs/design.md), where
/// every rank-one update of the carried adjoint costs a pass over it, or a
/// column of a chunk's factors.
struct MergeProportionalWrites : OpRewritePattern<WriteSumOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(WriteSumOp op,
                                PatternRewriter &rewriter) const override {
    auto first = op.getWeight().getDefiningOp<WriteSumOp>();
    if (!first || !first->hasOneUse())
      return failure();
    // op's value = (-1)^negations * prod(factors) * first's value.
    SmallVector<Value> factors;
    bool negated = false;
    Value value = op.getValue();
    while (value != first.getValue()) {
      if (auto scale = value.getDefiningOp<ScaleOp>()) {
        factors.push_back(scale.getFactor());
        value = scale.getX();
      } else if (auto neg = value.getDefiningOp<NegOp>()) {
        negated = !negated;
        value = neg.getX();
      } else {
        return failure();
      }
    }
    Location loc = op.getLoc();
    Value key = op.getKey();
    if (!factors.empty()) {
      Value factor = factors.front();
      for (Value next : ArrayRef(factors).drop_front())
        factor = MulOp::create(rewriter, loc, factor, next);
      key = ScaleOp::create(rewriter, loc, key, factor);
    }
    Value merged =
        negated ? SubOp::create(rewriter, loc, first.getKey(), key).getResult()
                : AddOp::create(rewriter, loc, first.getKey(), key).getResult();
    rewriter.replaceOpWithNewOp<WriteSumOp>(op, first.getWeight(), merged,
                                            first.getValue());
    rewriter.eraseOp(first);
    return success();
  }
};

} // namespace

void WriteSumOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                             MLIRContext *context) {
  patterns.add<MergeProportionalWrites>(context);
}

LogicalResult WriteDeltaOp::verify() {
  auto w = getWeight().getType();
  if (failed(checkVectorOperand(*this, "key", getKey(), w.getKeyDim(), "key",
                                w)) ||
      failed(checkVectorOperand(*this, "value", getValue(), w.getValueDim(),
                                "value", w)))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// Feature maps and dense ops
//===----------------------------------------------------------------------===//

LogicalResult SumNormOp::verify() {
  if (getEps().convertToDouble() < 0.0)
    return emitOpError() << "eps must be non-negative, got "
                         << getEps().convertToDouble();
  return success();
}

static LogicalResult verifyDpfpSizes(Operation *op, Value x, Value features,
                                     int64_t nu, StringRef featuresWhat) {
  int64_t n = vectorSize(x);
  if (nu > 2 * n - 1)
    return op->emitOpError() << "nu = " << nu << " exceeds 2n - 1 = "
                             << 2 * n - 1 << " for an input of " << n
                             << " entries";
  auto featuresType = cast<VectorType>(features.getType());
  if (featuresType.getElementType() !=
      cast<VectorType>(x.getType()).getElementType())
    return op->emitOpError() << featuresWhat << " has element type "
                             << featuresType.getElementType()
                             << " but the input has "
                             << cast<VectorType>(x.getType()).getElementType();
  if (featuresType.getDimSize(0) != 2 * n * nu)
    return op->emitOpError() << featuresWhat << " has "
                             << featuresType.getDimSize(0)
                             << " entries but DPFP-" << nu << " of " << n
                             << " entries has 2 * " << n << " * " << nu
                             << " = " << 2 * n * nu;
  return success();
}

LogicalResult DpfpOp::verify() {
  return verifyDpfpSizes(*this, getX(), getResult(), getNu(), "result");
}

LogicalResult DpfpGradOp::verify() {
  return verifyDpfpSizes(*this, getX(), getGrad(), getNu(), "grad");
}

LogicalResult LayerNormOp::verify() {
  if (getEps().convertToDouble() <= 0.0)
    return emitOpError() << "eps must be positive, got "
                         << getEps().convertToDouble();
  return success();
}

LogicalResult LayerNormGradOp::verify() {
  if (getEps().convertToDouble() <= 0.0)
    return emitOpError() << "eps must be positive, got "
                         << getEps().convertToDouble();
  return success();
}

OpFoldResult NegOp::fold(FoldAdaptor) {
  if (auto inner = getX().getDefiningOp<NegOp>())
    return inner.getX();
  return {};
}

OpFoldResult AddOp::fold(FoldAdaptor) {
  if (isZeroConstant(getRhs()))
    return getLhs();
  if (isZeroConstant(getLhs()))
    return getRhs();
  return {};
}

OpFoldResult SubOp::fold(FoldAdaptor) {
  if (isZeroConstant(getRhs()))
    return getLhs();
  return {};
}

//===----------------------------------------------------------------------===//
// Decaying fast weights and normalisation
//===----------------------------------------------------------------------===//

LogicalResult ScaleRowsOp::verify() {
  auto w = getWeight().getType();
  auto factors = cast<VectorType>(getFactors().getType());
  if (factors.getElementType() != w.getElementType())
    return emitOpError() << "factors have element type "
                         << factors.getElementType() << " but the weight has "
                         << w.getElementType();
  if (factors.getDimSize(0) != w.getKeyDim())
    return emitOpError() << "factors have " << factors.getDimSize(0)
                         << " entries but the weight has " << w.getKeyDim()
                         << " key rows";
  return success();
}

LogicalResult RowDotOp::verify() {
  auto w = getLhs().getType();
  auto result = cast<VectorType>(getResult().getType());
  if (result.getElementType() != w.getElementType())
    return emitOpError() << "result has element type " << result.getElementType()
                         << " but the weights have " << w.getElementType();
  if (result.getDimSize(0) != w.getKeyDim())
    return emitOpError() << "result has " << result.getDimSize(0)
                         << " entries but the weights have " << w.getKeyDim()
                         << " key rows";
  return success();
}

LogicalResult L2NormOp::verify() {
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError() << "eps must be positive, got "
                         << getEps().convertToDouble();
  return success();
}

LogicalResult ScaleConstOp::verify() {
  if (!std::isfinite(getFactor().convertToDouble()) ||
      !std::isfinite(getSizePower().convertToDouble()))
    return emitOpError() << "factor and size_power must be finite";
  return success();
}
