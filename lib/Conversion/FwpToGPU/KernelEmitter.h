//===- KernelEmitter.h - The GPU kernel emitter's parts ---------*- C++ -*-===//
//
// Internal to lib/Conversion/FwpToGPU: the kernel emitter of
// convert-fwp-to-gpu, one concept per file:
//
//   ThreadLayout.cpp    how a matrix is spread over the threads; block size
//   SharedMemory.cpp    the shared-memory arena, loads and stores, lifetimes
//   Barriers.cpp        where gpu.barrier is needed
//   WarpPrimitives.cpp  owned loops, shuffles, warp and block reductions
//   OpLowering.cpp      one lowering per fwp op
//   ScanToKernel.cpp    the kernel: arguments, the time loop, outputs
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
#ifndef FWP_LIB_CONVERSION_FWPTOGPU_KERNELEMITTER_H
#define FWP_LIB_CONVERSION_FWPTOGPU_KERNELEMITTER_H

#include "fwp/Conversion/FwpToGPU/FwpToGPU.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

#include <utility>
#include <vector>

namespace mlir::fwp::gpu_kernel {

constexpr int64_t kWarpSize = 32;
/// Scans with more seq inputs than this are not prefetched.
constexpr unsigned kMaxPrefetchedInputs = 12;
/// The dynamic shared memory of every kernel.
constexpr llvm::StringLiteral kSharedSymbol = "fwp_shared";
/// The largest dynamic shared memory a block may have (H100: 227 KiB).
constexpr int64_t kMaxSharedBytes = 232448;

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

//===----------------------------------------------------------------------===//
// Thread layout (ThreadLayout.cpp)
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

  /// The layout of a K x V matrix over NT threads (NT a power of two >= 32):
  /// S = min(NT / V', K', 32) with V', K' the next powers of two (S = 1
  /// when V' >= NT), columns per pass NT / S, C = ceil(V / (NT / S)) and
  /// R = ceil(K / S).
  static MatrixLayout get(int64_t K, int64_t V, int64_t NT);
};

/// Threads per block for a scan whose arguments have these types: about 32
/// registers of fast weight per thread (sizes rounded up to powers of two),
/// a power of two in [32, 1024].
int64_t chooseBlockSize(TypeRange argTypes);

//===----------------------------------------------------------------------===//
// Shared memory (SharedMemory.cpp)
//===----------------------------------------------------------------------===//

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
  /// A new slot of `size` elements (at least 1): the first free block that
  /// fits, else the top of the arena. A persistent slot is never freed.
  int allocate(int64_t size, bool persistent);
  int64_t offsetOf(int slot) const { return slots[slot].offset; }
  void retain(int slot) { ++slots[slot].refs; }
  /// Drops one reference; the last one frees a non-persistent slot.
  void release(int slot);
  /// Elements the arena needs: the kernel's dynamic shared memory.
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

//===----------------------------------------------------------------------===//
// Barriers (Barriers.cpp)
//===----------------------------------------------------------------------===//

/// Decides where a block needs gpu.barrier. The emitter records each
/// shared-memory access of the code it is about to emit; an access that
/// conflicts with one since the last barrier (write/read, read/write or
/// write/write, possibly by different threads) needs a barrier first.
class BarrierPlanner {
public:
  explicit BarrierPlanner(int64_t numThreads) : numThreads(numThreads) {}

  /// Records an access to elements [begin, begin + size). An owned access
  /// gives element a to thread (a - begin) % NT.
  void record(int64_t begin, int64_t size, bool write, bool owned);
  /// Whether the recorded accesses conflict with one since the last barrier.
  bool needsBarrier() const;
  /// Moves the recorded accesses into the current epoch.
  void commit();
  /// A barrier was emitted: the epoch starts empty.
  void barrierPlaced() { epoch.clear(); }
  bool hasPending() const { return !pending.empty(); }
  bool epochEmpty() const { return epoch.empty(); }

private:
  /// A shared-memory access to [begin, end). Owned accesses give address
  /// a to thread (a - phase) % NT: two of them touch each address from the
  /// same thread only if their phases agree.
  struct Access {
    int64_t begin, end;
    bool write, owned;
    int64_t phase;
  };
  int64_t numThreads;
  SmallVector<Access> epoch;   ///< accesses since the last barrier
  SmallVector<Access> pending; ///< recorded, not yet checked
};

//===----------------------------------------------------------------------===//
// Warp primitives (WarpPrimitives.cpp)
//===----------------------------------------------------------------------===//

enum class ReduceKind { Add, Max };

//===----------------------------------------------------------------------===//
// The kernel emitter: its methods live in the files above, by concept
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
  /// A matrix with every entry `value`.
  Lowered splatMatrix(const MatrixLayout &l, double value);
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
  BarrierPlanner barriers{1};
  DenseMap<Value, Lowered> lowered;
  DenseMap<Value, Operation *> lastUse;

  // Kernel-wide values.
  Value tid, lane, warp, bh, head, B, H, T, t, arenaMem;
  DenseMap<int64_t, Value> sCache, mBaseCache;
  SmallVector<Value> seqPtrs, paramPtrs, statePtrs, outputPtrs;
  SmallVector<VecRef> stateSlots; ///< vector states: their persistent slot
  arith::ConstantOp arenaSizeConst;
};

} // namespace mlir::fwp::gpu_kernel

#endif // FWP_LIB_CONVERSION_FWPTOGPU_KERNELEMITTER_H
