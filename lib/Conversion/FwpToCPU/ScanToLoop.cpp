//===- ScanToLoop.cpp - A scan as a function with a time loop -------------===//
//
// Every scan becomes a function that runs one (batch, head) pair over all T
// steps. Per-head vectors are `vector` values in registers; fast weights are
// memrefs, updated in place when the old value is dead, copied otherwise.
// The ops of the body are lowered by the patterns of a CpuPatternSet.
//
//===----------------------------------------------------------------------===//

#include "CpuLowering.h"

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::cpu;

/// The memref type of a buffer argument: `[T, n]` / `[T]` for per-step
/// values, the value's own shape (or `[1]` for a scalar) otherwise.
MemRefType mlir::fwp::cpu::bufferType(Type type, bool perStep) {
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
  return MemRefType::get(shape, element);
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

LogicalResult
ScanLowering::lowerBody(Value t, ValueRange vectorStates,
                        SmallVectorImpl<Value> &nextVectorStates) {
  Block &body = scan.getBodyBlock();
  for (auto [arg, buffer] : llvm::zip(scan.getSeqArgs(), seqBuffers)) {
    if (auto vector = dyn_cast<VectorType>(arg.getType())) {
      lowered[arg] = vector::LoadOp::create(b, loc, vector, buffer,
                                            ValueRange{t, index(0)});
    } else if (isa<FastWeightType>(arg.getType())) {
      // A matrix per step (a stored state): step t's [K, V] slice, read only.
      Value slice = stepSlice(buffer, t);
      readOnly.insert(slice);
      lowered[arg] = slice;
    } else
      lowered[arg] = memref::LoadOp::create(b, loc, buffer, ValueRange{t});
  }
  unsigned vectorIndex = 0;
  for (auto [arg, buffer] : llvm::zip(scan.getStateArgs(), stateBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      lowered[arg] = buffer;
    else
      lowered[arg] = vectorStates[vectorIndex++];
  }
  for (Operation &op : body.without_terminator())
    if (failed(lowerOp(&op)))
      return failure();

  loc = scan.getLoc();
  YieldOp yield = scan.getYield();
  unsigned numStates = scan.getNumStates();
  // Outputs first: a matrix output may be a state's value at t - 1, which
  // the state copies below overwrite.
  for (auto [value, buffer] :
       llvm::zip(yield.getValues().drop_front(numStates), outputBuffers)) {
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

LogicalResult ScanLowering::run() {
  ModuleOp module = scan->getParentOfType<ModuleOp>();
  scheduleVectorWorkEarly(scan.getBodyBlock());
  SmallVector<Type> argTypes{b.getIndexType()};
  for (BlockArgument arg : scan.getSeqArgs())
    argTypes.push_back(bufferType(arg.getType(), /*perStep=*/true));
  for (BlockArgument arg : scan.getParamArgs())
    argTypes.push_back(bufferType(arg.getType(), /*perStep=*/false));
  for (BlockArgument arg : scan.getStateArgs())
    argTypes.push_back(bufferType(arg.getType(), /*perStep=*/false));
  for (Attribute type : scan.getOutputTypes())
    argTypes.push_back(
        bufferType(cast<TypeAttr>(type).getValue(), /*perStep=*/true));

  b.setInsertionPoint(scan);
  auto func = func::FuncOp::create(b, loc, scan.getSymName(),
                                   b.getFunctionType(argTypes, TypeRange{}));
  func->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  for (StringRef attr : {"fwp.role", "fwp.forward"})
    if (Attribute value = scan->getAttr(attr))
      func->setAttr(attr, value);
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
  Value zero = index(0), one = index(1);
  scratchInsertionPoint = zero.getDefiningOp();
  LogicalResult status = success();
  auto loop = scf::ForOp::create(
      b, loc, zero, count, one, initialVectorStates,
      [&](OpBuilder &nested, Location, Value i, ValueRange iters) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value t = i;
        if (scan.getReverse())
          t = arith::SubIOp::create(
              b, loc, arith::SubIOp::create(b, loc, count, one), i);
        SmallVector<Value> nextStates;
        status = lowerBody(t, iters, nextStates);
        if (failed(status))
          nextStates.assign(iters.begin(), iters.end());
        scf::YieldOp::create(b, loc, nextStates);
      });
  if (failed(status)) {
    func->erase();
    return failure();
  }
  loc = scan.getLoc();
  b.setInsertionPointAfter(loop);
  unsigned vectorIndex = 0;
  for (auto [arg, buffer] : llvm::zip(scan.getStateArgs(), stateBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      continue;
    Value final = loop.getResult(vectorIndex++);
    if (isa<VectorType>(arg.getType()))
      vector::StoreOp::create(b, loc, final, buffer, ValueRange{index(0)});
    else
      memref::StoreOp::create(b, loc, final, buffer, ValueRange{index(0)});
  }
  for (Value buffer : scratchBuffers)
    memref::DeallocOp::create(b, loc, buffer);
  func::ReturnOp::create(b, loc);
  (void)module;
  return success();
}
