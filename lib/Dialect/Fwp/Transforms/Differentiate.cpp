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
#include "mlir/IR/OwningOpRef.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SetVector.h"

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
  /// Invert: rebuilt from the state at t through `chain`; store and
  /// checkpoint: read from the tape (`tape.<state>.prev`).
  BackwardStrategy strategy;
  /// Invertible matrix states: the writes from `arg` to `yielded`, in
  /// program order.
  SmallVector<Operation *> chain;
  /// Per update of the chain, per value its inverse needs: null when the
  /// training forward records it on the tape, else the forward scan's value
  /// that the backward recomputes instead (it depends on the step's inputs
  /// alone: a key made from the seq inputs, say).
  SmallVector<SmallVector<Value>> tapeRecomputed;
  bool inverts() const { return strategy.kind == BackwardStrategy::Invert; }
  /// Energy form (a checkpointed weight used only linearly): the backward
  /// carries E = rowsum(adj(W) (.) W) instead of reading W from the tape;
  /// `energyReads` are the reads of the weight's values, whose gradient
  /// with respect to the query the training forward computes.
  bool energy = false;
  SmallVector<ReadOp> energyReads;
  llvm::SmallDenseSet<Value, 4> energyValues; // the weight's values in the step
  /// Energy form with delta writes (their decays uniform): the writes, in
  /// program order. The training forward records each one's retrieval; the
  /// backward hands over its `W d` products (`deferred.<state>.<i>`) to the
  /// forward-running scan `@L_deferred`.
  SmallVector<WriteDeltaOp> deltaWrites;
};

static std::string tapeKeyName(StringRef state, unsigned i) {
  return ("tape." + state + "." + Twine(i) + ".key").str();
}
static std::string tapeDeltaName(StringRef state, unsigned i) {
  return ("tape." + state + "." + Twine(i) + ".delta").str();
}
static std::string tapeRateName(StringRef state, unsigned i) {
  return ("tape." + state + "." + Twine(i) + ".rate").str();
}
static std::string tapePrevName(StringRef state) {
  return ("tape." + state + ".prev").str();
}
static std::string tapeReadName(StringRef state, unsigned i) {
  return ("tape." + state + ".read." + Twine(i)).str();
}
static std::string tapeRetrievedName(StringRef state, unsigned i) {
  return ("tape." + state + "." + Twine(i) + ".retrieved").str();
}
static std::string deferredName(StringRef state, unsigned i) {
  return ("deferred." + state + "." + Twine(i)).str();
}
static std::string energyName(StringRef state) {
  return ("energy." + state).str();
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

/// The writes from `arg` to `yielded` when the new value is a chain of
/// invertible writes starting from the state; failure otherwise.
static FailureOr<SmallVector<Operation *>> invertibleChain(BlockArgument arg,
                                                           Value yielded) {
  SmallVector<Operation *> chain;
  Value value = yielded;
  while (value != arg) {
    auto update = value.getDefiningOp<FastWeightUpdateOpInterface>();
    if (!update || update.getUpdateResult() != value || !update.isInvertible())
      return failure();
    chain.push_back(update);
    value = update.getUpdatedWeight();
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

static void findEnergyForm(ScanOp scan, StateInfo &state, unsigned stateIndex);
static bool dependsOnInputsAlone(ScanOp scan, Value value,
                                 llvm::DenseMap<Value, bool> &memo);

/// Finds, for every state, how the backward recovers its value at t-1: the
/// strategy asked for in `fwp.backward`, else invert for fast weights whose
/// writes can be undone, checkpoint for other fast weights, and store for
/// vectors and scalars (checkpoint when another state is checkpointed).
static FailureOr<SmallVector<StateInfo, 2>> analyzeStates(ScanOp scan) {
  SmallVector<StateInfo, 2> states;
  YieldOp yield = scan.getYield();
  DictionaryAttr requested = scan->getAttrOfType<DictionaryAttr>(kBackwardAttrName);
  if (scan->hasAttr(kBackwardAttrName) && !requested)
    return scan.emitOpError() << "'" << kBackwardAttrName
                              << "' must be a dictionary from state names to "
                                 "strategies";
  if (requested)
    for (NamedAttribute entry : requested) {
      if (!llvm::is_contained(scan.getStateNames(), entry.getName()))
        return scan.emitOpError()
               << "'" << kBackwardAttrName << "' names '"
               << entry.getName().getValue()
               << "', which is not a state of the scan";
      auto text = dyn_cast<StringAttr>(entry.getValue());
      if (!text || !parseBackwardStrategy(text.getValue()))
        return scan.emitOpError()
               << "'" << kBackwardAttrName << "' for state '"
               << entry.getName().getValue()
               << "' must be \"invert\", \"store\" or \"checkpoint[:C]\" "
                  "(C > 0), not "
               << entry.getValue();
    }
  int64_t every = 0;
  SmallVector<bool> explicitChoice;
  for (auto [index, arg] : llvm::enumerate(scan.getStateArgs())) {
    StateInfo info;
    info.name = cast<StringAttr>(scan.getStateNames()[index]).getValue();
    info.arg = arg;
    info.yielded = yield.getValues()[index];
    info.isMatrix = isa<FastWeightType>(arg.getType());
    std::optional<BackwardStrategy> asked;
    if (requested)
      if (auto text = requested.getAs<StringAttr>(info.name))
        asked = parseBackwardStrategy(text.getValue());
    FailureOr<SmallVector<Operation *>> chain =
        info.isMatrix ? invertibleChain(arg, info.yielded)
                      : FailureOr<SmallVector<Operation *>>(failure());
    if (asked && asked->kind == BackwardStrategy::Invert && failed(chain)) {
      if (!info.isMatrix)
        return scan.emitOpError()
               << "state '" << info.name
               << "' is not a fast weight: its backward is store or "
                  "checkpoint, not invert";
      return scan.emitOpError()
             << "matrix state '" << info.name
             << "': its new value is not a chain of invertible updates "
                "(such as fwp.write_sum, fwp.write_delta) of the state, so "
                "fwp-differentiate cannot rebuild it by inversion; use "
                "fwp.backward = {"
             << info.name << " = \"checkpoint\"} or \"store\"";
    }
    // The runtime runs a checkpointed layer's segments forwards in time, so
    // a scan that runs backwards in time stores its states instead.
    if (asked && asked->kind == BackwardStrategy::Checkpoint &&
        scan.getReverse())
      return scan.emitOpError()
             << "state '" << info.name
             << "': a scan that runs backwards in time (reverse) cannot be "
                "checkpointed; use fwp.backward = {"
             << info.name << " = \"store\"} (or \"invert\")";
    if (asked)
      info.strategy = *asked;
    else if (succeeded(chain))
      info.strategy = {BackwardStrategy::Invert, 0};
    else if (info.isMatrix && !scan.getReverse())
      info.strategy = {BackwardStrategy::Checkpoint, kDefaultCheckpointEvery};
    else
      info.strategy = {BackwardStrategy::Store, 0};
    if (info.inverts())
      info.chain = std::move(*chain);
    explicitChoice.push_back(asked.has_value());
    if (info.strategy.kind == BackwardStrategy::Checkpoint) {
      if (every && every != info.strategy.every)
        return scan.emitOpError()
               << "checkpointed states must share one segment length, found "
               << every << " and " << info.strategy.every;
      every = info.strategy.every;
    }
    states.push_back(std::move(info));
  }
  // A checkpointed layer rebuilds its whole tape segment by segment: the
  // other non-inverted states are checkpointed with it.
  if (every)
    for (auto [info, isExplicit] : llvm::zip(states, explicitChoice)) {
      if (info.strategy.kind != BackwardStrategy::Store)
        continue;
      if (isExplicit)
        return scan.emitOpError()
               << "state '" << info.name
               << "' asks for store while another state is checkpointed; a "
                  "checkpointed backward recomputes every state's tape, so "
                  "choose checkpoint for both";
      info.strategy = {BackwardStrategy::Checkpoint, every};
    }
  for (auto [index, info] : llvm::enumerate(states))
    findEnergyForm(scan, info, index);
  return states;
}

/// Whether a checkpointed fast weight has the energy form of the backward:
/// its new value is a chain of row decays and sum writes of the state, and
/// every value of the chain is used only by the next update and by reads
/// whose results reach outputs through sums alone. Then no adjoint rule needs
/// the weight itself (docs/design.md, "The backward of a decaying fast
/// weight"): a read's `W g` depends on the output gradients alone (the
/// training forward computes it), a write's and a decay's gradients on the
/// weight's adjoint and E.
/// Appends the outputs that `value` reaches through sums alone (so that its
/// gradient is the sum of theirs); false if it reaches anything else.
static bool reachesOutputsOnly(Value value, unsigned numStates,
                               SmallVectorImpl<unsigned> &outputs) {
  for (OpOperand &use : value.getUses()) {
    Operation *user = use.getOwner();
    if (isa<YieldOp>(user) && use.getOperandNumber() >= numStates)
      outputs.push_back(use.getOperandNumber() - numStates);
    else if (!isa<AddOp>(user) ||
             !reachesOutputsOnly(user->getResult(0), numStates, outputs))
      return false;
  }
  return true;
}

/// Whether every row of `factors` holds the same value: a constant, or a
/// constant scaled by a scalar (what fwp-decompose makes of
/// fwp.scale_weight).
static bool isUniform(Value factors) {
  if (factors.getDefiningOp<ConstantOp>())
    return true;
  auto scale = factors.getDefiningOp<ScaleOp>();
  return scale && isUniform(scale.getX());
}

/// Whether `value` depends on a param of `scan`.
static bool dependsOnParams(ScanOp scan, Value value) {
  SmallVector<Value> pending{value};
  llvm::DenseSet<Value> seen;
  while (!pending.empty()) {
    Value next = pending.pop_back_val();
    if (!seen.insert(next).second)
      continue;
    if (llvm::is_contained(scan.getParamArgs(), next))
      return true;
    if (Operation *op = next.getDefiningOp())
      llvm::append_range(pending, op->getOperands());
  }
  return false;
}

static void findEnergyForm(ScanOp scan, StateInfo &state, unsigned stateIndex) {
  if (!state.isMatrix || state.strategy.kind != BackwardStrategy::Checkpoint ||
      scan.getReverse())
    return;
  SmallVector<Value> values{state.yielded};
  SmallVector<WriteDeltaOp> deltaWrites;
  bool uniformDecays = true;
  llvm::DenseMap<Value, bool> inputsAlone;
  for (Value value = state.yielded; value != state.arg;) {
    Operation *op = value.getDefiningOp();
    if (!isa_and_nonnull<ScaleRowsOp, WriteSumOp, WriteDeltaOp>(op))
      return;
    if (auto decay = dyn_cast<ScaleRowsOp>(op))
      uniformDecays = uniformDecays && isUniform(decay.getFactors());
    // A delta write: its product W d with the adjoint goes to the scan
    // after the backward, which rebuilds W from the segment's checkpoint
    // (so every update's coefficients must depend on the inputs alone) and
    // adds W d's gradient through the key (not through params: that scan
    // carries no accumulators).
    if (auto write = dyn_cast<WriteDeltaOp>(op)) {
      if (dependsOnParams(scan, write.getKey()))
        return;
      deltaWrites.push_back(write);
    }
    value = cast<FastWeightUpdateOpInterface>(op).getUpdatedWeight();
    values.push_back(value);
  }
  if (!deltaWrites.empty()) {
    // The energy term of W d is known only summed over the rows, which a
    // decay that is the same for every row is all it needs.
    if (!uniformDecays)
      return;
    for (Value value : values)
      if (Operation *op = value.getDefiningOp())
        for (Value operand : op->getOperands())
          if (!llvm::is_contained(values, operand) &&
              !dependsOnInputsAlone(scan, operand, inputsAlone))
            return;
  }
  unsigned numStates = scan.getNumStates();
  SmallVector<ReadOp> reads;
  for (Value value : values)
    for (OpOperand &use : value.getUses()) {
      Operation *user = use.getOwner();
      if (isa<YieldOp>(user)) {
        if (value != state.yielded || use.getOperandNumber() != stateIndex)
          return;
        continue;
      }
      if (auto update = dyn_cast<FastWeightUpdateOpInterface>(user)) {
        if (!llvm::is_contained(values, update.getUpdateResult()) ||
            update.getUpdatedWeight() != value)
          return;
        continue;
      }
      auto read = dyn_cast<ReadOp>(user);
      SmallVector<unsigned> outputs;
      if (!read || read.getWeight() != value ||
          !reachesOutputsOnly(read.getResult(), numStates, outputs))
        return;
      reads.push_back(read);
    }
  llvm::sort(reads, [](ReadOp a, ReadOp b) {
    return a->isBeforeInBlock(b);
  });
  state.energy = true;
  state.energyReads = std::move(reads);
  state.energyValues.insert(values.begin(), values.end());
  state.deltaWrites.assign(deltaWrites.rbegin(), deltaWrites.rend());
}

/// Energy form: rewrites every read of a weight value made by a sum write
/// through the value before the write, read(W + k (x) v, q) = read(W, q) +
/// v (k . q). E then never holds the write's large, cancelling pair q (.) k
/// (v . g) - k (.) q (v . g): with a strong decay (a -> 0) E = a (.) da is
/// small, and f32 would lose it in that cancellation.
static void readBeforeWrites(const StateInfo &state) {
  for (ReadOp read : state.energyReads) {
    while (Operation *writeOp = read.getWeight().getDefiningOp()) {
      Value before, key, row;
      OpBuilder builder(read);
      Location loc = read.getLoc();
      if (auto write = dyn_cast<WriteSumOp>(writeOp)) {
        before = write.getWeight();
        key = write.getKey();
        row = write.getValue();
      } else if (auto write = dyn_cast<WriteDeltaOp>(writeOp)) {
        // The written row beta (v - vbar).
        before = write.getWeight();
        key = write.getKey();
        row = ScaleOp::create(builder, loc,
                              SubOp::create(builder, loc, write.getValue(),
                                            write.getRetrieved()),
                              write.getBeta());
      } else {
        break;
      }
      auto earlier =
          ReadOp::create(builder, loc, read.getType(), before, read.getQuery());
      Value overlap = DotOp::create(builder, loc, key, read.getQuery());
      Value sum = AddOp::create(builder, loc, earlier,
                                ScaleOp::create(builder, loc, row, overlap));
      read.getResult().replaceAllUsesWith(sum);
      read.erase();
      read = earlier;
    }
  }
}

/// The resolved `fwp.backward` dictionary of a scan.
static DictionaryAttr backwardAttr(MLIRContext *context,
                                   ArrayRef<StateInfo> states) {
  Builder builder(context);
  SmallVector<NamedAttribute> entries;
  for (const StateInfo &state : states)
    entries.push_back(builder.getNamedAttr(
        state.name, builder.getStringAttr(state.strategy.str())));
  return builder.getDictionaryAttr(entries);
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

/// Whether `value` of the scan's body depends on the step's seq inputs,
/// params and constants alone, not on a state: the backward can recompute
/// it (it is in the time-parallel prologue there), so the tape need not
/// record it. The body's ops have no side effects.
static bool dependsOnInputsAlone(ScanOp scan, Value value,
                                 llvm::DenseMap<Value, bool> &memo) {
  if (auto it = memo.find(value); it != memo.end())
    return it->second;
  bool result;
  if (auto arg = dyn_cast<BlockArgument>(value)) {
    result = llvm::is_contained(scan.getSeqArgs(), arg) ||
             llvm::is_contained(scan.getParamArgs(), arg);
  } else {
    Operation *op = value.getDefiningOp();
    result = op->getNumRegions() == 0 &&
             llvm::all_of(op->getOperands(), [&](Value operand) {
               return dependsOnInputsAlone(scan, operand, memo);
             });
  }
  memo[value] = result;
  return result;
}

static ScanOp buildTrainScan(ScanOp scan, MutableArrayRef<StateInfo> states,
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
  // The forward scan's value of each value of the training scan.
  llvm::DenseMap<Value, Value> original;
  for (Operation &op : scan.getBodyBlock().without_terminator())
    for (Value result : op.getResults())
      original[mapping.lookup(result)] = result;
  for (BlockArgument arg : scan.getBodyBlock().getArguments())
    original[mapping.lookup(arg)] = arg;
  llvm::DenseMap<Value, bool> inputsAlone;

  // Energy form: the output gradients come in as seq inputs
  // ("grad.<output>"), and the tape holds each read's W g.
  SmallVector<Value> outputGrads(scan.getNumOutputs());
  unsigned numStates = scan.getNumStates();
  auto outputGrad = [&](unsigned output) {
    Value &grad = outputGrads[output];
    if (grad)
      return grad;
    Block &block = train.getBodyBlock();
    unsigned position = train.getNumSeq();
    Type type = yield.getValues()[numStates + output].getType();
    grad = block.insertArgument(position, type, train.getLoc());
    SmallVector<Attribute> names(train.getSeqNames().getValue());
    names.push_back(builder.getStringAttr(
        "grad." + cast<StringAttr>(train.getOutputNames()[output]).getValue()));
    train.setSeqNamesAttr(builder.getArrayAttr(names));
    return grad;
  };

  SmallVector<Value> tapeValues;
  for (StateInfo &state : states) {
    if (state.energy) {
      for (auto [i, read] : llvm::enumerate(state.energyReads)) {
        // Right after the weight's value, before the write that follows:
        // read after it, fwp-fuse would take it through the written value
        // (W g = W' g - k (v . g)), the cancellation readBeforeWrites avoids.
        Value weight = mapping.lookup(read.getWeight());
        OpBuilder::InsertionGuard guard(builder);
        builder.setInsertionPointAfterValue(weight);
        SmallVector<unsigned> outputs;
        (void)reachesOutputsOnly(read.getResult(), numStates, outputs);
        Value g;
        for (unsigned output : outputs) {
          Value part = outputGrad(output);
          g = g ? AddOp::create(builder, read.getLoc(), g, part).getResult() : part;
        }
        tapeNames.push_back(tapeReadName(state.name, i));
        tapeValues.push_back(ReadTransposedOp::create(
            builder, read.getLoc(), read.getQuery().getType(), weight, g));
      }
      // A delta write's retrieval W^T k, which its rule needs and the
      // backward cannot form.
      for (auto [i, write] : llvm::enumerate(state.deltaWrites)) {
        tapeNames.push_back(tapeRetrievedName(state.name, i));
        tapeValues.push_back(mapping.lookup(write.getRetrieved()));
      }
      continue;
    }
    if (!state.inverts()) {
      tapeNames.push_back(tapePrevName(state.name));
      tapeValues.push_back(mapping.lookup(state.arg));
      continue;
    }
    for (auto [i, write] : llvm::enumerate(state.chain)) {
      auto cloned = cast<FastWeightUpdateOpInterface>(mapping.lookup(write));
      SmallVector<Value> tape = cloned.buildInverseTape(builder);
      SmallVector<Value> &recomputed = state.tapeRecomputed.emplace_back();
      for (auto [j, value] : llvm::enumerate(tape)) {
        Value source = original.lookup(value);
        if (source && dependsOnInputsAlone(scan, source, inputsAlone)) {
          recomputed.push_back(source);
          continue;
        }
        recomputed.push_back(Value());
        tapeNames.push_back(j == 0   ? tapeKeyName(state.name, i)
                            : j == 1 ? tapeDeltaName(state.name, i)
                            : j == 2 ? tapeRateName(state.name, i)
                                     : ("tape." + state.name + "." + Twine(i) +
                                        "." + Twine(j))
                                           .str());
        tapeValues.push_back(value);
      }
    }
  }
  llvm::append_range(tapeTypes, ValueRange(tapeValues).getTypes());

  // A checkpointed layer's training forward runs only inside the backward,
  // to rebuild a segment's tape (the forward of the call is the plain
  // forward, which keeps the checkpoints): nothing reads its outputs, so it
  // computes none of them.
  bool checkpointed = llvm::any_of(states, [](const StateInfo &state) {
    return state.strategy.kind == BackwardStrategy::Checkpoint;
  });
  SmallVector<Value> yielded(yield.getValues().take_front(numStates));
  if (!checkpointed)
    llvm::append_range(yielded, yield.getValues().drop_front(numStates));
  llvm::append_range(yielded, tapeValues);
  YieldOp::create(builder, yield.getLoc(), yielded);
  yield.erase();

  SmallVector<Attribute> outputNames, outputTypes;
  if (!checkpointed) {
    llvm::append_range(outputNames, train.getOutputNames().getValue());
    llvm::append_range(outputTypes, train.getOutputTypes().getValue());
  }
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
/// maps them to their recomputed counterparts in the backward body. The rule
/// of each op is its AdjointOpInterface.
class AdjointBuilder final : public AdjointEmitter {
public:
  AdjointBuilder(OpBuilder &builder, IRMapping &forward)
      : AdjointEmitter(builder), forward(forward) {}

  bool tracksEnergy(Value weight) const override {
    return energyTracked.contains(weight);
  }
  Value energyOf(Value weight) const override { return energies.lookup(weight); }
  void accumulateEnergy(Value weight, Value contribution) override {
    if (!contribution)
      return;
    Value &slot = energies[weight];
    slot = slot ? AddOp::create(builder(), contribution.getLoc(), slot,
                                contribution)
                      .getResult()
                : contribution;
  }
  Value precomputedRead(Operation *read) const override {
    return precomputedReads.lookup(read);
  }
  /// Energy form: `values` are a state's values in the step (see
  /// StateInfo::energyValues).
  void trackEnergy(const llvm::SmallDenseSet<Value, 4> &values) {
    energyTracked.insert(values.begin(), values.end());
  }
  void setPrecomputedRead(Operation *read, Value value) {
    precomputedReads[read] = value;
  }
  bool deferProduct(Operation *update, Value x) override {
    if (!deferrable.contains(update))
      return false;
    Value &slot = deferred[update];
    slot = slot ? AddOp::create(builder(), x.getLoc(), slot, x).getResult() : x;
    return true;
  }
  /// The energy form's delta writes, whose products W d are deferred.
  void allowDeferral(Operation *update) { deferrable.insert(update); }
  /// The backward's value handed over for `update` (null when none).
  Value deferredOf(Operation *update) const { return deferred.lookup(update); }

  Value adjointOf(Value forwardValue) const override {
    const_cast<AdjointBuilder *>(this)->materialize(forwardValue);
    return adjoints.lookup(forwardValue);
  }
  Value recomputed(Value forwardValue) const override {
    return forward.lookup(forwardValue);
  }
  void setAdjoint(Value forwardValue, Value adjoint) {
    adjoints[forwardValue] = adjoint;
  }
  void accumulate(Value x, Value contribution) override {
    if (!contribution)
      return;
    if (!adjoints.lookup(x) && pendingOuter.count(x)) {
      // The weight's first matrix: the outer products go on top of it.
      adjoints[x] = contribution;
      materialize(x);
      return;
    }
    materialize(x);
    Value &slot = adjoints[x];
    slot = slot ? AddOp::create(builder(), contribution.getLoc(), slot,
                                contribution)
                      .getResult()
                : contribution;
  }
  void accumulateOuter(Value weight, Value key, Value value) override {
    // Kept pending while the weight has no other adjoint, so that a matrix
    // contribution visited later (the adjoint of the next write) becomes
    // their base instead of a zero matrix added to it.
    if (!adjoints.lookup(weight)) {
      pendingOuter[weight].push_back({key, value});
      return;
    }
    adjoints[weight] =
        WriteSumOp::create(builder(), key.getLoc(), adjoints[weight], key, value);
  }

  /// Writes the pending outer products of `weight` into its adjoint.
  void materialize(Value weight) {
    auto pending = pendingOuter.find(weight);
    if (pending == pendingOuter.end())
      return;
    SmallVector<std::pair<Value, Value>> outer = std::move(pending->second);
    pendingOuter.erase(pending);
    Value slot = adjoints.lookup(weight);
    for (auto [key, value] : outer) {
      if (!slot)
        slot = ConstantOp::create(builder(), key.getLoc(), weight.getType(),
                                  builder().getF64FloatAttr(0.0));
      slot = WriteSumOp::create(builder(), key.getLoc(), slot, key, value);
    }
    adjoints[weight] = slot;
  }

  LogicalResult visit(Operation *op) {
    // Ops whose results carry no gradient contribute nothing.
    if (llvm::none_of(op->getResults(),
                      [&](Value r) { return adjointOf(r) != nullptr; }))
      return success();
    auto rule = dyn_cast<AdjointOpInterface>(op);
    if (!rule)
      return op->emitOpError()
             << "has no adjoint rule (AdjointOpInterface)"
             << (isa<DecomposableOpInterface>(op)
                     ? "; it is a composite op: run fwp-decompose first"
                     : "");
    return rule.buildAdjoint(*this);
  }

private:
  IRMapping &forward;
  llvm::DenseMap<Value, Value> adjoints;
  llvm::DenseMap<Value, SmallVector<std::pair<Value, Value>, 1>> pendingOuter;
  llvm::DenseSet<Value> energyTracked;
  llvm::DenseMap<Value, Value> energies;
  llvm::DenseMap<Operation *, Value> precomputedReads;
  llvm::DenseSet<Operation *> deferrable;
  llvm::DenseMap<Operation *, Value> deferred;
};

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
    if (state.inverts()) {
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
  for (const StateInfo &state : states)
    if (state.energy) {
      auto weight = cast<FastWeightType>(state.arg.getType());
      stateNames.push_back(keep(energyName(state.name)));
      stateTypes.push_back(
          VectorType::get({weight.getKeyDim()}, weight.getElementType()));
    }
  SmallVector<StringRef> outputNames;
  for (StringRef name : namesOf(scan.getSeqNames()))
    outputNames.push_back(keep(gradName(name)));
  SmallVector<Type> outputTypes = typesOf(scan.getSeqArgs());
  for (const StateInfo &state : states)
    for (auto [i, write] : llvm::enumerate(state.deltaWrites)) {
      outputNames.push_back(keep(deferredName(state.name, i)));
      outputTypes.push_back(WriteDeltaOp(write).getValue().getType());
    }

  auto grad = ScanOp::create(
      builder, scan.getLoc(), (scan.getSymName() + "_grad").str(),
      scan.getDims(), seqNames, seqTypes, paramNames, paramTypes, stateNames,
      stateTypes, outputNames, outputTypes,
      // The backward undoes the steps in the opposite order.
      /*reverse=*/!scan.getReverse());
  grad->setAttr(kRoleAttrName, builder.getStringAttr("backward"));
  grad->setAttr(kForwardAttrName, FlatSymbolRefAttr::get(scan.getSymNameAttr()));
  grad->setAttr(kBackwardAttrName, backwardAttr(context, states));

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

  // A forward value that depends on the step's inputs alone, recomputed
  // here: the forward ops it needs, cloned in program order (the step's
  // recomputation below skips them).
  auto recompute = [&](Value source) -> Value {
    if (Value done = forward.lookupOrNull(source))
      return done;
    llvm::SetVector<Operation *> needed;
    SmallVector<Value> pending{source};
    while (!pending.empty()) {
      Operation *op = pending.pop_back_val().getDefiningOp();
      if (!op || forward.contains(op->getResult(0)) || !needed.insert(op))
        continue;
      llvm::append_range(pending, op->getOperands());
    }
    for (Operation &op : scan.getBodyBlock().without_terminator())
      if (needed.contains(&op))
        builder.clone(op, forward);
    return forward.lookup(source);
  };

  // Rebuild every state at t-1: invert the chain of writes of inverted
  // states (S_{t-1} = S_t - key (x) delta), read the others off the tape.
  unsigned tapeIndex = numSeq + numOutputs;
  unsigned matrixIndex = 0;
  SmallVector<Value> rebuiltMatrices;
  // Per update of an inverted chain, the backward's values of its tape.
  llvm::DenseMap<Operation *, SmallVector<Value>> updateTapes;
  llvm::DenseMap<Operation *, Value> precomputedReads;
  for (const StateInfo &state : states) {
    if (state.energy) {
      for (ReadOp read : state.energyReads)
        precomputedReads[read] = gradSeqArgs[tapeIndex++];
      for (WriteDeltaOp write : state.deltaWrites)
        forward.map(write.getRetrieved(), gradSeqArgs[tapeIndex++]);
      continue;
    }
    if (!state.inverts()) {
      forward.map(state.arg, gradSeqArgs[tapeIndex++]);
      continue;
    }
    Value current = gradStateArgs[matrixIndex++];
    SmallVector<SmallVector<Value>> tapes; // per update, in program order
    for (ArrayRef<Value> recomputed : state.tapeRecomputed) {
      SmallVector<Value> &tape = tapes.emplace_back();
      for (Value source : recomputed)
        tape.push_back(source ? recompute(source) : gradSeqArgs[tapeIndex++]);
    }
    for (int i = static_cast<int>(state.chain.size()) - 1; i >= 0; --i) {
      auto update = cast<FastWeightUpdateOpInterface>(state.chain[i]);
      forward.map(update.getUpdateResult(), current);
      current = update.buildInverse(builder, current, tapes[i]);
      updateTapes[state.chain[i]] = tapes[i];
    }
    forward.map(state.arg, current);
    rebuiltMatrices.push_back(current);
  }

  // Recompute the step from the states at t-1. The updates of inverted
  // chains are not re-run: their results are the rebuilt matrices, and they
  // recompute their other results (a delta write's retrieved value).
  llvm::DenseSet<Operation *> chainWrites, energyOps;
  for (const StateInfo &state : states) {
    chainWrites.insert(state.chain.begin(), state.chain.end());
    // Energy form: the weight is not rebuilt; its updates and reads are
    // not recomputed (no rule needs their results).
    for (Value value : state.energyValues)
      if (value != state.arg)
        energyOps.insert(value.getDefiningOp());
    for (ReadOp read : state.energyReads)
      energyOps.insert(read);
  }
  for (Operation &op : scan.getBodyBlock().without_terminator()) {
    // ... nor what only sums their results into outputs.
    // (A delta write's retrieval comes from the tape: mapped above.)
    if (energyOps.contains(&op) ||
        llvm::any_of(op.getOperands(), [&](Value operand) {
          return energyOps.contains(operand.getDefiningOp()) &&
                 !forward.contains(operand);
        })) {
      energyOps.insert(&op);
      continue;
    }
    if (chainWrites.contains(&op)) {
      cast<FastWeightUpdateOpInterface>(op).recomputeOtherResults(
          builder, forward, updateTapes.lookup(&op));
      continue;
    }
    if (op.getNumResults() > 0 && forward.contains(op.getResult(0)))
      continue; // recomputed for the rebuild above
    builder.clone(op, forward);
  }

  // Seed the adjoints: the carried gradients of the states, the step's
  // output gradients, and the param accumulators (summed over time).
  AdjointBuilder adjoints(builder, forward);
  unsigned numMatrices = rebuiltMatrices.size();
  unsigned energyIndex = numMatrices + states.size() + scan.getNumParams();
  for (const StateInfo &state : states)
    if (state.energy) {
      adjoints.trackEnergy(state.energyValues);
      adjoints.accumulateEnergy(state.yielded, gradStateArgs[energyIndex++]);
    }
  for (auto [read, value] : precomputedReads)
    adjoints.setPrecomputedRead(read, value);
  for (const StateInfo &state : states)
    for (WriteDeltaOp write : state.deltaWrites)
      adjoints.allowDeferral(write);
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
    return ConstantOp::create(builder, loc, forwardValue.getType(),
                              builder.getF64FloatAttr(0.0));
  };
  SmallVector<Value> yielded(rebuiltMatrices);
  for (const StateInfo &state : states)
    yielded.push_back(adjointOrZeros(state.arg));
  for (BlockArgument param : scan.getParamArgs())
    yielded.push_back(adjointOrZeros(param));
  for (auto [index, state] : llvm::enumerate(states))
    if (state.energy) {
      Value energy = adjoints.energyOf(state.arg);
      auto weight = cast<FastWeightType>(state.arg.getType());
      auto type = VectorType::get({weight.getKeyDim()}, weight.getElementType());
      yielded.push_back(energy ? energy
                               : ConstantOp::create(builder, loc, type,
                                                    builder.getF64FloatAttr(0.0))
                                     .getResult());
    }
  for (BlockArgument seq : scan.getSeqArgs())
    yielded.push_back(adjointOrZeros(seq));
  for (const StateInfo &state : states)
    for (WriteDeltaOp write : state.deltaWrites) {
      Value value = adjoints.deferredOf(write);
      yielded.push_back(value ? value
                              : ConstantOp::create(builder, loc, write.getValue().getType(),
                                                   builder.getF64FloatAttr(0.0))
                                    .getResult());
    }
  YieldOp::create(builder, loc, yielded);
  return grad;
}

//===----------------------------------------------------------------------===//
// The deferred products of the energy form's delta writes.
//===----------------------------------------------------------------------===//

/// `@L_deferred`: a forward-running scan, run after the backward over the
/// same steps, that rebuilds the energy states from their value at the
/// first step (the segment's checkpoint), forms each delta write's product
/// `r = W d` with the backward's `d` (`deferred.<state>.<i>`) and yields
/// the gradient that `r`, the adjoint of the write's key, sends to the seq
/// inputs ("grad.<seq>", which the runtime adds to the backward's). Null
/// when no state has delta writes in the energy form.
static FailureOr<ScanOp> buildDeferredScan(ScanOp scan,
                                           ArrayRef<StateInfo> states) {
  SmallVector<const StateInfo *> deferring;
  for (const StateInfo &state : states)
    if (!state.deltaWrites.empty())
      deferring.push_back(&state);
  if (deferring.empty())
    return ScanOp();
  MLIRContext *context = scan.getContext();
  OpBuilder builder(context);
  std::vector<std::string> storage;
  storage.reserve(16);
  auto keep = [&](std::string text) -> StringRef {
    storage.push_back(std::move(text));
    return storage.back();
  };

  // What the keys depend on: the ops to differentiate, and the seq inputs
  // that receive a gradient (findEnergyForm checked: no params).
  llvm::DenseSet<Operation *> keyPath;
  llvm::DenseSet<Value> reachedSeq;
  SmallVector<Value> pending;
  for (const StateInfo *state : deferring)
    for (WriteDeltaOp write : state->deltaWrites)
      pending.push_back(write.getKey());
  while (!pending.empty()) {
    Value value = pending.pop_back_val();
    if (llvm::is_contained(scan.getSeqArgs(), value)) {
      reachedSeq.insert(value);
      continue;
    }
    if (Operation *op = value.getDefiningOp())
      if (keyPath.insert(op).second)
        llvm::append_range(pending, op->getOperands());
  }

  SmallVector<StringRef> seqNames = namesOf(scan.getSeqNames());
  SmallVector<Type> seqTypes = typesOf(scan.getSeqArgs());
  for (const StateInfo *state : deferring)
    for (auto [i, write] : llvm::enumerate(state->deltaWrites)) {
      seqNames.push_back(keep(deferredName(state->name, i)));
      seqTypes.push_back(WriteDeltaOp(write).getValue().getType());
    }
  SmallVector<StringRef> stateNames;
  SmallVector<Type> stateTypes;
  for (const StateInfo *state : deferring) {
    stateNames.push_back(state->name);
    stateTypes.push_back(state->arg.getType());
  }
  SmallVector<StringRef> outputNames;
  SmallVector<Type> outputTypes;
  SmallVector<Value> outputSeq;
  for (auto [name, arg] :
       llvm::zip(namesOf(scan.getSeqNames()), scan.getSeqArgs()))
    if (reachedSeq.contains(arg)) {
      outputNames.push_back(keep(gradName(name)));
      outputTypes.push_back(arg.getType());
      outputSeq.push_back(arg);
    }
  auto deferredScan = ScanOp::create(
      builder, scan.getLoc(), (scan.getSymName() + "_deferred").str(),
      scan.getDims(), seqNames, seqTypes, namesOf(scan.getParamNames()),
      typesOf(scan.getParamArgs()), stateNames, stateTypes, outputNames,
      outputTypes, /*reverse=*/false);
  deferredScan->setAttr(kRoleAttrName,
                        builder.getStringAttr("backward_deferred"));
  deferredScan->setAttr(kForwardAttrName,
                        FlatSymbolRefAttr::get(scan.getSymNameAttr()));
  deferredScan->setAttr(kBackwardAttrName, backwardAttr(context, states));

  Block &body = deferredScan.getBodyBlock();
  builder.setInsertionPointToStart(&body);
  IRMapping forward;
  for (auto [fwd, own] :
       llvm::zip(scan.getSeqArgs(), deferredScan.getSeqArgs()))
    forward.map(fwd, own);
  for (auto [fwd, own] :
       llvm::zip(scan.getParamArgs(), deferredScan.getParamArgs()))
    forward.map(fwd, own);
  for (auto [state, own] : llvm::zip(deferring, deferredScan.getStateArgs()))
    forward.map(state->arg, own);

  // The updates of the states and what they need, in program order.
  llvm::DenseSet<Operation *> needed;
  for (const StateInfo *state : deferring) {
    SmallVector<Value> work{state->yielded};
    while (!work.empty()) {
      Operation *op = work.pop_back_val().getDefiningOp();
      if (op && needed.insert(op).second)
        llvm::append_range(work, op->getOperands());
    }
  }
  for (Operation &op : scan.getBodyBlock().without_terminator())
    if (needed.contains(&op))
      builder.clone(op, forward);

  // r = W d through the weight before each write: the adjoint of its key.
  AdjointBuilder adjoints(builder, forward);
  unsigned deferredIndex = scan.getNumSeq();
  for (const StateInfo *state : deferring)
    for (WriteDeltaOp write : state->deltaWrites) {
      Value d = deferredScan.getSeqArgs()[deferredIndex++];
      adjoints.accumulate(
          write.getKey(),
          ReadTransposedOp::create(builder, write.getLoc(),
                                   write.getKey().getType(),
                                   forward.lookup(write.getWeight()), d));
    }
  for (Operation &op :
       llvm::reverse(scan.getBodyBlock().without_terminator()))
    if (keyPath.contains(&op) && failed(adjoints.visit(&op))) {
      deferredScan->erase();
      return failure();
    }

  SmallVector<Value> yielded;
  for (const StateInfo *state : deferring)
    yielded.push_back(forward.lookup(state->yielded));
  for (Value seq : outputSeq) {
    Value adjoint = adjoints.adjointOf(seq);
    yielded.push_back(adjoint ? adjoint
                              : ConstantOp::create(builder, scan.getLoc(),
                                                   seq.getType(),
                                                   builder.getF64FloatAttr(0.0))
                                    .getResult());
  }
  YieldOp::create(builder, scan.getLoc(), yielded);
  return deferredScan;
}

struct FwpDifferentiatePass
    : public mlir::fwp::impl::FwpDifferentiateBase<FwpDifferentiatePass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (!backward.empty()) {
      std::optional<BackwardStrategy> strategy = parseBackwardStrategy(backward);
      if (!strategy) {
        module.emitError() << "fwp-differentiate: backward must be invert, "
                              "store or checkpoint[:C] (C > 0), got '"
                           << backward << "'";
        return signalPassFailure();
      }
      setBackwardStrategy(module, *strategy);
    }
    SymbolTable symbols(module);
    SmallVector<ScanOp> forwards;
    for (ScanOp scan : module.getOps<ScanOp>())
      if (!scan->hasAttr(kRoleAttrName))
        forwards.push_back(scan);
    for (ScanOp scan : forwards) {
      for (StringRef suffix : {"_train", "_grad", "_deferred"})
        if (symbols.lookup((scan.getSymName() + suffix).str())) {
          scan.emitOpError() << "is already differentiated (@"
                             << scan.getSymName() << suffix << " exists)";
          return signalPassFailure();
        }
      FailureOr<SmallVector<StateInfo, 2>> states = analyzeStates(scan);
      if (failed(states))
        return signalPassFailure();
      if (!states->empty())
        scan->setAttr(kBackwardAttrName,
                      backwardAttr(scan.getContext(), *states));
      // The energy form differentiates a copy whose reads go through the
      // values before the writes; the layer's forward stays as written.
      ScanOp source = scan;
      OwningOpRef<ScanOp> rewritten;
      if (llvm::any_of(*states, [](const StateInfo &s) { return s.energy; })) {
        rewritten = cast<ScanOp>(scan->clone());
        source = *rewritten;
        states = analyzeStates(source);
        for (const StateInfo &state : *states)
          if (state.energy)
            readBeforeWrites(state);
        states = analyzeStates(source);
        if (failed(states))
          return signalPassFailure();
      }
      SmallVector<std::string> tapeNames;
      SmallVector<Type> tapeTypes;
      ScanOp train = buildTrainScan(source, *states, tapeNames, tapeTypes);
      FailureOr<ScanOp> grad =
          buildGradScan(source, *states, tapeNames, tapeTypes);
      if (failed(grad)) {
        train->erase();
        return signalPassFailure();
      }
      module.getBody()->push_back(train);
      module.getBody()->push_back(*grad);
      FailureOr<ScanOp> deferred = buildDeferredScan(source, *states);
      if (failed(deferred))
        return signalPassFailure();
      if (*deferred)
        module.getBody()->push_back(*deferred);
    }
  }
};

} // namespace

std::string mlir::fwp::BackwardStrategy::str() const {
  switch (kind) {
  case Invert:
    return "invert";
  case Store:
    return "store";
  case Checkpoint:
    return "checkpoint:" + std::to_string(every);
  }
  llvm_unreachable("unknown backward strategy");
}

std::optional<mlir::fwp::BackwardStrategy>
mlir::fwp::parseBackwardStrategy(StringRef text) {
  if (text == "invert")
    return BackwardStrategy{BackwardStrategy::Invert, 0};
  if (text == "store")
    return BackwardStrategy{BackwardStrategy::Store, 0};
  if (text == "checkpoint")
    return BackwardStrategy{BackwardStrategy::Checkpoint,
                            kDefaultCheckpointEvery};
  int64_t every = 0;
  if (text.consume_front("checkpoint:") && !text.getAsInteger(10, every) &&
      every > 0)
    return BackwardStrategy{BackwardStrategy::Checkpoint, every};
  return std::nullopt;
}

void mlir::fwp::setBackwardStrategy(ModuleOp module,
                                    const BackwardStrategy &strategy) {
  Builder builder(module.getContext());
  for (ScanOp scan : module.getOps<ScanOp>()) {
    if (scan->hasAttr(kRoleAttrName))
      continue;
    SmallVector<NamedAttribute> entries;
    for (auto [name, arg] :
         llvm::zip(scan.getStateNames(), scan.getStateArgs()))
      if (isa<FastWeightType>(arg.getType()))
        entries.push_back(builder.getNamedAttr(
            cast<StringAttr>(name), builder.getStringAttr(strategy.str())));
    scan->setAttr(kBackwardAttrName, builder.getDictionaryAttr(entries));
  }
}
