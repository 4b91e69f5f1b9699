//===- Barriers.cpp - Where a kernel needs gpu.barrier --------------------===//
//
// Every shared-memory access the emitter generates is recorded with its
// range and whether it is "owned" (element i on thread i % NT) before the
// code is emitted; flush() emits a barrier only when an access conflicts
// with one since the last barrier (BarrierPlanner).
//
//===----------------------------------------------------------------------===//

#include "KernelEmitter.h"

#include "llvm/Support/ErrorHandling.h"

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::gpu_kernel;

void BarrierPlanner::record(int64_t begin, int64_t size, bool write,
                            bool owned) {
  pending.push_back({begin, begin + size, write, owned, begin % numThreads});
}

bool BarrierPlanner::needsBarrier() const {
  bool conflict = false;
  for (const Access &p : pending)
    for (const Access &a : epoch)
      conflict |= a.begin < p.end && p.begin < a.end &&
                  (a.write || p.write) &&
                  !(a.owned && p.owned && a.phase == p.phase);
  return conflict;
}

void BarrierPlanner::commit() {
  epoch.append(pending.begin(), pending.end());
  pending.clear();
}

void KernelEmitter::barrier() {
  gpu::BarrierOp::create(b, loc);
  barriers.barrierPlaced();
}

void KernelEmitter::touch(const VecRef &v, bool write, bool owned) {
  if (v.kind == VecRef::Shared)
    touchRange(v.offset, v.size, write, owned);
}

void KernelEmitter::touchRange(int64_t begin, int64_t size, bool write,
                               bool owned) {
  barriers.record(begin, size, write, owned);
}

void KernelEmitter::flush() {
  if (barriers.needsBarrier())
    barrier();
  barriers.commit();
}

void KernelEmitter::checkFlushed() {
  if (barriers.hasPending())
    llvm::report_fatal_error("convert-fwp-to-gpu: shared-memory access "
                             "emitted before its barrier check");
}

void KernelEmitter::touchInputs(ArrayRef<Value> inputs, bool owned) {
  for (Value v : inputs) {
    const Lowered &l = lowered.at(v);
    if (l.kind == Lowered::Vector)
      touch(l.vec, /*write=*/false, owned);
  }
}
