//===- ScanToLoop.cpp - A scan as a function with a time loop -------------===//
//
// Every scan becomes a function that runs one (batch, head) pair over all T
// steps. Per-head vectors are `vector` values in registers; fast weights are
// memrefs, updated in place when the old value is dead, copied otherwise.
// The ops of the body are lowered by the patterns of a CpuPatternSet. A scan
// split by fwp-split-time-parallel (`fwp.phase`, TimeParallel.h) runs its
// time loop in blocks of kTimeBlock steps, each a prologue loop, the steps
// and an epilogue loop, which pass per-step values through [T, n] buffers.
//
//===----------------------------------------------------------------------===//

#include "CpuLowering.h"

#include "fwp/Dialect/Fwp/IR/TimeParallel.h"

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::cpu;

/// The memref type of a buffer argument: `[T, n]` / `[T]` for per-step
/// values, the value's own shape (or `[1]` for a scalar) otherwise.
MemRefType mlir::fwp::cpu::bufferType(Type type, bool perStep, bool offset) {
  SmallVector<int64_t> shape;
  if (perStep)
    shape.push_back(ShapedType::kDynamic);
  Type element = type;
  if (auto vector = dyn_cast<VectorType>(type)) {
    shape.push_back(vector.getDimSize(0));
    element = vector.getElementType();
  } else if (auto weight = dyn_cast<FastWeightType>(type)) {
    shape.push_back(weight.getKeyDim());
    shape.push_back(weight.getValueDim());
    element = weight.getElementType();
  } else if (!perStep) {
    shape.push_back(1);
  }
  if (!perStep || !offset)
    return MemRefType::get(shape, element);
  // A view of rows [first, first + T) of a larger buffer.
  SmallVector<int64_t> strides(shape.size(), 1);
  if (shape.size() == 2)
    strides[0] = shape[1];
  return MemRefType::get(
      shape, element,
      StridedLayoutAttr::get(type.getContext(), ShapedType::kDynamic, strides));
}

const CpuPatternSet::Pattern *CpuPatternSet::lookup(Operation *op) const {
  auto it = patterns.find(op->getName().getTypeID());
  return it == patterns.end() ? nullptr : &it->second;
}

void CpuPatternSet::insert(TypeID opType, Pattern pattern) {
  bool inserted = patterns.try_emplace(opType, std::move(pattern)).second;
  assert(inserted && "two CPU lowerings of one op");
  (void)inserted;
}

LogicalResult ScanLowering::lowerOp(Operation *op) {
  loc = op->getLoc();
  // Taken by the row sweep of an earlier op (FastWeightPatterns.cpp).
  if (op->getNumResults() && llvm::all_of(op->getResults(), [&](Value r) {
        return lowered.contains(r);
      }))
    return success();
  if (const CpuPatternSet::Pattern *pattern = patterns.lookup(op))
    return (*pattern)(op, *this);
  return op->emitOpError() << "has no CPU lowering";
}

ScanLowering::Place ScanLowering::placeOf(Value value) {
  if (auto arg = dyn_cast<BlockArgument>(value)) {
    unsigned index = arg.getArgNumber();
    if (index < scan.getNumSeq())
      return Place::Input;
    if (index < scan.getNumSeq() + scan.getNumParams())
      return Place::Entry;
    return Place::Core;
  }
  auto it = places.find(value.getDefiningOp());
  return it == places.end() ? Place::Core : it->second;
}

ScanLowering::Place ScanLowering::storerOf(Value output) {
  Place place = placeOf(output);
  return place == Place::Prologue || place == Place::Epilogue ? place
                                                              : Place::Core;
}

bool ScanLowering::usedIn(Value value, Place place) {
  for (OpOperand &use : value.getUses()) {
    Operation *user = use.getOwner();
    if (!isa<YieldOp>(user)) {
      if (places.lookup(user) == place)
        return true;
      continue;
    }
    bool isState = use.getOperandNumber() < scan.getNumStates();
    if ((isState && place == Place::Core) ||
        (!isState && storerOf(value) == place))
      return true;
  }
  return false;
}

Value ScanLowering::loadStep(Value buffer, Type type, Value t) {
  if (auto vector = dyn_cast<VectorType>(type))
    return vector::LoadOp::create(b, loc, vector, buffer,
                                  ValueRange{t, index(0)});
  return memref::LoadOp::create(b, loc, buffer, ValueRange{t});
}

void ScanLowering::prefetchStepInputs(Value t, Value count,
                                      int64_t distance) {
  Value ahead;
  if (scan.getReverse())
    ahead = arith::MaxSIOp::create(
        b, loc, arith::SubIOp::create(b, loc, t, index(distance)), index(0));
  else
    ahead = arith::MinSIOp::create(
        b, loc, addIndex(t, distance),
        arith::SubIOp::create(b, loc, count, index(1)));
  for (auto [arg, buffer] : llvm::zip(scan.getSeqArgs(), seqBuffers)) {
    // A scalar's row: 16 steps per cache line. An input this loop does not
    // read (another pass's, in a scan lowered in passes) is not fetched.
    if (!isa<VectorType>(arg.getType()) ||
        !(usedIn(arg, Place::Prologue) || usedIn(arg, Place::Core) ||
          usedIn(arg, Place::Epilogue)))
      continue;
    auto type = cast<MemRefType>(buffer.getType());
    int64_t perLine = kCacheLineBytes /
                      std::max<int64_t>(1, type.getElementTypeBitWidth() / 8);
    for (int64_t j = 0; j < type.getDimSize(1); j += perLine)
      memref::PrefetchOp::create(b, loc, buffer, ValueRange{ahead, index(j)},
                                 /*isWrite=*/false, /*localityHint=*/3,
                                 /*isDataCache=*/true);
  }
}

void ScanLowering::storeStep(Value value, Value buffer, Value t) {
  if (isa<VectorType>(value.getType()))
    vector::StoreOp::create(b, loc, value, buffer, ValueRange{t, index(0)});
  else
    memref::StoreOp::create(b, loc, value, buffer, ValueRange{t});
}

void ScanLowering::loadStepInputs(Place place, Value t) {
  loc = scan.getLoc();
  for (auto [arg, buffer] : llvm::zip(scan.getSeqArgs(), seqBuffers)) {
    if (!usedIn(arg, place))
      continue;
    if (isa<FastWeightType>(arg.getType())) {
      // A matrix per step (a stored state): step t's [K, V] slice, read only.
      Value slice = stepSlice(buffer, t);
      readOnly.insert(slice);
      lowered[arg] = slice;
    } else {
      lowered[arg] = loadStep(buffer, arg.getType(), t);
    }
  }
  for (auto [value, buffer] : stepBuffers)
    if (placeOf(value) != place && usedIn(value, place))
      lowered[value] = loadStep(buffer, value.getType(), t);
}

void ScanLowering::storeStepResults(Place place, Value t) {
  loc = scan.getLoc();
  for (auto [value, buffer] : stepBuffers)
    if (placeOf(value) == place && !llvm::is_contained(outputBuffers, buffer))
      storeStep(lowered.lookup(value), buffer, t);
}

void ScanLowering::allocateStepBuffers(Value count, bool epilogueInTimeLoop) {
  auto outputs = scan.getYield().getValues().drop_front(scan.getNumStates());
  auto allocate = [&](Value value) {
    Place place = placeOf(value);
    bool crosses = (place == Place::Prologue &&
                    (usedIn(value, Place::Core) ||
                     usedIn(value, Place::Epilogue))) ||
                   (place == Place::Core && !epilogueInTimeLoop &&
                    usedIn(value, Place::Epilogue));
    if (!crosses)
      return;
    // An output's buffer holds its steps anyway; other values get a
    // [T, ...] scratch buffer on the heap (T is known only at run time).
    for (auto [output, buffer] : llvm::zip(outputs, outputBuffers))
      if (output == value) {
        stepBuffers[value] = buffer;
        return;
      }
    Value buffer = memref::AllocOp::create(
        b, loc, bufferType(value.getType(), /*perStep=*/true),
        ValueRange{count});
    scratchBuffers.push_back(buffer);
    stepBuffers[value] = buffer;
  };
  for (BlockArgument arg : scan.getStateArgs())
    allocate(arg);
  for (Operation &op : scan.getBodyBlock().without_terminator())
    for (Value result : op.getResults())
      allocate(result);
}

LogicalResult ScanLowering::lowerTimeParallelStep(Place place, Value t) {
  loadStepInputs(place, t);
  for (Operation &op : scan.getBodyBlock().without_terminator())
    if (places.lookup(&op) == place && failed(lowerOp(&op)))
      return failure();
  storeStepResults(place, t);
  auto outputs = scan.getYield().getValues().drop_front(scan.getNumStates());
  for (auto [value, buffer] : llvm::zip(outputs, outputBuffers))
    if (storerOf(value) == place)
      storeStep(lowered.lookup(value), buffer, t);
  return success();
}

LogicalResult
ScanLowering::lowerBody(Value t, ValueRange vectorStates,
                        SmallVectorImpl<Value> &nextVectorStates) {
  loadStepInputs(Place::Core, t);
  unsigned vectorIndex = 0;
  for (auto [arg, buffer] : llvm::zip(scan.getStateArgs(), stateBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      lowered[arg] = buffer;
    else
      lowered[arg] = vectorStates[vectorIndex++];
  }
  YieldOp yield = scan.getYield();
  unsigned numStates = scan.getNumStates();
  // A matrix state's value before the step that is an output (the tape of
  // a stored or checkpointed backward) goes to its slice first: the step's
  // writes may then update the state in place, instead of writing a copy
  // and copying it back (two copies of the matrix per step).
  storedEarly.clear();
  for (auto [value, buffer] :
       llvm::zip(yield.getValues().drop_front(numStates), outputBuffers)) {
    auto arg = dyn_cast<BlockArgument>(value);
    if (!arg || !isa<FastWeightType>(arg.getType()) ||
        placeOf(arg) != Place::Core)
      continue;
    copyRows(lowered.lookup(arg), stepSlice(buffer, t));
    storedEarly.insert(arg);
  }
  for (Operation &op : scan.getBodyBlock().without_terminator())
    if (places.lookup(&op) == Place::Core && failed(lowerOp(&op)))
      return failure();
  storeStepResults(Place::Core, t);

  loc = scan.getLoc();
  // Outputs first: a matrix output may be a state's value at t - 1, which
  // the state copies below overwrite.
  for (auto [value, buffer] :
       llvm::zip(yield.getValues().drop_front(numStates), outputBuffers)) {
    if (storerOf(value) != Place::Core || storedEarly.contains(value))
      continue;
    Value out = lowered.lookup(value);
    if (isa<VectorType>(out.getType()))
      vector::StoreOp::create(b, loc, out, buffer, ValueRange{t, index(0)});
    else if (isa<FloatType>(out.getType()))
      memref::StoreOp::create(b, loc, out, buffer, ValueRange{t});
    else
      copyRows(out, stepSlice(buffer, t));
  }
  llvm::DenseSet<Value> stateBufferSet(stateBuffers.begin(),
                                       stateBuffers.end());
  for (unsigned i = 0; i < numStates; ++i) {
    Value value = lowered.lookup(yield.getValues()[i]);
    if (!isa<FastWeightType>(scan.getStateArgs()[i].getType())) {
      nextVectorStates.push_back(value);
      continue;
    }
    if (value == stateBuffers[i])
      continue;
    if (stateBufferSet.contains(value))
      return yield.emitOpError()
             << "matrix state #" << i
             << " takes the buffer of another matrix state; the CPU lowering "
                "does not support exchanging states";
    memref::CopyOp::create(b, loc, value, stateBuffers[i]);
  }
  return success();
}

/// The type of a scan's function: `(T, seq buffers, params, states,
/// outputs)`, buffers as bufferType gives them.
static FunctionType scanFunctionType(ScanOp scan, bool offsetPerStep) {
  Builder b(scan.getContext());
  SmallVector<Type> argTypes{b.getIndexType()};
  for (BlockArgument arg : scan.getSeqArgs())
    argTypes.push_back(bufferType(arg.getType(), /*perStep=*/true, offsetPerStep));
  for (BlockArgument arg : scan.getParamArgs())
    argTypes.push_back(bufferType(arg.getType(), /*perStep=*/false));
  for (BlockArgument arg : scan.getStateArgs())
    argTypes.push_back(bufferType(arg.getType(), /*perStep=*/false));
  for (Attribute type : scan.getOutputTypes())
    argTypes.push_back(bufferType(cast<TypeAttr>(type).getValue(),
                                  /*perStep=*/true, offsetPerStep));
  return b.getFunctionType(argTypes, TypeRange{});
}

func::FuncOp mlir::fwp::cpu::createScanFunction(OpBuilder &b, ScanOp scan,
                                                bool offsetPerStep) {
  b.setInsertionPoint(scan);
  auto func = func::FuncOp::create(b, scan.getLoc(), scan.getSymName(),
                                   scanFunctionType(scan, offsetPerStep));
  func->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  for (StringRef attr : {"fwp.role", "fwp.forward"})
    if (Attribute value = scan->getAttr(attr))
      func->setAttr(attr, value);
  return func;
}

LogicalResult ScanLowering::run() {
  ModuleOp module = scan->getParentOfType<ModuleOp>();
  scheduleVectorWorkEarly(scan.getBodyBlock());
  func::FuncOp func = createScanFunction(b, scan, offsetPerStep);
  Block *entry = func.addEntryBlock();
  b.setInsertionPointToStart(entry);

  ValueRange args = entry->getArguments();
  Value count = args[0];
  unsigned next = 1;
  auto take = [&](unsigned n, SmallVectorImpl<Value> &into) {
    llvm::append_range(into, args.slice(next, n));
    next += n;
  };
  take(scan.getNumSeq(), seqBuffers);
  take(scan.getNumParams(), paramBuffers);
  take(scan.getNumStates(), stateBuffers);
  take(scan.getNumOutputs(), outputBuffers);
  readOnly.insert(paramBuffers.begin(), paramBuffers.end());
  readOnly.insert(seqBuffers.begin(), seqBuffers.end());

  // Params and the vector states' initial values, read once.
  for (auto [arg, buffer] : llvm::zip(scan.getParamArgs(), paramBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      lowered[arg] = buffer;
    else if (auto vector = dyn_cast<VectorType>(arg.getType()))
      lowered[arg] =
          vector::LoadOp::create(b, loc, vector, buffer, ValueRange{index(0)});
    else
      lowered[arg] =
          memref::LoadOp::create(b, loc, buffer, ValueRange{index(0)});
  }
  SmallVector<Value> initialVectorStates;
  for (auto [arg, buffer] : llvm::zip(scan.getStateArgs(), stateBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      continue;
    if (auto vector = dyn_cast<VectorType>(arg.getType()))
      initialVectorStates.push_back(
          vector::LoadOp::create(b, loc, vector, buffer, ValueRange{index(0)}));
    else
      initialVectorStates.push_back(
          memref::LoadOp::create(b, loc, buffer, ValueRange{index(0)}));
  }

  // Scratch matrices are allocated before the loop, not in every step.
  Value zero = index(0);
  scratchInsertionPoint = zero.getDefiningOp();

  // Where each op runs (TimeParallel.h): a prologue op that depends on
  // params alone runs once, here; the other prologue ops in a loop over a
  // block's (or chunk's) steps before them, the epilogue ops in one after
  // them (lowerTimeLoop, lowerChunkwise). Without `fwp.phase` attributes,
  // every op runs in the time loop.
  for (Operation &op : scan.getBodyBlock().without_terminator()) {
    Place place = Place::Core;
    if (getStepPhase(&op) == StepPhase::Epilogue)
      place = Place::Epilogue;
    else if (getStepPhase(&op) == StepPhase::Prologue)
      place = llvm::all_of(op.getOperands(),
                           [&](Value v) {
                             return placeOf(v) == Place::Entry;
                           })
                  ? Place::Entry
                  : Place::Prologue;
    places[&op] = place;
  }
  for (Operation &op : scan.getBodyBlock().without_terminator())
    if (places.lookup(&op) == Place::Entry && failed(lowerOp(&op))) {
      func->erase();
      return failure();
    }
  loc = scan.getLoc();
  // The chunkwise form runs the prologue chunk by chunk and the epilogue
  // step by step after the chunk's phases (lowerChunkwise), while the
  // chunk's rows are in the caches: the epilogue then takes the step's
  // values of the time loop as they are, without a [T, n] buffer.
  std::optional<ChunkPlan> plan = planChunkwise();
  allocateStepBuffers(count, /*epilogueInTimeLoop=*/plan.has_value());

  SmallVector<std::pair<Value, Value>> localStates;
  if (!plan)
    localStates = keepStatesInRegisters();
  SmallVector<Value> finalVectorStates;
  if (plan) {
    if (failed(lowerChunkwise(*plan, count, initialVectorStates,
                              finalVectorStates))) {
      func->erase();
      return failure();
    }
    func->setAttr("fwp.chunk", b.getI64IntegerAttr(plan->chunk));
  } else if (failed(lowerTimeLoop(count, initialVectorStates,
                                  finalVectorStates))) {
    func->erase();
    return failure();
  }
  loc = scan.getLoc();
  unsigned vectorIndex = 0;
  for (auto [arg, buffer] : llvm::zip(scan.getStateArgs(), stateBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      continue;
    Value final = finalVectorStates[vectorIndex++];
    if (isa<VectorType>(arg.getType()))
      vector::StoreOp::create(b, loc, final, buffer, ValueRange{index(0)});
    else
      memref::StoreOp::create(b, loc, final, buffer, ValueRange{index(0)});
  }
  for (auto [buffer, local] : localStates)
    memref::CopyOp::create(b, loc, local, buffer);
  for (Value buffer : scratchBuffers)
    memref::DeallocOp::create(b, loc, buffer);
  func::ReturnOp::create(b, loc);
  (void)module;
  return success();
}

SmallVector<std::pair<Value, Value>> ScanLowering::keepStatesInRegisters() {
  SmallVector<std::pair<Value, Value>> copies;
  auto bytesOf = [](FastWeightType type) {
    return type.getKeyDim() * type.getValueDim() *
           type.getElementType().getIntOrFloatBitWidth() / 8;
  };
  // The matrices per step (a stored or checkpointed backward's) and the
  // param matrices take registers too while the step reads them.
  int64_t bytes = 0;
  for (BlockArgument arg : llvm::concat<BlockArgument>(scan.getSeqArgs(),
                                                       scan.getParamArgs()))
    if (auto type = dyn_cast<FastWeightType>(arg.getType()))
      bytes += bytesOf(type);
  // The states in order while they fit: a backward's rebuilt weight comes
  // before its adjoint (keeping the weight measured faster than keeping
  // the adjoint: delta_net d = 16 1.01x, delta_product 1.1x).
  for (auto [arg, buffer] : llvm::zip(scan.getStateArgs(), stateBuffers)) {
    auto type = dyn_cast<FastWeightType>(arg.getType());
    if (!type || bytes + bytesOf(type) > kRegisterStateBytes)
      continue;
    bytes += bytesOf(type);
    // The argument may alias the other buffers, so LLVM keeps it in memory
    // and loads and stores its rows at every step; a stack copy it does not
    // (SROA splits it into one vector per row once the row loops, of
    // constant trip count, are unrolled).
    Value local =
        memref::AllocaOp::create(b, loc, cast<MemRefType>(buffer.getType()));
    memref::CopyOp::create(b, loc, buffer, local);
    copies.push_back({buffer, local});
    registerStates.insert(local);
    buffer = local;
  }
  return copies;
}

bool ScanLowering::hasOpsIn(Place place) const {
  return llvm::any_of(places,
                      [&](auto entry) { return entry.second == place; });
}

LogicalResult ScanLowering::lowerTimeParallelSteps(Place place, Value first,
                                                   Value end,
                                                   Value count) {
  if (!hasOpsIn(place))
    return success();
  LogicalResult status = success();
  forLoop(first, end, 1, {}, [&](Value i, ValueRange) -> SmallVector<Value> {
    Value t = stepOfIteration(i, count);
    // The prologue is the first to touch a block's inputs; the hardware
    // prefetchers miss them (a dozen [T, n] streams, backwards in the
    // backward scans): fetch the next block's rows now.
    if (place == Place::Prologue)
      prefetchStepInputs(t, count, kTimeBlock);
    if (failed(lowerTimeParallelStep(place, t)))
      status = failure();
    loc = scan.getLoc();
    return {};
  });
  return status;
}

Value ScanLowering::stepOfIteration(Value i, Value count) {
  if (!scan.getReverse())
    return i;
  return arith::SubIOp::create(
      b, loc, arith::SubIOp::create(b, loc, count, index(1)), i);
}

LogicalResult
ScanLowering::lowerTimeLoop(Value count, ValueRange initialVectorStates,
                            SmallVectorImpl<Value> &finalVectorStates) {
  Value zero = index(0);
  LogicalResult status = success();
  // Blocks of kTimeBlock steps: the block's prologue, its steps one by one,
  // its epilogue. The [T, n] buffers between the three stay in the caches
  // for a block's rows (over all of T they outgrow L2 at d = 64 and more).
  auto steps = [&](Value first, Value end, ValueRange states) {
    return forLoop(
        first, end, 1, states, [&](Value i, ValueRange iters) {
          SmallVector<Value> nextStates;
          if (failed(lowerBody(stepOfIteration(i, count), iters,
                               nextStates))) {
            status = failure();
            nextStates.assign(iters.begin(), iters.end());
          }
          loc = scan.getLoc();
          return nextStates;
        });
  };
  scf::ForOp loop;
  if (!hasOpsIn(Place::Prologue) && !hasOpsIn(Place::Epilogue)) {
    loop = steps(zero, count, initialVectorStates);
  } else {
    loop = forLoop(
        zero, count, kTimeBlock, initialVectorStates,
        [&](Value first, ValueRange iters) -> SmallVector<Value> {
          Value end = arith::MinSIOp::create(b, loc, addIndex(first, kTimeBlock),
                                             count);
          if (failed(lowerTimeParallelSteps(Place::Prologue, first, end,
                                            count)))
            status = failure();
          scf::ForOp block = steps(first, end, iters);
          if (failed(lowerTimeParallelSteps(Place::Epilogue, first, end,
                                            count)))
            status = failure();
          return SmallVector<Value>(block.getResults().begin(),
                                    block.getResults().end());
        });
  }
  if (failed(status))
    return failure();
  b.setInsertionPointAfter(loop);
  llvm::append_range(finalVectorStates, loop.getResults());
  return success();
}
