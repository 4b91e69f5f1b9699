//===- StagedScan.cpp - A scan of several fast weights, one pass each -----===//
//
// The chunkwise form (ChunkwiseScan.cpp) runs a scan of one fast weight
// whose update and reads take time-parallel coefficients. A backward scan
// has two fast weights, W (rebuilt backwards) and its adjoint G, and reads
// each with queries computed from reads of the other: delta_net's
//
//   W_prev = W - k (x) b r          (rebuilt: r = v - vbar off the tape)
//   G1     = G + q (x) dy           (the adjoint: coefficients from inputs)
//   G_prev, du = write_delta(G1, k, 0, b)
//   dk     = G1 (b r) + W_prev (-b du),   dq = W_prev dy + ...
//
// Neither weight's update needs the other's reads, so the step splits into
// passes over the whole sequence, each the update of one weight and the
// reads of it whose queries earlier passes computed: G (du, G1 (b r)), then
// W (W_prev dy, W_prev (-b du)). Each pass is a scan of one fast weight,
// which takes the chunkwise form; the values that cross passes go through
// [T, n] buffers. A weight rebuilt in several passes (where a read of W
// feeds G's step, as a retrieval recomputed from W_prev would: W, G, W
// again) starts each but its last from a copy of its initial value.
//
// The passes are found greedily: in rounds over the weights, a weight gets
// a pass when some unread read of it has its query ready (or when it has
// had none yet and its update's coefficients are ready); each pass then
// takes the vector work that its results make computable. A weight whose
// reads are all ready goes before the others (delta_net's G before W).
//
// Vector states: the weights in a recurrence with them -- with a read (or
// a retrieval) that depends on a vector state, through its query or the
// weight's coefficients, and feeds a vector state's next value; with them,
// a weight that depends on a vector state and feeds a read or an update of
// the group -- form the late group: one recurrent pass that holds the
// vector states and all those weights (delta_rnn's R, read with
// softmax(y); delta_lstm's R_i, R_u, R_o). The late group is placed like a
// weight, once the results its step needs from other passes are ready, and
// later passes take its results: delta_rnn's forward runs W (z = W phi(q)),
// then the group; its backward W (W_prev^T k), the group (R, its adjoint
// G_R, whose retrieval is the query of a read of R, and y's adjoint), G_W
// (its coefficients from y's adjoint), then W again (the reads with
// queries from G_W's retrieval and y's adjoint). With a late group, first
// passes go before the passes that rebuild a weight again (which then take
// more reads). Without one, vector states (and the work that depends on
// them) go to the last pass, and a read with a query from them cannot be
// placed.
//
// The split is kept where every pass takes the chunkwise form, or where a
// late group leaves some weight out of it and the weights together outgrow
// 16 KiB (lowerInStages, measured): the weights written and read with
// inputs alone then run outside the serial recurrence (chunkwise at
// d = 128). Otherwise the scan is lowered as one recurrent loop.
//
//===----------------------------------------------------------------------===//

#include "CpuLowering.h"

#include "fwp/Dialect/Fwp/IR/TimeParallel.h"

#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/Sequence.h"

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::cpu;

/// Steps per block when a staged scan runs its passes block by block
/// (rounded to whole chunks): a block's rows of a dozen [T, n] inputs and
/// crossing values fit L2 beside the weights at d = 128.
static constexpr int64_t kPassBlock = 64;

namespace {

/// What an op of the body is to the split.
enum class Role {
  InputOnly, // depends on seq inputs and params alone: recomputed where used
  Chain,     // an update of a fast weight: in every pass of that weight
  Read,      // a read of a fast weight: in one pass of that weight
  Vector,    // other vector work: in the first pass that can compute it
  Late,      // depends on a vector state (without a late group): last pass
};

struct StagePlan {
  /// The fast-weight states (their indices among the states) of each pass:
  /// one weight, or the late group's.
  SmallVector<SmallVector<unsigned>> passStates;
  /// The pass that holds the vector states (and yields their next values).
  std::optional<unsigned> latePass;
  /// The weights in the recurrence with the vector states (the late group).
  SmallVector<unsigned> lateWeights;
  llvm::DenseMap<Operation *, Role> role;
  /// The pass of each Read, Vector and Late op.
  llvm::DenseMap<Operation *, unsigned> passOf;
  /// The weight each Chain and Read op updates or reads.
  llvm::DenseMap<Operation *, unsigned> stateOf;
  /// The first and last pass of each weight.
  llvm::DenseMap<unsigned, unsigned> firstPass, lastPass;

  bool holds(unsigned pass, unsigned s) const {
    return llvm::is_contained(passStates[pass], s);
  }
};

/// The weights that must run in one recurrent pass with the vector states:
/// those with a read (or a delta-rule retrieval) that both depends on a
/// vector state (through its query, or the weight's coefficients) and
/// feeds a vector state's next value, all within the step.
SmallVector<unsigned> findLateGroup(ScanOp scan, const StagePlan &plan,
                                    ArrayRef<unsigned> weights) {
  Block &body = scan.getBodyBlock();
  YieldOp yield = scan.getYield();
  unsigned numInputs = scan.getNumSeq() + scan.getNumParams();
  auto isMatrix = [](Value v) { return isa<FastWeightType>(v.getType()); };
  auto weightOf = [&](Operation *op) -> std::optional<unsigned> {
    Role role = plan.role.lookup(op);
    if (role == Role::Chain || role == Role::Read)
      return plan.stateOf.lookup(op);
    return std::nullopt;
  };

  // Forwards: the ops and weights that depend on a vector state.
  llvm::DenseSet<Operation *> late;
  llvm::DenseSet<unsigned> lateWeight;
  for (bool changed = true; changed;) {
    changed = false;
    for (Operation &op : body.without_terminator()) {
      if (late.contains(&op))
        continue;
      std::optional<unsigned> s = weightOf(&op);
      bool is = s && lateWeight.contains(*s);
      for (Value operand : op.getOperands()) {
        if (isMatrix(operand))
          continue;
        if (auto arg = dyn_cast<BlockArgument>(operand))
          is |= arg.getArgNumber() >= numInputs;
        else
          is |= late.contains(operand.getDefiningOp());
      }
      if (!is)
        continue;
      late.insert(&op);
      if (s && plan.role.lookup(&op) == Role::Chain &&
          lateWeight.insert(*s).second)
        changed = true;
    }
  }

  // Backwards: the ops and weights that a vector state's next value (or
  // the group's weights found so far) need. A weight that depends on a
  // vector state and feeds a read or an update of the group joins it too
  // (delta_rnn's backward: G_R, whose retrieval is the query of a read of R;
  // else R would be rebuilt again in a pass after G_R's).
  SmallVector<unsigned> group;
  while (true) {
    llvm::DenseSet<Value> needed;
    for (Value next : yield.getValues().take_front(scan.getNumStates()))
      if (!isMatrix(next))
        needed.insert(next);
    for (Operation &op : body.without_terminator())
      if (std::optional<unsigned> s = weightOf(&op);
          s && llvm::is_contained(group, *s))
        for (Value operand : op.getOperands())
          if (!isMatrix(operand))
            needed.insert(operand);
    llvm::DenseSet<Operation *> feeds;
    llvm::DenseSet<unsigned> feedingWeight;
    for (bool changed = true; changed;) {
      changed = false;
      for (Operation &op : llvm::reverse(body.without_terminator())) {
        if (feeds.contains(&op))
          continue;
        std::optional<unsigned> s = weightOf(&op);
        bool is = (s && plan.role.lookup(&op) == Role::Chain &&
                   feedingWeight.contains(*s)) ||
                  llvm::any_of(op.getResults(),
                               [&](Value v) { return needed.contains(v); });
        if (!is)
          continue;
        feeds.insert(&op);
        for (Value operand : op.getOperands())
          if (!isMatrix(operand))
            needed.insert(operand);
        if (s && feedingWeight.insert(*s).second)
          changed = true;
      }
    }
    SmallVector<unsigned> grown;
    for (unsigned s : weights)
      if (llvm::is_contained(group, s) ||
          llvm::any_of(body.without_terminator(), [&](Operation &op) {
            return weightOf(&op) == s && late.contains(&op) &&
                   feeds.contains(&op) &&
                   llvm::any_of(op.getResults(), [&](Value v) {
                     return !isMatrix(v) && needed.contains(v);
                   });
          }))
        grown.push_back(s);
    if (grown.size() == group.size())
      return group;
    group = std::move(grown);
  }
}

std::optional<StagePlan> planStages(ScanOp scan) {
  auto isMatrix = [](Value v) { return isa<FastWeightType>(v.getType()); };
  if (llvm::any_of(scan.getSeqArgs(), isMatrix) ||
      llvm::any_of(scan.getParamArgs(), isMatrix))
    return std::nullopt;
  SmallVector<unsigned> weights;
  bool hasVectorStates = false;
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    if (isMatrix(arg))
      weights.push_back(i);
    else
      hasVectorStates = true;
  }
  if (weights.size() < 2)
    return std::nullopt;

  StagePlan plan;
  YieldOp yield = scan.getYield();
  // Each weight's update chain; every matrix value must be on one.
  llvm::DenseMap<Value, unsigned> chainOf;
  for (unsigned s : weights) {
    Value current = scan.getStateArgs()[s];
    chainOf[current] = s;
    while (true) {
      FailureOr<Operation *> found = soleUpdateOf(current);
      if (failed(found))
        return std::nullopt;
      Operation *next = *found;
      if (!next)
        break;
      plan.role[next] = Role::Chain;
      plan.stateOf[next] = s;
      current = cast<FastWeightUpdateOpInterface>(next).getUpdateResult();
      chainOf[current] = s;
    }
    if (yield.getValues()[s] != current)
      return std::nullopt;
  }
  for (Value output : yield.getValues().drop_front(scan.getNumStates()))
    if (isMatrix(output))
      return std::nullopt;

  unsigned numInputs = scan.getNumSeq() + scan.getNumParams();
  SmallVector<Operation *> reads;
  for (Operation &op : scan.getBodyBlock().without_terminator()) {
    if (plan.role.contains(&op)) {
      // An update's operands other than its weight are vectors.
      Value weight = cast<FastWeightUpdateOpInterface>(op).getUpdatedWeight();
      for (Value operand : op.getOperands())
        if (operand != weight && isMatrix(operand))
          return std::nullopt;
      continue;
    }
    if (llvm::any_of(op.getResults(), isMatrix))
      return std::nullopt;
    if (llvm::any_of(op.getOperands(), isMatrix)) {
      if (!isa<ReadOp, ReadTransposedOp>(op) ||
          !chainOf.contains(op.getOperand(0)) || isMatrix(op.getOperand(1)))
        return std::nullopt;
      plan.role[&op] = Role::Read;
      plan.stateOf[&op] = chainOf.lookup(op.getOperand(0));
      reads.push_back(&op);
      continue;
    }
    Role role = Role::InputOnly;
    for (Value operand : op.getOperands()) {
      Role of = Role::InputOnly;
      if (auto arg = dyn_cast<BlockArgument>(operand))
        of = arg.getArgNumber() < numInputs ? Role::InputOnly : Role::Late;
      else
        of = plan.role.lookup(operand.getDefiningOp());
      if (of == Role::Late)
        role = Role::Late;
      else if (of != Role::InputOnly && role == Role::InputOnly)
        role = Role::Vector;
    }
    plan.role[&op] = role;
  }

  // With a late group, the work on the vector states is vector work like
  // any other: the vector states are the late group pass's results.
  if (hasVectorStates)
    plan.lateWeights = findLateGroup(scan, plan, weights);
  bool grouped = !plan.lateWeights.empty();
  if (grouped)
    for (auto &[op, role] : plan.role)
      if (role == Role::Late)
        role = Role::Vector;
  auto inGroup = [&](unsigned s) {
    return llvm::is_contained(plan.lateWeights, s);
  };

  // Whether `v` is computed by passes before `pass` (or needs none).
  auto readyBefore = [&](Value v, unsigned pass) {
    if (auto arg = dyn_cast<BlockArgument>(v))
      return arg.getArgNumber() < numInputs ||
             (plan.latePass && *plan.latePass < pass);
    Operation *def = v.getDefiningOp();
    switch (plan.role.lookup(def)) {
    case Role::InputOnly:
      return true;
    case Role::Late:
      return false;
    case Role::Chain: { // a delta-rule write's retrieval
      auto first = plan.firstPass.find(plan.stateOf.lookup(def));
      return first != plan.firstPass.end() && first->second < pass;
    }
    default: {
      auto it = plan.passOf.find(def);
      return it != plan.passOf.end() && it->second < pass;
    }
    }
  };
  auto coefficientsReady = [&](unsigned s, unsigned pass) {
    for (auto [op, role] : plan.role)
      if (role == Role::Chain && plan.stateOf.lookup(op) == s) {
        Value weight = cast<FastWeightUpdateOpInterface>(op).getUpdatedWeight();
        for (Value operand : op->getOperands())
          if (operand != weight && !readyBefore(operand, pass))
            return false;
      }
    return true;
  };
  // The vector work that pass `pass`'s results make computable.
  auto takeVectorWork = [&](unsigned pass) {
    for (Operation &op : scan.getBodyBlock().without_terminator())
      if (plan.role.lookup(&op) == Role::Vector && !plan.passOf.contains(&op) &&
          llvm::all_of(op.getOperands(),
                       [&](Value v) { return readyBefore(v, pass + 1); }))
        plan.passOf[&op] = pass;
  };

  // The late group as the next pass, if it can compute the vector states'
  // next values and its weights' updates from earlier passes' results and
  // its own; it takes the reads of its weights that it can compute.
  auto placeLateGroup = [&]() {
    unsigned pass = plan.passStates.size();
    auto inGroup = [&](unsigned s) {
      return llvm::is_contained(plan.lateWeights, s);
    };
    llvm::DenseMap<Value, bool> known;
    std::function<bool(Value)> computable = [&](Value v) -> bool {
      if (readyBefore(v, pass) || isa<BlockArgument>(v))
        return true;
      if (auto it = known.find(v); it != known.end())
        return it->second;
      Operation *def = v.getDefiningOp();
      Role role = plan.role.lookup(def);
      bool is = false;
      if (role == Role::Read)
        is = inGroup(plan.stateOf.lookup(def)) && computable(def->getOperand(1));
      else if (role == Role::Vector ||
               (role == Role::Chain && inGroup(plan.stateOf.lookup(def))))
        is = llvm::all_of(def->getOperands(), [&](Value operand) {
          return isMatrix(operand) || computable(operand);
        });
      known[v] = is;
      return is;
    };
    for (Value next : yield.getValues().take_front(scan.getNumStates()))
      if (!isMatrix(next) && !computable(next))
        return false;
    for (auto [op, role] : plan.role)
      if (role == Role::Chain && inGroup(plan.stateOf.lookup(op)) &&
          !computable(cast<FastWeightUpdateOpInterface>(op).getUpdateResult()))
        return false;
    plan.passStates.push_back(plan.lateWeights);
    plan.latePass = pass;
    for (unsigned s : plan.lateWeights)
      plan.firstPass[s] = plan.lastPass[s] = pass;
    for (Operation *read : reads)
      if (inGroup(plan.stateOf.lookup(read)) && computable(read->getOperand(1)))
        plan.passOf[read] = pass;
    takeVectorWork(pass);
    return true;
  };

  // A pass of weight `s` (the first one if `first`), if it has work.
  auto placeWeight = [&](unsigned s, bool first) {
    unsigned pass = plan.passStates.size();
    if (first != !plan.firstPass.contains(s) || (grouped && inGroup(s) && first))
      return false;
    if (first && !coefficientsReady(s, pass))
      return false;
    SmallVector<Operation *> taken;
    for (Operation *read : reads)
      if (!plan.passOf.contains(read) && plan.stateOf.lookup(read) == s &&
          readyBefore(read->getOperand(1), pass))
        taken.push_back(read);
    if (!first && taken.empty())
      return false;
    plan.passStates.push_back({s});
    if (first)
      plan.firstPass[s] = pass;
    plan.lastPass[s] = pass;
    for (Operation *read : taken)
      plan.passOf[read] = pass;
    takeVectorWork(pass);
    return true;
  };

  auto allReadsReady = [&](unsigned s) {
    unsigned pass = plan.passStates.size();
    return llvm::all_of(reads, [&](Operation *read) {
      return plan.stateOf.lookup(read) != s ||
             readyBefore(read->getOperand(1), pass);
    });
  };

  while (true) {
    bool progress = false;
    if (!grouped) {
      // A weight whose reads all have their queries ready goes first:
      // placed before them, it would need a second pass (and a second
      // rebuild) for the reads that wait on the others.
      for (unsigned s : weights)
        if (!plan.firstPass.contains(s) && allReadsReady(s))
          progress |= placeWeight(s, /*first=*/true);
      if (!progress)
        for (unsigned s : weights)
          progress |= placeWeight(s, !plan.firstPass.contains(s));
    } else {
      // The late group and first passes before passes that rebuild a
      // weight: a later pass of a weight then takes more of its reads.
      if (!plan.latePass)
        progress |= placeLateGroup();
      for (unsigned s : weights)
        progress |= placeWeight(s, /*first=*/true);
      if (!progress)
        for (unsigned s : weights)
          progress |= placeWeight(s, /*first=*/false);
    }
    bool done = plan.firstPass.size() == weights.size() &&
                llvm::all_of(reads, [&](Operation *read) {
                  return plan.passOf.contains(read);
                });
    if (done)
      break;
    if (!progress)
      return std::nullopt;
  }
  if (!plan.latePass)
    plan.latePass = plan.passStates.size() - 1;
  for (auto &[op, role] : plan.role) {
    if (role == Role::Late)
      plan.passOf[op] = *plan.latePass;
    if (role == Role::Vector && !plan.passOf.contains(op))
      return std::nullopt;
  }
  return plan;
}

/// The pass that computes `v` for the others (none for seq inputs, params
/// and input-only values, which every pass computes itself; a
/// retrieval's first pass for the weight's retrievals).
std::optional<unsigned> producerOf(const StagePlan &plan, ScanOp scan, Value v) {
  if (auto arg = dyn_cast<BlockArgument>(v)) {
    if (arg.getArgNumber() < scan.getNumSeq() + scan.getNumParams())
      return std::nullopt;
    return *plan.latePass; // a vector state
  }
  Operation *def = v.getDefiningOp();
  switch (plan.role.lookup(def)) {
  case Role::InputOnly:
    return std::nullopt;
  case Role::Chain:
    return plan.firstPass.lookup(plan.stateOf.lookup(def));
  default:
    return plan.passOf.lookup(def);
  }
}

/// Whether pass `pass` computes `v` itself.
bool computedIn(const StagePlan &plan, ScanOp scan, Value v, unsigned pass) {
  std::optional<unsigned> producer = producerOf(plan, scan, v);
  if (!producer)
    return true;
  if (Operation *def = v.getDefiningOp();
      def && plan.role.lookup(def) == Role::Chain)
    return plan.holds(pass, plan.stateOf.lookup(def));
  return *producer == pass;
}

/// The ops of the body that pass `pass` lowers (input-only ones aside).
bool inPass(const StagePlan &plan, Operation *op, unsigned pass) {
  Role role = plan.role.lookup(op);
  if (role == Role::InputOnly)
    return false;
  if (role == Role::Chain)
    return plan.holds(pass, plan.stateOf.lookup(op));
  return plan.passOf.lookup(op) == pass;
}

/// Lowers `scan` as the passes of `plan`, unless (without a late group)
/// some pass is not chunkwise.
FailureOr<bool> lowerPlan(ScanOp scan, const CpuPatternSet &patterns,
                          int64_t chunk, const StagePlan &plan) {
  Block &body = scan.getBodyBlock();
  YieldOp yield = scan.getYield();
  unsigned numPasses = plan.passStates.size(), late = *plan.latePass;
  auto outputs = yield.getValues().drop_front(scan.getNumStates());
  SmallVector<unsigned> vectorStates;
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs()))
    if (!isa<FastWeightType>(arg.getType()))
      vectorStates.push_back(i);

  // The values that cross passes (in the body's order) and the pass that
  // stores each original output.
  llvm::SetVector<Value> crossing;
  auto noteUses = [&](Operation *op, unsigned pass) {
    for (Value operand : op->getOperands())
      if (!isa<FastWeightType>(operand.getType()) &&
          !computedIn(plan, scan, operand, pass))
        crossing.insert(operand);
  };
  for (Operation &op : body.without_terminator())
    for (unsigned pass = 0; pass < numPasses; ++pass)
      if (inPass(plan, &op, pass))
        noteUses(&op, pass);
  // The vector states' next values, yielded by the late pass.
  for (Value next : yield.getValues().take_front(scan.getNumStates()))
    if (!isa<FastWeightType>(next.getType()) &&
        !computedIn(plan, scan, next, late))
      crossing.insert(next);
  auto storerOf = [&](Value output) {
    return producerOf(plan, scan, output).value_or(late);
  };

  // One scan per pass, before the original.
  OpBuilder b(scan);
  Location loc = scan.getLoc();
  bool prologue = false, epilogue = false;
  for (Operation &op : body) {
    prologue |= getStepPhase(&op) == StepPhase::Prologue;
    epilogue |= getStepPhase(&op) == StepPhase::Epilogue;
  }
  SmallVector<ScanOp> stages;
  // Per pass: the crossing values it reads and the ones it stores.
  SmallVector<SmallVector<Value>> crossingIn(numPasses), crossingOut(numPasses);
  SmallVector<SmallVector<unsigned>> storedOutputs(numPasses);
  for (Value v : crossing) {
    unsigned producer = *producerOf(plan, scan, v);
    if (!llvm::is_contained(outputs, v))
      crossingOut[producer].push_back(v);
    for (unsigned pass = 0; pass < numPasses; ++pass)
      if (pass != producer && llvm::any_of(v.getUses(), [&](OpOperand &use) {
            Operation *user = use.getOwner();
            if (isa<YieldOp>(user))
              return pass == late && use.getOperandNumber() < scan.getNumStates();
            return inPass(plan, user, pass);
          }))
        crossingIn[pass].push_back(v);
  }
  for (auto [i, output] : llvm::enumerate(outputs))
    storedOutputs[storerOf(output)].push_back(i);

  auto names = [](ArrayAttr array) {
    SmallVector<StringRef> out;
    for (Attribute name : array)
      out.push_back(cast<StringAttr>(name).getValue());
    return out;
  };
  SmallVector<std::string> crossingNames;
  llvm::DenseMap<Value, unsigned> crossingIndex;
  for (auto [i, v] : llvm::enumerate(crossing)) {
    crossingNames.push_back("stage.value." + std::to_string(i));
    crossingIndex[v] = i;
  }
  auto crossingName = [&](Value v) -> StringRef {
    return crossingNames[crossingIndex.lookup(v)];
  };

  for (unsigned pass = 0; pass < numPasses; ++pass) {
    ArrayRef<unsigned> weights = plan.passStates[pass];
    SmallVector<StringRef> seqNames = names(scan.getSeqNames());
    SmallVector<Type> seqTypes(ValueRange(scan.getSeqArgs()).getTypes());
    for (Value v : crossingIn[pass]) {
      seqNames.push_back(crossingName(v));
      seqTypes.push_back(v.getType());
    }
    // The pass's weights, then (in the late pass) the vector states.
    SmallVector<unsigned> states(weights);
    if (pass == late)
      llvm::append_range(states, vectorStates);
    SmallVector<StringRef> stateNames;
    SmallVector<Type> stateTypes;
    for (unsigned i : states) {
      stateNames.push_back(cast<StringAttr>(scan.getStateNames()[i]).getValue());
      stateTypes.push_back(scan.getStateArgs()[i].getType());
    }
    SmallVector<StringRef> outputNames;
    SmallVector<Type> outputTypes;
    for (unsigned i : storedOutputs[pass]) {
      outputNames.push_back(cast<StringAttr>(scan.getOutputNames()[i]).getValue());
      outputTypes.push_back(outputs[i].getType());
    }
    for (Value v : crossingOut[pass]) {
      outputNames.push_back(crossingName(v));
      outputTypes.push_back(v.getType());
    }
    auto stage = ScanOp::create(
        b, loc, (scan.getSymName() + "__stage" + Twine(pass)).str(),
        scan.getDims(), seqNames, seqTypes, names(scan.getParamNames()),
        ValueRange(scan.getParamArgs()).getTypes(), stateNames, stateTypes, outputNames,
        outputTypes, scan.getReverse());
    stages.push_back(stage);

    IRMapping mapping;
    auto stageSeq = stage.getSeqArgs();
    for (auto [from, to] : llvm::zip(scan.getSeqArgs(), stageSeq))
      mapping.map(from, to);
    for (auto [v, to] :
         llvm::zip(crossingIn[pass], stageSeq.drop_front(scan.getNumSeq())))
      mapping.map(v, to);
    for (auto [from, to] : llvm::zip(scan.getParamArgs(), stage.getParamArgs()))
      mapping.map(from, to);
    for (auto [i, to] : llvm::zip(states, stage.getStateArgs()))
      mapping.map(scan.getStateArgs()[i], to);

    OpBuilder inner = OpBuilder::atBlockBegin(&stage.getBodyBlock());
    // An input-only value, cloned (with what it needs) on first use.
    std::function<Value(Value)> materialize = [&](Value v) -> Value {
      if (Value done = mapping.lookupOrNull(v))
        return done;
      Operation *def = v.getDefiningOp();
      assert(def && plan.role.lookup(def) == Role::InputOnly);
      for (Value operand : def->getOperands())
        materialize(operand);
      inner.clone(*def, mapping);
      return mapping.lookup(v);
    };
    for (Operation &op : body.without_terminator()) {
      if (!inPass(plan, &op, pass))
        continue;
      for (Value operand : op.getOperands())
        materialize(operand);
      inner.clone(op, mapping);
    }
    SmallVector<Value> yielded;
    for (unsigned i : states)
      yielded.push_back(materialize(yield.getValues()[i]));
    for (unsigned i : storedOutputs[pass])
      yielded.push_back(materialize(outputs[i]));
    for (Value v : crossingOut[pass])
      yielded.push_back(materialize(v));
    YieldOp::create(inner, loc, yielded);

    // Phases as fwp-split-time-parallel gives them to the new scan.
    for (Operation &op : stage.getBodyBlock())
      op.removeAttr(kPhaseAttrName);
    for (auto [op, phase] : computeTimeParallelSplit(stage))
      if ((phase == StepPhase::Prologue && prologue) ||
          (phase == StepPhase::Epilogue && epilogue))
        setStepPhase(op, phase);
  }

  // Lower the passes; keep the split if each is chunkwise, or if it takes
  // weights out of a late group's recurrence (whatever their form).
  SmallVector<func::FuncOp> stageFuncs;
  bool allChunkwise = true;
  bool grouped = !plan.lateWeights.empty();
  int64_t chunkLength = 0;
  for (ScanOp stage : stages) {
    ScanLowering lowering(stage, patterns, chunk, /*offsetPerStep=*/true);
    if (failed(lowering.run()))
      return failure();
    auto func = cast<func::FuncOp>(stage->getPrevNode());
    stage->erase();
    func.setPrivate();
    for (StringRef attr : {"llvm.emit_c_interface", "fwp.role", "fwp.forward"})
      func->removeAttr(attr);
    stageFuncs.push_back(func);
    auto chunkAttr = func->getAttrOfType<IntegerAttr>("fwp.chunk");
    allChunkwise &= static_cast<bool>(chunkAttr);
    if (chunkAttr)
      chunkLength = chunkAttr.getInt();
  }
  if (!allChunkwise && !grouped) {
    for (func::FuncOp func : stageFuncs)
      func->erase();
    return false;
  }

  // The scan's function: the per-step buffers of the crossing values, a
  // copy of each weight's initial value for its passes before the last,
  // then the passes in order, block by block (below).
  func::FuncOp func = createScanFunction(b, scan);
  if (chunkLength)
    func->setAttr("fwp.chunk", b.getI64IntegerAttr(chunkLength));
  func->setAttr("fwp.stages", b.getI64IntegerAttr(numPasses));
  Block *entry = func.addEntryBlock();
  b.setInsertionPointToStart(entry);
  ValueRange args = entry->getArguments();
  Value count = args[0];
  ValueRange seqBuffers = args.slice(1, scan.getNumSeq());
  ValueRange paramBuffers = args.slice(1 + scan.getNumSeq(), scan.getNumParams());
  ValueRange stateBuffers =
      args.slice(1 + scan.getNumSeq() + scan.getNumParams(), scan.getNumStates());
  ValueRange outputBuffers = args.take_back(scan.getNumOutputs());

  SmallVector<Value> scratch;
  llvm::DenseMap<Value, Value> bufferOf;
  for (Value v : crossing) {
    auto it = llvm::find(outputs, v);
    if (it != outputs.end()) {
      bufferOf[v] = outputBuffers[it - outputs.begin()];
      continue;
    }
    Value buffer = memref::AllocOp::create(
        b, loc, bufferType(v.getType(), /*perStep=*/true), ValueRange{count});
    scratch.push_back(buffer);
    bufferOf[v] = buffer;
  }
  llvm::DenseMap<unsigned, Value> copyOf;
  for (auto [s, first] : plan.firstPass)
    if (first != plan.lastPass.lookup(s)) {
      Value copy = memref::AllocOp::create(
          b, loc, bufferType(scan.getStateArgs()[s].getType(), false));
      scratch.push_back(copy);
      copyOf[s] = copy;
    }
  // The passes run block by block (all passes over a block of steps, then
  // the next block, in the scan's direction): a block's inputs and crossing
  // values are still in L2 when the later passes read them. That needs
  // every weight's passes but its last to share one copy of its initial
  // value, so at most one of them; else one block of all the steps.
  bool blocked = chunkLength > 0;
  for (auto [s, last] : plan.lastPass)
    blocked &= llvm::count_if(llvm::seq(numPasses), [&, s = s, last = last](unsigned p) {
                 return p != last && llvm::is_contained(plan.passStates[p], s);
               }) <= 1;
  auto constantIndex = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  Value zero = constantIndex(0);
  Value blockSteps =
      blocked ? constantIndex(chunkLength * std::max<int64_t>(1, kPassBlock / chunkLength))
              : arith::MaxSIOp::create(b, loc, count, constantIndex(1)).getResult();
  if (blocked)
    for (auto [s, copy] : copyOf)
      memref::CopyOp::create(b, loc, stateBuffers[s], copy);
  auto blocks = scf::ForOp::create(b, loc, zero, count, blockSteps);
  b.setInsertionPointToStart(blocks.getBody());
  Value i = blocks.getInductionVar();
  // The block's first step and length (backwards in time, the blocks
  // start at the end of time).
  Value first, length;
  if (scan.getReverse()) {
    Value end = arith::SubIOp::create(b, loc, count, i);
    first = arith::MaxSIOp::create(
        b, loc, arith::SubIOp::create(b, loc, end, blockSteps), zero);
    length = arith::SubIOp::create(b, loc, end, first);
  } else {
    first = i;
    length = arith::MinSIOp::create(b, loc, blockSteps,
                                    arith::SubIOp::create(b, loc, count, i));
  }
  llvm::DenseMap<Value, Value> views;
  auto rows = [&](Value buffer) -> Value {
    Value &view = views[buffer];
    if (view)
      return view;
    auto type = cast<MemRefType>(buffer.getType());
    SmallVector<OpFoldResult> offsets{first}, sizes{length}, strides(type.getRank(),
                                                                     b.getIndexAttr(1));
    for (int64_t d = 1; d < type.getRank(); ++d) {
      offsets.push_back(b.getIndexAttr(0));
      sizes.push_back(b.getIndexAttr(type.getDimSize(d)));
    }
    return view = memref::SubViewOp::create(b, loc, buffer, offsets, sizes, strides);
  };
  for (unsigned pass = 0; pass < numPasses; ++pass) {
    SmallVector<Value> weightBuffers;
    for (unsigned s : plan.passStates[pass]) {
      Value state = stateBuffers[s];
      if (pass != plan.lastPass.lookup(s)) {
        if (!blocked)
          memref::CopyOp::create(b, loc, state, copyOf.lookup(s));
        state = copyOf.lookup(s);
      }
      weightBuffers.push_back(state);
    }
    SmallVector<Value> callArgs{length};
    for (Value buffer : seqBuffers)
      callArgs.push_back(rows(buffer));
    for (Value v : crossingIn[pass])
      callArgs.push_back(rows(bufferOf.lookup(v)));
    llvm::append_range(callArgs, paramBuffers);
    llvm::append_range(callArgs, weightBuffers);
    if (pass == late)
      for (unsigned i : vectorStates)
        callArgs.push_back(stateBuffers[i]);
    for (unsigned i : storedOutputs[pass])
      callArgs.push_back(rows(outputBuffers[i]));
    for (Value v : crossingOut[pass])
      callArgs.push_back(rows(bufferOf.lookup(v)));
    func::CallOp::create(b, loc, stageFuncs[pass], callArgs);
  }
  b.setInsertionPointAfter(blocks);
  for (Value buffer : scratch)
    memref::DeallocOp::create(b, loc, buffer);
  func::ReturnOp::create(b, loc);
  return true;
}

} // namespace

FailureOr<bool> mlir::fwp::cpu::lowerInStages(ScanOp scan,
                                              const CpuPatternSet &patterns,
                                              int64_t chunk) {
  std::optional<StagePlan> plan = planStages(scan);
  if (!plan)
    return false;
  auto bytesOf = [&](unsigned s) {
    auto type = cast<FastWeightType>(scan.getStateArgs()[s].getType());
    return type.getKeyDim() * type.getValueDim() *
           type.getElementType().getIntOrFloatBitWidth() / 8;
  };
  if (!plan->lateWeights.empty()) {
    if (plan->lateWeights.size() == plan->firstPass.size())
      return false; // no weight to take out of the recurrence
    // The late group's split pays once the scan's weights together outgrow
    // half a 32 KiB L1 data cache. Measured with fwp-bench-strategies, one
    // thread, forward + backward (docs/compiler.md, "late group"): delta_lstm
    // at d = 32 (forward 6, backward 12 weights of 4 KiB) 1.2-1.45x faster,
    // d = 64 1.2-1.3x, d = 128 1.1x; delta_rnn at d = 64 and 128 1.1-1.5x
    // faster, but at d = 32 (backward 4 weights of 4 KiB, all in L1 in one
    // loop) 1.1-1.2x slower.
    int64_t bytes = 0;
    for (auto [s, first] : plan->firstPass)
      bytes += bytesOf(s);
    if (bytes <= 16 * 1024)
      return false;
  } else {
    // Otherwise the split pays only where every pass is chunkwise.
    if (chunk == 0)
      return false;
    if (chunk < 0)
      for (auto [s, first] : plan->firstPass) {
        auto type = cast<FastWeightType>(scan.getStateArgs()[s].getType());
        if (automaticChunkLength(type.getKeyDim(), type.getValueDim(),
                                 type.getElementType().getIntOrFloatBitWidth()) == 0)
          return false;
      }
  }
  return lowerPlan(scan, patterns, chunk, *plan);
}
