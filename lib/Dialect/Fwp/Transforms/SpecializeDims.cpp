//===- SpecializeDims.cpp - Re-specialise scans to other sizes ------------===//
//
// Every type dimension in a scan is resolved to a symbolic size, `c * dim` or
// a constant, before anything is rewritten, so `--dim` changes sizes by the
// dim they stand for and never by their value:
//
//  * a result's size follows from its op's operands: the operand size it
//    equals (`fwp.read` returns the weight's value size), or a multiple of one
//    (`fwp.dpfp` returns 2*nu*d);
//  * a block argument's size (and that of an op without operands) is the dim
//    of that value, else a multiple of a dim, else a constant. When several
//    dims fit (two dims of one value, or 64 = 4*d = 1*d_ff), every choice is
//    tried on a copy of the scan with pairwise distinct probe values for the
//    dims, and only the choices the ops' verifiers accept are kept; if they
//    disagree on the result, the sizes are ambiguous and the pass says so.
//
//===----------------------------------------------------------------------===//

#include "fwp/Dialect/Fwp/Transforms/Passes.h"

#include "fwp/Dialect/Fwp/IR/FwpLimits.h"
#include "fwp/Dialect/Fwp/IR/FwpOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_FWPSPECIALIZEDIMS
#include "fwp/Dialect/Fwp/Transforms/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;

namespace {

/// A size as the model means it: `coefficient * dims[dim]`, or the constant
/// `coefficient` when `dim` is empty.
struct SymbolicSize {
  StringRef dim;
  int64_t coefficient = 1;

  bool operator==(const SymbolicSize &other) const {
    return dim == other.dim && coefficient == other.coefficient;
  }
  int64_t evaluate(const llvm::StringMap<int64_t> &dims) const {
    return dim.empty() ? coefficient : coefficient * dims.lookup(dim);
  }
};

using Shape = SmallVector<int64_t, 2>;
using SymbolicShape = SmallVector<SymbolicSize, 2>;

/// The sizes of a type: none for a scalar, one for a vector, key and value
/// sizes for a fast weight.
Shape shapeOf(Type type) {
  if (auto vector = dyn_cast<VectorType>(type))
    return {vector.getDimSize(0)};
  if (auto weight = dyn_cast<FastWeightType>(type))
    return {weight.getKeyDim(), weight.getValueDim()};
  return {};
}

Type withShape(Type type, ArrayRef<int64_t> shape, FloatType element) {
  auto elementOf = [&](Type old) {
    return element ? Type(element) : old;
  };
  if (auto vector = dyn_cast<VectorType>(type))
    return VectorType::get({shape[0]}, elementOf(vector.getElementType()));
  if (auto weight = dyn_cast<FastWeightType>(type))
    return FastWeightType::get(
        type.getContext(), shape[0], shape[1],
        cast<FloatType>(elementOf(weight.getElementType())));
  if (isa<FloatType>(type))
    return elementOf(type);
  return type;
}

/// The symbolic sizes a size with no operand to follow may stand for: the
/// dims of that value, else the dims it is a multiple of, else itself.
SmallVector<SymbolicSize> candidatesFor(int64_t size,
                                        const llvm::StringMap<int64_t> &dims,
                                        ArrayRef<StringRef> dimOrder,
                                        bool multiplesToo) {
  SmallVector<SymbolicSize> exact, multiples;
  for (StringRef name : dimOrder) {
    int64_t value = dims.lookup(name);
    if (value == size)
      exact.push_back({name, 1});
    else if (size % value == 0)
      multiples.push_back({name, size / value});
  }
  if (multiplesToo)
    exact.append(multiples);
  if (!exact.empty())
    return exact;
  if (!multiples.empty())
    return multiples;
  return {SymbolicSize{StringRef(), size}};
}

/// Resolves every value's sizes to symbolic sizes. Where a size has more than
/// one reading (a decision point), `choices` says which one to take; points
/// met beyond `choices` take their first reading and are appended to it, and
/// `counts` receives the number of readings of every point met, so that the
/// caller can walk all combinations.
class SizeResolver {
public:
  /// With `multiplesToo`, a size equal to a dim may also read as a multiple
  /// of another (64 = d_ff or 4*d); without it, the equal dim is preferred.
  /// Readings that give the same size under `newDims` are not told apart:
  /// whichever is meant, the result is the same.
  SizeResolver(ScanOp scan, const llvm::StringMap<int64_t> &dims,
               const llvm::StringMap<int64_t> &newDims,
               ArrayRef<StringRef> dimOrder, bool multiplesToo)
      : scan(scan), dims(dims), newDims(newDims), dimOrder(dimOrder),
        multiplesToo(multiplesToo) {}

  llvm::DenseMap<Value, SymbolicShape>
  resolve(SmallVectorImpl<unsigned> &choices,
          SmallVectorImpl<unsigned> &counts) const {
    llvm::DenseMap<Value, SymbolicShape> shapes;
    counts.clear();
    auto decide = [&](ArrayRef<SymbolicSize> readings) {
      if (llvm::all_of(readings, [&](const SymbolicSize &reading) {
            return reading.evaluate(newDims) ==
                   readings.front().evaluate(newDims);
          }))
        return readings.front();
      unsigned point = counts.size();
      counts.push_back(readings.size());
      if (point == choices.size())
        choices.push_back(0);
      return readings[choices[point]];
    };
    auto resolveFree = [&](Value value) {
      SymbolicShape &shape = shapes[value];
      for (int64_t size : shapeOf(value.getType()))
        shape.push_back(
            decide(candidatesFor(size, dims, dimOrder, multiplesToo)));
    };
    for (BlockArgument arg : scan.getBodyBlock().getArguments())
      resolveFree(arg);
    scan.getBody().walk([&](Operation *op) {
      for (Value result : op->getResults()) {
        if (op->getNumOperands() == 0) {
          resolveFree(result);
          continue;
        }
        SymbolicShape &shape = shapes[result];
        for (int64_t size : shapeOf(result.getType()))
          shape.push_back(decide(followOperands(op, size, shapes)));
      }
    });
    return shapes;
  }

private:
  /// A result's size reads as an operand size it equals, else as a multiple
  /// of one, else as a constant.
  static SmallVector<SymbolicSize>
  followOperands(Operation *op, int64_t size,
                 const llvm::DenseMap<Value, SymbolicShape> &shapes) {
    SmallVector<SymbolicSize> equal, multiples;
    auto addOnce = [](SmallVector<SymbolicSize> &list, SymbolicSize size) {
      if (!llvm::is_contained(list, size))
        list.push_back(size);
    };
    for (Value operand : op->getOperands()) {
      auto it = shapes.find(operand);
      if (it == shapes.end())
        continue;
      for (auto [operandSize, symbolic] :
           llvm::zip(shapeOf(operand.getType()), it->second)) {
        if (operandSize == size)
          addOnce(equal, symbolic);
        else if (size % operandSize == 0)
          addOnce(multiples,
                  {symbolic.dim, symbolic.coefficient * (size / operandSize)});
      }
    }
    if (!equal.empty())
      return equal;
    if (!multiples.empty())
      return multiples;
    return {SymbolicSize{StringRef(), size}};
  }

  mutable ScanOp scan; // op handles' accessors are not const
  const llvm::StringMap<int64_t> &dims;
  const llvm::StringMap<int64_t> &newDims;
  ArrayRef<StringRef> dimOrder;
  bool multiplesToo;
};

/// Gives every value of `scan` (and its outputs and dims) the sizes its
/// symbolic shape has under `dims`.
void applySizes(ScanOp scan, const llvm::DenseMap<Value, SymbolicShape> &shapes,
                const llvm::StringMap<int64_t> &dims,
                ArrayRef<StringRef> dimOrder, FloatType element) {
  Builder builder(scan.getContext());
  auto retype = [&](Value value) {
    Shape sizes;
    if (auto it = shapes.find(value); it != shapes.end())
      for (const SymbolicSize &size : it->second)
        sizes.push_back(size.evaluate(dims));
    else
      sizes = shapeOf(value.getType());
    value.setType(withShape(value.getType(), sizes, element));
  };
  for (BlockArgument arg : scan.getBodyBlock().getArguments())
    retype(arg);
  scan.getBody().walk([&](Operation *op) {
    for (Value result : op->getResults())
      retype(result);
  });
  // Outputs are the yield's operands after the states.
  SmallVector<Attribute> outputTypes;
  auto yielded = scan.getYield().getOperands().drop_front(scan.getNumStates());
  for (Value output : yielded)
    outputTypes.push_back(TypeAttr::get(output.getType()));
  if (outputTypes.size() == scan.getOutputTypes().size())
    scan.setOutputTypesAttr(builder.getArrayAttr(outputTypes));
  SmallVector<NamedAttribute> newDims;
  for (StringRef name : dimOrder)
    newDims.push_back(builder.getNamedAttr(
        name, builder.getI64IntegerAttr(dims.lookup(name))));
  scan.setDimsAttr(builder.getDictionaryAttr(newDims));
}

/// Whether the scan verifies with `shapes` when every dim takes a probe value:
/// distinct for dims of distinct new values, shared by dims that end up
/// equal (which of them a size stands for does not change the result).
bool verifiesWithProbeDims(ScanOp scan,
                           const llvm::DenseMap<Value, SymbolicShape> &shapes,
                           const llvm::StringMap<int64_t> &newDims,
                           ArrayRef<StringRef> dimOrder) {
  // Small primes keep derived sizes (2*nu*d) under the size limits while no
  // two dims, or multiples of them, coincide by accident.
  static constexpr int64_t kProbes[] = {11, 13, 17, 19, 23, 29, 31, 37,
                                        41, 43, 47, 53, 59, 61, 67, 71};
  llvm::DenseMap<int64_t, int64_t> probeOfNewValue;
  llvm::StringMap<int64_t> probes;
  for (StringRef name : dimOrder) {
    auto [it, inserted] = probeOfNewValue.try_emplace(
        newDims.lookup(name), probeOfNewValue.size());
    if (it->second >= static_cast<int64_t>(std::size(kProbes)))
      return true; // too many dims to probe: the final verifier decides
    probes[name] = kProbes[it->second];
  }
  IRMapping mapping;
  OwningOpRef<Operation *> copy = scan->clone(mapping);
  llvm::DenseMap<Value, SymbolicShape> copiedShapes;
  for (const auto &[value, shape] : shapes)
    copiedShapes[mapping.lookupOrDefault(value)] = shape;
  auto copiedScan = cast<ScanOp>(*copy);
  applySizes(copiedScan, copiedShapes, probes, dimOrder, FloatType());
  ScopedDiagnosticHandler silence(scan.getContext(),
                                  [](Diagnostic &) { return success(); });
  return succeeded(mlir::verify(copiedScan));
}

struct FwpSpecializeDimsPass
    : public mlir::fwp::impl::FwpSpecializeDimsBase<FwpSpecializeDimsPass> {
  using Base::Base;

  void runOnOperation() override {
    llvm::StringMap<int64_t> requested;
    for (const std::string &entry : dims) {
      auto [name, valueText] = StringRef(entry).split('=');
      int64_t value;
      if (name.empty() || valueText.getAsInteger(10, value) || value <= 0) {
        getOperation().emitError()
            << "fwp-specialize-dims: expected name=positive-integer, got '"
            << entry << "'";
        return signalPassFailure();
      }
      if (value > kMaxDimSize) {
        getOperation().emitError()
            << "fwp-specialize-dims: '" << entry << "' is larger than the "
            << "largest supported size " << kMaxDimSize;
        return signalPassFailure();
      }
      requested[name.trim()] = value;
    }
    Builder builder(&getContext());
    FloatType element;
    if (dtype == "f32")
      element = builder.getF32Type();
    else if (dtype == "f64")
      element = builder.getF64Type();
    else if (!dtype.empty()) {
      getOperation().emitError()
          << "fwp-specialize-dims: dtype must be f32 or f64, got '" << dtype
          << "'";
      return signalPassFailure();
    }
    for (ScanOp scan : getOperation().getOps<ScanOp>())
      if (failed(specialize(scan, requested, element)))
        return signalPassFailure();
  }

  LogicalResult specialize(ScanOp scan,
                           const llvm::StringMap<int64_t> &requested,
                           FloatType element) {
    for (const auto &entry : requested)
      if (!scan.getDims().get(entry.getKey()))
        return scan.emitOpError()
               << "has no dim named '" << entry.getKey()
               << "' (it declares " << scan.getDims() << ")";
    llvm::StringMap<int64_t> oldDims, newDims;
    SmallVector<StringRef> dimOrder;
    for (NamedAttribute dim : scan.getDims()) {
      StringRef name = dim.getName().getValue();
      dimOrder.push_back(name);
      oldDims[name] = cast<IntegerAttr>(dim.getValue()).getInt();
      newDims[name] = requested.lookup(name) ? requested.lookup(name)
                                             : oldDims[name];
    }
    if (requested.empty() && !element)
      return success();

    // Sizes read as the dims they equal first; only when the ops accept no
    // such reading may they read as multiples of other dims.
    std::optional<llvm::DenseMap<Value, SymbolicShape>> shapes;
    for (bool multiplesToo : {false, true}) {
      SizeResolver resolver(scan, oldDims, newDims, dimOrder, multiplesToo);
      FailureOr<std::optional<llvm::DenseMap<Value, SymbolicShape>>> chosen =
          chooseShapes(scan, resolver, newDims, dimOrder);
      if (failed(chosen))
        return failure();
      if ((shapes = std::move(*chosen)))
        break;
    }
    if (!shapes)
      return scan.emitOpError()
             << "has sizes that fwp-specialize-dims cannot read in terms of "
                "its dims "
             << scan.getDims() << " in a way its ops accept";
    applySizes(scan, *shapes, newDims, dimOrder, element);
    return success();
  }

  /// The symbolic shapes the ops accept. Without decision points that is the
  /// only reading; otherwise every combination of readings is checked on a
  /// copy of the scan (a few at most in real models), and all those the ops
  /// accept must give the same sizes.
  FailureOr<std::optional<llvm::DenseMap<Value, SymbolicShape>>>
  chooseShapes(ScanOp scan, const SizeResolver &resolver,
               const llvm::StringMap<int64_t> &newDims,
               ArrayRef<StringRef> dimOrder) {
    SmallVector<unsigned> choices, counts;
    std::optional<llvm::DenseMap<Value, SymbolicShape>> accepted;
    std::optional<SmallVector<Shape>> acceptedSizes;
    for (unsigned tried = 0;; ++tried) {
      if (tried == kMaxReadings)
        return scan.emitOpError()
               << "has sizes that could stand for several of its dims "
               << scan.getDims()
               << "; fwp-specialize-dims cannot tell which ones --dim "
                  "changes: give the dims distinct values";
      llvm::DenseMap<Value, SymbolicShape> shapes =
          resolver.resolve(choices, counts);
      if (verifiesWithProbeDims(scan, shapes, newDims, dimOrder)) {
        SmallVector<Shape> sizes = evaluateAll(scan, shapes, newDims);
        if (acceptedSizes && *acceptedSizes != sizes)
          return scan.emitOpError()
                 << "has sizes that could stand for several of its dims "
                 << scan.getDims()
                 << "; fwp-specialize-dims cannot tell which ones --dim "
                    "changes: give the dims distinct values";
        if (!accepted) {
          accepted = std::move(shapes);
          acceptedSizes = std::move(sizes);
        }
      }
      // The next combination: advance the last point that has readings
      // left, and forget the points after it (they may differ now).
      choices.resize(counts.size());
      while (!choices.empty() && choices.back() + 1 == counts.back()) {
        choices.pop_back();
        counts.pop_back();
      }
      if (choices.empty())
        break;
      ++choices.back();
    }
    return accepted;
  }

  static SmallVector<Shape>
  evaluateAll(ScanOp scan, const llvm::DenseMap<Value, SymbolicShape> &shapes,
              const llvm::StringMap<int64_t> &dims) {
    SmallVector<Shape> sizes;
    auto add = [&](Value value) {
      Shape shape;
      if (auto it = shapes.find(value); it != shapes.end())
        for (const SymbolicSize &size : it->second)
          shape.push_back(size.evaluate(dims));
      sizes.push_back(std::move(shape));
    };
    for (BlockArgument arg : scan.getBodyBlock().getArguments())
      add(arg);
    scan.getBody().walk([&](Operation *op) {
      for (Value result : op->getResults())
        add(result);
    });
    return sizes;
  }

  static constexpr unsigned kMaxReadings = 4096;
};

} // namespace
