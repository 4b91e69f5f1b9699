//===- ScanToKernel.cpp - One fused GPU kernel per fwp.scan ---------------===//
//
// The kernel of a scan runs one thread block of NT threads per (batch, head)
// pair; time is an scf.for inside the kernel. Where values live:
//
//  * fast-weight matrices (K x V): registers. A matrix is split into column
//    strips: with S threads per column (S a power of two <= 32, consecutive
//    lanes), thread `tid` holds rows e = s + S r (r < R = ceil(K / S)) of
//    the columns m = tid / S + (NT / S) c (c < C), s = tid % S, as C values
//    of type vector<R x f32>. Reads reduce a column in the thread, then over
//    the S lanes with butterfly shuffles; writes are local FMAs. SSA gives
//    value semantics for free: a matrix that is still used after a write is
//    simply a second set of registers.
//  * vectors: slots of dynamic shared memory (reused when their value is
//    dead); seq inputs and params are read from global memory in place.
//    Elementwise ops give element i to thread i % NT ("owned" accesses);
//    full-vector reductions are done by every warp at once, so each thread
//    gets the result without a barrier.
//  * scalars: registers, computed by every thread alike.
//
// Barriers are inserted only where needed: every shared-memory access is
// recorded with its range and whether it is "owned"; an access that
// conflicts with one since the last barrier (write/read, read/write or
// write/write by possibly different threads) first emits gpu.barrier.
//
//===----------------------------------------------------------------------===//

#include "fwp/Conversion/FwpToGPU/FwpToGPU.h"
#include "fwp/Dialect/Fwp/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>
#include <functional>

using namespace mlir;
using namespace mlir::fwp;

namespace {

constexpr int64_t kWarpSize = 32;
/// Scans with more seq inputs than this are not prefetched.
constexpr unsigned kMaxPrefetchedInputs = 12;
/// The dynamic shared memory of every kernel.
constexpr llvm::StringLiteral kSharedSymbol = "fwp_shared";
/// The largest dynamic shared memory a block may have (H100: 227 KiB).
constexpr int64_t kMaxSharedBytes = 232448;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

//===----------------------------------------------------------------------===//
// Layouts and lowered values
//===----------------------------------------------------------------------===//

/// How a K x V matrix is spread over the NT threads of a block.
struct MatrixLayout {
  int64_t K = 0, V = 0;
  int64_t S = 1;           ///< threads per column (consecutive lanes)
  int64_t colsPerPass = 1; ///< NT / S columns covered by one pass
  int64_t C = 1;           ///< columns per thread
  int64_t R = 1;           ///< rows per thread and column
  bool rowsMasked = false; ///< some e = s + S r are >= K
  bool colsMasked = false; ///< some columns m are >= V

  static MatrixLayout get(int64_t K, int64_t V, int64_t NT) {
    MatrixLayout l;
    l.K = K;
    l.V = V;
    int64_t Vp = llvm::PowerOf2Ceil(V), Kp = llvm::PowerOf2Ceil(K);
    l.S = Vp >= NT ? 1 : std::min({NT / Vp, Kp, kWarpSize});
    l.colsPerPass = NT / l.S;
    l.C = ceilDiv(V, l.colsPerPass);
    l.R = ceilDiv(K, l.S);
    l.rowsMasked = l.R * l.S != K;
    l.colsMasked = l.C * l.colsPerPass != V;
    return l;
  }
};

/// A vector value: a shared-memory slot, a global buffer read in place, or
/// one scalar repeated.
struct VecRef {
  enum Kind { Shared, Global, Splat } kind = Splat;
  int64_t size = 0;
  int slot = -1;      ///< Shared
  int64_t offset = 0; ///< Shared: element offset in the arena
  Value ptr, base;    ///< Global: element i is ptr[base + i]
  Value splat;        ///< Splat
};

struct Lowered {
  enum Kind { Scalar, Vector, Matrix } kind = Scalar;
  Value scalar;
  VecRef vec;
  MatrixLayout layout;
  SmallVector<Value> cols; ///< Matrix: C values of vector<R x f>
};

/// Slots of the shared-memory arena, reference-counted by the values that
/// live in them; first fit, neighbours merged when freed.
class SharedArena {
public:
  int allocate(int64_t size, bool persistent) {
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
  int64_t offsetOf(int slot) const { return slots[slot].offset; }
  void retain(int slot) { ++slots[slot].refs; }
  void release(int slot) {
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
  int64_t size() const { return top; }

private:
  struct Slot {
    int64_t offset, size;
    int refs;
    bool persistent;
  };
  std::vector<Slot> slots;
  SmallVector<std::pair<int64_t, int64_t>> freeList;
  int64_t top = 0;
};

enum class ReduceKind { Add, Max };

//===----------------------------------------------------------------------===//
// The kernel emitter
//===----------------------------------------------------------------------===//

class KernelEmitter {
public:
  KernelEmitter(ScanOp scan, const GpuLoweringOptions &options)
      : scan(scan), loc(scan.getLoc()), b(scan.getContext()),
        NT(options.blockSize), prefetch(options.prefetch) {}

  /// Builds the gpu.module (inserted before the scan); fails with a
  /// diagnostic on an unsupported op or type.
  LogicalResult emit();

private:
  // --- constants and small helpers -----------------------------------------
  Value cIndex(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value cFloat(double v) {
    return arith::ConstantOp::create(b, loc, b.getFloatAttr(elemType, v));
  }
  Value cI32(int64_t v) {
    return arith::ConstantIntOp::create(b, loc, b.getI32Type(), v);
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value addF(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value subF(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value mulF(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value divF(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }
  Value exp(Value x) { return math::ExpOp::create(b, loc, x); }
  Value ult(Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, x, y);
  }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  Value sigmoid(Value x) {
    return divF(cFloat(1.0), addF(cFloat(1.0), exp(arith::NegFOp::create(
                                                      b, loc, x))));
  }

  // --- memory ----------------------------------------------------------------
  Value loadGlobal(Value ptr, Value index);
  void storeGlobal(Value ptr, Value index, Value value);
  Value loadElem(const VecRef &v, Value i);
  void storeShared(const VecRef &v, Value i, Value value);
  VecRef newShared(int64_t size, bool persistent = false);
  void barrier();
  /// Records a shared-memory access for the next flush(): it needs a
  /// barrier if it conflicts with an access since the last one.
  void touch(const VecRef &v, bool write, bool owned);
  void touchRange(int64_t begin, int64_t size, bool write, bool owned);
  /// Emits the barrier the recorded accesses need (if any) and moves them
  /// into the current epoch. Call at the top level, right before the code
  /// that performs them.
  void flush();
  void checkFlushed();

  // --- parallel patterns -----------------------------------------------------
  /// Runs `body(i)` for every i < n, element i on thread i % NT.
  void forEachOwned(int64_t n, function_ref<void(Value)> body);
  /// Reduces fn(i) over i < n in every warp; every thread gets the result.
  Value warpAllReduce(int64_t n, ReduceKind kind, function_ref<Value(Value)> fn);
  Value combine(ReduceKind kind, Value x, Value y);
  Value shuffleXor(Value x, int64_t offset);

  // --- matrices ----------------------------------------------------------------
  MatrixLayout layoutOf(Type type) {
    auto w = cast<FastWeightType>(type);
    return MatrixLayout::get(w.getKeyDim(), w.getValueDim(), NT);
  }
  Value threadS(const MatrixLayout &l);
  Value threadMBase(const MatrixLayout &l);
  Value rowIndex(const MatrixLayout &l, int64_t r);
  Value colIndex(const MatrixLayout &l, int64_t c);
  /// Stores `value`, reduced over the column's S threads, as entry m_c of
  /// the shared vector `v`: thread s = 0 of the column stores it, and only
  /// for a column inside V.
  void storeColumnResult(const MatrixLayout &l, int64_t c, const VecRef &v,
                         Value value);
  /// The thread's entries k[s + S r] of a key-side vector (0 where masked).
  Value gatherRows(const VecRef &v, const MatrixLayout &l);
  /// The thread's entry v[m_c] of a value-side vector (0 where masked).
  Value gatherCol(const VecRef &v, const MatrixLayout &l, int64_t c);
  Value groupReduce(Value partial, int64_t S);
  /// Whether gatherCol reads only the elements the thread owns: one thread
  /// per column and no masked (clamped) columns.
  static bool colReadsOwned(const MatrixLayout &l) {
    return l.S == 1 && !l.colsMasked;
  }
  Lowered loadMatrix(Value ptr, Value base, const MatrixLayout &l);
  void storeMatrix(const Lowered &m, Value ptr, Value base);
  Lowered zeroMatrix(const MatrixLayout &l);
  Type stripType(const MatrixLayout &l) {
    return VectorType::get({l.R}, elemType);
  }

  // --- op lowerings -------------------------------------------------------------
  LogicalResult lowerOp(Operation *op);
  Lowered lowerRead(ReadOp op);
  Lowered lowerReadTransposed(ReadTransposedOp op);
  /// A K-vector from per-thread row partials (vector<R>): the sum over the
  /// threads that hold the same rows.
  Lowered reduceRowPartials(const MatrixLayout &l, Value partial);
  Lowered lowerScaleRows(ScaleRowsOp op);
  Lowered lowerRowDot(RowDotOp op);
  Lowered lowerWriteSum(WriteSumOp op);
  void lowerWriteDelta(WriteDeltaOp op);
  /// Scalars, vectors and (for add/sub) matrices, elementwise.
  LogicalResult lowerElementwise(Operation *op,
                                 function_ref<Value(ArrayRef<Value>)> fn);
  /// A vector result computed elementwise by fn(i).
  Lowered elementwiseVector(int64_t n, ArrayRef<Value> ownedInputs,
                            ArrayRef<Value> foreignInputs,
                            function_ref<Value(Value)> fn);
  Value elemOf(Value fwpValue, Value i);
  void touchInputs(ArrayRef<Value> inputs, bool owned);
  Value reduceOf(Value fwpVector, ReduceKind kind,
                 function_ref<Value(Value)> perElement = nullptr);
  /// DPFP's r[p]: relu(x[p]) for p < n, relu(-x[p - n]) otherwise.
  Value dpfpFeature(Value x, Value p, int64_t n);
  /// Mean and 1 / sqrt(variance + eps) of a vector (biased variance).
  std::pair<Value, Value> meanAndRstd(Value x, int64_t n, double eps);

  // --- the scan ----------------------------------------------------------------
  LogicalResult checkTypes();
  int64_t chooseBlockSize();
  void setValue(Value v, Lowered l);
  void releaseDead(Operation *op);
  LogicalResult emitStep(Block::BlockArgListType iterArgs,
                         SmallVectorImpl<Value> &yielded);
  /// Prefetches the next step's seq rows into L1 (PTX prefetch.L1).
  void prefetchNextStep();
  void writeOutputsAndStates(YieldOp yield);
  ArrayAttr buildArgsAttr();

  ScanOp scan;
  Location loc;
  OpBuilder b;
  int64_t NT;
  bool prefetch;
  Type elemType;
  SharedArena arena;
  /// A shared-memory access to [begin, end). Owned accesses give address
  /// a to thread (a - phase) % NT: two of them touch each address from the
  /// same thread only if their phases agree.
  struct Access {
    int64_t begin, end;
    bool write, owned;
    int64_t phase;
  };
  SmallVector<Access> epoch;   ///< accesses since the last barrier
  SmallVector<Access> pending; ///< recorded, not yet checked
  DenseMap<Value, Lowered> lowered;
  DenseMap<Value, Operation *> lastUse;

  // Kernel-wide values.
  Value tid, lane, warp, bh, head, B, H, T, t, arenaMem;
  DenseMap<int64_t, Value> sCache, mBaseCache;
  SmallVector<Value> seqPtrs, paramPtrs, statePtrs, outputPtrs;
  SmallVector<VecRef> stateSlots; ///< vector states: their persistent slot
  arith::ConstantOp arenaSizeConst;
};

//===----------------------------------------------------------------------===//
// Memory
//===----------------------------------------------------------------------===//

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

void KernelEmitter::storeColumnResult(const MatrixLayout &l, int64_t c,
                                     const VecRef &v, Value value) {
  Value m = colIndex(l, c);
  Value cond;
  if (l.S > 1)
    cond = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, threadS(l),
                                 cIndex(0));
  if (l.colsMasked) {
    Value valid = ult(m, cIndex(l.V));
    cond = cond ? arith::AndIOp::create(b, loc, cond, valid) : valid;
  }
  flush();
  if (!cond) {
    storeShared(v, m, value);
    return;
  }
  OpBuilder::InsertionGuard guard(b);
  auto ifOp = scf::IfOp::create(b, loc, cond, false);
  b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
  storeShared(v, m, value);
}

VecRef KernelEmitter::newShared(int64_t size, bool persistent) {
  VecRef v;
  v.kind = VecRef::Shared;
  v.size = size;
  v.slot = arena.allocate(size, persistent);
  v.offset = arena.offsetOf(v.slot);
  return v;
}

void KernelEmitter::barrier() {
  gpu::BarrierOp::create(b, loc);
  epoch.clear();
}

void KernelEmitter::touch(const VecRef &v, bool write, bool owned) {
  if (v.kind == VecRef::Shared)
    touchRange(v.offset, v.size, write, owned);
}

void KernelEmitter::touchRange(int64_t begin, int64_t size, bool write,
                               bool owned) {
  pending.push_back({begin, begin + size, write, owned, begin % NT});
}

void KernelEmitter::flush() {
  bool conflict = false;
  for (const Access &p : pending)
    for (const Access &a : epoch)
      conflict |= a.begin < p.end && p.begin < a.end &&
                  (a.write || p.write) &&
                  !(a.owned && p.owned && a.phase == p.phase);
  if (conflict)
    barrier();
  epoch.append(pending.begin(), pending.end());
  pending.clear();
}

void KernelEmitter::checkFlushed() {
  if (!pending.empty())
    llvm::report_fatal_error("convert-fwp-to-gpu: shared-memory access "
                             "emitted before its barrier check");
}

//===----------------------------------------------------------------------===//
// Parallel patterns
//===----------------------------------------------------------------------===//

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

//===----------------------------------------------------------------------===//
// Matrices
//===----------------------------------------------------------------------===//

Value KernelEmitter::threadS(const MatrixLayout &l) {
  Value &s = sCache[l.S];
  if (!s) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointAfter(tid.getDefiningOp());
    s = arith::RemUIOp::create(b, loc, tid, cIndex(l.S));
  }
  return s;
}

Value KernelEmitter::threadMBase(const MatrixLayout &l) {
  Value &m = mBaseCache[l.S];
  if (!m) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointAfter(tid.getDefiningOp());
    m = arith::DivUIOp::create(b, loc, tid, cIndex(l.S));
  }
  return m;
}

Value KernelEmitter::rowIndex(const MatrixLayout &l, int64_t r) {
  Value s = threadS(l);
  return r == 0 ? s : add(s, cIndex(l.S * r));
}

Value KernelEmitter::colIndex(const MatrixLayout &l, int64_t c) {
  Value m = threadMBase(l);
  return c == 0 ? m : add(m, cIndex(l.colsPerPass * c));
}

Value KernelEmitter::gatherRows(const VecRef &v, const MatrixLayout &l) {
  flush();
  SmallVector<Value> elems;
  for (int64_t r = 0; r < l.R; ++r) {
    Value e = rowIndex(l, r);
    if (l.rowsMasked && (r + 1) * l.S > l.K) {
      Value valid = ult(e, cIndex(l.K));
      Value x = loadElem(v, select(valid, e, cIndex(0)));
      elems.push_back(select(valid, x, cFloat(0.0)));
    } else {
      elems.push_back(loadElem(v, e));
    }
  }
  return vector::FromElementsOp::create(b, loc, stripType(l), elems);
}

Value KernelEmitter::gatherCol(const VecRef &v, const MatrixLayout &l,
                               int64_t c) {
  flush();
  Value m = colIndex(l, c);
  if (!l.colsMasked)
    return loadElem(v, m);
  Value valid = ult(m, cIndex(l.V));
  Value x = loadElem(v, select(valid, m, cIndex(0)));
  return select(valid, x, cFloat(0.0));
}

Value KernelEmitter::groupReduce(Value partial, int64_t S) {
  for (int64_t offset = S / 2; offset >= 1; offset /= 2)
    partial = addF(partial, shuffleXor(partial, offset));
  return partial;
}

Lowered KernelEmitter::loadMatrix(Value ptr, Value base,
                                  const MatrixLayout &l) {
  Lowered m;
  m.kind = Lowered::Matrix;
  m.layout = l;
  for (int64_t c = 0; c < l.C; ++c) {
    Value col = colIndex(l, c);
    Value colValid = l.colsMasked ? ult(col, cIndex(l.V)) : Value();
    SmallVector<Value> elems;
    for (int64_t r = 0; r < l.R; ++r) {
      Value row = rowIndex(l, r);
      Value valid = colValid;
      if (l.rowsMasked && (r + 1) * l.S > l.K) {
        Value rowValid = ult(row, cIndex(l.K));
        valid = valid ? arith::AndIOp::create(b, loc, valid, rowValid)
                      : rowValid;
      }
      Value index = add(base, add(mul(row, cIndex(l.V)), col));
      if (!valid) {
        elems.push_back(loadGlobal(ptr, index));
        continue;
      }
      Value x = loadGlobal(ptr, select(valid, index, base));
      elems.push_back(select(valid, x, cFloat(0.0)));
    }
    m.cols.push_back(
        vector::FromElementsOp::create(b, loc, stripType(l), elems));
  }
  return m;
}

void KernelEmitter::storeMatrix(const Lowered &m, Value ptr, Value base) {
  const MatrixLayout &l = m.layout;
  for (int64_t c = 0; c < l.C; ++c) {
    Value col = colIndex(l, c);
    Value colValid = l.colsMasked ? ult(col, cIndex(l.V)) : Value();
    for (int64_t r = 0; r < l.R; ++r) {
      Value row = rowIndex(l, r);
      Value valid = colValid;
      if (l.rowsMasked && (r + 1) * l.S > l.K) {
        Value rowValid = ult(row, cIndex(l.K));
        valid = valid ? arith::AndIOp::create(b, loc, valid, rowValid)
                      : rowValid;
      }
      Value x = vector::ExtractOp::create(b, loc, m.cols[c], r);
      Value index = add(base, add(mul(row, cIndex(l.V)), col));
      if (!valid) {
        storeGlobal(ptr, index, x);
        continue;
      }
      OpBuilder::InsertionGuard guard(b);
      auto ifOp = scf::IfOp::create(b, loc, valid, false);
      b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
      storeGlobal(ptr, index, x);
    }
  }
}

Lowered KernelEmitter::zeroMatrix(const MatrixLayout &l) {
  Lowered m;
  m.kind = Lowered::Matrix;
  m.layout = l;
  auto type = cast<VectorType>(stripType(l));
  Value zero = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(type, b.getFloatAttr(elemType, 0.0)));
  m.cols.assign(l.C, zero);
  return m;
}

//===----------------------------------------------------------------------===//
// Op lowerings
//===----------------------------------------------------------------------===//

Value KernelEmitter::elemOf(Value fwpValue, Value i) {
  const Lowered &l = lowered.at(fwpValue);
  if (l.kind == Lowered::Scalar)
    return l.scalar;
  return loadElem(l.vec, i);
}

void KernelEmitter::touchInputs(ArrayRef<Value> inputs, bool owned) {
  for (Value v : inputs) {
    const Lowered &l = lowered.at(v);
    if (l.kind == Lowered::Vector)
      touch(l.vec, /*write=*/false, owned);
  }
}

Lowered KernelEmitter::elementwiseVector(int64_t n,
                                         ArrayRef<Value> ownedInputs,
                                         ArrayRef<Value> foreignInputs,
                                         function_ref<Value(Value)> fn) {
  touchInputs(ownedInputs, /*owned=*/true);
  touchInputs(foreignInputs, /*owned=*/false);
  Lowered out;
  out.kind = Lowered::Vector;
  out.vec = newShared(n);
  touch(out.vec, /*write=*/true, /*owned=*/true);
  forEachOwned(n, [&](Value i) { storeShared(out.vec, i, fn(i)); });
  return out;
}

Value KernelEmitter::reduceOf(Value fwpVector, ReduceKind kind,
                              function_ref<Value(Value)> perElement) {
  int64_t n = cast<VectorType>(fwpVector.getType()).getDimSize(0);
  touchInputs({fwpVector}, /*owned=*/false);
  return warpAllReduce(n, kind, [&](Value i) {
    Value x = elemOf(fwpVector, i);
    return perElement ? perElement(x) : x;
  });
}

Value KernelEmitter::dpfpFeature(Value x, Value p, int64_t n) {
  Value low = ult(p, cIndex(n));
  Value index = select(low, p, arith::SubIOp::create(b, loc, p, cIndex(n)));
  Value xi = elemOf(x, index);
  Value signedX = select(low, xi, arith::NegFOp::create(b, loc, xi));
  return arith::MaximumFOp::create(b, loc, signedX, cFloat(0.0));
}

std::pair<Value, Value> KernelEmitter::meanAndRstd(Value x, int64_t n,
                                                   double eps) {
  Value invN = cFloat(1.0 / double(n));
  Value mean = mulF(reduceOf(x, ReduceKind::Add), invN);
  Value var = mulF(reduceOf(x, ReduceKind::Add,
                            [&](Value xi) {
                              Value d = subF(xi, mean);
                              return mulF(d, d);
                            }),
                   invN);
  Value rstd = divF(cFloat(1.0), math::SqrtOp::create(b, loc, addF(var, cFloat(eps))));
  return {mean, rstd};
}

LogicalResult
KernelEmitter::lowerElementwise(Operation *op,
                                function_ref<Value(ArrayRef<Value>)> fn) {
  Type type = op->getResult(0).getType();
  SmallVector<Value> operands(op->getOperands());
  if (isa<FastWeightType>(type)) {
    Lowered out;
    out.kind = Lowered::Matrix;
    out.layout = layoutOf(type);
    for (int64_t c = 0; c < out.layout.C; ++c) {
      SmallVector<Value> args;
      for (Value v : operands)
        args.push_back(lowered.at(v).cols[c]);
      out.cols.push_back(fn(args));
    }
    setValue(op->getResult(0), out);
    return success();
  }
  if (!isa<VectorType>(type)) {
    SmallVector<Value> args;
    for (Value v : operands)
      args.push_back(lowered.at(v).scalar);
    Lowered out;
    out.kind = Lowered::Scalar;
    out.scalar = fn(args);
    setValue(op->getResult(0), out);
    return success();
  }
  int64_t n = cast<VectorType>(type).getDimSize(0);
  setValue(op->getResult(0),
           elementwiseVector(n, operands, {}, [&](Value i) {
             SmallVector<Value> args;
             for (Value v : operands)
               args.push_back(elemOf(v, i));
             return fn(args);
           }));
  return success();
}

Lowered KernelEmitter::lowerRead(ReadOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &q = lowered.at(op.getQuery()).vec;
  touch(q, false, false);
  Value qv = gatherRows(q, l);
  Lowered out;
  out.kind = Lowered::Vector;
  out.vec = newShared(l.V);
  touch(out.vec, true, /*owned=*/l.S == 1);
  for (int64_t c = 0; c < l.C; ++c) {
    Value products = mulF(w.cols[c], qv);
    Value partial = vector::ReductionOp::create(
        b, loc, vector::CombiningKind::ADD, products, Value(),
        arith::FastMathFlags::reassoc);
    Value sum = groupReduce(partial, l.S);
    storeColumnResult(l, c, out.vec, sum);
  }
  return out;
}

Lowered KernelEmitter::lowerReadTransposed(ReadTransposedOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &x = lowered.at(op.getValue()).vec;
  touch(x, false, colReadsOwned(l));
  // partial[r] = sum over the thread's columns of W[e_r, m] x[m].
  Value partial;
  for (int64_t c = 0; c < l.C; ++c) {
    Value xm = gatherCol(x, l, c);
    Value splat = vector::BroadcastOp::create(b, loc, stripType(l), xm);
    partial = partial ? vector::FMAOp::create(b, loc, w.cols[c], splat, partial)
                      : mulF(w.cols[c], splat);
  }
  return reduceRowPartials(l, partial);
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

Lowered KernelEmitter::lowerWriteSum(WriteSumOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &k = lowered.at(op.getKey()).vec;
  const VecRef &v = lowered.at(op.getValue()).vec;
  touch(k, false, false);
  touch(v, false, colReadsOwned(l));
  Value kv = gatherRows(k, l);
  Lowered out;
  out.kind = Lowered::Matrix;
  out.layout = l;
  for (int64_t c = 0; c < l.C; ++c) {
    Value vm = vector::BroadcastOp::create(b, loc, stripType(l),
                                           gatherCol(v, l, c));
    out.cols.push_back(vector::FMAOp::create(b, loc, kv, vm, w.cols[c]));
  }
  return out;
}

void KernelEmitter::lowerWriteDelta(WriteDeltaOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &k = lowered.at(op.getKey()).vec;
  const VecRef &v = lowered.at(op.getValue()).vec;
  Value beta = lowered.at(op.getBeta()).scalar;
  touch(k, false, false);
  touch(v, false, colReadsOwned(l));
  Value kv = gatherRows(k, l);
  bool keepRetrieved = !op.getRetrieved().use_empty();
  Lowered retrieved;
  retrieved.kind = Lowered::Vector;
  if (keepRetrieved) {
    retrieved.vec = newShared(l.V);
    touch(retrieved.vec, true, l.S == 1);
  }
  Lowered out;
  out.kind = Lowered::Matrix;
  out.layout = l;
  for (int64_t c = 0; c < l.C; ++c) {
    Value products = mulF(w.cols[c], kv);
    Value partial = vector::ReductionOp::create(
        b, loc, vector::CombiningKind::ADD, products, Value(),
        arith::FastMathFlags::reassoc);
    Value vbar = groupReduce(partial, l.S);
    Value u = mulF(beta, subF(gatherCol(v, l, c), vbar));
    Value us = vector::BroadcastOp::create(b, loc, stripType(l), u);
    out.cols.push_back(vector::FMAOp::create(b, loc, kv, us, w.cols[c]));
    if (!keepRetrieved)
      continue;
    storeColumnResult(l, c, retrieved.vec, vbar);
  }
  setValue(op.getNewWeight(), out);
  if (keepRetrieved)
    setValue(op.getRetrieved(), retrieved);
}

Lowered KernelEmitter::lowerScaleRows(ScaleRowsOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &a = lowered.at(op.getFactors()).vec;
  touch(a, false, false);
  Value rows = gatherRows(a, l);
  Lowered out;
  out.kind = Lowered::Matrix;
  out.layout = l;
  for (int64_t c = 0; c < l.C; ++c)
    out.cols.push_back(mulF(w.cols[c], rows));
  return out;
}

Lowered KernelEmitter::lowerRowDot(RowDotOp op) {
  const Lowered &x = lowered.at(op.getLhs());
  const Lowered &y = lowered.at(op.getRhs());
  const MatrixLayout &l = x.layout;
  // partial[r] = sum over the thread's columns of A[e_r, m] B[e_r, m].
  Value partial;
  for (int64_t c = 0; c < l.C; ++c)
    partial = partial ? vector::FMAOp::create(b, loc, x.cols[c], y.cols[c], partial)
                      : mulF(x.cols[c], y.cols[c]);
  return reduceRowPartials(l, partial);
}

static int64_t sizeOf(Value v) {
  return cast<VectorType>(v.getType()).getDimSize(0);
}

LogicalResult KernelEmitter::lowerOp(Operation *op) {
  // Pure ops whose results are all unused cost nothing.
  if (llvm::all_of(op->getResults(), [](Value r) { return r.use_empty(); }))
    return success();
  auto vectorResult = [&](Lowered l) {
    setValue(op->getResult(0), l);
    return success();
  };
  auto scalarResult = [&](Value s) {
    Lowered l;
    l.kind = Lowered::Scalar;
    l.scalar = s;
    setValue(op->getResult(0), l);
    return success();
  };
  auto one = [&] { return cFloat(1.0); };
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<ReadOp>([&](auto read) { return vectorResult(lowerRead(read)); })
      .Case<ReadTransposedOp>(
          [&](auto read) { return vectorResult(lowerReadTransposed(read)); })
      .Case<WriteSumOp>([&](auto write) {
        setValue(write.getResult(), lowerWriteSum(write));
        return success();
      })
      .Case<WriteDeltaOp>([&](auto write) {
        lowerWriteDelta(write);
        return success();
      })
      .Case<ScaleRowsOp>([&](ScaleRowsOp scale) {
        setValue(scale.getResult(), lowerScaleRows(scale));
        return success();
      })
      .Case<RowDotOp>(
          [&](RowDotOp dot) { return vectorResult(lowerRowDot(dot)); })
      .Case<SqrtOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> x) -> Value {
          return math::SqrtOp::create(b, loc, x[0]);
        });
      })
      .Case<EluPlusOneOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> x) {
          Value positive = arith::CmpFOp::create(
              b, loc, arith::CmpFPredicate::OGT, x[0], cFloat(0.0));
          return select(positive, addF(x[0], one()), exp(x[0]));
        });
      })
      .Case<SigmoidOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return sigmoid(x[0]); });
      })
      .Case<TanhOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> x) -> Value {
          return math::TanhOp::create(b, loc, x[0]);
        });
      })
      .Case<NegOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> x) -> Value {
          return arith::NegFOp::create(b, loc, x[0]);
        });
      })
      .Case<AddOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return addF(x[0], x[1]); });
      })
      .Case<SubOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return subF(x[0], x[1]); });
      })
      .Case<MulOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return mulF(x[0], x[1]); });
      })
      .Case<DivOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return divF(x[0], x[1]); });
      })
      .Case<ScaleOp>([&](ScaleOp scale) {
        Value factor = lowered.at(scale.getFactor()).scalar;
        Value x = scale.getX();
        return vectorResult(elementwiseVector(
            sizeOf(x), {x}, {},
            [&](Value i) { return mulF(elemOf(x, i), factor); }));
      })
      .Case<ConstantOp>([&](ConstantOp constant) {
        Value value = cFloat(constant.getValue().convertToDouble());
        if (!isa<VectorType>(constant.getType()))
          return scalarResult(value);
        Lowered l;
        l.kind = Lowered::Vector;
        l.vec.kind = VecRef::Splat;
        l.vec.size = sizeOf(constant.getResult());
        l.vec.splat = value;
        return vectorResult(l);
      })
      .Case<ZerosOp>([&](ZerosOp zeros) {
        Type type = zeros.getType();
        if (isa<FastWeightType>(type))
          return vectorResult(zeroMatrix(layoutOf(type)));
        if (!isa<VectorType>(type))
          return scalarResult(cFloat(0.0));
        Lowered l;
        l.kind = Lowered::Vector;
        l.vec.kind = VecRef::Splat;
        l.vec.size = sizeOf(zeros.getResult());
        l.vec.splat = cFloat(0.0);
        return vectorResult(l);
      })
      .Case<DotOp>([&](DotOp dot) {
        Value x = dot.getLhs(), y = dot.getRhs();
        touchInputs({x, y}, false);
        return scalarResult(warpAllReduce(
            sizeOf(x), ReduceKind::Add,
            [&](Value i) { return mulF(elemOf(x, i), elemOf(y, i)); }));
      })
      .Case<SumNormOp>([&](SumNormOp norm) {
        Value x = norm.getX();
        Value sum = addF(reduceOf(x, ReduceKind::Add),
                         cFloat(norm.getEps().convertToDouble()));
        return vectorResult(elementwiseVector(
            sizeOf(x), {}, {x}, [&](Value i) { return divF(elemOf(x, i), sum); }));
      })
      .Case<SoftmaxOp>([&](SoftmaxOp softmax) {
        Value x = softmax.getX();
        Value max = reduceOf(x, ReduceKind::Max);
        Value sum = reduceOf(x, ReduceKind::Add,
                             [&](Value xi) { return exp(subF(xi, max)); });
        return vectorResult(elementwiseVector(
            sizeOf(x), {}, {x},
            [&](Value i) { return divF(exp(subF(elemOf(x, i), max)), sum); }));
      })
      .Case<DpfpOp>([&](DpfpOp dpfp) {
        Value x = dpfp.getX();
        int64_t n = sizeOf(x), twoN = 2 * n;
        auto r = [&](Value p) { return dpfpFeature(x, p, n); };
        return vectorResult(elementwiseVector(
            sizeOf(dpfp.getResult()), {}, {x}, [&](Value j) {
              // j = (s - 1) 2n + i:  r[i] r[(i + s) mod 2n].
              Value i = arith::RemUIOp::create(b, loc, j, cIndex(twoN));
              Value s = add(arith::DivUIOp::create(b, loc, j, cIndex(twoN)),
                            cIndex(1));
              Value partner =
                  arith::RemUIOp::create(b, loc, add(i, s), cIndex(twoN));
              return mulF(r(i), r(partner));
            }));
      })
      .Case<LayerNormOp>([&](LayerNormOp norm) {
        Value x = norm.getX();
        int64_t n = sizeOf(x);
        auto [mean, rstd] = meanAndRstd(x, n, norm.getEps().convertToDouble());
        Value w = norm.getWeight(), bias = norm.getBias();
        return vectorResult(elementwiseVector(
            n, {w, bias}, {x}, [&](Value i) {
              Value xhat = mulF(subF(elemOf(x, i), mean), rstd);
              return addF(mulF(xhat, elemOf(w, i)), elemOf(bias, i));
            }));
      })
      .Case<EluPlusOneGradOp>([&](EluPlusOneGradOp grad) {
        return lowerElementwise(op, [&](ArrayRef<Value> a) {
          Value positive = arith::CmpFOp::create(
              b, loc, arith::CmpFPredicate::OGT, a[0], cFloat(0.0));
          return mulF(a[1], select(positive, one(), exp(a[0])));
        });
      })
      .Case<SigmoidGradOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> a) {
          return mulF(a[1], mulF(a[0], subF(one(), a[0])));
        });
      })
      .Case<TanhGradOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> a) {
          return mulF(a[1], subF(one(), mulF(a[0], a[0])));
        });
      })
      .Case<SoftmaxGradOp>([&](SoftmaxGradOp grad) {
        Value y = grad.getX(), g = grad.getGrad();
        touchInputs({y, g}, false);
        Value dot = warpAllReduce(sizeOf(y), ReduceKind::Add, [&](Value i) {
          return mulF(elemOf(y, i), elemOf(g, i));
        });
        return vectorResult(elementwiseVector(
            sizeOf(y), {y, g}, {}, [&](Value i) {
              return mulF(elemOf(y, i), subF(elemOf(g, i), dot));
            }));
      })
      .Case<SumNormGradOp>([&](SumNormGradOp grad) {
        Value x = grad.getX(), g = grad.getGrad();
        touchInputs({x, g}, false);
        Value sum = addF(reduceOf(x, ReduceKind::Add),
                         cFloat(grad.getEps().convertToDouble()));
        Value gx = warpAllReduce(sizeOf(x), ReduceKind::Add, [&](Value i) {
          return mulF(elemOf(g, i), elemOf(x, i));
        });
        Value shift = divF(gx, sum);
        return vectorResult(elementwiseVector(
            sizeOf(x), {g}, {}, [&](Value i) {
              return divF(subF(elemOf(g, i), shift), sum);
            }));
      })
      .Case<DpfpGradOp>([&](DpfpGradOp grad) {
        Value x = grad.getX(), g = grad.getGrad();
        int64_t n = sizeOf(x), twoN = 2 * n, nu = grad.getNu();
        auto r = [&](Value p) { return dpfpFeature(x, p, n); };
        // dr[p] = sum_s g[(s-1) 2n + p] r[(p+s) mod 2n]
        //             + g[(s-1) 2n + (p-s) mod 2n] r[(p-s) mod 2n]
        auto dr = [&](Value p) {
          Value sum = cFloat(0.0);
          for (int64_t s = 1; s <= nu; ++s) {
            Value block = cIndex((s - 1) * twoN);
            Value up = arith::RemUIOp::create(b, loc, add(p, cIndex(s)),
                                              cIndex(twoN));
            Value down = arith::RemUIOp::create(
                b, loc, add(p, cIndex(twoN - s % twoN)), cIndex(twoN));
            Value gUp = elemOf(g, add(block, p));
            Value gDown = elemOf(g, add(block, down));
            sum = addF(sum, addF(mulF(gUp, r(up)), mulF(gDown, r(down))));
          }
          return sum;
        };
        return vectorResult(elementwiseVector(
            n, {}, {x, g}, [&](Value i) {
              Value xi = elemOf(x, i);
              Value pos = arith::CmpFOp::create(
                  b, loc, arith::CmpFPredicate::OGT, xi, cFloat(0.0));
              Value neg = arith::CmpFOp::create(
                  b, loc, arith::CmpFPredicate::OLT, xi, cFloat(0.0));
              Value dPos = select(pos, dr(i), cFloat(0.0));
              Value dNeg = select(neg, dr(add(i, cIndex(n))), cFloat(0.0));
              return subF(dPos, dNeg);
            }));
      })
      .Case<LayerNormGradOp>([&](LayerNormGradOp grad) {
        Value x = grad.getX(), w = grad.getWeight(), g = grad.getGrad();
        int64_t n = sizeOf(x);
        auto [mean, rstd] = meanAndRstd(x, n, grad.getEps().convertToDouble());
        auto xhatAt = [&](Value i) {
          return mulF(subF(elemOf(x, i), mean), rstd);
        };
        touchInputs({x, w, g}, false);
        Value invN = cFloat(1.0 / n);
        Value meanGw = mulF(warpAllReduce(n, ReduceKind::Add, [&](Value i) {
          return mulF(elemOf(g, i), elemOf(w, i));
        }), invN);
        Value meanGwXhat = mulF(warpAllReduce(n, ReduceKind::Add, [&](Value i) {
          return mulF(mulF(elemOf(g, i), elemOf(w, i)), xhatAt(i));
        }), invN);
        setValue(grad.getGradX(),
                 elementwiseVector(n, {x, w, g}, {}, [&](Value i) {
                   Value dxhat = mulF(elemOf(g, i), elemOf(w, i));
                   Value centred = subF(subF(dxhat, meanGw),
                                        mulF(xhatAt(i), meanGwXhat));
                   return mulF(rstd, centred);
                 }));
        setValue(grad.getGradWeight(),
                 elementwiseVector(n, {x, g}, {}, [&](Value i) {
                   return mulF(elemOf(g, i), xhatAt(i));
                 }));
        // The bias gradient is the output gradient itself.
        Lowered bias = lowered.at(g);
        if (bias.vec.kind == VecRef::Shared)
          arena.retain(bias.vec.slot);
        lowered[grad.getGradBias()] = bias;
        return success();
      })
      .Default([&](Operation *other) {
        return other->emitOpError()
               << "has no GPU lowering (convert-fwp-to-gpu)";
      });
}

//===----------------------------------------------------------------------===//
// The scan
//===----------------------------------------------------------------------===//

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

LogicalResult KernelEmitter::checkTypes() {
  auto elementOf = [](Type type) -> Type {
    if (auto vector = dyn_cast<VectorType>(type))
      return vector.getElementType();
    if (auto weight = dyn_cast<FastWeightType>(type))
      return weight.getElementType();
    return type;
  };
  SmallVector<Type> types;
  for (Type type : scan.getBodyBlock().getArgumentTypes())
    types.push_back(type);
  for (Attribute attr : scan.getOutputTypes())
    types.push_back(cast<TypeAttr>(attr).getValue());
  for (Type type : types) {
    Type element = elementOf(type);
    if (!element.isF32() && !element.isF64())
      return scan.emitOpError() << "convert-fwp-to-gpu supports f32 and f64 "
                                   "values, not "
                                << type;
    if (!elemType)
      elemType = element;
    if (element != elemType)
      return scan.emitOpError()
             << "convert-fwp-to-gpu needs one element type per scan, found "
             << elemType << " and " << element;
  }
  if (!elemType)
    elemType = b.getF32Type();
  return success();
}

int64_t KernelEmitter::chooseBlockSize() {
  // About 32 registers of persistent fast weight per thread.
  int64_t elements = 0;
  for (BlockArgument arg : scan.getBodyBlock().getArguments())
    if (auto w = dyn_cast<FastWeightType>(arg.getType()))
      elements += llvm::PowerOf2Ceil(w.getKeyDim()) *
                  llvm::PowerOf2Ceil(w.getValueDim());
  int64_t threads = llvm::PowerOf2Ceil(std::max<int64_t>(1, elements / 32));
  return std::clamp<int64_t>(threads, 32, 1024);
}

ArrayAttr KernelEmitter::buildArgsAttr() {
  bool backward = false;
  if (auto role = scan->getAttrOfType<StringAttr>(kRoleAttrName))
    backward = role.getValue() == "backward";
  auto shapeOf = [&](Type type, ArrayRef<Attribute> prefix, bool perStep) {
    SmallVector<Attribute> shape(prefix);
    if (perStep)
      shape.push_back(b.getI64IntegerAttr(-1));
    if (auto vector = dyn_cast<VectorType>(type)) {
      shape.push_back(b.getI64IntegerAttr(vector.getDimSize(0)));
    } else if (auto w = dyn_cast<FastWeightType>(type)) {
      shape.push_back(b.getI64IntegerAttr(w.getKeyDim()));
      shape.push_back(b.getI64IntegerAttr(w.getValueDim()));
    } else if (!perStep) {
      shape.push_back(b.getI64IntegerAttr(1));
    }
    return b.getArrayAttr(shape);
  };
  Attribute batchDim = b.getStringAttr("B"), headDim = b.getStringAttr("H");
  SmallVector<Attribute> args;
  auto addArg = [&](StringRef role, StringRef name, ArrayAttr shape) {
    args.push_back(b.getDictionaryAttr(
        {b.getNamedAttr("role", b.getStringAttr(role)),
         b.getNamedAttr("name", b.getStringAttr(name)),
         b.getNamedAttr("shape", shape)}));
  };
  auto nameAt = [](ArrayAttr names, unsigned i) {
    return cast<StringAttr>(names[i]).getValue();
  };
  for (auto [i, arg] : llvm::enumerate(scan.getSeqArgs())) {
    StringRef name = nameAt(scan.getSeqNames(), i);
    StringRef role = "seq";
    if (name.starts_with("tape."))
      role = "tape";
    else if (backward && name.consume_front("grad."))
      role = "grad_output";
    addArg(role, name, shapeOf(arg.getType(), {batchDim, headDim}, true));
  }
  for (auto [i, arg] : llvm::enumerate(scan.getParamArgs()))
    addArg("param", nameAt(scan.getParamNames(), i),
           shapeOf(arg.getType(), {headDim}, false));
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    StringRef name = nameAt(scan.getStateNames(), i);
    StringRef role = "state";
    if (name.consume_front("grad.state."))
      role = "grad_state";
    else if (name.consume_front("grad.param."))
      role = "grad_param";
    addArg(role, name, shapeOf(arg.getType(), {batchDim, headDim}, false));
  }
  for (auto [i, attr] : llvm::enumerate(scan.getOutputTypes())) {
    StringRef name = nameAt(scan.getOutputNames(), i);
    StringRef role = "output";
    if (name.starts_with("tape."))
      role = "tape";
    else if (backward && name.consume_front("grad."))
      role = "grad_seq";
    addArg(role, name,
           shapeOf(cast<TypeAttr>(attr).getValue(), {batchDim, headDim}, true));
  }
  return b.getArrayAttr(args);
}

void KernelEmitter::prefetchNextStep() {
  // The next step's seq rows go to L1 now, so that its loads do not wait
  // for memory: step t+1 (t-1 when reversed) exists unless t is the last.
  Value hasNext =
      scan.getReverse()
          ? arith::CmpIOp::create(b, loc, arith::CmpIPredicate::uge, t,
                                  cIndex(1))
                .getResult()
          : ult(add(t, cIndex(1)), T);
  Value next = scan.getReverse()
                   ? arith::SubIOp::create(b, loc, t, cIndex(1)).getResult()
                   : add(t, cIndex(1));
  OpBuilder::InsertionGuard guard(b);
  auto ifNext = scf::IfOp::create(b, loc, hasNext, false);
  b.setInsertionPoint(ifNext.thenBlock()->getTerminator());
  int64_t lineElements = 128 / (elemType.getIntOrFloatBitWidth() / 8);
  Value row = add(mul(bh, T), next);
  for (auto [i, arg] : llvm::enumerate(scan.getSeqArgs())) {
    int64_t n = 1;
    if (auto vector = dyn_cast<VectorType>(arg.getType()))
      n = vector.getDimSize(0);
    else if (auto w = dyn_cast<FastWeightType>(arg.getType()))
      n = w.getKeyDim() * w.getValueDim();
    // One thread per 128-byte line of the row (which may straddle one more).
    int64_t lines = ceilDiv(n, lineElements) + (n > 1 ? 1 : 0);
    OpBuilder::InsertionGuard inner(b);
    auto ifThread = scf::IfOp::create(b, loc, ult(tid, cIndex(std::min(lines, NT))), false);
    b.setInsertionPoint(ifThread.thenBlock()->getTerminator());
    // Thread j touches element min(j * lineElements, n - 1) of the row.
    Value element = arith::MinUIOp::create(
        b, loc, mul(tid, cIndex(lineElements)), cIndex(n - 1));
    Value index = add(mul(row, cIndex(n)), element);
    Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
    Value addr = LLVM::GEPOp::create(b, loc, seqPtrs[i].getType(), elemType,
                                     seqPtrs[i], ValueRange{i64});
    // Inline PTX: LLVM selects llvm.nvvm.prefetch.L1 for sm_90 only.
    LLVM::InlineAsmOp::create(
        b, loc, Type(), ValueRange{addr}, b.getStringAttr(kPtxPrefetchL1),
        b.getStringAttr("l"), b.getUnitAttr(), UnitAttr(),
        LLVM::TailCallKindAttr(), LLVM::AsmDialectAttr(), ArrayAttr());
  }
}

LogicalResult KernelEmitter::emitStep(Block::BlockArgListType iterArgs,
                                      SmallVectorImpl<Value> &yielded) {
  Block &body = scan.getBodyBlock();
  // Each prefetched input keeps an address live across the loop: skip it
  // when there are many (ptxas then spills instead).
  if (prefetch && scan.getNumSeq() > 0 &&
      scan.getNumSeq() <= kMaxPrefetchedInputs)
    prefetchNextStep();
  // Seq inputs at step t, read in place from global memory.
  for (auto [i, arg] : llvm::enumerate(scan.getSeqArgs())) {
    Value rowIndex = add(mul(bh, T), t);
    Type type = arg.getType();
    Lowered l;
    if (auto vector = dyn_cast<VectorType>(type)) {
      l.kind = Lowered::Vector;
      l.vec.kind = VecRef::Global;
      l.vec.size = vector.getDimSize(0);
      l.vec.ptr = seqPtrs[i];
      l.vec.base = mul(rowIndex, cIndex(vector.getDimSize(0)));
    } else if (auto w = dyn_cast<FastWeightType>(type)) {
      l = loadMatrix(seqPtrs[i],
                     mul(rowIndex, cIndex(w.getKeyDim() * w.getValueDim())),
                     layoutOf(type));
    } else {
      l.kind = Lowered::Scalar;
      l.scalar = loadGlobal(seqPtrs[i], rowIndex);
    }
    lowered[arg] = l;
  }
  // States at t - 1: matrices and scalars from the loop's iter_args,
  // vectors from their persistent slots.
  unsigned iter = 0;
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    Type type = arg.getType();
    Lowered l;
    if (isa<FastWeightType>(type)) {
      l.kind = Lowered::Matrix;
      l.layout = layoutOf(type);
      for (int64_t c = 0; c < l.layout.C; ++c)
        l.cols.push_back(iterArgs[iter++]);
    } else if (isa<VectorType>(type)) {
      l.kind = Lowered::Vector;
      l.vec = stateSlots[i];
    } else {
      l.kind = Lowered::Scalar;
      l.scalar = iterArgs[iter++];
    }
    lowered[arg] = l;
  }

  Location scanLoc = loc;
  for (Operation &op : body.without_terminator()) {
    // Emitted code points back at the op it implements.
    loc = op.getLoc();
    if (failed(lowerOp(&op)))
      return failure();
    releaseDead(&op);
  }
  loc = scanLoc;

  auto yield = cast<YieldOp>(body.getTerminator());
  writeOutputsAndStates(yield);
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    Value next = yield.getValues()[i];
    Type type = arg.getType();
    if (isa<FastWeightType>(type)) {
      llvm::append_range(yielded, lowered.at(next).cols);
    } else if (!isa<VectorType>(type)) {
      yielded.push_back(lowered.at(next).scalar);
    }
  }
  releaseDead(yield);
  // The next step reads what this one wrote.
  flush();
  if (!epoch.empty())
    barrier();
  return success();
}

void KernelEmitter::writeOutputsAndStates(YieldOp yield) {
  unsigned numStates = scan.getNumStates();
  Value rowIndex = add(mul(bh, T), t);
  // Outputs first: one may be a state's value at t - 1.
  for (auto [i, value] : llvm::enumerate(yield.getValues().drop_front(numStates))) {
    const Lowered &l = lowered.at(value);
    Value ptr = outputPtrs[i];
    Type type = value.getType();
    if (auto w = dyn_cast<FastWeightType>(type)) {
      storeMatrix(l, ptr, mul(rowIndex, cIndex(w.getKeyDim() * w.getValueDim())));
    } else if (auto vector = dyn_cast<VectorType>(type)) {
      int64_t n = vector.getDimSize(0);
      touch(l.vec, false, true);
      Value base = mul(rowIndex, cIndex(n));
      forEachOwned(n, [&](Value e) {
        storeGlobal(ptr, add(base, e), loadElem(l.vec, e));
      });
    } else {
      OpBuilder::InsertionGuard guard(b);
      auto ifOp = scf::IfOp::create(
          b, loc,
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid,
                                cIndex(0)),
          false);
      b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
      storeGlobal(ptr, rowIndex, l.scalar);
    }
  }
  // Vector states: copy the new value into the state's slot. A new value
  // that is itself another state's slot is copied aside first.
  SmallVector<std::pair<unsigned, VecRef>> copies;
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    if (!isa<VectorType>(arg.getType()))
      continue;
    VecRef source = lowered.at(yield.getValues()[i]).vec;
    if (source.kind == VecRef::Shared && source.slot == stateSlots[i].slot)
      continue;
    bool isOtherState = llvm::any_of(stateSlots, [&](const VecRef &s) {
      return s.kind == VecRef::Shared && source.kind == VecRef::Shared &&
             s.slot == source.slot;
    });
    if (isOtherState) {
      VecRef temp = newShared(source.size);
      touch(source, false, true);
      touch(temp, true, true);
      forEachOwned(source.size,
                   [&](Value e) { storeShared(temp, e, loadElem(source, e)); });
      source = temp;
    }
    copies.push_back({unsigned(i), source});
  }
  for (auto &[i, source] : copies) {
    touch(source, false, true);
    touch(stateSlots[i], true, true);
    forEachOwned(source.size, [&](Value e) {
      storeShared(stateSlots[i], e, loadElem(source, e));
    });
  }
}

LogicalResult KernelEmitter::emit() {
  if (failed(checkTypes()))
    return failure();
  if (NT == 0)
    NT = chooseBlockSize();
  if (NT < kWarpSize || NT > 1024 || !llvm::isPowerOf2_64(NT))
    return scan.emitOpError() << "GPU block size must be a power of two in "
                                 "[32, 1024], not "
                              << NT;
  for (BlockArgument arg : scan.getBodyBlock().getArguments())
    if (auto w = dyn_cast<FastWeightType>(arg.getType()))
      if (w.getKeyDim() < 1 || w.getValueDim() < 1)
        return scan.emitOpError() << "empty fast weight " << w;

  Block &body = scan.getBodyBlock();
  for (Operation &op : body)
    for (Value v : op.getOperands())
      lastUse[v] = &op;

  // gpu.module @<scan>_gpu { gpu.func @<scan>_kernel(ptrs..., B, H, T) }
  b.setInsertionPoint(scan);
  auto module = gpu::GPUModuleOp::create(b, loc, gpuModuleName(scan.getSymName()));
  b.setInsertionPointToStart(module.getBody());
  Type ptrType = LLVM::LLVMPointerType::get(b.getContext());
  unsigned numBuffers = scan.getNumSeq() + scan.getNumParams() +
                        scan.getNumStates() + scan.getNumOutputs();
  SmallVector<Type> argTypes(numBuffers, ptrType);
  argTypes.append(3, b.getI64Type());
  auto func = gpu::GPUFuncOp::create(b, loc, gpuKernelName(scan.getSymName()),
                                     b.getFunctionType(argTypes, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func.setKnownBlockSizeAttr(
      b.getDenseI32ArrayAttr({int32_t(NT), 1, 1}));
  Block &entry = func.getBody().front();
  b.setInsertionPointToStart(&entry);

  auto args = entry.getArguments();
  unsigned next = 0;
  auto take = [&](unsigned n, SmallVectorImpl<Value> &into) {
    for (unsigned i = 0; i < n; ++i)
      into.push_back(args[next++]);
  };
  take(scan.getNumSeq(), seqPtrs);
  take(scan.getNumParams(), paramPtrs);
  take(scan.getNumStates(), statePtrs);
  take(scan.getNumOutputs(), outputPtrs);
  auto toIndex = [&](Value v) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), v).getResult();
  };
  B = toIndex(args[next]);
  H = toIndex(args[next + 1]);
  T = toIndex(args[next + 2]);

  tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  bh = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  head = arith::RemUIOp::create(b, loc, bh, H);
  lane = arith::RemUIOp::create(b, loc, tid, cIndex(kWarpSize));
  warp = arith::DivUIOp::create(b, loc, tid, cIndex(kWarpSize));
  // Dynamic shared memory: a public zero-sized workgroup global becomes
  // `.extern .shared .b8 fwp_shared[]` in PTX. (gpu.dynamic_shared_memory
  // makes an internal global, which NVPTX demotes to a 1-byte static one.)
  Attribute workgroup = gpu::AddressSpaceAttr::get(
      b.getContext(), gpu::GPUDialect::getWorkgroupAddressSpace());
  auto globalType =
      MemRefType::get({0}, elemType, MemRefLayoutAttrInterface{}, workgroup);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(func);
    memref::GlobalOp::create(b, loc, b.getStringAttr(kSharedSymbol),
                             b.getStringAttr("public"),
                             TypeAttr::get(globalType), Attribute(),
                             UnitAttr(), b.getI64IntegerAttr(16));
  }
  Value global = memref::GetGlobalOp::create(b, loc, globalType, kSharedSymbol);
  arenaSizeConst = arith::ConstantOp::create(b, loc, b.getIndexAttr(0));
  auto arenaType = MemRefType::get({ShapedType::kDynamic}, elemType,
                                   MemRefLayoutAttrInterface{}, workgroup);
  arenaMem = memref::ReinterpretCastOp::create(
      b, loc, arenaType, global, OpFoldResult(b.getIndexAttr(0)),
      ArrayRef<OpFoldResult>{arenaSizeConst.getResult()},
      ArrayRef<OpFoldResult>{b.getIndexAttr(1)});

  // Params: vectors are read in place, matrices and scalars loaded once.
  for (auto [i, arg] : llvm::enumerate(scan.getParamArgs())) {
    Type type = arg.getType();
    Lowered l;
    if (auto vector = dyn_cast<VectorType>(type)) {
      l.kind = Lowered::Vector;
      l.vec.kind = VecRef::Global;
      l.vec.size = vector.getDimSize(0);
      l.vec.ptr = paramPtrs[i];
      l.vec.base = mul(head, cIndex(vector.getDimSize(0)));
    } else if (auto w = dyn_cast<FastWeightType>(type)) {
      l = loadMatrix(paramPtrs[i],
                     mul(head, cIndex(w.getKeyDim() * w.getValueDim())),
                     layoutOf(type));
    } else {
      l.kind = Lowered::Scalar;
      l.scalar = loadGlobal(paramPtrs[i], head);
    }
    lowered[arg] = l;
  }
  // Initial states.
  SmallVector<Value> init;
  stateSlots.resize(scan.getNumStates());
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    Type type = arg.getType();
    if (auto w = dyn_cast<FastWeightType>(type)) {
      Lowered m = loadMatrix(statePtrs[i],
                             mul(bh, cIndex(w.getKeyDim() * w.getValueDim())),
                             layoutOf(type));
      llvm::append_range(init, m.cols);
    } else if (auto vector = dyn_cast<VectorType>(type)) {
      int64_t n = vector.getDimSize(0);
      stateSlots[i] = newShared(n, /*persistent=*/true);
      touch(stateSlots[i], true, true);
      Value base = mul(bh, cIndex(n));
      forEachOwned(n, [&](Value e) {
        storeShared(stateSlots[i], e, loadGlobal(statePtrs[i], add(base, e)));
      });
    } else {
      init.push_back(loadGlobal(statePtrs[i], bh));
    }
  }
  flush();
  if (!epoch.empty())
    barrier();

  // The time loop.
  auto loop = scf::ForOp::create(b, loc, cIndex(0), T, cIndex(1), init);
  LogicalResult stepResult = success();
  {
    OpBuilder::InsertionGuard guard(b);
    Block *loopBody = loop.getBody();
    if (!loopBody->empty())
      loopBody->getTerminator()->erase();
    b.setInsertionPointToStart(loopBody);
    Value i = loop.getInductionVar();
    t = scan.getReverse()
            ? arith::SubIOp::create(b, loc, arith::SubIOp::create(b, loc, T, i),
                                    cIndex(1))
                  .getResult()
            : i;
    SmallVector<Value> yielded;
    stepResult = emitStep(loop.getRegionIterArgs(), yielded);
    scf::YieldOp::create(b, loc, yielded);
  }
  if (failed(stepResult))
    return failure();

  // Final states.
  unsigned iter = 0;
  bool scalarStates = false;
  for (BlockArgument arg : scan.getStateArgs())
    scalarStates |= !isa<VectorType, FastWeightType>(arg.getType());
  if (scalarStates)
    barrier(); // other threads may still read the initial scalars
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    Type type = arg.getType();
    if (auto w = dyn_cast<FastWeightType>(type)) {
      Lowered m;
      m.kind = Lowered::Matrix;
      m.layout = layoutOf(type);
      for (int64_t c = 0; c < m.layout.C; ++c)
        m.cols.push_back(loop.getResult(iter++));
      storeMatrix(m, statePtrs[i],
                  mul(bh, cIndex(w.getKeyDim() * w.getValueDim())));
    } else if (auto vector = dyn_cast<VectorType>(type)) {
      int64_t n = vector.getDimSize(0);
      touch(stateSlots[i], false, true);
      Value base = mul(bh, cIndex(n));
      forEachOwned(n, [&](Value e) {
        storeGlobal(statePtrs[i], add(base, e), loadElem(stateSlots[i], e));
      });
    } else {
      Value value = loop.getResult(iter++);
      OpBuilder::InsertionGuard guard(b);
      auto ifOp = scf::IfOp::create(
          b, loc,
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid,
                                cIndex(0)),
          false);
      b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
      storeGlobal(statePtrs[i], bh, value);
    }
  }
  gpu::ReturnOp::create(b, loc);

  int64_t elementBytes = elemType.getIntOrFloatBitWidth() / 8;
  int64_t sharedBytes = arena.size() * elementBytes;
  arenaSizeConst.setValueAttr(b.getIndexAttr(arena.size()));
  if (sharedBytes > kMaxSharedBytes)
    return scan.emitOpError()
           << "needs " << sharedBytes
           << " bytes of shared memory for its vectors; no GPU has more than "
           << kMaxSharedBytes;

  StringRef role = "forward";
  if (auto roleAttr = scan->getAttrOfType<StringAttr>(kRoleAttrName))
    role = roleAttr.getValue();
  func->setAttr(kGpuScanAttr, b.getStringAttr(scan.getSymName()));
  func->setAttr(kGpuKernelRoleAttr, b.getStringAttr(role));
  func->setAttr(kGpuDtypeAttr, b.getStringAttr(elemType.isF64() ? "f64" : "f32"));
  func->setAttr(kGpuBlockSizeAttr, b.getI64IntegerAttr(NT));
  func->setAttr(kGpuSharedBytesAttr, b.getI64IntegerAttr(sharedBytes));
  func->setAttr(kGpuArgsAttr, buildArgsAttr());
  return success();
}

} // namespace

LogicalResult mlir::fwp::lowerScansToGpu(ModuleOp module,
                                         const GpuLoweringOptions &options) {
  SmallVector<ScanOp> scans(module.getOps<ScanOp>());
  for (ScanOp scan : scans) {
    KernelEmitter emitter(scan, options);
    if (failed(emitter.emit()))
      return failure();
  }
  for (ScanOp scan : scans)
    scan.erase();
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(module.getContext()));
  return success();
}
