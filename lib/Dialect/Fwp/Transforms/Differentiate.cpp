//===- Differentiate.cpp - Reverse-mode differentiation of scans ----------===//
//
// For a forward scan @L this builds
//   @L_train: @L plus tape outputs (what the backward needs to rebuild states),
//   @L_grad:  a reverse scan that rebuilds the states at t-1, recomputes the
//             step and applies every op's adjoint in reverse order.
// See docs/design.md ("Differentiation") for the scheme and its numerics.
//
//===----------------------------------------------------------------------===//

#include "fwp/Dialect/Fwp/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_FWPDIFFERENTIATE
#include "fwp/Dialect/Fwp/Transforms/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;

namespace {

/// How one state is recovered at t-1 in the backward scan.
struct StateInfo {
  StringRef name;
  BlockArgument arg;
  Value yielded;
  bool isMatrix = false;
  /// Matrix states: the writes from `arg` to `yielded`, in program order.
  SmallVector<Operation *> chain;
};

static std::string tapeKeyName(StringRef state, unsigned i) {
  return ("tape." + state + "." + Twine(i) + ".key").str();
}
static std::string tapeDeltaName(StringRef state, unsigned i) {
  return ("tape." + state + "." + Twine(i) + ".delta").str();
}
static std::string tapePrevName(StringRef state) {
  return ("tape." + state + ".prev").str();
}
/// Gradient names: `grad.<seq>` and `grad.<output>` (as in the runtime's
/// tensor contract), `grad.state.<state>` and `grad.param.<param>` for the
/// carried accumulators (a state may share its name with an output).
static std::string gradName(StringRef name) { return ("grad." + name).str(); }
static std::string gradStateName(StringRef name) {
  return ("grad.state." + name).str();
}
static std::string gradParamName(StringRef name) {
  return ("grad.param." + name).str();
}

static Value writeWeight(Operation *op) {
  if (auto sum = dyn_cast<WriteSumOp>(op))
    return sum.getWeight();
  return cast<WriteDeltaOp>(op).getWeight();
}
static Value writeKey(Operation *op) {
  if (auto sum = dyn_cast<WriteSumOp>(op))
    return sum.getKey();
  return cast<WriteDeltaOp>(op).getKey();
}

/// Finds, for every state, how the backward recovers its value at t-1.
static FailureOr<SmallVector<StateInfo>> analyzeStates(ScanOp scan) {
  SmallVector<StateInfo> states;
  YieldOp yield = scan.getYield();
  for (auto [index, arg] : llvm::enumerate(scan.getStateArgs())) {
    StateInfo info;
    info.name = cast<StringAttr>(scan.getStateNames()[index]).getValue();
    info.arg = arg;
    info.yielded = yield.getValues()[index];
    info.isMatrix = isa<FastWeightType>(arg.getType());
    if (info.isMatrix) {
      Value value = info.yielded;
      while (value != arg) {
        Operation *def = value.getDefiningOp();
        if (!def || !isa<WriteSumOp, WriteDeltaOp>(def) ||
            def->getResult(0) != value)
          return scan.emitOpError()
                 << "matrix state '" << info.name
                 << "': its new value is not a chain of fwp.write_sum / "
                    "fwp.write_delta ops starting from the state, so "
                    "fwp-differentiate cannot rebuild it by inversion";
        info.chain.push_back(def);
        value = writeWeight(def);
      }
      std::reverse(info.chain.begin(), info.chain.end());
    }
    states.push_back(std::move(info));
  }
  return states;
}

static SmallVector<StringRef> namesOf(ArrayAttr names) {
  return llvm::to_vector(llvm::map_range(
      names, [](Attribute a) { return cast<StringAttr>(a).getValue(); }));
}

static SmallVector<Type> typesOf(ValueRange values) {
  return llvm::to_vector(values.getTypes());
}

//===----------------------------------------------------------------------===//
// The training forward: the forward plus the tape.
//===----------------------------------------------------------------------===//

static ScanOp buildTrainScan(ScanOp scan, ArrayRef<StateInfo> states,
                             SmallVectorImpl<std::string> &tapeNames,
                             SmallVectorImpl<Type> &tapeTypes) {
  IRMapping mapping;
  auto train = cast<ScanOp>(scan->clone(mapping));
  train.setSymName((scan.getSymName() + "_train").str());
  OpBuilder builder(scan.getContext());
  train->setAttr(kRoleAttrName, builder.getStringAttr("forward_train"));
  train->setAttr(kForwardAttrName,
                 FlatSymbolRefAttr::get(scan.getSymNameAttr()));

  YieldOp yield = train.getYield();
  builder.setInsertionPoint(yield);
  SmallVector<Value> tapeValues;
  for (const StateInfo &state : states) {
    if (!state.isMatrix) {
      tapeNames.push_back(tapePrevName(state.name));
      tapeValues.push_back(mapping.lookup(state.arg));
      continue;
    }
    for (auto [i, write] : llvm::enumerate(state.chain)) {
      Operation *cloned = mapping.lookup(write);
      Value key = writeKey(cloned), delta;
      if (auto sum = dyn_cast<WriteSumOp>(cloned)) {
        delta = sum.getValue();
      } else {
        auto deltaWrite = cast<WriteDeltaOp>(cloned);
        Location loc = deltaWrite.getLoc();
        Value diff = SubOp::create(builder, loc, deltaWrite.getValue(),
                                   deltaWrite.getRetrieved());
        delta = ScaleOp::create(builder, loc, diff, deltaWrite.getBeta());
      }
      tapeNames.push_back(tapeKeyName(state.name, i));
      tapeValues.push_back(key);
      tapeNames.push_back(tapeDeltaName(state.name, i));
      tapeValues.push_back(delta);
    }
  }
  llvm::append_range(tapeTypes, ValueRange(tapeValues).getTypes());

  SmallVector<Value> yielded(yield.getValues());
  llvm::append_range(yielded, tapeValues);
  YieldOp::create(builder, yield.getLoc(), yielded);
  yield.erase();

  SmallVector<Attribute> outputNames(train.getOutputNames().getValue());
  SmallVector<Attribute> outputTypes(train.getOutputTypes().getValue());
  for (auto [name, type] : llvm::zip(tapeNames, tapeTypes)) {
    outputNames.push_back(builder.getStringAttr(name));
    outputTypes.push_back(TypeAttr::get(type));
  }
  train.setOutputNamesAttr(builder.getArrayAttr(outputNames));
  train.setOutputTypesAttr(builder.getArrayAttr(outputTypes));
  return train;
}

//===----------------------------------------------------------------------===//
// The backward scan.
//===----------------------------------------------------------------------===//

/// Emits adjoints into the backward body. Forward values are keys; `forward`
/// maps them to their recomputed counterparts in the backward body.
class AdjointBuilder {
public:
  AdjointBuilder(OpBuilder &builder, IRMapping &forward)
      : builder(builder), forward(forward) {}

  Value adjointOf(Value forwardValue) const {
    return adjoints.lookup(forwardValue);
  }
  void setAdjoint(Value forwardValue, Value adjoint) {
    adjoints[forwardValue] = adjoint;
  }

  /// adj(x) += contribution (a value of x's type).
  void accumulate(Value x, Value contribution) {
    if (!contribution)
      return;
    Value &slot = adjoints[x];
    slot = slot ? AddOp::create(builder, contribution.getLoc(), slot,
                                contribution)
                      .getResult()
                : contribution;
  }

  /// adj(W) += key (x) value, for a matrix W.
  void accumulateOuter(Value weight, Value key, Value value) {
    Location loc = key.getLoc();
    Value &slot = adjoints[weight];
    if (!slot)
      slot = ZerosOp::create(builder, loc, weight.getType());
    slot = WriteSumOp::create(builder, loc, slot, key, value);
  }

  LogicalResult visit(Operation *op);

private:
  Value m(Value forwardValue) { return forward.lookup(forwardValue); }

  OpBuilder &builder;
  IRMapping &forward;
  llvm::DenseMap<Value, Value> adjoints;
};

LogicalResult AdjointBuilder::visit(Operation *op) {
  Location loc = op->getLoc();
  // Ops whose results carry no gradient contribute nothing.
  if (llvm::none_of(op->getResults(),
                    [&](Value r) { return adjointOf(r) != nullptr; }))
    return success();
  Value g = op->getNumResults() ? adjointOf(op->getResult(0)) : Value();

  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](EluPlusOneOp o) {
        accumulate(o.getX(), EluPlusOneGradOp::create(builder, loc, m(o.getX()), g));
        return success();
      })
      .Case([&](SumNormOp o) {
        accumulate(o.getX(), SumNormGradOp::create(builder, loc, m(o.getX()), g,
                                                   o.getEpsAttr()));
        return success();
      })
      .Case([&](SoftmaxOp o) {
        accumulate(o.getX(),
                   SoftmaxGradOp::create(builder, loc, m(o.getResult()), g));
        return success();
      })
      .Case([&](DpfpOp o) {
        accumulate(o.getX(), DpfpGradOp::create(builder, loc, m(o.getX()), g,
                                                o.getNuAttr()));
        return success();
      })
      .Case([&](SigmoidOp o) {
        accumulate(o.getX(),
                   SigmoidGradOp::create(builder, loc, m(o.getResult()), g));
        return success();
      })
      .Case([&](TanhOp o) {
        accumulate(o.getX(),
                   TanhGradOp::create(builder, loc, m(o.getResult()), g));
        return success();
      })
      .Case([&](NegOp o) {
        accumulate(o.getX(), NegOp::create(builder, loc, g));
        return success();
      })
      .Case([&](AddOp o) {
        accumulate(o.getLhs(), g);
        accumulate(o.getRhs(), g);
        return success();
      })
      .Case([&](SubOp o) {
        accumulate(o.getLhs(), g);
        accumulate(o.getRhs(), NegOp::create(builder, loc, g));
        return success();
      })
      .Case([&](MulOp o) {
        accumulate(o.getLhs(), MulOp::create(builder, loc, g, m(o.getRhs())));
        accumulate(o.getRhs(), MulOp::create(builder, loc, g, m(o.getLhs())));
        return success();
      })
      .Case([&](DivOp o) {
        // z = a / b: da = g / b, db = -g z / b.
        Value b = m(o.getRhs());
        accumulate(o.getLhs(), DivOp::create(builder, loc, g, b));
        Value zOverB = DivOp::create(builder, loc, m(o.getResult()), b);
        accumulate(o.getRhs(),
                   NegOp::create(builder, loc,
                                 MulOp::create(builder, loc, g, zOverB)));
        return success();
      })
      .Case([&](ScaleOp o) {
        accumulate(o.getX(), ScaleOp::create(builder, loc, g, m(o.getFactor())));
        accumulate(o.getFactor(), DotOp::create(builder, loc, g, m(o.getX())));
        return success();
      })
      .Case([&](DotOp o) {
        accumulate(o.getLhs(), ScaleOp::create(builder, loc, m(o.getRhs()), g));
        accumulate(o.getRhs(), ScaleOp::create(builder, loc, m(o.getLhs()), g));
        return success();
      })
      .Case([&](LayerNormOp o) {
        auto grads = LayerNormGradOp::create(builder, loc, m(o.getX()),
                                             m(o.getWeight()), g, o.getEpsAttr());
        accumulate(o.getX(), grads.getGradX());
        accumulate(o.getWeight(), grads.getGradWeight());
        accumulate(o.getBias(), grads.getGradBias());
        return success();
      })
      .Case<ConstantOp, ZerosOp>([&](Operation *) { return success(); })
      .Case([&](ReadOp o) {
        // y = W^T q: dq = W g, dW += q (x) g.
        accumulate(o.getQuery(),
                   ReadTransposedOp::create(builder, loc,
                                            o.getQuery().getType(),
                                            m(o.getWeight()), g));
        accumulateOuter(o.getWeight(), m(o.getQuery()), g);
        return success();
      })
      .Case([&](ReadTransposedOp o) {
        // y = W x: dx = W^T g, dW += g (x) x.
        accumulate(o.getValue(),
                   ReadOp::create(builder, loc, o.getValue().getType(),
                                  m(o.getWeight()), g));
        accumulateOuter(o.getWeight(), g, m(o.getValue()));
        return success();
      })
      .Case([&](WriteSumOp o) {
        // W' = W + k (x) v: dk = G v, dv = G^T k, dW = G.
        accumulate(o.getKey(),
                   ReadTransposedOp::create(builder, loc, o.getKey().getType(),
                                            g, m(o.getValue())));
        accumulate(o.getValue(),
                   ReadOp::create(builder, loc, o.getValue().getType(), g,
                                  m(o.getKey())));
        accumulate(o.getWeight(), g);
        return success();
      })
      .Case([&](WriteDeltaOp o) {
        // W' = W + k (x) u, u = beta (v - vbar), vbar = W^T k.
        Value gW = adjointOf(o.getNewWeight());
        Value gRetrieved = adjointOf(o.getRetrieved());
        Value key = m(o.getKey()), beta = m(o.getBeta());
        Value diff = SubOp::create(builder, loc, m(o.getValue()),
                                   m(o.getRetrieved()));
        Value du, dv, dk;
        if (gW) {
          du = ReadOp::create(builder, loc, o.getValue().getType(), gW, key);
          accumulate(o.getBeta(), DotOp::create(builder, loc, du, diff));
          dv = ScaleOp::create(builder, loc, du, beta);
          accumulate(o.getValue(), dv);
          Value u = ScaleOp::create(builder, loc, diff, beta);
          dk = ReadTransposedOp::create(builder, loc, o.getKey().getType(), gW, u);
        }
        // Total gradient reaching vbar: its own uses, minus beta * du.
        Value dRetrieved = gRetrieved;
        if (dv)
          dRetrieved = dRetrieved ? SubOp::create(builder, loc, dRetrieved, dv)
                                        .getResult()
                                  : NegOp::create(builder, loc, dv).getResult();
        if (dRetrieved) {
          Value viaRetrieved = ReadTransposedOp::create(
              builder, loc, o.getKey().getType(), m(o.getWeight()), dRetrieved);
          dk = dk ? AddOp::create(builder, loc, dk, viaRetrieved).getResult()
                  : viaRetrieved;
        }
        accumulate(o.getKey(), dk);
        if (gW)
          accumulate(o.getWeight(), gW);
        if (dRetrieved)
          accumulateOuter(o.getWeight(), key, dRetrieved);
        return success();
      })
      .Default([&](Operation *other) {
        return other->emitOpError()
               << "has no adjoint rule in fwp-differentiate";
      });
}

static FailureOr<ScanOp> buildGradScan(ScanOp scan, ArrayRef<StateInfo> states,
                                       ArrayRef<std::string> tapeNames,
                                       ArrayRef<Type> tapeTypes) {
  MLIRContext *context = scan.getContext();
  OpBuilder builder(context);
  std::vector<std::string> storage; // keeps the names alive for StringRefs
  storage.reserve(64);
  auto keep = [&](std::string s) -> StringRef {
    storage.push_back(std::move(s));
    return storage.back();
  };

  SmallVector<StringRef> seqNames = namesOf(scan.getSeqNames());
  SmallVector<Type> seqTypes = typesOf(scan.getSeqArgs());
  for (auto [name, type] :
       llvm::zip(scan.getOutputNames(), scan.getOutputTypes())) {
    seqNames.push_back(keep(gradName(cast<StringAttr>(name).getValue())));
    seqTypes.push_back(cast<TypeAttr>(type).getValue());
  }
  for (auto [name, type] : llvm::zip(tapeNames, tapeTypes)) {
    seqNames.push_back(name);
    seqTypes.push_back(type);
  }
  SmallVector<StringRef> paramNames = namesOf(scan.getParamNames());
  SmallVector<Type> paramTypes = typesOf(scan.getParamArgs());

  SmallVector<StringRef> stateNames;
  SmallVector<Type> stateTypes;
  for (const StateInfo &state : states)
    if (state.isMatrix) {
      stateNames.push_back(state.name);
      stateTypes.push_back(state.arg.getType());
    }
  for (const StateInfo &state : states) {
    stateNames.push_back(keep(gradStateName(state.name)));
    stateTypes.push_back(state.arg.getType());
  }
  for (auto [name, arg] : llvm::zip(paramNames, scan.getParamArgs())) {
    stateNames.push_back(keep(gradParamName(name)));
    stateTypes.push_back(arg.getType());
  }
  SmallVector<StringRef> outputNames;
  for (StringRef name : namesOf(scan.getSeqNames()))
    outputNames.push_back(keep(gradName(name)));
  SmallVector<Type> outputTypes = typesOf(scan.getSeqArgs());

  auto grad = ScanOp::create(
      builder, scan.getLoc(), (scan.getSymName() + "_grad").str(),
      scan.getDims(), seqNames, seqTypes, paramNames, paramTypes, stateNames,
      stateTypes, outputNames, outputTypes, /*reverse=*/true);
  grad->setAttr(kRoleAttrName, builder.getStringAttr("backward"));
  grad->setAttr(kForwardAttrName, FlatSymbolRefAttr::get(scan.getSymNameAttr()));
  grad->setAttr("fwp.reconstruct", builder.getStringAttr("invert"));

  Block &body = grad.getBodyBlock();
  builder.setInsertionPointToStart(&body);
  Location loc = scan.getLoc();

  unsigned numSeq = scan.getNumSeq(), numOutputs = scan.getNumOutputs();
  auto gradSeqArgs = grad.getSeqArgs();
  auto gradStateArgs = grad.getStateArgs();
  IRMapping forward;
  for (auto [fwd, bwd] : llvm::zip(scan.getSeqArgs(), gradSeqArgs))
    forward.map(fwd, bwd);
  for (auto [fwd, bwd] : llvm::zip(scan.getParamArgs(), grad.getParamArgs()))
    forward.map(fwd, bwd);

  // Rebuild every state at t-1: invert the chain of writes of matrix states
  // (S_{t-1} = S_t - key (x) delta), read vector states off the tape.
  unsigned tapeIndex = numSeq + numOutputs;
  unsigned matrixIndex = 0;
  SmallVector<Value> rebuiltMatrices;
  llvm::DenseMap<Operation *, Value> retrievedSource; // write -> weight before
  for (const StateInfo &state : states) {
    if (!state.isMatrix) {
      forward.map(state.arg, gradSeqArgs[tapeIndex++]);
      continue;
    }
    Value current = gradStateArgs[matrixIndex++];
    SmallVector<std::pair<Value, Value>> writes; // (key, delta) in order
    for (size_t i = 0; i < state.chain.size(); ++i) {
      writes.emplace_back(gradSeqArgs[tapeIndex], gradSeqArgs[tapeIndex + 1]);
      tapeIndex += 2;
    }
    for (int i = static_cast<int>(state.chain.size()) - 1; i >= 0; --i) {
      forward.map(state.chain[i]->getResult(0), current);
      auto [key, delta] = writes[i];
      current = WriteSumOp::create(builder, loc, current, key,
                                   NegOp::create(builder, loc, delta));
    }
    forward.map(state.arg, current);
    rebuiltMatrices.push_back(current);
  }

  // Recompute the step from the states at t-1. The writes of the chains are
  // not re-run: their results are the rebuilt matrices; a delta write's
  // retrieved value is re-read from the weight before it.
  llvm::DenseSet<Operation *> chainWrites;
  for (const StateInfo &state : states)
    chainWrites.insert(state.chain.begin(), state.chain.end());
  for (Operation &op : scan.getBodyBlock().without_terminator()) {
    if (chainWrites.contains(&op)) {
      if (auto delta = dyn_cast<WriteDeltaOp>(op)) {
        Value retrieved = ReadOp::create(
            builder, op.getLoc(), delta.getRetrieved().getType(),
            forward.lookup(delta.getWeight()), forward.lookup(delta.getKey()));
        forward.map(delta.getRetrieved(), retrieved);
      }
      continue;
    }
    builder.clone(op, forward);
  }

  // Seed the adjoints: the carried gradients of the states, the step's
  // output gradients, and the param accumulators (summed over time).
  AdjointBuilder adjoints(builder, forward);
  unsigned numMatrices = rebuiltMatrices.size();
  for (auto [index, param] : llvm::enumerate(scan.getParamArgs()))
    adjoints.setAdjoint(param,
                        gradStateArgs[numMatrices + states.size() + index]);
  YieldOp yield = scan.getYield();
  for (auto [index, state] : llvm::enumerate(states))
    adjoints.accumulate(state.yielded, gradStateArgs[numMatrices + index]);
  for (unsigned i = 0; i < numOutputs; ++i)
    adjoints.accumulate(yield.getValues()[states.size() + i],
                        gradSeqArgs[numSeq + i]);

  for (Operation &op :
       llvm::reverse(scan.getBodyBlock().without_terminator()))
    if (failed(adjoints.visit(&op)))
      return failure();

  auto adjointOrZeros = [&](Value forwardValue) -> Value {
    if (Value adjoint = adjoints.adjointOf(forwardValue))
      return adjoint;
    return ZerosOp::create(builder, loc, forwardValue.getType());
  };
  SmallVector<Value> yielded(rebuiltMatrices);
  for (const StateInfo &state : states)
    yielded.push_back(adjointOrZeros(state.arg));
  for (BlockArgument param : scan.getParamArgs())
    yielded.push_back(adjointOrZeros(param));
  for (BlockArgument seq : scan.getSeqArgs())
    yielded.push_back(adjointOrZeros(seq));
  YieldOp::create(builder, loc, yielded);
  return grad;
}

struct FwpDifferentiatePass
    : public mlir::fwp::impl::FwpDifferentiateBase<FwpDifferentiatePass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    SmallVector<ScanOp> forwards;
    for (ScanOp scan : module.getOps<ScanOp>())
      if (!scan->hasAttr(kRoleAttrName))
        forwards.push_back(scan);
    for (ScanOp scan : forwards) {
      for (StringRef suffix : {"_train", "_grad"})
        if (symbols.lookup((scan.getSymName() + suffix).str())) {
          scan.emitOpError() << "is already differentiated (@"
                             << scan.getSymName() << suffix << " exists)";
          return signalPassFailure();
        }
      FailureOr<SmallVector<StateInfo>> states = analyzeStates(scan);
      if (failed(states))
        return signalPassFailure();
      SmallVector<std::string> tapeNames;
      SmallVector<Type> tapeTypes;
      ScanOp train = buildTrainScan(scan, *states, tapeNames, tapeTypes);
      FailureOr<ScanOp> grad =
          buildGradScan(scan, *states, tapeNames, tapeTypes);
      if (failed(grad)) {
        train->erase();
        return signalPassFailure();
      }
      module.getBody()->push_back(train);
      module.getBody()->push_back(*grad);
    }
  }
};

} // namespace
