//===- SharedMemory.cpp - The kernel's shared memory ----------------------===//
//
// Vectors live in slots of one dynamic shared-memory arena, reused once
// the value in them is dead (SharedArena: reference-counted, first fit).
// This file holds the arena, the loads and stores of shared and global
// memory, and the lifetimes of lowered values that free their slots.
//
//===----------------------------------------------------------------------===//

#include "KernelEmitter.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"

#include <algorithm>

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::gpu_kernel;

int SharedArena::allocate(int64_t size, bool persistent) {
  size = std::max<int64_t>(size, 1);
  int64_t offset = -1;
  for (auto it = freeList.begin(); it != freeList.end(); ++it) {
    if (it->second < size)
      continue;
    offset = it->first;
    if (it->second == size)
      freeList.erase(it);
    else
      *it = {it->first + size, it->second - size};
    break;
  }
  if (offset < 0) {
    offset = top;
    top += size;
  }
  slots.push_back({offset, size, 0, persistent});
  return slots.size() - 1;
}

void SharedArena::release(int slot) {
  Slot &s = slots[slot];
  if (--s.refs > 0 || s.persistent)
    return;
  freeList.push_back({s.offset, s.size});
  llvm::sort(freeList);
  SmallVector<std::pair<int64_t, int64_t>> merged;
  for (auto block : freeList) {
    if (!merged.empty() &&
        merged.back().first + merged.back().second == block.first)
      merged.back().second += block.second;
    else
      merged.push_back(block);
  }
  freeList = std::move(merged);
}

Value KernelEmitter::loadGlobal(Value ptr, Value index) {
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  Value addr = LLVM::GEPOp::create(b, loc, ptr.getType(), elemType, ptr,
                                   ValueRange{i64});
  return LLVM::LoadOp::create(b, loc, elemType, addr);
}

void KernelEmitter::storeGlobal(Value ptr, Value index, Value value) {
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  Value addr = LLVM::GEPOp::create(b, loc, ptr.getType(), elemType, ptr,
                                   ValueRange{i64});
  LLVM::StoreOp::create(b, loc, value, addr);
}

Value KernelEmitter::loadElem(const VecRef &v, Value i) {
  switch (v.kind) {
  case VecRef::Shared:
    checkFlushed();
    return memref::LoadOp::create(b, loc, arenaMem,
                                  ValueRange{add(cIndex(v.offset), i)});
  case VecRef::Global:
    return loadGlobal(v.ptr, add(v.base, i));
  case VecRef::Splat:
    return v.splat;
  }
  llvm_unreachable("vector kind");
}

void KernelEmitter::storeShared(const VecRef &v, Value i, Value value) {
  checkFlushed();
  memref::StoreOp::create(b, loc, value, arenaMem,
                          ValueRange{add(cIndex(v.offset), i)});
}

VecRef KernelEmitter::newShared(int64_t size, bool persistent) {
  VecRef v;
  v.kind = VecRef::Shared;
  v.size = size;
  v.slot = arena.allocate(size, persistent);
  v.offset = arena.offsetOf(v.slot);
  return v;
}

void KernelEmitter::setValue(Value v, Lowered l) {
  if (l.kind == Lowered::Vector && l.vec.kind == VecRef::Shared)
    arena.retain(l.vec.slot);
  lowered[v] = std::move(l);
}

void KernelEmitter::releaseDead(Operation *op) {
  auto release = [&](Value v) {
    auto it = lowered.find(v);
    if (it == lowered.end())
      return;
    const Lowered &l = it->second;
    if (l.kind == Lowered::Vector && l.vec.kind == VecRef::Shared)
      arena.release(l.vec.slot);
    lowered.erase(it);
  };
  llvm::SmallDenseSet<Value> seen;
  for (Value v : op->getOperands()) {
    if (isa<BlockArgument>(v) || !seen.insert(v).second)
      continue;
    if (lastUse.lookup(v) == op)
      release(v);
  }
  for (Value r : op->getResults())
    if (r.use_empty())
      release(r);
}
