//===- SpecializeDims.cpp - Re-specialise scans to other sizes ------------===//

#include "fwp/Dialect/Fwp/Transforms/Passes.h"

#include "fwp/Dialect/Fwp/IR/FwpOps.h"
#include "fwp/Dialect/Fwp/IR/FwpLimits.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_FWPSPECIALIZEDIMS
#include "fwp/Dialect/Fwp/Transforms/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;

namespace {

/// Maps each size that stands for a dim to the dim's new value.
class SizeMap {
public:
  SizeMap(llvm::DenseMap<int64_t, int64_t> sizes, FloatType element)
      : sizes(std::move(sizes)), element(element) {}

  FloatType mapElement(Type type) const {
    return element ? element : cast<FloatType>(type);
  }

  int64_t map(int64_t size) const {
    auto it = sizes.find(size);
    return it == sizes.end() ? size : it->second;
  }

  Type map(Type type) const {
    if (auto vector = dyn_cast<VectorType>(type))
      return VectorType::get({map(vector.getDimSize(0))},
                             mapElement(vector.getElementType()));
    if (auto weight = dyn_cast<FastWeightType>(type))
      return FastWeightType::get(type.getContext(), map(weight.getKeyDim()),
                                 map(weight.getValueDim()),
                                 mapElement(weight.getElementType()));
    if (isa<FloatType>(type))
      return mapElement(type);
    return type;
  }

private:
  llvm::DenseMap<int64_t, int64_t> sizes;
  FloatType element;
};

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
    Builder builder(scan.getContext());
    llvm::DenseMap<int64_t, int64_t> sizes;
    SmallVector<NamedAttribute> newDims;
    for (const auto &entry : requested)
      if (!scan.getDims().get(entry.getKey()))
        return scan.emitOpError()
               << "has no dim named '" << entry.getKey()
               << "' (it declares " << scan.getDims() << ")";
    for (NamedAttribute dim : scan.getDims()) {
      int64_t oldValue = cast<IntegerAttr>(dim.getValue()).getInt();
      int64_t newValue = oldValue;
      if (auto it = requested.find(dim.getName().getValue());
          it != requested.end())
        newValue = it->second;
      sizes[oldValue] = newValue;
      newDims.push_back(
          builder.getNamedAttr(dim.getName(), builder.getI64IntegerAttr(newValue)));
    }
    SizeMap map(std::move(sizes), element);
    scan.setDimsAttr(builder.getDictionaryAttr(newDims));
    for (BlockArgument arg : scan.getBodyBlock().getArguments())
      arg.setType(map.map(arg.getType()));
    SmallVector<Attribute> outputTypes;
    for (Attribute type : scan.getOutputTypes())
      outputTypes.push_back(TypeAttr::get(map.map(cast<TypeAttr>(type).getValue())));
    scan.setOutputTypesAttr(builder.getArrayAttr(outputTypes));
    scan.getBody().walk([&](Operation *op) {
      for (OpResult result : op->getResults())
        result.setType(map.map(result.getType()));
    });
    return success();
  }
};

} // namespace
