//===- WarpPrimitives.cpp - Owned loops and reductions --------------------===//
//
// Elementwise loops over owned elements, butterfly gpu.shuffle
// reductions within a warp or a column group, and the cross-warp
// reduction of per-row partials through shared memory.
//
//===----------------------------------------------------------------------===//

#include "KernelEmitter.h"

#include <limits>

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::gpu_kernel;

void KernelEmitter::forEachOwned(int64_t n, function_ref<void(Value)> body) {
  if (n <= 0)
    return;
  flush();
  OpBuilder::InsertionGuard guard(b);
  if (n == NT) {
    body(tid);
  } else if (n < NT) {
    auto ifOp = scf::IfOp::create(b, loc, ult(tid, cIndex(n)),
                                  /*withElseRegion=*/false);
    b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
    body(tid);
  } else {
    auto loop = scf::ForOp::create(b, loc, tid, cIndex(n), cIndex(NT));
    b.setInsertionPoint(loop.getBody()->getTerminator());
    body(loop.getInductionVar());
  }
}

Value KernelEmitter::combine(ReduceKind kind, Value x, Value y) {
  if (kind == ReduceKind::Add)
    return addF(x, y);
  return arith::MaximumFOp::create(b, loc, x, y);
}

Value KernelEmitter::shuffleXor(Value x, int64_t offset) {
  return gpu::ShuffleOp::create(b, loc, x, cI32(offset), cI32(kWarpSize),
                                gpu::ShuffleMode::XOR)
      .getShuffleResult();
}

Value KernelEmitter::warpAllReduce(int64_t n, ReduceKind kind,
                                   function_ref<Value(Value)> fn) {
  flush();
  Value identity =
      kind == ReduceKind::Add
          ? cFloat(0.0)
          : cFloat(-std::numeric_limits<double>::infinity());
  Value acc;
  if (n <= kWarpSize) {
    // One element per lane at most: clamp the index, mask the value.
    Value valid = ult(lane, cIndex(n));
    Value index = select(valid, lane, cIndex(0));
    acc = select(valid, fn(index), identity);
  } else if (n % kWarpSize == 0 && n / kWarpSize <= 8) {
    acc = fn(lane);
    for (int64_t j = 1; j < n / kWarpSize; ++j)
      acc = combine(kind, acc, fn(add(lane, cIndex(j * kWarpSize))));
  } else {
    auto loop = scf::ForOp::create(b, loc, lane, cIndex(n), cIndex(kWarpSize),
                                   ValueRange{identity});
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(loop.getBody());
      Value next = combine(kind, loop.getRegionIterArgs()[0],
                           fn(loop.getInductionVar()));
      scf::YieldOp::create(b, loc, next);
    }
    acc = loop.getResult(0);
  }
  for (int64_t offset = kWarpSize / 2; offset >= 1; offset /= 2)
    acc = combine(kind, acc, shuffleXor(acc, offset));
  return acc;
}

Value KernelEmitter::groupReduce(Value partial, int64_t S) {
  for (int64_t offset = S / 2; offset >= 1; offset /= 2)
    partial = addF(partial, shuffleXor(partial, offset));
  return partial;
}

Lowered KernelEmitter::reduceRowPartials(const MatrixLayout &l, Value partial) {
  // Sum over the columns of the warp: lanes with the same s.
  SmallVector<Value> rows;
  for (int64_t r = 0; r < l.R; ++r) {
    Value v = vector::ExtractOp::create(b, loc, partial, r);
    for (int64_t offset = l.S; offset < kWarpSize; offset *= 2)
      v = addF(v, shuffleXor(v, offset));
    rows.push_back(v);
  }
  // Lanes 0..S-1 of each warp now hold the warp's sums for rows s + S r.
  auto storeRows = [&](int64_t offset, Value rowBase) {
    flush();
    OpBuilder::InsertionGuard guard(b);
    auto ifOp = scf::IfOp::create(b, loc, ult(lane, cIndex(l.S)), false);
    b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
    for (int64_t r = 0; r < l.R; ++r) {
      Value e = rowIndex(l, r);
      auto store = [&] {
        Value index = add(cIndex(offset), e);
        if (rowBase)
          index = add(index, rowBase);
        checkFlushed();
        memref::StoreOp::create(b, loc, rows[r], arenaMem, ValueRange{index});
      };
      if (l.rowsMasked && (r + 1) * l.S > l.K) {
        OpBuilder::InsertionGuard inner(b);
        auto rowIf = scf::IfOp::create(b, loc, ult(e, cIndex(l.K)), false);
        b.setInsertionPoint(rowIf.thenBlock()->getTerminator());
        store();
      } else {
        store();
      }
    }
  };
  Lowered out;
  out.kind = Lowered::Vector;
  int64_t numWarps = NT / kWarpSize;
  if (numWarps == 1) {
    out.vec = newShared(l.K);
    touch(out.vec, true, false);
    storeRows(out.vec.offset, Value());
    return out;
  }
  // Combine the warps through shared memory: scratch[w * K + e].
  VecRef scratch = newShared(numWarps * l.K);
  touch(scratch, true, false);
  storeRows(scratch.offset, mul(warp, cIndex(l.K)));
  touch(scratch, false, false);
  out.vec = newShared(l.K);
  touch(out.vec, true, true);
  forEachOwned(l.K, [&](Value i) {
    Value sum = loadElem(scratch, i);
    for (int64_t w = 1; w < numWarps; ++w)
      sum = addF(sum, loadElem(scratch, add(i, cIndex(w * l.K))));
    storeShared(out.vec, i, sum);
  });
  arena.retain(scratch.slot);
  arena.release(scratch.slot);
  return out;
}
